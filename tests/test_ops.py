"""vlmrl_fast.ops on the CPU: the references against independent float64 maths, the
dispatch of backend="auto"/"torch" and input validation (packaging: tests/test_packaging.py)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vlmrl_fast import ops
from vlmrl_fast.ops.kernels.gae_reference import gae_loop, gae_reference
from vlmrl_fast.ops.kernels.token_logprobs_reference import (
    token_logprobs_naive,
    token_logprobs_reference,
)



def _logits(shape, vocab, dtype=torch.float32, seed=0, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(*shape, vocab, generator=gen)).to(dtype)
    tokens = torch.randint(0, vocab, shape, generator=gen)
    return logits, tokens


@pytest.mark.parametrize("temperature", [0.2, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_reference_matches_float64_maths(dtype, temperature):
    logits, tokens = _logits((3, 11), 1000, dtype, seed=1)
    x = logits.detach().clone().requires_grad_(True)
    logp, ent = token_logprobs_reference(x, tokens, temperature, return_entropy=True)
    (logp.sum() + 0.5 * ent.sum()).backward()

    x64 = logits.double().detach().requires_grad_(True)
    dist = torch.distributions.Categorical(logits=x64 / temperature)
    logp64, ent64 = dist.log_prob(tokens), dist.entropy()
    (logp64.sum() + 0.5 * ent64.sum()).backward()

    assert logp.dtype == ent.dtype == torch.float32 and x.grad.dtype == dtype
    torch.testing.assert_close(logp.double(), logp64, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(ent.double(), ent64, atol=2e-5, rtol=1e-5)
    grad_tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(x.grad.double(), x64.grad.to(dtype).double(), atol=grad_tol / temperature, rtol=grad_tol)


def test_auto_on_cpu_is_the_reference_and_agrees_with_naive():
    logits, tokens = _logits((2, 9), 4097, torch.bfloat16, seed=2)
    for backend in ("auto", "torch"):
        logp, ent = ops.token_logprobs(logits, tokens, 0.2, return_entropy=True, backend=backend)
        ref_logp, ref_ent = token_logprobs_reference(logits, tokens, 0.2, return_entropy=True)
        assert torch.equal(logp, ref_logp) and torch.equal(ent, ref_ent)
    only = ops.token_logprobs(logits, tokens, 0.2)
    assert torch.equal(only, ref_logp)
    torch.testing.assert_close(only, token_logprobs_naive(logits, tokens, 0.2), atol=2e-5, rtol=1e-5)


def test_masked_vocabulary_gives_finite_values_and_zero_gradient():
    logits, tokens = _logits((4,), 50, seed=3)
    logits[:, 10:] = float("-inf")
    tokens = tokens % 10
    x = logits.clone().requires_grad_(True)
    logp, ent = ops.token_logprobs(x, tokens, 1.0, return_entropy=True)
    (logp.sum() + ent.sum()).backward()
    dist = torch.distributions.Categorical(logits=logits[:, :10].double())
    torch.testing.assert_close(logp.double(), dist.log_prob(tokens), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent.double(), dist.entropy(), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(x.grad).all() and (x.grad[:, 10:] == 0).all()


def test_uniform_logits_have_log_v_entropy_and_any_leading_shape():
    logits = torch.zeros(2, 3, 4, 64)
    tokens = torch.zeros(2, 3, 4, dtype=torch.int32)
    logp, ent = ops.token_logprobs(logits, tokens, return_entropy=True)
    assert logp.shape == ent.shape == (2, 3, 4)
    torch.testing.assert_close(logp, torch.full((2, 3, 4), -math.log(64)))
    torch.testing.assert_close(ent, torch.full((2, 3, 4), math.log(64)))


@pytest.mark.parametrize(
    "logits,tokens,kwargs,error,match",
    [
        (torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long), {}, ValueError, "shape"),
        (torch.zeros(2, 3, 5), torch.zeros(2, 3), {}, TypeError, "integer"),
        (torch.zeros(2, 3, 5, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), {}, TypeError, "floating"),
        (torch.zeros(2, 3, 5), torch.full((2, 3), 5), {}, ValueError, "token id 5"),
        (torch.zeros(2, 3, 5), torch.full((2, 3), -1), {}, ValueError, "token id -1"),
        (torch.zeros(2, 3, 0), torch.zeros(2, 3, dtype=torch.long), {}, ValueError, "empty"),
        (torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), {"temperature": 0.0}, ValueError, "temperature"),
        (torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), {"backend": "cuda"}, ValueError, "backend"),
    ],
)
def test_token_logprobs_rejects_bad_input(logits, tokens, kwargs, error, match):
    with pytest.raises(error, match=match):
        ops.token_logprobs(logits, tokens, **kwargs)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreter is on")
def test_triton_backend_on_cpu_needs_the_interpreter():
    logits, tokens = _logits((1, 2), 5)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        ops.token_logprobs(logits, tokens, backend="triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        ops.gae(*_rollout(3, 2, 0), 0.9, 0.95, backend="triton")


def _rollout(num_steps, num_envs, seed, p_term=0.15, p_trunc=0.1):
    rng = np.random.default_rng(seed)
    rewards = rng.standard_normal((num_steps, num_envs)).astype(np.float32)
    values = rng.standard_normal((num_steps, num_envs)).astype(np.float32)
    next_values = rng.standard_normal((num_steps, num_envs)).astype(np.float32)
    terminated = rng.random((num_steps, num_envs)) < p_term
    truncated = rng.random((num_steps, num_envs)) < p_trunc
    return tuple(torch.from_numpy(x) for x in (rewards, values, next_values, terminated, truncated))


def _gae_numpy(rewards, values, next_values, terminated, truncated, gamma, lam):
    """Independent float64 scalar loop of the engine issue's formula."""
    r, v, nv = (x.double().numpy() for x in (rewards, values, next_values))
    term, trunc = terminated.numpy(), truncated.numpy()
    adv = np.zeros_like(r)
    for n in range(r.shape[1]):
        next_adv = 0.0
        for t in range(r.shape[0] - 1, -1, -1):
            delta = r[t, n] + gamma * (0.0 if term[t, n] else nv[t, n]) - v[t, n]
            keep = 0.0 if (term[t, n] or trunc[t, n]) else 1.0
            next_adv = delta + gamma * lam * keep * next_adv
            adv[t, n] = next_adv
    return adv, adv + v


