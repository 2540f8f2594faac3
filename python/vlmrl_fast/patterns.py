"""Solutions of the formula games from a few shared patterns over the ascending card values.

The env's expert (the Rust solver) returns the first solution its search meets: a different shape for almost
every set of values (147 patterns cover Points24's 566 solvable sets, 6.1 bits of choice per deal). A small
model has to memorise that choice deal by deal. Here a *pattern* is a formula over the positions of the
ascending values (``(v0+v1)*(v3-v2)``); the patterns are ranked by a greedy cover of all deals, weighted by how
often each set of values is dealt, and each deal takes the first pattern in that ranking that reaches the
target. Points24 then needs 98 patterns, the 10 most used cover half of the dealt solvable deals (5.5 bits),
and writing a solution becomes: recall the pattern, copy the ascending values into it.

`pattern_plan(values, target, ops)` is the planner; `sft_thoughts = "pattern_plan"` trains on it.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Sequence
from fractions import Fraction
from math import comb

import numpy as np

OPERATORS = ("+", "-", "*", "/")
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul}  # "/" guards its zero divisor itself
MAX_VALUE = 10  # card values 1..10 (A = 1, J/Q/K = 10)


def _trees(positions: tuple[int, ...], ops: tuple[str, ...]):
    """Every binary expression tree over `positions` in this left-to-right order."""
    if len(positions) == 1:
        yield positions[0]
        return
    for k in range(1, len(positions)):
        for left in _trees(positions[:k], ops):
            for right in _trees(positions[k:], ops):
                for op in ops:
                    yield (op, left, right)


def _tokens(tree) -> tuple[list, int]:
    """Tokens with minimal brackets (as the env's solver writes them) and the precedence of the top operator."""
    if isinstance(tree, int):
        return [tree], 3
    op, left, right = tree
    p = _PREC[op]
    lt, lp = _tokens(left)
    rt, rp = _tokens(right)
    out = ["(", *lt, ")"] if lp < p else lt
    out = [*out, op]
    wrap = rp < p or (rp == p and op in "-/")  # a-(b-c) and a/(b*c) keep their brackets
    return [*out, *(["(", *rt, ")"] if wrap else rt)], p


def _evaluate(tree, cols: np.ndarray) -> np.ndarray:
    """The tree's value on every row of `cols` (float; NaN where it divides by zero)."""
    if isinstance(tree, int):
        return cols[:, tree]
    op, left, right = tree
    a, b = _evaluate(left, cols), _evaluate(right, cols)
    if op in _ARITH:
        return _ARITH[op](a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b == 0, np.nan, a / np.where(b == 0, 1, b))


def _exact(tree, values: Sequence[int]) -> Fraction | None:
    """Exact value of a pattern with `values` substituted (None on a division by zero): the float screen's check."""
    if isinstance(tree, int):
        return Fraction(values[tree])
    op, left, right = tree
    a, b = _exact(left, values), _exact(right, values)
    if a is None or b is None:
        return None
    if op in _ARITH:
        return _ARITH[op](a, b)
    return None if b == 0 else a / b


def _deal_weight(values: tuple[int, ...]) -> int:
    """How many deals of a 52-card deck (J/Q/K worth 10) have these values."""
    w = 1
    for v in set(values):
        w *= comb(16 if v == MAX_VALUE else 4, values.count(v))
    return w


@functools.lru_cache(maxsize=8)
def ranking(num_cards: int, target: int, ops: tuple[str, ...]) -> dict[tuple[int, ...], tuple]:
    """The pattern of every solvable set of `num_cards` ascending values: the greedy cover (each round takes
    the pattern that solves the most still-uncovered deals, by deal weight; ties to fewer brackets, then the
    pattern's text), each set taking the first pattern of the cover that solves it."""
    if not ops or any(op not in OPERATORS for op in ops):
        raise ValueError(f"pattern ops must be a non-empty subset of {OPERATORS}, got {ops!r}")
    if num_cards < 1 or num_cards > 4:
        raise ValueError(f"patterns cover 1 to 4 cards, got {num_cards}")
    sets = list(itertools.combinations_with_replacement(range(1, MAX_VALUE + 1), num_cards))
    cols = np.array(sets, dtype=np.float64)
    patterns: dict[str, tuple[tuple, list]] = {}
    for order in itertools.permutations(range(num_cards)):
        for tree in _trees(order, ops):
            toks, _ = _tokens(tree)
            patterns.setdefault(" ".join(map(str, toks)), (tree, toks))
    keys = sorted(patterns, key=lambda k: (k.count("("), k))
    hits = np.stack([np.abs(_evaluate(patterns[k][0], cols) - target) < 1e-6 for k in keys])  # [P, S]
    weight = np.array([_deal_weight(s) for s in sets], dtype=np.float64)
    uncovered = hits.any(axis=0)
    out: dict[tuple[int, ...], tuple] = {}
    while uncovered.any():
        best = int(np.argmax(hits.astype(np.float64) @ (weight * uncovered)))  # first of the ties
        tree, toks = patterns[keys[best]]
        for s in np.flatnonzero(hits[best] & uncovered):
            if _exact(tree, sets[s]) == target:  # floats only screen; exact arithmetic decides
                out[sets[s]] = tuple(toks)
                uncovered[s] = False
            else:
                hits[best, s] = False
        uncovered &= hits.any(axis=0)
    return out


def pattern_plan(values: Sequence[int], target: int, ops: Sequence[str] = OPERATORS) -> str:
    """The deal's solution from the shared patterns, written as the env's formula is ("(10-4)*(3+1)"), or ""
    when no formula of the values reaches `target`."""
    vals = tuple(sorted(int(v) for v in values))
    if any(v < 1 or v > MAX_VALUE for v in vals):
        raise ValueError(f"card values must be in 1..{MAX_VALUE}, got {list(values)}")
    toks = ranking(len(vals), int(target), tuple(ops)).get(vals)
    if toks is None:
        return ""
    return "".join(str(vals[t]) if isinstance(t, int) else t for t in toks)


def plan_tokens(plan: str) -> list[str]:
    """A plan's formula split into the env's tokens ("10", "+", "(" ...)."""
    out: list[str] = []
    for ch in plan:
        if ch.isdigit() and out and out[-1].isdigit():
            out[-1] += ch
        else:
            out.append(ch)
    return out
