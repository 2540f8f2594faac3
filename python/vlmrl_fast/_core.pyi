"""Type stubs of the private native module vlmrl_fast._core."""

import numpy as np
import numpy.typing as npt

__version__: str

# --- preprocess (rust/py/src/preprocess.rs) ---

class PreprocessError(ValueError):
    """Observations or preprocessing settings that the pipeline cannot take (shape, size, empty batch)."""

class PreprocessTypeError(TypeError):
    """Observations of the wrong type: the pipeline takes a uint8 numpy array [N, H, W, 3]."""

class PreprocessInternalError(RuntimeError):
    """A bug inside the native preprocessing (a Rust panic), reported instead of crashing."""

class Preprocessor:
    """Native preprocessing pipeline: uint8 observations [N, H, W, 3] to pixel_values.

    layout: "channels_first" ([N, 3, H, W], CLIP / SigLIP) or "qwen2_vl" (patch rows).
    backend: "pil" or "torchvision", the Hugging Face backend whose arithmetic is reproduced.
    resample: PIL resampling code (1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING); None: no resize.
    Size: shortest_edge, or height and width, or (qwen2_vl) min_pixels and max_pixels.
    """

    def __init__(
        self,
        *,
        layout: str,
        resample: int | None = None,
        shortest_edge: int | None = None,
        height: int | None = None,
        width: int | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        crop_height: int | None = None,
        crop_width: int | None = None,
        backend: str = "pil",
        rescale_factor: float | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        patch_size: int = 14,
        merge_size: int = 2,
        temporal_patch_size: int = 2,
    ) -> None: ...
    def plan(self, n: int, height: int, width: int) -> tuple[list[int], tuple[int, int] | None]:
        """Output shape and Qwen2-VL grid (grid_h, grid_w) for n images of height x width."""
    def __call__(
        self, obs: npt.NDArray[np.uint8], out: npt.NDArray[np.float32] | None = None
    ) -> tuple[npt.NDArray[np.float32], tuple[int, int] | None]:
        """Preprocesses obs (uint8 [N, H, W, 3], C-contiguous, read in place) with the GIL released.

        Returns (pixel_values float32, grid or None); writes into `out` when given.
        """
