"""How a VLM is loaded and what of it is trained."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vlmrl_fast.config import IMAGE_BACKENDS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QUANTIZATIONS = (None, "4bit", "8bit")


@dataclass
class ModelSettings:
    """Options of `load_model` (defaults are the paper's LoRA setting).

    Validated on construction: a wrong value raises a one-line ValueError naming the field.
    """

    dtype: str = "float32"
    """Weights dtype: "float32", "bfloat16" or "float16" (float16 needs a GPU)."""
    device: str = "cpu"
    """Torch device the model goes to: "cpu", "cuda", "cuda:1", ..."""
    lora: bool = True
    """Train LoRA adapters (peft) instead of all weights."""
    lora_r: int = 128
    """LoRA rank."""
    lora_alpha: int = 256
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input; active in train mode only (see Agent.evaluate)."""
    lora_target_modules: str | list[str] = "all-linear"
    """"all-linear" or a list of linear-layer name suffixes ("q_proj", "v_proj", ...)."""
    lora_vision: bool = False
    """Also put adapters on the vision tower and the projector (else only the language model)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% more compute)."""
    quantization: str | None = None
    """None, "4bit" (NF4) or "8bit" through bitsandbytes; CUDA only."""
    image_backend: str = "pil"
    """Backend of the Hugging Face image processor: "pil" (the original processors' numerics, whatever is
    installed), "torchvision" (needs torchvision) or "auto" (transformers' choice: torchvision when it is
    installed). The native pipeline reproduces either; the choice only fixes which one a run sees."""
    extra: dict = field(default_factory=dict)
    """Extra keyword arguments for `from_pretrained` (e.g. {"attn_implementation": "sdpa"})."""

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"ModelSettings.dtype: {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(
                f"ModelSettings.quantization: {self.quantization!r} is not one of None, '4bit', '8bit'"
            )
        if self.image_backend not in IMAGE_BACKENDS:
            raise ValueError(f"ModelSettings.image_backend: {self.image_backend!r} is not one of "
                             f"{', '.join(IMAGE_BACKENDS)}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"ModelSettings.device: expected a device string like 'cpu' or 'cuda', got {self.device!r}")
        try:
            torch.device(self.device)
        except RuntimeError as exc:
            raise ValueError(f"ModelSettings.device: {self.device!r} is not a torch device ({exc})") from None
        if not isinstance(self.lora_r, int) or self.lora_r <= 0:
            raise ValueError(f"ModelSettings.lora_r: must be a positive integer, got {self.lora_r!r}")
        if not isinstance(self.lora_alpha, (int, float)) or self.lora_alpha <= 0:
            raise ValueError(f"ModelSettings.lora_alpha: must be positive, got {self.lora_alpha!r}")
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ValueError(f"ModelSettings.lora_dropout: must be in [0, 1), got {self.lora_dropout!r}")
        targets = self.lora_target_modules
        if not (targets == "all-linear" or (isinstance(targets, (list, tuple)) and targets
                                            and all(isinstance(t, str) and t for t in targets))):
            raise ValueError(
                "ModelSettings.lora_target_modules: expected 'all-linear' or a non-empty list of module "
                f"names, got {targets!r}"
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype of `dtype`."""
        return DTYPES[self.dtype]
