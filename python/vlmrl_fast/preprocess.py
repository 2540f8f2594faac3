"""Observations to model-ready image inputs, in Rust, equal to Hugging Face's processors.

`ImagePipeline.from_processor(processor)` reads a loaded Hugging Face image
processor (or a full processor holding one) and builds the native pipeline
`vlmrl_fast._core.Preprocessor`; calling the pipeline on the vector env's
uint8 observations ``[N, H, W, 3]`` returns what the Hugging Face processor
returns for those images (``pixel_values``, plus ``image_grid_thw`` for the
Qwen2-VL family), as torch tensors::

    pipeline = ImagePipeline.from_processor(processor, dtype=torch.bfloat16)
    inputs = pipeline(obs)          # BatchFeature: pixel_values[, image_grid_thw]

Supported natively (transformers 5.x, both the Pillow and the torchvision
backend classes): processors that run the generic resize -> center crop ->
rescale -> normalize path (CLIP / LLaVA-1.5, SigLIP, ViT-like),
Qwen2-VL / Qwen2.5-VL's `Qwen2VLImageProcessor`, and LLaVA-NeXT's
`LlavaNextImageProcessor` ("anyres" tiling: ``pixel_values`` [N, 1 + tiles,
3, tile, tile] plus ``image_sizes``), Qwen3-VL's (a `Qwen2VLImageProcessor` with 16 px
patches) and Gemma 3's `Gemma3ImageProcessor` without pan-and-scan (SigLIP's path). Every other processor falls back to
calling the Hugging Face processor itself, with a one-time warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from vlmrl_fast._core import (
    PreprocessError,
    PreprocessInternalError,
    PreprocessTypeError,
    Preprocessor,
)

__all__ = [
    "ImagePipeline",
    "PreprocessError",
    "PreprocessInternalError",
    "PreprocessTypeError",
]

# Backend name -> PIL resampling codes whose 8-bit resampling the native
# resizer reproduces (PIL: NEAREST=0 LANCZOS=1 BILINEAR=2 BICUBIC=3 BOX=4 HAMMING=5).
# torchvision resizes uint8 with its own Pillow-derived kernel for bilinear and
# bicubic (antialiased); its other modes differ from Pillow's, so they fall back.
_NATIVE_RESAMPLE = {"pil": {1, 2, 3, 4, 5}, "torchvision": {2, 3}}

_warned: set[str] = set()


def _image_processor(processor: Any) -> Any:
    """The image processor inside `processor` (a full processor) or `processor` itself."""
    inner = getattr(processor, "image_processor", None)
    if inner is not None:
        return inner
    if hasattr(processor, "preprocess") or callable(processor):
        return processor
    raise TypeError(f"expected a Hugging Face image processor or processor, got {type(processor).__name__}")


def _resample_code(resample: Any) -> int | None:
    """PIL integer code of a processor's `resample` (PIL enum, int or torchvision mode)."""
    if resample is None:
        return 2  # both backends default to bilinear
    if isinstance(resample, int):  # PILImageResampling is an IntEnum
        return int(resample)
    name = getattr(resample, "name", None)  # torchvision InterpolationMode
    return {"NEAREST": 0, "LANCZOS": 1, "BILINEAR": 2, "BICUBIC": 3, "BOX": 4, "HAMMING": 5}.get(name)


def _pillow_major() -> int:
    import PIL

    return int(PIL.__version__.split(".")[0])


def _backend_bases() -> dict[str, type]:
    try:
        from transformers.image_processing_backends import PilBackend, TorchvisionBackend
    except ImportError:  # transformers < 5: no backend split; everything falls back
        return {}
    return {"pil": PilBackend, "torchvision": TorchvisionBackend}


def _classes(*where: tuple[str, str]) -> tuple[type, ...]:
    """The classes named by (module, class) pairs that this transformers has."""
    import importlib

    found: list[type] = []
    for module, name in where:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def _qwen2vl_classes() -> tuple[type, ...]:
    return _classes(
        ("transformers.models.qwen2_vl.image_processing_qwen2_vl", "Qwen2VLImageProcessor"),
        ("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl", "Qwen2VLImageProcessorPil"),
    )


