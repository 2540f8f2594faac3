"""The vector env: determinism (EnvPool style), auto-reset modes, explicit
states, dynamic action sets, errors and panics, gymnasium conformance."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import vlmrl_fast
from vlmrl_fast import (
    ActionTypeError,
    EnvArgumentError,
    EnvPanicError,
    InvalidActionError,
    InvalidStateError,
    ResetNeededError,
    make_vec,
)

GAMES = ["NumberLine-v0", "EZPoints-v0", "Points24-v0", "Blackjack-v0"]


def test_registration_and_list_envs():
    assert vlmrl_fast.list_envs()[: len(GAMES)] == [f"vlmrl_fast/{g}" for g in GAMES]
    for env_id in vlmrl_fast.list_envs():
        assert env_id in gym.registry
    env = gym.make_vec("vlmrl_fast/NumberLine-v0", num_envs=3, vectorization_mode="vector_entry_point")
    assert isinstance(env, vlmrl_fast.VlmrlVectorEnv) and env.num_envs == 3


@pytest.mark.parametrize("game", GAMES)
def test_check_env(game):
    env = gym.make(f"vlmrl_fast/{game}")
    check_env(env.unwrapped)
    assert env.unwrapped.expert_action() in range(env.action_space.n)


@pytest.mark.parametrize("game", GAMES)
def test_determinism_5000_steps_seeds_and_threads(game):
    n, steps = 4, 5000
    a = make_vec(game, n, seed=123, num_threads=1)
    b = make_vec(game, n, seed=123, num_threads=2)
    c = make_vec(game, n, seed=124, num_threads=2)
    rng = np.random.default_rng(0)
    for env in (a, b, c):
        env.reset()
    differs = 0
    for _ in range(steps):
        act = rng.integers(0, a.single_action_space.n, size=n)
        oa, ra, ta, ua, ia = a.step(act)
        ob, rb, tb, ub, ib = b.step(act)
        oc, rc, _, _, _ = c.step(act)
        assert np.array_equal(oa, ob)
        assert np.array_equal(ra, rb) and np.array_equal(ta, tb) and np.array_equal(ua, ub)
        assert list(ia["text"]) == list(ib["text"])
        differs += not (np.array_equal(oa, oc) and np.array_equal(ra, rc))
        assert oa.min() >= 0 and oa.shape == (n, 300, 300, 3)
    assert differs > steps // 2, "another seed gives another stream"


def test_reset_with_seed_restarts_the_stream():
    env = make_vec("Points24-v0", 3, seed=5)
    _, i1 = env.reset(seed=77)
    first = env.step(env.expert_actions())[0].copy()
    _, i2 = env.reset(seed=77)
    assert list(i1["Cards"]) == list(i2["Cards"])
    assert np.array_equal(first, env.step(env.expert_actions())[0])
    _, i3 = env.reset(seed=78)
    assert list(i1["Cards"]) != list(i3["Cards"])


def test_vector_info_layout():
    env = make_vec("NumberLine-v0", 3, seed=0)
    obs, info = env.reset(options={"states": [{"current": 0, "target": 2}, None, {"current": 5, "target": 4}]})
    assert info["Current"].dtype == np.int64 and info["Current"][0] == 0 and info["Current"][2] == 5
    assert info["_Current"].all() and info["text"].dtype == object
    assert info["text"][2] == "Target number: 4. Current number: 5."
    assert not obs.flags.writeable, "the observation buffer is a read-only view"
    obs2, *_ = env.step([1, 1, 0])
    assert obs2 is obs or np.shares_memory(obs2, obs), "no per-step copy"
    assert env.action_names == ["-", "+"]
    with pytest.raises(EnvArgumentError, match="3 values"):
        env.reset(options={"states": [None]})
    with pytest.raises(InvalidStateError, match=r"env 1: .*outside"):
        env.reset(options={"states": [None, {"current": 7, "target": 1}, None]})


def test_next_step_autoreset():
    env = make_vec("Dummy-v0", 2, seed=1, episode_length=3)
    env.reset(options={"states": [{"start": 10}, {"start": 11}]})
    for t in (1, 2):
        _, r, te, tr, info = env.step([1, 2])
        assert list(r) == [1 + t, 2 + t] and not te.any() and not tr.any()
    _, r, te, tr, info = env.step([0, 0])
    assert list(r) == [3, 3] and list(te) == [True, False] and list(tr) == [False, True]
    # The next step resets the finished envs and ignores their actions (even invalid ones).
    obs, r, te, tr, info = env.step([99, -5])
    assert list(r) == [0, 0] and not te.any() and not tr.any()
    assert list(info["step"]) == [0, 0] and "final_obs" not in info
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP


def test_same_step_autoreset():
    env = make_vec("Dummy-v0", 2, seed=1, episode_length=2, autoreset_mode=AutoresetMode.SAME_STEP)
    env.reset(options={"states": [{"start": 10}, {"start": 11}]})
    env.step([1, 1])
    obs, r, te, tr, info = env.step([2, 1])
    assert list(r) == [4, 3] and list(te) == [True, False] and list(tr) == [False, True]
    assert list(info["step"]) == [0, 0], "obs and info are already those of the new episode"
    assert info["_final_obs"].all() and info["_final_info"].all()
    assert list(info["final_info"]["step"]) == [2, 2]
    final0 = info["final_obs"][0]
    assert final0.shape == (300, 300, 3) and tuple(final0[0, 0]) == (10, 2, 2)
    assert tuple(obs[0, 0, 0])[1] == 0, "the new episode's frame"
    _, r, te, tr, info = env.step([0, 0])
    assert list(r) == [1, 1] and "final_obs" not in info


def test_same_step_on_a_game():
    env = make_vec("Blackjack-v0", 8, seed=3, autoreset_mode="same_step")
    env.reset()
    for _ in range(20):
        _, _, te, tr, info = env.step(np.zeros(8, dtype=np.int64))  # stand: every hand ends
        assert te.all()
        assert all(len(d) == 2 for d in info["final_info"]["Player Card"])
        assert all(len(d) >= 2 for d in info["final_info"]["Dealer Card"]), "revealed at the end"
        assert all(len(d) == 1 for d in info["Dealer Card"]), "new hands hide the second card"


def test_disabled_autoreset_with_mask():
    env = make_vec("Dummy-v0", 2, seed=1, episode_length=1, autoreset_mode="disabled")
    env.reset(options={"states": [{"start": 2}, {"start": 4}]})
    env.step([0, 0])
    _, info = env.reset(options={"reset_mask": [True, False], "states": [{"start": 6}, None]})
    assert list(info["start"]) == [6, 4] and list(info["step"]) == [0, 1]


def test_dynamic_actions_and_minus_one():
    env = make_vec("Dummy-v0", 2, seed=0, dynamic_actions=True, episode_length=100)
    _, info = env.reset()
    assert [list(x) for x in info["admissible_commands"]] == [["a0", "a1"], ["a0", "a1"]]
    assert env.action_names == [["a0", "a1"], ["a0", "a1"]]
    env.step([-1, 1])  # -1 is accepted by an env that gives it a meaning
    _, _, _, _, info = env.step([2, 0])
    assert len(info["admissible_commands"][0]) == 4
    with pytest.raises(InvalidActionError, match="env 1: action 4 "):
        env.step([0, 4])


def test_bad_actions():
    env = make_vec("Points24-v0", 4, seed=0)
    with pytest.raises(ResetNeededError, match="env 0"):
        env.step([0, 0, 0, 0])
    env.reset()
    before = env.step([0, 0, 0, 0])[4]["Formula"].copy()
    with pytest.raises(InvalidActionError, match=r"env 2: action 17 is out of range") as err:
        env.step([0, 0, 17, 0])
    assert isinstance(err.value, ValueError)
    assert list(env._core.env_info(0)["Formula"]) == list(before[0]), "a bad action moves no env"
    with pytest.raises(InvalidActionError, match="env 1: action -1"):
        env.step([0, -1, 0, 0])
    with pytest.raises(ActionTypeError, match="float"):
        env.step(np.zeros(4))
    with pytest.raises(TypeError):
        env.step(["a", "b", "c", "d"])
    with pytest.raises(EnvArgumentError, match=r"shape \(4,\)"):
        env.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(EnvArgumentError, match='unexpected keyword argument "colour"'):
        make_vec("Points24-v0", 2, colour="red")
    with pytest.raises(EnvArgumentError, match="unknown env id"):
        make_vec("Chess-v0", 2)
    with pytest.raises(EnvArgumentError):
        make_vec("Points24-v0", 0)


def test_a_panic_becomes_an_exception_and_the_env_recovers():
    env = make_vec("Dummy-v0", 4, seed=0, num_threads=2, num_actions=8, panic_on_action=7)
    env.reset()
    with pytest.raises(EnvPanicError, match="env 3: .*panic on action 7"):
        env.step([0, 0, 0, 7])
    with pytest.raises(ResetNeededError, match="env 3"):
        env.step([0, 0, 0, 0])
    env.reset()
    _, r, *_ = env.step([1, 1, 1, 1])
    assert list(r) == [2, 2, 2, 2]


def test_expert_actions_are_int64_and_valid():
    env = make_vec("EZPoints-v0", 5, seed=0)
    env.reset()
    a = env.expert_actions()
    assert a.dtype == np.int64 and a.shape == (5,) and ((0 <= a) & (a < 13)).all()


def test_two_python_threads_sharing_an_env_do_not_deadlock():
    import threading

    env = make_vec("Blackjack-v0", 8, seed=0, num_threads=2)
    env.reset()
    errors = []

    def worker():
        try:
            for _ in range(100):
                env.step(np.ones(8, dtype=np.int64))
                env.expert_actions()
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors, errors
