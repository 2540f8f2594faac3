"""Vision-language models for the agent: loading, the embedded tiny VLM, the value head."""

from vlmrl_fast.models.families import TINY_MODEL_FAMILIES, build_tiny_model, tiny_model_path
from vlmrl_fast.models.loading import (
    TextProcessor,
    apply_lora,
    is_text_only,
    load_model,
    load_processor,
    resolve_model_path,
)
from vlmrl_fast.models.settings import ModelSettings
from vlmrl_fast.models.tiny import TINY_FAMILIES, build_tiny_vlm, default_model_path
from vlmrl_fast.models.value_head import ValueHead

__all__ = [
    "ModelSettings",
    "TINY_FAMILIES",
    "TINY_MODEL_FAMILIES",
    "TextProcessor",
    "ValueHead",
    "apply_lora",
    "build_tiny_model",
    "build_tiny_vlm",
    "is_text_only",
    "tiny_model_path",
    "default_model_path",
    "load_model",
    "load_processor",
    "resolve_model_path",
]
