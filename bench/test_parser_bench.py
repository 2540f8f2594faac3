"""Throughput of parse_actions against a plain-Python substring parser in the
style of the paper's code, on the same ~200-character answers.

Run: python -m pytest bench/test_parser_bench.py --benchmark-only
The Rust parser uses rayon's global pool (all cores; RAYON_NUM_THREADS
overrides). answers_per_s and (on the Rust row) ratio_vs_python_parser, both from
the median round, are printed and stored in the benchmarks' extra_info.
"""

from __future__ import annotations

import random

import pytest

from vlmrl_fast import parse_actions

# A large rollout batch (the trainer parses N_envs answers per step); 20,000
# answers of ~200 characters are 4.6 MB of text.
N = 20_000
NAMES = ["stand", "hit"]
_medians: dict[str, float] = {}


def make_answers(n: int, seed: int = 0) -> list[str]:
    """Blackjack CoT answers of about 200 characters, a few of them invalid."""
    rng = random.Random(seed)
    words = "my cards sum to twelve and the dealer shows a seven so the odds favour one more card now".split()
    out = []
    for _ in range(n):
        thoughts = " ".join(rng.choice(words) for _ in range(rng.randrange(30, 40)))
        action = rng.choice(["hit", "stand", "Hit", "stand.", "I hit", "wait"])
        out.append(f'{{"thoughts": "{thoughts}", "action": "{action}"}}')
    return out


def paper_style_parse(texts: list[str], names: list[str], rng: random.Random) -> list[int]:
    """The paper's approach, re-implemented: lowercase, cut at '"action":',
    keep the names that occur as substrings, take the one if exactly one
    occurs, else a random action."""
    out = []
    for text in texts:
        low = text.lower()
        at = low.find('"action":')
        tail = low[at:]
        found = {name for name in names if name in tail}
        out.append(names.index(found.pop()) if len(found) == 1 else rng.randrange(len(names)))
    return out


@pytest.fixture(scope="module")
def answers() -> list[str]:
    texts = make_answers(N)
    mean_len = sum(map(len, texts)) / len(texts)
    assert 180 <= mean_len <= 230, mean_len
    return texts


def _record(benchmark, name: str) -> None:
    median = benchmark.stats.stats.median  # a preempted round on a shared machine moves a mean
    _medians[name] = median
    benchmark.extra_info["answers_per_s"] = round(N / median)
    if "python" in _medians and "rust" in _medians:
        ratio = _medians["python"] / _medians["rust"]
        benchmark.extra_info["ratio_vs_python_parser"] = round(ratio, 2)
        print(f"\nparse_actions: {N / _medians['rust'] / 1e6:.2f} M answers/s, "
              f"python substring parser: {N / _medians['python'] / 1e6:.3f} M answers/s, ratio {ratio:.1f}x")


@pytest.mark.benchmark(group="parser")
def test_python_substring_parser(benchmark, answers: list[str]) -> None:
    rng = random.Random(0)
    out = benchmark.pedantic(paper_style_parse, args=(answers, NAMES, rng), rounds=5, iterations=1)
    assert len(out) == N
    _record(benchmark, "python")


@pytest.mark.benchmark(group="parser")
def test_rust_parse_actions(benchmark, answers: list[str]) -> None:
    out = benchmark.pedantic(parse_actions, args=(answers, NAMES), rounds=200, iterations=1, warmup_rounds=5)
    assert len(out) == N and 0 < out.num_invalid < N
    _record(benchmark, "rust")
