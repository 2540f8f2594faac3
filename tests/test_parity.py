"""Rules parity with the original gym_cards through gymnasium, each item a
scripted episode: NumberLine's start on the target, EZPoints/Points24
scoring="python", EZPoints target_points, Blackjack natural and sab."""

import time

import gymnasium as gym
import pytest

import vlmrl_fast  # noqa: F401  (registers the envs)
from vlmrl_fast import InvalidStateError
from vlmrl_fast.envs import EnvArgumentError


def episode(env_id, state, actions, **kwargs):
    """Plays `actions` (names) from `state`; returns [(reward, terminated)]."""
    env = gym.make(f"vlmrl_fast/{env_id}", **kwargs).unwrapped
    env.reset(seed=0, options={"state": state})
    out = []
    for name in actions:
        _, r, te, tr, _ = env.step(env.action_names.index(name))
        out.append((r, te or tr))
    return out


def test_numberline_explicit_start_on_target_is_rejected():
    env = gym.make("vlmrl_fast/NumberLine-v0").unwrapped
    with pytest.raises(InvalidStateError, match="current == target == 4"):
        env.reset(options={"state": {"current": 4, "target": 4}})
    assert episode("NumberLine-v0", {"current": 3, "target": 4}, ["+"]) == [(1, True)]


FORMULA = ["2", "/", "5", "*", "6", "*", "10", "="]  # 24 exactly, 24.000000000000004 in Python
FLOORED = ["5", "/", "2", "/", "/", "(", "1", "/", "10", ")", "="]  # 25 exactly, 24.0 in Python


@pytest.mark.parametrize(
    "cards, formula, exact, python",
    [(["H2", "S5", "D6", "CT"], FORMULA, 10, -1), (["H5", "S2", "DA", "CK"], FLOORED, -1, 10)],
)
def test_points24_scoring_python_follows_gym_cards(cards, formula, exact, python):
    for kwargs, want in [({}, exact), ({"scoring": "exact"}, exact), ({"scoring": "python"}, python)]:
        steps = episode("Points24-v0", {"cards": cards}, formula, **kwargs)
        assert steps[-1] == (want, True), kwargs
        assert all(r == 0 for r, _ in steps[:-1])


def test_power_tower_returns_at_once_under_both_scorings():
    tower = ["9", "*", "*", "9", "*", "*", "9", "*", "1", "="]
    for kwargs in ({}, {"scoring": "python"}):
        t0 = time.perf_counter()
        steps = episode("Points24-v0", {"cards": ["H9", "S9", "D9", "CA"]}, tower, **kwargs)
        assert steps[-1] == (-1, True)
        assert time.perf_counter() - t0 < 1.0


def test_ezpoints_target_points_and_scoring():
    state = {"cards": ["H3", "S4"]}
    assert episode("EZPoints-v0", state, ["3", "*", "4", "="])[-1] == (10, True)
    assert episode("EZPoints-v0", state, ["3", "+", "4", "="], target_points=7)[-1] == (10, True)
    assert episode("EZPoints-v0", state, ["3", "*", "4", "="], target_points=7)[-1] == (-1, True)
    assert episode("EZPoints-v0", state, ["4", "*", "3", "="], scoring="python")[-1] == (10, True)
    with pytest.raises(EnvArgumentError, match="scoring must be"):
        gym.make("vlmrl_fast/EZPoints-v0", scoring="floats")


@pytest.mark.parametrize(
    "kwargs, natural_win, both_natural",
    [({}, 1, 0), ({"natural": True}, 1.5, 0), ({"sab": True}, 1, 0), ({"sab": True, "natural": True}, 1, 0)],
)
def test_blackjack_natural_and_sab(kwargs, natural_win, both_natural):
    player = ["HA", "SK"]
    assert episode("Blackjack-v0", {"player": player, "dealer": ["DT", "C8"]}, ["stand"], **kwargs) == [
        (natural_win, True)
    ]
    assert episode("Blackjack-v0", {"player": player, "dealer": ["DA", "CQ"]}, ["stand"], **kwargs) == [
        (both_natural, True)
    ]
    # The dealer draws to 21 with three cards: a push, unless sab lets the natural win.
    dealer21 = {"player": player, "dealer": ["D6", "C5"], "deck": ["HT"]}
    want = 1 if kwargs.get("sab") else 0
    assert episode("Blackjack-v0", dealer21, ["stand"], **kwargs) == [(want, True)]
