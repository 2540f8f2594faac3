"""Trajectory buffer (numpy views of Rust memory) and CPU GAE against a plain
numpy reference."""

import numpy as np
import pytest

from vlmrl_fast import EnvArgumentError
from vlmrl_fast.buffer import TrajectoryBuffer, gae


def gae_reference(rewards, values, next_values, terminated, truncated, gamma, lam):
    T, N = rewards.shape
    adv = np.zeros((T, N))
    last = np.zeros(N)
    for t in reversed(range(T)):
        delta = rewards[t] + gamma * (1 - terminated[t]) * next_values[t] - values[t]
        last = delta + gamma * lam * (1 - (terminated[t] | truncated[t])) * last
        adv[t] = last
    return adv, adv + values


def random_rollout(rng, T, N, dtype):
    r = rng.normal(size=(T, N)).astype(dtype)
    v = rng.normal(size=(T, N)).astype(dtype)
    nv = rng.normal(size=(T, N)).astype(dtype)
    te = rng.random((T, N)) < 0.1
    tr = (rng.random((T, N)) < 0.05) & ~te
    return r, v, nv, te, tr


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (128, 16), (513, 5)])
def test_gae_matches_numpy_reference(shape):
    rng = np.random.default_rng(sum(shape))
    r, v, nv, te, tr = random_rollout(rng, *shape, np.float64)
    adv, ret = gae(r, v, nv, te, tr, gamma=0.9, lam=0.95)
    ref_adv, ref_ret = gae_reference(r, v, nv, te, tr, 0.9, 0.95)
    assert adv.dtype == np.float64 and adv.shape == shape
    np.testing.assert_allclose(adv, ref_adv, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ret, ref_ret, atol=1e-6, rtol=0)
    # float32 in, float32 out (accumulated in float64).
    adv32, _ = gae(*(x.astype(np.float32) for x in (r, v, nv)), te, tr, gamma=0.9, lam=0.95)
    assert adv32.dtype == np.float32
    np.testing.assert_allclose(adv32, ref_adv, atol=1e-5)


def test_gae_semantics_of_terminated_and_truncated():
    # One env, three steps: truncation keeps the bootstrap, termination drops it,
    # both cut the advantage chain.
    r = np.array([[1.0], [1.0], [1.0]])
    v = np.zeros((3, 1))
    nv = np.full((3, 1), 2.0)
    te = np.array([[False], [True], [False]])
    tr = np.array([[True], [False], [False]])
    adv, _ = gae(r, v, nv, te, tr, gamma=0.5, lam=1.0)
    assert adv[:, 0].tolist() == [2.0, 1.0, 2.0]


def test_gae_of_an_empty_rollout_is_empty():
    for shape in [(0, 4), (5, 0)]:
        z = np.zeros(shape)
        adv, ret = gae(z, z, z, z.astype(bool), z.astype(bool))
        assert adv.shape == shape and ret.shape == shape


def test_gae_rejects_mismatched_shapes():
    r, v, nv, te, tr = random_rollout(np.random.default_rng(0), 4, 2, np.float64)
    with pytest.raises(ValueError, match="values"):
        gae(r, v[:3], nv, te, tr)


def test_buffer_views_share_memory_with_rust():
    buf = TrajectoryBuffer(4, 3, max_tokens=5, pad_id=-1)
    assert buf.rewards.shape == (4, 3) and buf.token_ids.shape == (4, 3, 5)
    assert np.shares_memory(buf.rewards, buf.rewards), "every access is a view of the same memory"
    step = buf.add([1, 2, 3], [0.5, 0.0, 1.0], [False, True, False], [False, False, True], [0.1, 0.2, 0.3], [-1.0, -2.0, -3.0], [[7, 8], [], [9, 9, 9, 9, 9]])
    assert step == 0 and len(buf) == 1
    assert buf.actions[0].tolist() == [1, 2, 3] and buf.terminated[0].tolist() == [False, True, False]
    assert buf.token_ids[0, 0].tolist() == [7, 8, -1, -1, -1] and buf.token_lengths[0].tolist() == [2, 0, 5]
    assert buf.tokens(0, 2).tolist() == [9, 9, 9, 9, 9]
    # Writes through numpy are seen by Rust: GAE reads the arrays written here.
    rng = np.random.default_rng(3)
    r, v, nv, te, tr = random_rollout(rng, 4, 3, np.float32)
    buf.rewards[:] = r
    buf.values[:] = v
    buf.next_values[:] = nv
    buf.terminated[:] = te
    buf.truncated[:] = tr
    buf.compute_gae(0.9, 0.95)
    ref_adv, ref_ret = gae_reference(r.astype(np.float64), v.astype(np.float64), nv.astype(np.float64), te, tr, 0.9, 0.95)
    np.testing.assert_allclose(buf.advantages, ref_adv, atol=1e-5)
    np.testing.assert_allclose(buf.returns, ref_ret, atol=1e-5)


def test_buffer_errors_name_the_problem():
    buf = TrajectoryBuffer(1, 2, max_tokens=2)
    with pytest.raises(EnvArgumentError, match="env 1: 3 generated tokens exceed max_tokens = 2"):
        buf.add([0, 0], [0, 0], [False, False], [False, False], [0, 0], [0, 0], [[1], [1, 2, 3]])
    with pytest.raises(EnvArgumentError, match="rewards: expected 2"):
        buf.add([0, 0], [0], [False, False], [False, False], [0, 0], [0, 0])
    with pytest.raises(TypeError, match="terminated"):
        buf.add([0, 0], [0, 0], ["no", "yes"], [False, False], [0, 0], [0, 0])
    buf.add([0, 0], [0, 0], [False, False], [False, False], [0, 0], [0, 0])
    with pytest.raises(EnvArgumentError, match="full"):
        buf.add([0, 0], [0, 0], [False, False], [False, False], [0, 0], [0, 0])
    buf.reset()
    assert len(buf) == 0
