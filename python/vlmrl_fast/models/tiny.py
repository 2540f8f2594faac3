"""Tiny randomly initialized VLMs built offline from configs, saved as ordinary Hugging Face folders.

Every folder holds a real transformers model (`LlavaForConditionalGeneration`,
`LlavaNextForConditionalGeneration`, `Qwen2VLForConditionalGeneration`), a byte-level BPE tokenizer
trained here with the `tokenizers` library on the prompt/answer corpus, an image processor sized
for small images, a processor and a chat template, so that `AutoModelForImageTextToText` and
`AutoProcessor.from_pretrained(folder)` load it like any hub model. Nothing is downloaded.

The embedded default model (`default_model_path`) is the "llava" family at the "default" size (128 px
images in 32 px patches), taught to read the four gym_cards games and ALFWorld-v0 when it is built
(`vlmrl_fast.perception.teach_reading`); the other families, at the "test" size, serve the tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from vlmrl_fast.models.corpus import corpus, corpus_digest

# Bump when the recipe (sizes, template, tokenizer settings) changes: the cache key changes with it.
TINY_VERSION = "v4"
TINY_FAMILIES = ("llava", "llava_next", "qwen2_vl")

# Test-size models see 112x112 images in 14 px patches (Qwen2-VL's fixed patch size). The default
# model sees 128x128 in 32 px patches: 16 image tokens keep the sequence short on a CPU, and
# NumberLine's 36 px digits (about 15 px at this scale) stay legible.
IMAGE_SIZE = 112
PATCH_SIZE = 14
DEFAULT_IMAGE_SIZE = 128
DEFAULT_PATCH_SIZE = 32
END_TOKEN = "<|end|>"
PAD_TOKEN = "<|pad|>"
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = [
    PAD_TOKEN,
    END_TOKEN,
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    IMAGE_TOKEN,
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# One chat template for every family; only the image placeholder differs. Content may be a string
# or a list of {"type": "image"} / {"type": "text", "text": ...} parts (the processor convention).
_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|{{ message['role'] }}|>"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}IMAGE_PLACEHOLDER"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "<|end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)
_IMAGE_PLACEHOLDER = {
    "llava": IMAGE_TOKEN,
    "llava_next": IMAGE_TOKEN,
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
}


def chat_template(family: str) -> str:
    """The Jinja chat template of a tiny family (its image placeholder filled in)."""
    return _CHAT_TEMPLATE.replace("IMAGE_PLACEHOLDER", _IMAGE_PLACEHOLDER[family])


def train_tokenizer(texts: list[str], vocab_size: int = 3072):
    """Train a byte-level BPE tokenizer on `texts` and wrap it as a transformers fast tokenizer.

    Byte-level: any text encodes (no unknown token). Merges may cross word boundaries, so the fixed
    parts of the prompts and answers (task text, JSON keys with their punctuation) become a few
    long tokens: NumberLine's prompt is 3 tokens and its CoT answer 11, which makes the tiny model
    fast on a CPU. Digits and the `"action"` key are always split off as tokens of their own, so
    numbers stay readable token by token and the CoT/action boundary falls on a token boundary.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r'\d|"action"|(?<![A-Za-z])[AJQK](?![A-Za-z])'), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=END_TOKEN,
        pad_token=PAD_TOKEN,
        padding_side="left",
        model_max_length=2048,
    )


def _text_dims(size: str) -> dict:
    if size == "default":
        return {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 3, "num_attention_heads": 4}
    return {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}


def _image_dims(size: str) -> tuple[int, int]:
    return (DEFAULT_IMAGE_SIZE, DEFAULT_PATCH_SIZE) if size == "default" else (IMAGE_SIZE, PATCH_SIZE)


def _clip_vision_config(size: str):
    from transformers import CLIPVisionConfig

    hidden = 128 if size == "default" else 64
    image, patch = _image_dims(size)
    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=3 if size == "default" else 2,
        num_attention_heads=4,
        image_size=image,
        patch_size=patch,
        projection_dim=hidden,
    )


def _clip_image_processor(size: str):
    from transformers import CLIPImageProcessor

    image, _ = _image_dims(size)
    return CLIPImageProcessor(
        size={"shortest_edge": image},
        crop_size={"height": image, "width": image},
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
    )


