"""Type stubs of the private native module vlmrl_fast._core."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from typing_extensions import final

__version__: str

# --- parser (rust/py/src/parser.rs) ---

class ActionNamesError(ValueError):
    """The action names given to parse_actions are unusable (an empty name, or a per-text list count that differs from the text count)."""

class ParserTypeError(TypeError):
    """An argument of parse_actions has the wrong type (texts must be str, action names str)."""

class ParserInternalError(RuntimeError):
    """A bug in the parser (a Rust panic), reported instead of crashing the process."""

def parse_actions(
    texts: list[str] | tuple[str, ...],
    action_names: list[str] | tuple[str, ...] | Sequence[list[str] | tuple[str, ...]],
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.int64]
]:
    """Parse a batch of answers; see vlmrl_fast.parse_actions. `action_names` is
    one list of str for all texts, or one list per text. Returns the arrays
    (index int64 [N], valid bool [N], key_start int64 [N], value_span int64 [N, 2])."""

def prompt_templates() -> dict[str, str]:
    """The prompt templates built into this module: {env_id: TOML text}."""


# --- engine (rust/py/src/errors.rs, env.rs, buffer.rs) ---

class InvalidActionError(ValueError):
    """An action an env does not accept (names the env index and the value)."""

class InvalidStateError(ValueError):
    """A malformed explicit state passed to reset (names the env index and the value)."""

class EnvArgumentError(ValueError):
    """A bad argument: unknown env id, unknown kwarg, wrong shape or size."""

class ActionTypeError(TypeError):
    """Actions of the wrong type or dtype."""

class ResetNeededError(RuntimeError):
    """step() before reset(), or after an env broke."""

class EnvPanicError(RuntimeError):
    """An env's code panicked; the env must be reset."""

def list_envs() -> list[str]:
    """The registered env ids (without the "vlmrl_fast/" namespace)."""

@final
class VecEnv:
    """N environments of one id, stepped together in Rust threads."""

    def __new__(
        cls,
        env_id: str,
        num_envs: int,
        seed: int,
        num_threads: int = 1,
        autoreset_mode: str = "next_step",
        kwargs: dict[str, Any] | None = None,
    ) -> VecEnv: ...
    @property
    def env_id(self) -> str:
        """The env id without namespace, e.g. "Points24-v0"."""
    @property
    def num_envs(self) -> int: ...
    @property
    def dynamic_actions(self) -> bool:
        """Whether the action set changes from step to step (ALFWorld)."""
    def action_names(self, index: int) -> list[str]:
        """The current action names of env `index`."""
    def reset(
        self,
        seed: int | None = None,
        states: list[Any] | None = None,
        mask: list[bool] | None = None,
        with_info: bool = True,
        group_size: int = 1,
    ) -> dict[str, Any] | None:
        """Resets the envs (all, or where `mask` is True); returns the vector info."""
    def step(self, actions: npt.NDArray[np.int64], with_info: bool = True) -> dict[str, Any] | None:
        """Steps every env; returns the vector info."""
    def env_info(self, index: int) -> dict[str, Any]:
        """The info dict of env `index`."""
    def expert_actions(self) -> npt.NDArray[np.int64]:
        """The expert's action for every env."""
    def expert_plans(self) -> list[str | None]:
        """The expert's plan of every env (the formula games' full solution; None where a game has none)."""
    def state_keys(self) -> npt.NDArray[np.uint64]:
        """A hashable key of every env's current state (equal exactly for equal states)."""
    @property
    def obs(self) -> npt.NDArray[np.uint8]:
        """Observations [num_envs, 300, 300, 3]: a view of the Rust buffer."""
    @property
    def rewards(self) -> npt.NDArray[np.float64]:
        """Rewards of the last step (view)."""
    @property
    def terminated(self) -> npt.NDArray[np.bool_]:
        """Terminated flags of the last step (view)."""
    @property
    def truncated(self) -> npt.NDArray[np.bool_]:
        """Truncated flags of the last step (view)."""

