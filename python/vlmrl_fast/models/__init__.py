"""Vision-language models for the agent: loading, the embedded tiny VLM, the value head."""

from vlmrl_fast.models.loading import apply_lora, load_model, load_processor, resolve_model_path
from vlmrl_fast.models.settings import ModelSettings
from vlmrl_fast.models.tiny import TINY_FAMILIES, build_tiny_vlm, default_model_path
from vlmrl_fast.models.value_head import ValueHead

__all__ = [
    "ModelSettings",
    "TINY_FAMILIES",
    "ValueHead",
    "apply_lora",
    "build_tiny_vlm",
    "default_model_path",
    "load_model",
    "load_processor",
    "resolve_model_path",
]
