"""Property tests of parse_actions over arbitrary strings (hypothesis).

Strings are generated and parsed in large batches, one parse_actions call
per batch, so the > 100,000 strings stay cheap. Properties: no exception,
every offset inside the text, and a valid answer's value span contains the
matched name (after the parser's own case folding and whitespace collapsing).
"""

from __future__ import annotations

import json

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
EXAMPLES = 110  # 110 batches of 1000 strings: 110,000 strings per run

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


FRAGMENTS = st.sampled_from(
    ['"action"', "'action'", "action", "Action", ":", " : ", "\n", '"', "'", "[", "]", "{", "}", ",",
     "\\", "```", "<|im_end|>", "hit", "stand", "10", "+", "(", "go to cabinet 1", ".", "\x00", "😀", "İ", "K"]
)
# Any code point, lone surrogates included (Python str can hold them).
ANY_CHAR = st.characters(codec=None, categories=None)
RANDOM_TEXT = st.lists(st.one_of(FRAGMENTS, ANY_CHAR, st.text(max_size=8)), max_size=30).map("".join)


@st.composite
def valid_then_cut(draw: st.DrawFn) -> str:
    """A well-formed answer, then maybe a random insertion and a truncation."""
    names = draw(st.sampled_from(VOCABS))
    thoughts = draw(st.text(max_size=40))
    s = json.dumps({"thoughts": thoughts, "action": draw(st.sampled_from(names))}, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(s)))
        s = s[:at] + draw(RANDOM_TEXT) + s[at:]
    return s[: draw(st.integers(0, len(s)))] if draw(st.booleans()) else s


TEXTS = st.one_of(RANDOM_TEXT, valid_then_cut())


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(batch=st.lists(TEXTS, min_size=BATCH, max_size=BATCH), which=st.integers(0, len(VOCABS) - 1))
def test_arbitrary_strings(batch: list[str], which: int) -> None:
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
