"""Property tests of parse_actions over arbitrary strings (hypothesis).

Strings are generated and parsed in large batches, one parse_actions call
per batch, so the > 100,000 strings stay cheap (110 batches of 1000). Properties: no exception,
every offset inside the text, and a valid answer's value span contains the
matched name (after the parser's own case folding and whitespace collapsing).
"""

from __future__ import annotations

import json
import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlmrl_fast import parse_actions

VOCABS = [
    ["-", "+"],
    ["stand", "hit"],
    ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "+", "-", "*", "/", "(", ")", "="],
    ["go to cabinet 1", "go to cabinet 10", "take apple 1 from countertop 2", "look"],
]
BATCH = 1000
EXAMPLES = int(os.environ.get("VLMRL_PROP_EXAMPLES", 110))  # 110 batches of 1000 strings: 110,000 strings per run

# Rust's char::is_whitespace (Unicode White_Space), which the parser uses.
_WS = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | {chr(c) for c in range(0x2000, 0x200B)}


def _fold(c: str) -> str:
    low = c.lower()
    return low if len(low) == 1 else c


def normalize(s: str) -> str:
    """The parser's matching form: folded, whitespace runs collapsed, trimmed."""
    out: list[str] = []
    for word in "".join(" " if c in _WS else _fold(c) for c in s).split(" "):
        if word:
            out.append(word)
    return " ".join(out)


SPECIAL = ['"action"', "'action'", "action", "Action", ":", " : ", "\n", '"', "'", "[", "]", "{", "}", ",",
           "\\", "```", "<|im_end|>", "hit", "stand", "10", "+", "(", "go to cabinet 1", ".", "\x00", "😀", "İ", "K"]
# Any code point, lone surrogates included (Python str can hold them).
ANY_CHAR = st.characters(codec=None, categories=None)
FRAGMENT = st.one_of(st.sampled_from(SPECIAL), ANY_CHAR, st.text(max_size=10), st.text(ANY_CHAR, max_size=4))


def expand(fragments: list[str], seed: int, n: int) -> list[str]:
    """n strings built from hypothesis' fragments: random concatenations, and
    well-formed answers with fragments inserted and truncations. Hypothesis
    draws the fragments and the seed; drawing 1000 full strings per example
    would blow its per-example budget and crawl."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            s = "".join(rng.choice(fragments) for _ in range(rng.randrange(12)))
        else:
            names = rng.choice(VOCABS)
            answer = {"thoughts": rng.choice(fragments), "action": rng.choice(names)}
            s = json.dumps(answer, ensure_ascii=rng.random() < 0.5)
            for _ in range(rng.randrange(3)):
                at = rng.randrange(len(s) + 1)
                s = s[:at] + rng.choice(fragments) + s[at:]
        if rng.random() < 0.4:
            s = s[: rng.randrange(len(s) + 1)]
        out.append(s)
    return out


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    fragments=st.lists(FRAGMENT, min_size=4, max_size=30),
    seed=st.integers(0, 2**32),
    which=st.integers(0, len(VOCABS) - 1),
)
def test_arbitrary_strings(fragments: list[str], seed: int, which: int) -> None:
    batch = expand(fragments, seed, BATCH)
    names = VOCABS[which]
    p = parse_actions(batch, names)
    assert len(p) == len(batch)
    for i, text in enumerate(batch):
        n = len(text)
        k, (s, e), idx = int(p.key_start[i]), (int(x) for x in p.value_span[i]), int(p.index[i])
        assert -1 <= k < n
        assert bool(p.valid[i]) == (idx >= 0) and idx < len(names)
        if s == -1:
            assert e == -1 and idx == -1
            continue
        assert 0 <= k < s < e <= n
        if idx >= 0:
            # Lone surrogates reach the parser as U+FFFD; names are ASCII.
            assert normalize(names[idx]) in normalize(text[s:e]), (text, names[idx])
    # The batch must exercise both outcomes, or the properties test little.
    assert 0 < p.num_invalid < len(batch)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 3), st.text(max_size=60), st.integers(0, 100)), min_size=50, max_size=50))
def test_well_formed_answers_round_trip(rows: list[tuple[int, str, int]]) -> None:
    """A json.dumps answer with any thoughts parses to its action, per text."""
    texts, lists, want = [], [], []
    for which, thoughts, pick in rows:
        names = VOCABS[which]
        a = pick % len(names)
        texts.append(json.dumps({"thoughts": thoughts, "action": names[a]}))
        lists.append(names)
        want.append(a)
    p = parse_actions(texts, lists)
    assert p.index.tolist() == want
    assert p.num_invalid == 0
    for t, k in zip(texts, p.key_start.tolist()):
        assert t[k:].startswith('"action"')