def _llava_next_classes() -> tuple[type, ...]:
    return _classes(
        ("transformers.models.llava_next.image_processing_llava_next", "LlavaNextImageProcessor"),
        ("transformers.models.llava_next.image_processing_pil_llava_next", "LlavaNextImageProcessorPil"),
    )


def _gemma3_classes() -> tuple[type, ...]:
    return _classes(
        ("transformers.models.gemma3.image_processing_gemma3", "Gemma3ImageProcessor"),
        ("transformers.models.gemma3.image_processing_pil_gemma3", "Gemma3ImageProcessorPil"),
    )


def _llava_next_settings(ip: Any) -> dict[str, Any] | str:
    """The tiling of a LLaVA-NeXT processor when the native pipeline computes it exactly.

    The processor resizes the whole image to `size` (the base tile), fits the image into the
    best `image_grid_pinpoints` canvas, pads it there with zeros and cuts `crop_size` tiles, then
    resizes each tile to `size` and center-crops it to `crop_size`. Natively: those last steps
    must leave a tile unchanged (size == crop_size, square) and the canvases must be multiples
    of the tile, which is how the released checkpoints are configured (336 and 384 tiles).
    """
    if not getattr(ip, "do_resize", False):
        return "LLaVA-NeXT without do_resize is not supported"
    size, crop = ip.size, ip.crop_size
    if size.shortest_edge and not (size.height or size.width or size.longest_edge):
        base = (int(size.shortest_edge), int(size.shortest_edge))
    elif size.height and size.width and not size.shortest_edge:
        base = (int(size.height), int(size.width))
    else:
        return f"size {dict(size.items()) if hasattr(size, 'items') else size} is not supported"
    tile = int(crop.height) if crop is not None and crop.height else base[0]
    if getattr(ip, "do_center_crop", False) and (crop is None or int(crop.width or 0) != tile):
        return "LLaVA-NeXT with a non-square crop_size is not supported"
    if base != (tile, tile):
        return f"LLaVA-NeXT with size {base} different from the tile size {tile} is not supported"
    pins = [(int(h), int(w)) for h, w in ip.image_grid_pinpoints]
    if not pins or any(h <= 0 or w <= 0 or h % tile or w % tile for h, w in pins):
        return f"image_grid_pinpoints {pins} are not positive multiples of the tile size {tile}"
    return {"layout": "llava_next", "height": tile, "width": tile, "crop_height": tile,
            "crop_width": tile, "image_grid_pinpoints": pins}