@final
class TrajectoryBuffer:
    """Rollout storage for T steps x N envs; every array is a view of Rust memory."""

    def __new__(cls, num_steps: int, num_envs: int, max_tokens: int = 256, pad_id: int = 0) -> TrajectoryBuffer: ...
    @property
    def num_steps(self) -> int: ...
    @property
    def num_envs(self) -> int: ...
    @property
    def max_tokens(self) -> int: ...
    def __len__(self) -> int: ...
    def reset(self) -> None:
        """Forgets the stored steps."""
    def add(
        self,
        actions: Any,
        rewards: Any,
        terminated: Any,
        truncated: Any,
        values: Any,
        logprobs: Any,
        token_ids: list[list[int]] | None = None,
    ) -> int:
        """Appends one step of all envs; returns its step index."""
    def tokens(self, step: int, index: int) -> npt.NDArray[np.int64]:
        """Env `index`'s generated tokens at `step`, without padding."""
    def compute_gae(self, gamma: float, lam: float) -> None:
        """GAE over all steps into `advantages` and `returns`."""
    @property
    def actions(self) -> npt.NDArray[np.int64]: ...
    @property
    def rewards(self) -> npt.NDArray[np.float32]: ...
    @property
    def terminated(self) -> npt.NDArray[np.bool_]: ...
    @property
    def truncated(self) -> npt.NDArray[np.bool_]: ...
    @property
    def values(self) -> npt.NDArray[np.float32]: ...
    @property
    def next_values(self) -> npt.NDArray[np.float32]: ...
    @property
    def logprobs(self) -> npt.NDArray[np.float32]: ...
    @property
    def token_lengths(self) -> npt.NDArray[np.int64]: ...
    @property
    def advantages(self) -> npt.NDArray[np.float32]: ...
    @property
    def returns(self) -> npt.NDArray[np.float32]: ...
    @property
    def token_ids(self) -> npt.NDArray[np.int64]:
        """[T, N, max_tokens] generated token ids, padded with pad_id."""

def gae(
    rewards: npt.NDArray[Any],
    values: npt.NDArray[Any],
    next_values: npt.NDArray[Any],
    terminated: npt.NDArray[Any],
    truncated: npt.NDArray[Any],
    gamma: float,
    lam: float,
) -> tuple[npt.NDArray[np.floating[Any]], npt.NDArray[np.floating[Any]]]:
    """GAE on the CPU over [T, N] arrays; returns (advantages, returns)."""

# --- preprocess (rust/py/src/preprocess.rs) ---

class PreprocessError(ValueError):
    """Observations or preprocessing settings that the pipeline cannot take (shape, size, empty batch)."""

class PreprocessTypeError(TypeError):
    """Observations of the wrong type: the pipeline takes a uint8 numpy array [N, H, W, 3]."""

class PreprocessInternalError(RuntimeError):
    """A bug inside the native preprocessing (a Rust panic), reported instead of crashing."""

@final
class Preprocessor:
    """Native preprocessing pipeline: uint8 observations [N, H, W, 3] to pixel_values.

    layout: "channels_first" ([N, 3, H, W], CLIP / SigLIP), "qwen2_vl" (patch rows) or
    "llava_next" ([N, 1 + tiles, 3, T, T]: the image resized to height x width = T x T, then its
    tiles; T = crop_height = crop_width, canvases image_grid_pinpoints [(height, width), ...]).
    backend: "pil" (Pillow <= 12), "pil13" (Pillow >= 13: vertical pass first when the height
    shrinks most) or "torchvision", the Hugging Face backend whose arithmetic is reproduced.
    resample: PIL resampling code (1 LANCZOS, 2 BILINEAR, 3 BICUBIC, 4 BOX, 5 HAMMING); None: no resize.
    Size: shortest_edge, or height and width, or (qwen2_vl) min_pixels and max_pixels.
    """

    def __new__(
        cls,
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
        image_grid_pinpoints: list[tuple[int, int]] | None = None,
    ) -> Preprocessor: ...
    def plan(self, n: int, height: int, width: int) -> tuple[list[int], tuple[int, int] | None]:
        """Output shape and Qwen2-VL grid (grid_h, grid_w) for n images of height x width."""
    def __call__(
        self,
        obs: npt.NDArray[np.uint8],
        out: npt.NDArray[np.float32] | npt.NDArray[np.uint16] | None = None,
        dtype: str = "float32",
    ) -> tuple[npt.NDArray[np.float32] | npt.NDArray[np.uint16], tuple[int, int] | None]:
        """Preprocesses obs (uint8 [N, H, W, 3], C-contiguous, read in place) with the GIL released.

        Returns (pixel_values, grid or None): float32 values, or for dtype="bfloat16" uint16
        holding bfloat16 bits (round to nearest even); writes into `out` (that element type)
        when given.
        """

# --- ALFWorld (rust/py/src/alfworld.rs) ---

ALFWORLD_TASK_TYPES: tuple[str, ...]
"""ALFWorld's six task types, by their ALFWorld names, in ALFWorld's order."""
def alfworld_text_image(
    task: str, location: str, items: list[str], held: str | None, feedback: str
) -> npt.NDArray[np.uint8]:
    """Draws an ALFWorld view from text: the task, the "At: ..." line, the names
    seen there, the held object and the last feedback. Returns a new
    [300, 300, 3] uint8 array."""
