"""The built-in experts over 2,000 episodes each, and the Points24 solver
against an independent brute force written here."""

from fractions import Fraction
from functools import lru_cache

import numpy as np

from vlmrl_fast import make_vec


def run_episodes(env_id, episodes, num_envs=50, seed=0, **kwargs):
    """(return, reset info) of the first `episodes` finished episodes."""
    env = make_vec(env_id, num_envs, seed=seed, **kwargs)
    _, info = env.reset()
    start_numbers = list(info.get("Numbers", [None] * num_envs))
    returns = np.zeros(num_envs)
    resetting = np.zeros(num_envs, dtype=bool)
    out = []
    while len(out) < episodes:
        _, r, te, tr, info = env.step(env.expert_actions())
        live = ~resetting
        returns[live] += r[live]
        done = (te | tr) & live
        for i in np.flatnonzero(done):
            out.append((returns[i], start_numbers[i]))
            returns[i] = 0
        for i in np.flatnonzero(resetting):  # these envs just started a new episode
            start_numbers[i] = info["Numbers"][i] if "Numbers" in info else None
        resetting = done
    return out[:episodes]


@lru_cache(maxsize=None)
def solvable(numbers, target=24):
    """Brute force: some pair combined by + - * / leaves a solvable rest."""
    if len(numbers) == 1:
        return numbers[0] == target
    for i in range(len(numbers)):
        for j in range(len(numbers)):
            if i == j:
                continue
            a, b = numbers[i], numbers[j]
            rest = [numbers[k] for k in range(len(numbers)) if k not in (i, j)]
            results = [a + b, a - b, a * b] + ([a / b] if b != 0 else [])
            if any(solvable(tuple(sorted(rest + [c]))) for c in results):
                return True
    return False


def is_solvable(values):
    return solvable(tuple(sorted(Fraction(v) for v in values)))


def test_numberline_expert_always_succeeds():
    eps = run_episodes("NumberLine-v0", 2000)
    assert all(ret > 0 for ret, _ in eps)


def test_ezpoints_expert_always_succeeds():
    eps = run_episodes("EZPoints-v0", 2000)
    assert all(ret == 10 for ret, _ in eps)


def test_points24_expert_solves_every_solvable_deal():
    eps = run_episodes("Points24-v0", 2000)
    solved = [ret == 10 for ret, _ in eps]
    expected = [is_solvable(nums) for _, nums in eps]
    assert solved == expected
    assert 0.5 < np.mean(solved) < 0.95


def test_points24_solver_agrees_with_brute_force_on_500_deals():
    rng = np.random.default_rng(1)
    suits = "CDHS"
    ranks = "A23456789TJQK"
    deals = [[suits[rng.integers(4)] + ranks[rng.integers(13)] for _ in range(4)] for _ in range(500)]
    env = make_vec("Points24-v0", 500, seed=0, num_threads=2)
    _, info = env.reset(options={"states": [{"cards": d} for d in deals]})
    eq = env.action_names.index("=")
    first = env.expert_actions()
    for numbers, action in zip(info["Numbers"], first):
        assert (action != eq) == is_solvable(numbers), numbers


def test_blackjack_basic_strategy_wins_at_least_41_percent():
    eps = run_episodes("Blackjack-v0", 2000, seed=7)
    wins = np.mean([ret > 0 for ret, _ in eps])
    assert wins >= 0.41, wins
