"""Shared cases of the preprocessing tests and benchmark: Hugging Face image
processors built offline with their model families' settings, and synthetic
observations that stress resampling (sharp edges, text-like strokes, noise)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from transformers import (
    CLIPImageProcessor,
    CLIPImageProcessorPil,
    LlavaNextImageProcessor,
    LlavaNextImageProcessorPil,
    Qwen2VLImageProcessor,
    Qwen2VLImageProcessorPil,
    SiglipImageProcessor,
    SiglipImageProcessorPil,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

# LLaVA-1.5's openai/clip-vit-large-patch14-336 preprocessor_config.json.
CLIP_336 = dict(
    size={"shortest_edge": 336},
    crop_size={"height": 336, "width": 336},
    do_center_crop=True,
    resample=PILImageResampling.BICUBIC,
    do_rescale=True,
    rescale_factor=1 / 255,
    do_normalize=True,
    image_mean=OPENAI_CLIP_MEAN,
    image_std=OPENAI_CLIP_STD,
)
# llava-hf/llava-v1.6-*-hf's preprocessor_config.json: CLIP-336 tiles on the "anyres" canvases.
LLAVA_NEXT = dict(
    CLIP_336,
    image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
)
# Qwen2-VL-*-Instruct's preprocessor_config.json (Qwen2.5-VL uses the same class and values).
QWEN2_VL = dict(
    min_pixels=56 * 56,
    max_pixels=28 * 28 * 1280,
    patch_size=14,
    merge_size=2,
    temporal_patch_size=2,
    resample=PILImageResampling.BICUBIC,
    image_mean=OPENAI_CLIP_MEAN,
    image_std=OPENAI_CLIP_STD,
)


def siglip(size: int) -> dict[str, Any]:
    """google/siglip-*-patch*-{224,384}: fixed size, bicubic, mean = std = 0.5."""
    return dict(
        size={"height": size, "width": size},
        resample=PILImageResampling.BICUBIC,
        rescale_factor=1 / 255,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


# name -> constructor; "_pil" is transformers' Pillow backend, "_tv" its torchvision backend.
PROCESSORS: dict[str, Callable[[], Any]] = {
    "clip336_pil": lambda: CLIPImageProcessorPil(**CLIP_336),
    "clip336_tv": lambda: CLIPImageProcessor(**CLIP_336),
    "qwen2vl_pil": lambda: Qwen2VLImageProcessorPil(**QWEN2_VL),
    "qwen2vl_tv": lambda: Qwen2VLImageProcessor(**QWEN2_VL),
    "llavanext_pil": lambda: LlavaNextImageProcessorPil(**LLAVA_NEXT),
    "llavanext_tv": lambda: LlavaNextImageProcessor(**LLAVA_NEXT),
    "siglip224_pil": lambda: SiglipImageProcessorPil(**siglip(224)),
    "siglip224_tv": lambda: SiglipImageProcessor(**siglip(224)),
    "siglip384_pil": lambda: SiglipImageProcessorPil(**siglip(384)),
    "siglip384_tv": lambda: SiglipImageProcessor(**siglip(384)),
}


def synthetic_obs(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 [n, height, width, 3]: noise, hard-edged blocks, 1-px strokes and a checkerboard."""
    rng = np.random.default_rng(seed)
    obs = rng.integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        img = obs[i]
        # Saturated blocks (a card on a table).
        y0, x0 = rng.integers(0, max(1, height // 2)), rng.integers(0, max(1, width // 2))
        img[y0 : y0 + max(1, height // 3), x0 : x0 + max(1, width // 3)] = rng.integers(0, 256, 3)
        # Text-like strokes: thin black bars on white rows.
        band = slice(height // 4, height // 4 + max(1, height // 8))
        img[band] = 255
        img[band, :: max(2, width // 40)] = 0
        # Checkerboard corner: worst case for bicubic overshoot.
        cb = (np.add.outer(np.arange(height), np.arange(width)) % 2 == 0)[: height // 5, : width // 5]
        img[: height // 5, : width // 5][cb] = 255
        img[: height // 5, : width // 5][~cb] = 0
    return obs


def hf_outputs(ip: Any, obs: np.ndarray) -> Any:
    """What the Hugging Face processor returns for the images of `obs`."""
    return ip(images=list(obs), return_tensors="pt", input_data_format="channels_last")
