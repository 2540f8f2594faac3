"""Text-to-action parsing of model answers, invalid-answer fallbacks and the
CoT/action token split.

The parsing itself runs in Rust (``vlmrl_fast._core.parse_actions``), for a
whole batch at once with the GIL released. The rules, in short: the *last*
``action`` key of the answer (case-insensitive; double, single or no quotes;
then a colon) is read; its value (quoted string, unquoted run up to ``,`` ``}``
or a line end, number, or one-element list) is trimmed, unquoted and
case-folded and must either equal an action name (whitespace runs collapsed,
one trailing period allowed) or contain exactly one action name as a whole
token (word boundaries for words, symbols stand alone, longest name first).
Everything else is invalid: no key, an empty value, no match, two different
actions. See README.md, section "Parser", for the full description.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Union

import numpy as np

from vlmrl_fast import _core
from vlmrl_fast._core import ActionNamesError, ParserInternalError, ParserTypeError

__all__ = [
    "ActionNamesError",
    "ParserTypeError",
    "ParserInternalError",
    "ParsedActions",
    "ResolvedActions",
    "ActionFallback",
    "parse_actions",
    "first_action_token",
]

ActionNames = Union[Sequence[str], Sequence[Sequence[str]]]


@dataclass(frozen=True)
class ParsedActions:
    """The parse of a batch of N answers (numpy arrays, code-point offsets).

    Attributes:
        index: int64 [N], the action index, -1 when the answer is invalid.
        valid: bool [N], ``index >= 0``.
        key_start: int64 [N], offset of the action key (its opening quote, or
            its ``a`` when unquoted), -1 when the answer has no action key;
            ``text[key_start:]`` is the action part of the answer.
        value_span: int64 [N, 2], start and end of the trimmed, unquoted
            action value, (-1, -1) when there is none.
    """

    index: np.ndarray
    valid: np.ndarray
    key_start: np.ndarray
    value_span: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def num_invalid(self) -> int:
        """How many answers named no action (or more than one)."""
        return int(len(self) - np.count_nonzero(self.valid))


def _as_list(x: object, what: str) -> list:
    if isinstance(x, (str, bytes)):
        raise ParserTypeError(f"{what} must be a sequence of str, not a single {type(x).__name__}")
    if isinstance(x, (list, tuple)):
        return x  # type: ignore[return-value]
    try:
        return list(x)  # type: ignore[call-overload]
    except TypeError:
        raise ParserTypeError(f"{what} must be a sequence, not {type(x).__name__}") from None


def parse_actions(texts: Sequence[str], action_names: ActionNames) -> ParsedActions:
    """Parse a batch of answers into action indices.

    Args:
        texts: the N answers (any sequence of str).
        action_names: one sequence of names shared by all texts (the card
            games), or one sequence per text (ALFWorld's admissible commands).

    Returns:
        A :class:`ParsedActions` with ``index``, ``valid``, ``key_start`` and
        ``value_span``.

    Raises:
        ParserTypeError (TypeError): a text or name is not a str.
        ActionNamesError (ValueError): an empty name, an empty ``action_names``
            for a non-empty batch, or a per-text count different from N.
    """
    texts = _as_list(texts, "texts")
    names = _as_list(action_names, "action_names")
    if names and not isinstance(names[0], str):
        names = [_as_list(n, f"action_names[{i}]") for i, n in enumerate(names)]
    index, valid, key_start, value_span = _core.parse_actions(texts, names)
    return ParsedActions(index, valid, key_start, value_span)


class ResolvedActions(NamedTuple):
    """Actions to execute after the fallback policy, with the invalid count."""

    actions: np.ndarray
    """int64 [N]: the parsed action, or the fallback one where invalid."""
    num_invalid: int
    """How many answers were invalid (and got the fallback action)."""


class ActionFallback:
    """The policy for invalid answers.

    ``policy="random"`` draws a uniformly random legal action from its own
    seeded generator (as the paper does); ``policy="fixed"`` always takes
    ``fixed_action``, an index or an action name (a name is looked up in each
    text's action names, which suits ALFWorld commands such as ``"look"``).
    """

    def __init__(
        self,
        policy: Literal["random", "fixed"] = "random",
        *,
        seed: int | None = None,
        fixed_action: int | str = 0,
    ) -> None:
        if policy not in ("random", "fixed"):
            raise ValueError(f"policy must be 'random' or 'fixed', got {policy!r}")
        if policy == "fixed" and not isinstance(fixed_action, (int, np.integer, str)):
            raise TypeError(f"fixed_action must be an int index or a str name, got {type(fixed_action).__name__}")
        self.policy = policy
        self.fixed_action = fixed_action
        self.rng = np.random.default_rng(seed)

    def resolve(self, parsed: ParsedActions, action_names: ActionNames) -> ResolvedActions:
        """Replace the invalid entries of ``parsed.index`` by fallback actions.

        ``action_names`` is what was given to :func:`parse_actions` (one list,
        or one list per text); it fixes how many actions are legal.
        """
        n = len(parsed)
        names = _as_list(action_names, "action_names")
        shared = not names or isinstance(names[0], str)
        if not shared and len(names) != n:
            raise ActionNamesError(f"got {len(names)} action-name lists for {n} parsed answers")
        actions = parsed.index.copy()
        bad = np.flatnonzero(~parsed.valid)
        for i in bad:
            legal = names if shared else names[i]
            if len(legal) == 0:
                raise ActionNamesError(f"answer {i} is invalid and has no legal action to fall back to")
            actions[i] = self._fallback(legal, int(i))
        return ResolvedActions(actions, int(bad.size))

    def _fallback(self, legal: Sequence[str], i: int) -> int:
        if self.policy == "random":
            return int(self.rng.integers(len(legal)))
        if isinstance(self.fixed_action, str):
            try:
                return list(legal).index(self.fixed_action)
            except ValueError:
                raise ActionNamesError(
                    f"fixed_action {self.fixed_action!r} is not among the action names of answer {i}"
                ) from None
        k = int(self.fixed_action)
        if not 0 <= k < len(legal):
            raise ActionNamesError(f"fixed_action {k} is out of range for answer {i} ({len(legal)} actions)")
        return k


def first_action_token(offset_mapping: Sequence[Sequence[int]] | np.ndarray, key_start: int) -> int:
    """Index of the first action token of a generated answer.

    ``offset_mapping`` holds the (start, end) character offsets of each token
    of the answer text (e.g. a fast tokenizer's ``return_offsets_mapping``),
    ``key_start`` the parser's offset of the action key. The first action
    token is the first whose span ends after ``key_start``: tokens before it
    are chain-of-thought, it and the rest are the action part. Special tokens
    with empty (0, 0) spans are never chosen.

    Returns ``len(offset_mapping)`` when ``key_start < 0`` (no action key: every
    token counts as chain-of-thought) or when no token reaches ``key_start``.
    """
    offsets = np.asarray(offset_mapping, dtype=np.int64).reshape(-1, 2)
    t = offsets.shape[0]
    if key_start < 0 or t == 0:
        return t
    after = offsets[:, 1] > key_start
    return int(np.argmax(after)) if after.any() else t