def _llama_text_config(tokenizer, size: str):
    """The Llama language model of both LLaVA families."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **_text_dims(size),
    )


def _build_llava(tokenizer, size: str):
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    text = _llama_text_config(tokenizer, size)
    image, patch = _image_dims(size)
    config = LlavaConfig(
        vision_config=_clip_vision_config(size),
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(image // patch) ** 2,
        vision_feature_layer=-1,  # a tiny tower has no layers to spare
        vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(config)
    processor = LlavaProcessor(
        image_processor=_clip_image_processor(size),
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token
        chat_template=chat_template("llava"),
    )
    return model, processor


def _build_llava_next(tokenizer, size: str):
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    image, patch = _image_dims(size)
    pinpoints = [[image, image], [image, 2 * image], [2 * image, image]]
    text = _llama_text_config(tokenizer, size)
    config = LlavaNextConfig(
        vision_config=_clip_vision_config(size),
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_grid_pinpoints=pinpoints,
        image_seq_length=(image // patch) ** 2,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    model = LlavaNextForConditionalGeneration(config)
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": image},
        crop_size={"height": image, "width": image},
        image_grid_pinpoints=pinpoints,
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chat_template("llava_next"),
    )
    return model, processor


def _build_qwen2_vl(tokenizer, size: str):
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    dims = _text_dims(size)
    head_dim = dims["hidden_size"] // dims["num_attention_heads"]
    half = head_dim // 2  # mrope splits the rotary half-dim into (temporal, height, width)
    section = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    text = {
        "vocab_size": len(tokenizer),
        "max_position_embeddings": 2048,
        "num_key_value_heads": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
        **dims,
    }
    vision = {
        "depth": 2,
        "embed_dim": 64,
        "hidden_size": dims["hidden_size"],
        "num_heads": 4,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    model = Qwen2VLForConditionalGeneration(config)
    pixels = {"shortest_edge": IMAGE_SIZE * IMAGE_SIZE, "longest_edge": IMAGE_SIZE * IMAGE_SIZE}
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels, patch_size=PATCH_SIZE, merge_size=2),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=pixels, patch_size=PATCH_SIZE, merge_size=2),
        chat_template=chat_template("qwen2_vl"),
    )
    return model, processor


_BUILDERS = {"llava": _build_llava, "llava_next": _build_llava_next, "qwen2_vl": _build_qwen2_vl}


def build_tiny_vlm(family: str, out_dir: str | os.PathLike, *, seed: int = 0, size: str = "test") -> Path:
    """Build a tiny random VLM of `family` deterministically from `seed` and save it to `out_dir`.

    `size` is "test" (smallest, for unit tests) or "default" (the embedded NumberLine model).
    Returns the folder, loadable with `AutoModelForImageTextToText` / `AutoProcessor`.
    """
    if family not in _BUILDERS:
        raise ValueError(f"unknown tiny VLM family {family!r}; choose one of {', '.join(TINY_FAMILIES)}")
    if size not in ("test", "default"):
        raise ValueError(f"unknown tiny VLM size {size!r}; choose 'test' or 'default'")
    return build_and_save(_BUILDERS[family], size, out_dir, seed=seed)


def build_and_save(builder: Any, size: str, out_dir: str | os.PathLike, *, seed: int) -> Path:
    """Train the tokenizer on the prompt corpus, build `builder(tokenizer, size)` from `seed` (the
    global RNG left alone), set its generation ids and save model and processor to `out_dir`."""
    out = Path(out_dir)
    tokenizer = train_tokenizer(corpus())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = builder(tokenizer, size)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _cache_root() -> Path:
    if env := os.environ.get("VLMRL_FAST_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vlmrl_fast"


PRETRAIN_ENV = "VLMRL_FAST_TINY_PRETRAIN"


def default_model_path(seed: int = 0) -> Path:
    """The embedded tiny VLM: built on first use under the user cache dir, then reused.

    The build makes the default-size llava from `seed` and teaches it to read the four gym_cards games' and
    ALFWorld-v0's images (`vlmrl_fast.perception.teach_reading`, a few minutes on two CPU cores; its held-out accuracies
    are in the folder's perception.json). With VLMRL_FAST_TINY_PRETRAIN=0 the untrained model is built and
    cached under its own key instead (seconds: for tests and for experiments from scratch).

    The cache key holds `TINY_VERSION` and a digest of the tokenizer corpus, so a changed recipe or
    changed prompt templates build a new model. The folder is written under a temporary name and
    renamed into place, so concurrent first uses never see a half-written model; a lock file makes
    concurrent first uses (several processes of one run) wait for one build instead of each building.
    """
    pretrain = os.environ.get(PRETRAIN_ENV, "1").strip() not in ("0", "false", "no", "off")
    key = f"tiny-vlm-{TINY_VERSION}-{corpus_digest(corpus())}-seed{seed}" + ("" if pretrain else "-untrained")
    path = _cache_root() / key
    if (path / "config.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(path.parent / f".{key}.lock"):
        if (path / "config.json").is_file():  # built by another process while this one waited
            return path
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=path.parent))
        try:
            build_tiny_vlm("llava", tmp, seed=seed, size="default")
            if pretrain:
                import sys

                from vlmrl_fast import perception

                print(f"vlmrl_fast: first use of the embedded tiny VLM: building it into {path} and teaching it to "
                      f"read {', '.join(perception.READER.envs)} (a few minutes on 2 CPU cores, once)",
                      file=sys.stderr, flush=True)
                perception.teach_reading(tmp, seed=seed)
            try:
                os.replace(tmp, path)
            except OSError:
                if not (path / "config.json").is_file():  # lost a race only if the winner finished
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


@contextlib.contextmanager
def _build_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive lock on `lock_path` (POSIX flock; no lock where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
