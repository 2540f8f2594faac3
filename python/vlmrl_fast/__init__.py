"""vlmrl_fast: fine-tune vision-language models as decision-making agents with RL."""

from vlmrl_fast._core import __version__

__all__ = ["__version__"]
