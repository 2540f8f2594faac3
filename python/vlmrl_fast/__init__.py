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
from vlmrl_fast.envs import (
    ALFWORLD_TASK_TYPES,
    VlmrlEnv,
    VlmrlVectorEnv,
    list_envs,
    make_vec,
    register_envs,
)
from vlmrl_fast import prompts
from vlmrl_fast.parser import ActionFallback, ParsedActions, first_action_token, parse_actions

register_envs()

from vlmrl_fast import alfworld_tw as _alfworld_tw  # noqa: E402

_alfworld_tw.register()

__all__ = [
    "__version__",
    "ALFWORLD_TASK_TYPES",
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
    "prompts",
    "parse_actions",
    "ParsedActions",
    "ActionFallback",
    "first_action_token",
]