def _native_settings(ip: Any) -> tuple[dict[str, Any], str] | str:
    """Keyword arguments of `Preprocessor` for `ip` and its backend, or why it is not supported."""
    bases = _backend_bases()
    backend = next((name for name, base in bases.items() if isinstance(ip, base)), None)
    if backend is None:
        return f"{type(ip).__name__} is not a transformers 5 Pillow or torchvision image processor"
    base = bases[backend]
    cls = type(ip)
    # LLaVA-NeXT's do_pad pads the tile counts of a batch to the largest: the
    # images of one batch share a size, hence a tile count, so it never pads.
    llava_next = cls in _llava_next_classes()
    if getattr(ip, "do_pad", None) and not llava_next:
        return "padding (do_pad) is not supported"
    if str(getattr(ip, "data_format", None) or "channels_first").split(".")[-1].lower() not in (
        "channels_first",
        "first",
    ):
        return f"data_format {ip.data_format!r} is not supported (channels first only)"
    kwargs: dict[str, Any] = {"backend": backend}
    if getattr(ip, "do_rescale", False):
        kwargs["rescale_factor"] = float(ip.rescale_factor)
    if getattr(ip, "do_normalize", False):
        kwargs["image_mean"] = [float(v) for v in np.atleast_1d(ip.image_mean)]
        kwargs["image_std"] = [float(v) for v in np.atleast_1d(ip.image_std)]
    if getattr(ip, "do_resize", False):
        code = _resample_code(ip.resample)
        if code not in _NATIVE_RESAMPLE[backend]:
            return f"resample {ip.resample!r} on the {backend} backend is not supported"
        kwargs["resample"] = code
    size = ip.size

    if llava_next:
        tiling = _llava_next_settings(ip)
        if isinstance(tiling, str):
            return tiling
        kwargs.update(tiling)
        return kwargs, backend

    if cls in _qwen2vl_classes():
        kwargs.update(
            layout="qwen2_vl",
            min_pixels=int(size.shortest_edge),
            max_pixels=int(size.longest_edge),
            patch_size=int(ip.patch_size),
            merge_size=int(ip.merge_size),
            temporal_patch_size=int(ip.temporal_patch_size),
        )
        return kwargs, backend

    # The generic path: the class must run its backend's own steps unchanged,
    # then what the native pipeline computes is exactly what it computes. Gemma 3's
    # processor without pan-and-scan is SigLIP's: resize to a square, rescale, normalize.
    gemma3 = cls in _gemma3_classes()
    if gemma3 and getattr(ip, "do_pan_and_scan", False):
        return "Gemma 3's pan-and-scan crops are not supported"
    for method in ("resize", "center_crop", "rescale_and_normalize") if gemma3 else (
            "preprocess", "_preprocess", "resize", "center_crop", "rescale_and_normalize"):
        mine, theirs = getattr(cls, method, None), getattr(base, method, None)
        if mine is not theirs:
            return f"{cls.__name__} overrides {method}"
    kwargs.update(layout="channels_first")
    if "resample" in kwargs:
        if size.shortest_edge and not (size.longest_edge or size.height or size.max_height):
            kwargs["shortest_edge"] = int(size.shortest_edge)
        elif size.height and size.width and not (size.shortest_edge or size.longest_edge):
            kwargs.update(height=int(size.height), width=int(size.width))
        else:
            return f"size {dict(size.items()) if hasattr(size, 'items') else size} is not supported"
    if getattr(ip, "do_center_crop", False) and not gemma3:  # Gemma 3's steps have no crop
        crop = ip.crop_size
        kwargs.update(crop_height=int(crop.height), crop_width=int(crop.width))
    return kwargs, backend


