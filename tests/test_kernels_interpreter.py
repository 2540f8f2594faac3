"""The Triton kernels themselves, run by Triton's CPU interpreter, against the torch references.

TRITON_INTERPRET must be set before triton is imported, so the outer pytest run re-runs
this file in a subprocess with TRITON_INTERPRET=1, where the parametrized tests below
run (they are skipped in the outer process). Run them directly with:

    TRITON_INTERPRET=1 PYTHONPATH=python pytest -q tests/test_kernels_interpreter.py
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
inside = pytest.mark.skipif(
    not INTERPRETED, reason="runs in the TRITON_INTERPRET=1 subprocess of test_all_under_interpreter"
)


@pytest.mark.skipif(INTERPRETED, reason="this is the outer run")
def test_all_under_interpreter():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error::RuntimeWarning", __file__],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and " failed" not in proc.stdout


# (dtype, atol, rtol) of the logits' gradient, which is stored in the logits' dtype:
# the two sides round the same float32 value, so they differ by at most one ulp.
GRAD_TOL = {
    torch.float32: (1e-5, 1e-4),
    torch.bfloat16: (1e-4, 1e-2),
    torch.float16: (1e-4, 2e-3),
}
# log-probs and entropies are float32 from the same inputs on both sides.
OUT_TOL = (1e-4, 1e-5)
SHAPES = [(1, 1), (1, 7), (3, 11)]  # B * T in {1, 7, 33}
VOCABS = [5, 1000, 4097]  # one block; one partial block; three blocks, the last of one entry


def _logits(shape, vocab, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    # Scale 3 with temperature 0.2 gives z up to ~60: sharp rows that test the rescaling.
    return (3 * torch.randn(*shape, vocab, generator=gen)).to(dtype), gen


def _compare(logits, tokens, temperature, use_logp=True, use_entropy=True, seed=0):
    from vlmrl_fast.ops import token_logprobs
    from vlmrl_fast.ops.kernels.token_logprobs_reference import token_logprobs_reference

    gen = torch.Generator().manual_seed(seed + 1)
    g_logp = torch.randn(tokens.shape, generator=gen)
    g_ent = torch.randn(tokens.shape, generator=gen)
    results = []
    for impl in ("triton", "reference"):
        x = logits.detach().clone().requires_grad_(True)
        if impl == "triton":
            logp, ent = token_logprobs(x, tokens, temperature, return_entropy=True, backend="triton")
        else:
            logp, ent = token_logprobs_reference(x, tokens, temperature, return_entropy=True)
        loss = (logp * g_logp).sum() * use_logp + (ent * g_ent).sum() * use_entropy
        loss.backward()
        results.append((logp.detach(), ent.detach(), x.grad))
    (lp, ent, grad), (lp_ref, ent_ref, grad_ref) = results
    assert lp.dtype == ent.dtype == torch.float32 and grad.dtype == logits.dtype
    atol, rtol = OUT_TOL
    torch.testing.assert_close(lp, lp_ref, atol=atol, rtol=rtol)
    torch.testing.assert_close(ent, ent_ref, atol=atol, rtol=rtol)
    atol, rtol = GRAD_TOL[logits.dtype]
    torch.testing.assert_close(grad, grad_ref, atol=atol / temperature, rtol=rtol)


@inside
@pytest.mark.parametrize("temperature", [0.2, 1.0])
@pytest.mark.parametrize("dtype", list(GRAD_TOL))
@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("shape", SHAPES)
def test_token_logprobs_matches_reference(shape, vocab, dtype, temperature):
    logits, gen = _logits(shape, vocab, dtype, seed=vocab + shape[1])
    tokens = torch.randint(0, vocab, shape, generator=gen)
    _compare(logits, tokens, temperature)


@inside
@pytest.mark.parametrize("use_logp,use_entropy", [(True, False), (False, True)])
def test_token_logprobs_one_output_used(use_logp, use_entropy):
    # Only the log-probs in the loss: the entropy gradient is None and its term is skipped.
    logits, gen = _logits((2, 5), 1000, torch.float32, seed=3)
    tokens = torch.randint(0, 1000, (2, 5), generator=gen)
    _compare(logits, tokens, 0.7, use_logp=use_logp, use_entropy=use_entropy)


@inside
def test_token_logprobs_strided_slice_and_masked_vocab():
    # A [B, T-1, V] slice of bigger logits (row strides != V), with -inf masked entries
    # and a whole masked block: read in place, gradient written only for the slice.
    full, gen = _logits((3, 12), 4097, torch.bfloat16, seed=5)
    full[..., 2048:4096] = float("-inf")
    full[..., 7] = float("-inf")
    logits = full[:, 1:, :]
    assert not logits.is_contiguous()
    tokens = torch.randint(0, 2048, (3, 11), generator=gen)
    tokens[tokens == 7] = 8
    _compare(logits, tokens, 1.0)


@inside
def test_token_logprobs_flat_rows_and_block_size():
    from vlmrl_fast.ops.kernels.token_logprobs_triton import token_logprobs_triton
    from vlmrl_fast.ops.kernels.token_logprobs_reference import token_logprobs_reference

    logits, gen = _logits((1, 9), 300, torch.float16, seed=9)
    tokens = torch.randint(0, 300, (1, 9), generator=gen)
    lp, ent = token_logprobs_triton(logits, tokens, 0.5, return_entropy=True, block_v=16)
    lp_ref, ent_ref = token_logprobs_reference(logits, tokens, 0.5, return_entropy=True)
    torch.testing.assert_close(lp, lp_ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ent, ent_ref, atol=1e-4, rtol=1e-5)
    from vlmrl_fast.ops import token_logprobs

    flat = token_logprobs(logits[0], tokens[0], 0.5, backend="triton")  # [N, V] input
    torch.testing.assert_close(flat, lp_ref[0], atol=1e-4, rtol=1e-5)


def _rollout(num_steps, num_envs, seed, p_term=0.15, p_trunc=0.1):
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randn(num_steps, num_envs, generator=gen)
    values = torch.randn(num_steps, num_envs, generator=gen)
    next_values = torch.randn(num_steps, num_envs, generator=gen)
    terminated = torch.rand(num_steps, num_envs, generator=gen) < p_term
    truncated = torch.rand(num_steps, num_envs, generator=gen) < p_trunc
    return rewards, values, next_values, terminated, truncated


@inside
@pytest.mark.parametrize("gamma,lam", [(0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (0.9, 0.95)])
@pytest.mark.parametrize("num_steps,num_envs", [(1, 1), (5, 3), (37, 17)])
def test_gae_matches_reference(num_steps, num_envs, gamma, lam):
    from vlmrl_fast.ops import gae
    from vlmrl_fast.ops.kernels.gae_reference import gae_reference

    batch = _rollout(num_steps, num_envs, seed=num_steps * 100 + num_envs)
    adv, ret = gae(*batch, gamma, lam, backend="triton")
    adv_ref, ret_ref = gae_reference(*batch, gamma, lam)
    assert adv.dtype == ret.dtype == torch.float32 and adv.shape == (num_steps, num_envs)
    torch.testing.assert_close(adv, adv_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ret, ret_ref, atol=1e-5, rtol=1e-5)


@inside
@pytest.mark.parametrize("block_t,block_n", [(4, 1), (8, 4), (64, 2)])
def test_gae_chunks_carry_across_time(block_t, block_n):
    # T = 37 in chunks of 4 or 8 steps: the carry between chunks, the partial first chunk
    # and partial environment blocks are all exercised; float rewards and int dones too.
    from vlmrl_fast.ops.kernels.gae_reference import gae_reference
    from vlmrl_fast.ops.kernels.gae_triton import gae_triton

    rewards, values, next_values, terminated, truncated = _rollout(37, 5, seed=block_t, p_term=0.05)
    batch = (rewards.double(), values, next_values, terminated.to(torch.int32), truncated)
    adv, ret = gae_triton(*batch, 0.99, 0.97, block_t=block_t, block_n=block_n)
    adv_ref, ret_ref = gae_reference(*batch, 0.99, 0.97)
    torch.testing.assert_close(adv, adv_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ret, ret_ref, atol=1e-5, rtol=1e-5)
