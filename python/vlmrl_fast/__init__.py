"""vlmrl_fast: fine-tune vision-language models as decision-making agents with RL."""

from vlmrl_fast._core import __version__
from vlmrl_fast import prompts
from vlmrl_fast.parser import ActionFallback, ParsedActions, first_action_token, parse_actions

__all__ = [
    "__version__",
    "prompts",
    "parse_actions",
    "ParsedActions",
    "ActionFallback",
    "first_action_token",
]