class ImagePipeline:
    """Turns uint8 observations [N, H, W, 3] into a Hugging Face model's image inputs.

    Build it with `from_processor`. `native` tells whether the Rust pipeline
    runs (True) or the Hugging Face processor is called (fallback).
    """

    def __init__(
        self,
        image_processor: Any,
        *,
        dtype: torch.dtype = torch.float32,
        core: Preprocessor | None = None,
        backend: str | None = None,
    ) -> None:
        self.image_processor = image_processor
        self.dtype = dtype
        self.core = core
        self.backend = backend
        self.returns_grid = core is not None and _is_qwen(image_processor)
        self.returns_sizes = core is not None and type(image_processor) in _llava_next_classes()

    @classmethod
    def from_processor(cls, processor: Any, *, dtype: torch.dtype = torch.float32,
                       warn: bool = True) -> ImagePipeline:
        """Builds the pipeline of `processor` (an image processor, or a processor holding one).

        `dtype` is the dtype of the returned `pixel_values` (float32 or the model's dtype).
        Unsupported processors fall back to the Hugging Face processor with a one-time warning
        (per processor class; `warn=False` skips it, for callers that choose a path themselves).
        """
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        ip = _image_processor(processor)
        settings = _native_settings(ip)
        if isinstance(settings, str):
            name = type(ip).__name__
            if warn and name not in _warned:
                _warned.add(name)
                warnings.warn(
                    f"vlmrl_fast.preprocess: {name} has no native pipeline ({settings}); "
                    "falling back to the Hugging Face processor (slower, same results).",
                    stacklevel=2,
                )
            return cls(ip, dtype=dtype)
        kwargs, backend = settings
        if backend == "pil" and _pillow_major() >= 13:
            kwargs["backend"] = "pil13"  # Pillow 13 orders the two resampling passes by the sizes
        return cls(ip, dtype=dtype, core=Preprocessor(**kwargs), backend=backend)

    @property
    def native(self) -> bool:
        """True when the Rust pipeline runs, False when the Hugging Face processor is called."""
        return self.core is not None

    def output_shape(self, n: int, height: int, width: int) -> tuple[int, ...]:
        """Shape of `pixel_values` for `n` observations of `height` x `width` (native pipelines)."""
        if self.core is None:
            raise RuntimeError("output_shape needs a native pipeline; this one falls back to Hugging Face")
        return tuple(self.core.plan(n, height, width)[0])

    def __call__(self, obs: np.ndarray | torch.Tensor, *, out: torch.Tensor | None = None) -> Any:
        """Model image inputs of `obs` (uint8 [N, H, W, 3], read in place when C-contiguous).

        Returns a `transformers.BatchFeature` of torch tensors: `pixel_values` in
        `self.dtype`, plus `image_grid_thw` (int64 [N, 3]) for the Qwen2-VL family and
        `image_sizes` (int64 [N, 2], height and width) for LLaVA-NeXT.
        `out`: a contiguous CPU tensor of `output_shape(...)` (e.g. one step of a
        rollout's storage) that receives the values in place of a new tensor: bfloat16
        when `self.dtype` is bfloat16 (written natively), float32 otherwise.
        """
        from transformers import BatchFeature

        if isinstance(obs, torch.Tensor):
            obs = obs.detach().cpu().numpy()
        if self.core is None:
            if out is not None:
                raise ValueError("out= needs a native pipeline; this one falls back to Hugging Face")
            return self._fallback(obs)
        if isinstance(obs, np.ndarray) and not obs.flags.c_contiguous:
            obs = np.ascontiguousarray(obs)
        # bfloat16 is written natively (half the memory traffic; the core stores its bits as
        # uint16); other dtypes convert from float32.
        bf16 = self.dtype == torch.bfloat16
        written, kind = (torch.bfloat16, "bfloat16") if bf16 else (torch.float32, "float32")
        if out is not None:
            if out.dtype != written or out.device.type != "cpu" or not out.is_contiguous():
                raise ValueError(f"out must be a contiguous {written} CPU tensor "
                                 f"(got {out.dtype} on {out.device}, contiguous={out.is_contiguous()})")
            target = out.view(torch.int16).numpy().view(np.uint16) if bf16 else out.numpy()
            _, grid = self.core(obs, target, dtype=kind)
            pixel_values = out
        else:
            values, grid = self.core(obs, dtype=kind)
            pixel_values = torch.from_numpy(values.view(np.int16) if bf16 else values).view(written)
        if pixel_values.dtype != self.dtype:
            pixel_values = pixel_values.to(self.dtype)
        data: dict[str, torch.Tensor] = {"pixel_values": pixel_values}
        if grid is not None:
            grid_thw = torch.tensor([1, grid[0], grid[1]], dtype=torch.long)
            data["image_grid_thw"] = grid_thw.repeat(len(obs), 1)
        if self.returns_sizes:
            data["image_sizes"] = torch.tensor([obs.shape[1], obs.shape[2]], dtype=torch.long).repeat(len(obs), 1)
        return BatchFeature(data=data)

    def _fallback(self, obs: Any) -> Any:
        _check_obs(obs)
        out = self.image_processor(
            images=list(obs), return_tensors="pt", input_data_format="channels_last"
        )
        pv = out["pixel_values"]
        if isinstance(pv, torch.Tensor) and pv.is_floating_point():
            out["pixel_values"] = pv.to(self.dtype)
        return out

    def __repr__(self) -> str:
        how = f"native, {self.backend} backend" if self.native else "Hugging Face fallback"
        return f"ImagePipeline({type(self.image_processor).__name__}, {how}, dtype={self.dtype})"


def _is_qwen(ip: Any) -> bool:
    return type(ip) in _qwen2vl_classes()


def _check_obs(obs: Any) -> None:
    """The native pipeline's input checks, for the fallback path."""
    if not isinstance(obs, np.ndarray):
        raise PreprocessTypeError(f"observations must be a numpy uint8 array [N, H, W, 3], got {type(obs).__name__}")
    if obs.dtype != np.uint8:
        raise PreprocessTypeError(f"observations must have dtype uint8, got {obs.dtype}")
    if obs.ndim != 4:
        raise PreprocessError(f"observations must have 4 dimensions [N, H, W, 3], got shape {list(obs.shape)}")
    if obs.shape[3] != 3:
        raise PreprocessError(
            f"observations must have 3 channels (RGB) in the last dimension, got shape {list(obs.shape)}"
        )
    if obs.shape[0] == 0:
        raise PreprocessError(f"empty batch: observations must hold at least one image, got shape {list(obs.shape)}")