@pytest.mark.parametrize("gamma,lam", [(0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (0.9, 0.95)])
@pytest.mark.parametrize("num_steps,num_envs", [(1, 1), (6, 3), (64, 9)])
def test_gae_paths_match_float64_loop(num_steps, num_envs, gamma, lam):
    batch = _rollout(num_steps, num_envs, seed=num_steps + num_envs)
    adv64, ret64 = _gae_numpy(*batch, gamma, lam)
    for impl in (gae_reference, gae_loop):
        adv, ret = impl(*batch, gamma, lam)
        np.testing.assert_allclose(adv.numpy(), adv64, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(ret.numpy(), ret64, atol=1e-5, rtol=1e-5)
    # backend="auto" on the CPU is the Rust GAE when the engine ships it, else the
    # reference: either way it is pinned to the reference here.
    adv, ret = ops.gae(*batch, gamma, lam)
    ref_adv, ref_ret = ops.gae(*batch, gamma, lam, backend="torch")
    assert adv.dtype == ret.dtype == torch.float32 and adv.shape == (num_steps, num_envs)
    torch.testing.assert_close(adv, ref_adv, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ret, ref_ret, atol=1e-6, rtol=1e-6)


def test_auto_on_cpu_runs_the_engines_rust_gae():
    rust = ops._rust_gae()
    if rust is None:
        pytest.skip("this build of vlmrl_fast._core has no gae")
    batch = _rollout(50, 7, seed=11)
    adv, ret = ops.gae(*batch, 0.9, 0.95)
    arrays = [x.numpy() for x in batch]
    rust_adv, rust_ret = rust(*arrays, 0.9, 0.95)
    assert np.array_equal(adv.numpy(), rust_adv) and np.array_equal(ret.numpy(), rust_ret)


@pytest.mark.parametrize("num_steps,num_envs", [(0, 3), (3, 0), (0, 0)])
def test_gae_of_an_empty_rollout_is_empty(num_steps, num_envs):
    batch = [torch.zeros(num_steps, num_envs)] * 3 + [torch.zeros(num_steps, num_envs, dtype=torch.bool)] * 2
    for backend in ("auto", "torch"):
        adv, ret = ops.gae(*batch, 0.9, 0.95, backend=backend)
        assert adv.shape == ret.shape == (num_steps, num_envs) and adv.dtype == torch.float32


@settings(max_examples=40, deadline=None)
@given(
    num_steps=st.integers(1, 40),
    num_envs=st.integers(1, 6),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
    p_done=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_gae_auto_matches_float64_loop_on_random_rollouts(num_steps, num_envs, gamma, lam, p_done, seed):
    batch = _rollout(num_steps, num_envs, seed, p_term=p_done / 2, p_trunc=p_done / 2)
    adv64, ret64 = _gae_numpy(*batch, gamma, lam)
    adv, ret = ops.gae(*batch, gamma, lam)
    np.testing.assert_allclose(adv.numpy(), adv64, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(ret.numpy(), ret64, atol=2e-5, rtol=2e-5)


def test_gae_truncation_bootstraps_but_cuts_the_trace():
    # One env, 3 steps: step 1 is truncated, step 2 terminated.
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [0.25], [1.0]])
    next_values = torch.tensor([[0.25], [4.0], [9.0]])
    terminated = torch.tensor([[False], [False], [True]])
    truncated = torch.tensor([[False], [True], [False]])
    for backend in ("auto", "torch"):
        adv, ret = ops.gae(rewards, values, next_values, terminated, truncated, 0.5, 0.5, backend=backend)
        a2 = 3.0 - 1.0  # terminated: no bootstrap from 9.0
        a1 = 2.0 + 0.5 * 4.0 - 0.25  # truncated: bootstrap from 4.0, trace cut
        a0 = 1.0 + 0.5 * 0.25 - 0.5 + 0.25 * a1
        torch.testing.assert_close(adv[:, 0], torch.tensor([a0, a1, a2]))
        torch.testing.assert_close(ret, adv + values)


@pytest.mark.parametrize(
    "change,error,match",
    [
        ({"values": torch.zeros(3, 5)}, ValueError, "values has shape"),
        ({"rewards": torch.zeros(4)}, ValueError, r"\[T, N\]"),
        ({"terminated": [[False] * 4] * 3}, TypeError, "terminated must be a torch.Tensor"),
        ({"rewards": torch.zeros(3, 4, dtype=torch.complex64)}, TypeError, "real dtype"),
        ({"next_values": torch.zeros(3, 4, dtype=torch.bool)}, TypeError, "next_values must be a real dtype"),
        ({"truncated": torch.zeros(3, 4, dtype=torch.bool, device="meta")}, ValueError, "truncated is on meta"),
        ({"truncated": torch.zeros(4, 3, dtype=torch.bool)}, ValueError, "truncated has shape"),
        ({"gamma": 1.5}, ValueError, "gamma"),
        ({"gamma": float("nan")}, ValueError, "gamma"),
        ({"lam": "0.9"}, ValueError, "lam"),
        ({"lam": -0.1}, ValueError, "lam"),
        ({"backend": "rust"}, ValueError, "backend"),
    ],
)
def test_gae_rejects_bad_input(change, error, match):
    args = dict(zip(("rewards", "values", "next_values", "terminated", "truncated"), _rollout(3, 4, 0)))
    args.update(gamma=0.9, lam=0.95)
    args.update(change)
    with pytest.raises(error, match=match):
        ops.gae(**args)


def test_gae_is_not_differentiable_and_ignores_requires_grad():
    rewards, values, next_values, terminated, truncated = _rollout(5, 2, 1)
    values.requires_grad_(True)
    adv, ret = ops.gae(rewards, values, next_values, terminated, truncated, 0.9, 0.95)
    assert not adv.requires_grad and not ret.requires_grad
