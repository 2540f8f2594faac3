"""Load any Hugging Face VLM with its processor and chat template, and prepare it for training.

Input is checked before any weights are read: an unknown path, a folder without a model config,
a processor without a chat template, quantization without a GPU each give a one-line ValueError
that names the path or the field.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlmrl_fast.models.settings import ModelSettings
from vlmrl_fast.models.tiny import default_model_path

# Names that mean "the embedded tiny VLM" wherever a model path is accepted.
TINY_ALIASES = ("tiny", "vlmrl_fast/tiny")


def resolve_model_path(name_or_path: str | os.PathLike, *, require_config: bool = True) -> str:
    """Map "tiny" to the embedded model's folder, check a local path, pass a hub id through.

    A string that names an existing folder is a local model and must hold a config.json; a string
    that looks like a path (absolute, relative with ./ or ../, ~, or an existing parent folder) but
    is missing is an error; anything else of the form "owner/name" is left to the hub.
    """
    name = os.fspath(name_or_path)
    if name in TINY_ALIASES:
        return str(default_model_path())
    if name.startswith("tiny:"):  # the test-size tiny model of a family (models/families.py)
        from vlmrl_fast.models.families import tiny_model_path

        return str(tiny_model_path(name.removeprefix("tiny:")))
    path = Path(name).expanduser()
    if path.is_dir():
        if require_config and not (path / "config.json").is_file():
            raise ValueError(f"model path {name}: folder has no config.json (not a Hugging Face model folder)")
        return str(path)
    if path.exists():
        raise ValueError(f"model path {name}: is a file, expected a Hugging Face model folder")
    looks_like_path = (
        name.startswith(("/", "./", "../", "~"))
        or name.count("/") != 1
        or os.sep != "/" and os.sep in name
    )
    if looks_like_path:
        raise ValueError(f"model path {name}: no such folder (and not a hub id of the form owner/name)")
    return name


def _has_chat_template(processor) -> bool:
    if getattr(processor, "chat_template", None):
        return True
    tokenizer = getattr(processor, "tokenizer", None)
    return bool(getattr(tokenizer, "chat_template", None))


class TextProcessor:
    """The processor of a text-only causal LM: its tokenizer (with the chat template), no image side."""

    image_processor = None

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def apply_chat_template(self, messages: list[dict], **kwargs: Any) -> Any:
        return self.tokenizer.apply_chat_template(messages, **kwargs)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        self.tokenizer.save_pretrained(directory)


def _backend_of(image_processor: Any) -> str:
    """'pil' or 'torchvision': the backend class a transformers 5 image processor derives from."""
    from transformers.image_processing_backends import TorchvisionBackend

    return "torchvision" if isinstance(image_processor, TorchvisionBackend) else "pil"


def is_text_only(processor: Any) -> bool:
    """Whether `processor` belongs to a text-only causal LM (a `TextProcessor`)."""
    return isinstance(processor, TextProcessor)


def load_processor(name_or_path: str | os.PathLike, *, require_config: bool = True, image_backend: str = "pil"):
    """AutoProcessor of a model, left padding, checked for a chat template.

    `require_config=False` accepts a folder that holds only a processor (e.g. beside an adapter).
    `image_backend` ("pil", "torchvision" or "auto", see ModelSettings.image_backend) picks the image
    processor's backend: "pil" by default, so that a run sees the same pixels whether or not torchvision
    is installed (transformers' own default switches on that).
    """
    from transformers import AutoProcessor

    from vlmrl_fast.config import IMAGE_BACKENDS

    if image_backend not in IMAGE_BACKENDS:
        raise ValueError(f"image_backend: {image_backend!r} is not one of {', '.join(IMAGE_BACKENDS)}")
    if image_backend == "torchvision" and importlib.util.find_spec("torchvision") is None:
        raise ValueError("image_backend 'torchvision': torchvision is not installed (pip install torchvision, "
                         "or use 'pil')")
    path = resolve_model_path(name_or_path, require_config=require_config)
    try:
        processor = AutoProcessor.from_pretrained(path)
        inner = getattr(processor, "image_processor", None)
        if inner is not None and image_backend != "auto" and _backend_of(inner) != image_backend:
            # only the image processor: a video processor (Qwen2-VL's) has no Pillow backend
            from transformers import AutoImageProcessor

            processor.image_processor = AutoImageProcessor.from_pretrained(path, backend=image_backend)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"model {path}: cannot load its processor ({first})") from None
    from transformers import PreTrainedTokenizerBase

    if isinstance(processor, PreTrainedTokenizerBase):  # a causal LM's folder: tokenizer only
        processor = TextProcessor(processor)
    elif not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
        raise ValueError(f"model {path}: AutoProcessor gave {type(processor).__name__}, not an image+text processor")
    if not _has_chat_template(processor):
        raise ValueError(
            f"model {path}: processor has no chat template (add chat_template.jinja to the folder)"
        )
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token_id is None:
        # Padding positions are masked out, so any id serves; EOS is the usual choice.
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


def _quantization_config(settings: ModelSettings):
    if settings.quantization is None:
        return None
    device = torch.device(settings.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise ValueError(
            f"ModelSettings.quantization={settings.quantization!r} needs a CUDA GPU (bitsandbytes); "
            f"device is {settings.device!r}"
            + ("" if torch.cuda.is_available() else " and no GPU is visible")
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(
            f"ModelSettings.quantization={settings.quantization!r} needs bitsandbytes: pip install bitsandbytes"
        )
    from transformers import BitsAndBytesConfig

    if settings.quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=settings.torch_dtype,
            bnb_4bit_use_double_quant=True,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def _check_dtype_device(settings: ModelSettings) -> None:
    device = torch.device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"ModelSettings.device={settings.device!r}: no CUDA GPU is visible")
    if settings.dtype == "float16" and device.type == "cpu":
        raise ValueError("ModelSettings.dtype='float16' needs a GPU; use 'float32' or 'bfloat16' on the CPU")


def lora_target_names(model: Any, targets: str | list[str], vision: bool) -> list[str]:
    """Full names of the linear layers that get LoRA adapters.

    Language-model linears always (the paper's setting), the vision tower's and projector's only
    when `vision`; never the output head. `targets` "all-linear" takes every such linear layer, a
    list keeps those whose name ends with one of its entries.
    """
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    decoder_modules = {id(m) for m in decoder.modules()}
    head = model.get_output_embeddings()
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module is head:
            continue
        if id(module) not in decoder_modules and not vision:
            continue
        if targets != "all-linear" and not any(name == t or name.endswith("." + t) for t in targets):
            continue
        names.append(name)
    if not names:
        raise ValueError(
            f"ModelSettings.lora_target_modules={targets!r} matches no linear layer of {type(model).__name__}"
        )
    return names


def apply_lora(model: nn.Module, settings: ModelSettings) -> nn.Module:
    """Wrap `model` in a peft LoRA model: only the adapters are trainable afterwards."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=lora_target_names(model, settings.lora_target_modules, settings.lora_vision),
        bias="none",
    )
    return get_peft_model(model, config)


def _enable_checkpointing(model) -> None:
    # transformers 5 renamed gradient checkpointing to activation checkpointing (old name deprecated).
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def load_model(name_or_path: str | os.PathLike, settings: ModelSettings | None = None):
    """Load a VLM (or a text-only causal LM) and its processor: `(model, processor)`.

    `name_or_path` is a local Hugging Face folder, a hub id (where the machine has a network) or
    "tiny" (the embedded tiny VLM, built on first use). The model is an
    `AutoModelForImageTextToText`, in `settings.dtype` on `settings.device`, optionally quantized
    (bitsandbytes, CUDA only); a folder with a tokenizer and no image processor is a text-only model,
    loaded as an `AutoModelForCausalLM` with a `TextProcessor`; "tiny:FAMILY" a test-size tiny model, with gradient checkpointing and LoRA adapters (peft) as set. Without
    LoRA every weight is trainable; with it only the adapters are.
    """
    from transformers import AutoModelForImageTextToText

    settings = settings or ModelSettings()
    _check_dtype_device(settings)
    quant = _quantization_config(settings)
    processor = load_processor(name_or_path, image_backend=settings.image_backend)
    path = resolve_model_path(name_or_path)

    kwargs = dict(settings.extra)
    kwargs["dtype"] = settings.torch_dtype
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": torch.device(settings.device).index or 0}
    model: Any
    auto: Any = AutoModelForImageTextToText
    if is_text_only(processor):  # a text-only agent: any causal LM with a chat template
        from transformers import AutoModelForCausalLM

        auto = AutoModelForCausalLM
    try:
        model = auto.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"model {path}: cannot load it with {auto.__name__} ({first})") from None
    if quant is None:
        model.to(settings.device)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = processor.tokenizer.pad_token_id

    if quant is not None and settings.lora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=settings.gradient_checkpointing
        )
    elif settings.gradient_checkpointing:
        _enable_checkpointing(model)
    if settings.lora:
        if settings.gradient_checkpointing:
            # Checkpointed blocks need an input that requires grad when the embeddings are frozen.
            model.enable_input_require_grads()
        model = apply_lora(model, settings)
    return model, processor
