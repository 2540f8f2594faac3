"""vlmrl_fast: fine-tune vision-language models as decision-making agents with RL."""

from vlmrl_fast._core import (
    ActionTypeError,
    EnvArgumentError,
    EnvPanicError,
    InvalidActionError,
    InvalidStateError,
    ResetNeededError,
    __version__,
)
from vlmrl_fast.envs import VlmrlEnv, VlmrlVectorEnv, list_envs, make_vec, register_envs

register_envs()

__all__ = [
    "__version__",
    "ActionTypeError",
    "EnvArgumentError",
    "EnvPanicError",
    "InvalidActionError",
    "InvalidStateError",
    "ResetNeededError",
    "VlmrlEnv",
    "VlmrlVectorEnv",
    "list_envs",
    "make_vec",
    "register_envs",
]
