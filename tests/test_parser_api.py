"""parse_actions' interface: inputs, errors, per-text names, batches, and
the invalid-answer fallback policies."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import vlmrl_fast
from vlmrl_fast import ActionFallback, parse_actions
from vlmrl_fast.parser import ActionNamesError, ParserTypeError

BJ = ["stand", "hit"]


def test_arrays_and_dtypes() -> None:
    p = parse_actions(['{"action": "hit"}', "no key", '"action": ""'], BJ)
    assert p.index.dtype == np.int64 and p.key_start.dtype == np.int64 and p.value_span.dtype == np.int64
    assert p.valid.dtype == np.bool_
    assert p.value_span.shape == (3, 2)
    assert p.index.tolist() == [1, -1, -1]
    assert p.valid.tolist() == [True, False, False]
    assert p.key_start.tolist() == [1, -1, 0]
    assert p.value_span.tolist() == [[12, 15], [-1, -1], [-1, -1]]
    assert p.num_invalid == 2 and len(p) == 3


def test_accepts_tuples_generators_and_empty_batch() -> None:
    assert parse_actions(("action: hit",), ("stand", "hit")).index.tolist() == [1]
    assert parse_actions((t for t in ["action: stand"]), iter(BJ)).index.tolist() == [0]
    empty = parse_actions([], BJ)
    assert len(empty) == 0 and empty.value_span.shape == (0, 2)
    assert len(parse_actions([], [])) == 0


def test_per_text_action_names() -> None:
    texts = ['"action": "look"', '"action": "look"', '"action": "open fridge 1"']
    names = [["go to desk 1", "look"], ["look", "inventory"], ("open fridge 1",)]
    assert parse_actions(texts, names).index.tolist() == [1, 0, 0]
    # An ALFWorld state without admissible commands: every answer is invalid.
    assert parse_actions(["action: look"], [[]]).index.tolist() == [-1]


def test_duplicate_names_report_the_first() -> None:
    assert parse_actions(['"action": "Look"', '"action": "look or LOOK"'], ["go", "look", "LOOK"]).index.tolist() == [1, 1]


@pytest.mark.parametrize(
    "texts, names, exc, words",
    [
        ("action: hit", BJ, ParserTypeError, "texts"),
        (["ok", 3], BJ, ParserTypeError, "texts[1]"),
        ([b"action: hit"], BJ, ParserTypeError, "texts[0]"),
        (["ok"], "hit", ParserTypeError, "action_names"),
        (["ok"], ["hit", 1], ParserTypeError, "action_names[1]"),
        (["ok"], [], ActionNamesError, "empty"),
        (["ok"], ["hit", "  "], ActionNamesError, "action name 1"),
        (["a", "b"], [BJ], ActionNamesError, "1 action-name lists for 2 texts"),
        (["a"], [BJ, BJ], ActionNamesError, "2 action-name lists for 1 texts"),
        (["a"], [["x", 2]], ParserTypeError, "action_names[0][1]"),
        (None, BJ, ParserTypeError, "texts"),
    ],
)
def test_bad_input_raises_specific_errors(texts, names, exc, words) -> None:
    with pytest.raises(exc, match=__import__("re").escape(words)):
        parse_actions(texts, names)
    assert issubclass(ActionNamesError, ValueError) and issubclass(ParserTypeError, TypeError)


def test_lone_surrogates_keep_code_point_offsets() -> None:
    text = '\ud800 {"thoughts": "\udfff", "action": "hit"}'
    p = parse_actions([text], BJ)
    s, e = p.value_span[0]
    assert p.index[0] == 1 and text[s:e] == "hit" and text[p.key_start[0] :].startswith('"action"')


def test_large_batch_matches_small_batches() -> None:
    rng = np.random.default_rng(0)
    forms = ['{{"thoughts": "é{i}", "action": "{a}"}}', "action: {a}", "{a}", '"action": "{a} {b}"', "Ａction: {a}"]
    texts = [forms[i % 5].format(i=i, a=BJ[rng.integers(2)], b=BJ[rng.integers(2)]) for i in range(20_000)]
    big = parse_actions(texts, BJ)  # parallel path
    for lo in range(0, len(texts), 400):  # sequential path (small batches)
        small = parse_actions(texts[lo : lo + 400], BJ)
        assert (small.index == big.index[lo : lo + 400]).all()
        assert (small.value_span == big.value_span[lo : lo + 400]).all()
    assert 0 < big.num_invalid < len(texts)


def test_concurrent_calls_from_threads() -> None:
    """The GIL is released during parsing: threads run side by side, correctly."""
    texts = ['{"action": "hit"}'] * 50_000
    results: list[np.ndarray] = []

    def work() -> None:
        results.append(parse_actions(texts, BJ).index)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all((r == 1).all() for r in results)


def test_fallback_random_is_seeded_uniform_and_legal() -> None:
    texts = ["nothing"] * 6000 + ['"action": "hit"'] * 10
    p = parse_actions(texts, ["a", "b", "hit"])
    r1 = ActionFallback("random", seed=7).resolve(p, ["a", "b", "hit"])
    r2 = ActionFallback("random", seed=7).resolve(p, ["a", "b", "hit"])
    r3 = ActionFallback("random", seed=8).resolve(p, ["a", "b", "hit"])
    assert r1.num_invalid == 6000
    assert (r1.actions == r2.actions).all() and not (r1.actions == r3.actions).all()
    assert (r1.actions[-10:] == 2).all()  # valid answers keep their action
    counts = np.bincount(r1.actions[:6000], minlength=3)
    assert counts.min() > 1800  # ~2000 each
    # The generator advances: a second call draws new actions.
    fb = ActionFallback("random", seed=7)
    assert not (fb.resolve(p, ["a", "b", "hit"]).actions == fb.resolve(p, ["a", "b", "hit"]).actions).all()


def test_fallback_random_per_text_lists() -> None:
    names = [["look"], ["go to desk 1", "look", "inventory"], []]
    p = parse_actions(["x", "y", '"action": ""'], [names[0], names[1], ["z"]])
    fb = ActionFallback("random", seed=0)
    with pytest.raises(ActionNamesError, match="answer 2"):
        fb.resolve(p, names)
    r = fb.resolve(p, [names[0], names[1], ["z"]])
    assert r.actions[0] == 0 and 0 <= r.actions[1] < 3 and r.actions[2] == 0 and r.num_invalid == 3


def test_fallback_fixed_by_index_and_name() -> None:
    p = parse_actions(["??", '"action": "hit"'], BJ)
    assert ActionFallback("fixed", fixed_action=0).resolve(p, BJ).actions.tolist() == [0, 1]
    names = [["go to desk 1", "look"], ["look", "hit"]]
    p2 = parse_actions(["??", "??"], names)
    r = ActionFallback("fixed", fixed_action="look").resolve(p2, names)
    assert r.actions.tolist() == [1, 0] and r.num_invalid == 2
    with pytest.raises(ActionNamesError, match="out of range"):
        ActionFallback("fixed", fixed_action=5).resolve(p, BJ)
    with pytest.raises(ActionNamesError, match="'jump'"):
        ActionFallback("fixed", fixed_action="jump").resolve(p2, names)
    with pytest.raises(ValueError, match="policy"):
        ActionFallback("greedy")  # type: ignore[arg-type]


def test_exports() -> None:
    assert vlmrl_fast.parse_actions is parse_actions
    assert callable(vlmrl_fast.first_action_token)
    for name in ("parse_actions", "ParsedActions", "ActionFallback", "first_action_token", "prompts"):
        assert name in vlmrl_fast.__all__
