"""Type stubs of the private native module vlmrl_fast._core."""

__version__: str

# --- parser (rust/py/src/parser.rs) ---
import numpy as np
import numpy.typing as npt
from collections.abc import Sequence

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
