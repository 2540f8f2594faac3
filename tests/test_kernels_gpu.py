"""The Triton kernels on a CUDA device against the references, at sizes near real use.

Marked ``gpu`` and skipped without CUDA; bench/gpu/run.py runs the full-size checks
(B*T = 8192, V = 152064) and the timings.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("rows,vocab", [(257, 32000), (64, 152064), (1, 262144)])
def test_token_logprobs_cuda_matches_reference(rows, vocab, dtype):
    from vlmrl_fast import ops
    from vlmrl_fast.ops.kernels.token_logprobs_reference import token_logprobs_reference

    gen = torch.Generator(device="cuda").manual_seed(rows)
    logits = (3 * torch.randn(1, rows, vocab, device="cuda", generator=gen)).to(dtype)
    tokens = torch.randint(0, vocab, (1, rows), device="cuda", generator=gen)
    g_logp = torch.randn(1, rows, device="cuda", generator=gen)
    g_ent = torch.randn(1, rows, device="cuda", generator=gen)
    out = []
    for impl in ("auto", "reference"):
        x = logits.clone().requires_grad_(True)
        if impl == "auto":
            logp, ent = ops.token_logprobs(x, tokens, 0.2, return_entropy=True)
        else:
            logp, ent = token_logprobs_reference(x, tokens, 0.2, return_entropy=True)
        ((logp * g_logp).sum() + (ent * g_ent).sum()).backward()
        out.append((logp.detach(), ent.detach(), x.grad))
    (lp, ent, grad), (lp_ref, ent_ref, grad_ref) = out
    torch.testing.assert_close(lp, lp_ref, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(ent, ent_ref, atol=1e-3, rtol=1e-4)
    tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    torch.testing.assert_close(grad, grad_ref, atol=tol * 5, rtol=tol)


def test_token_logprobs_cuda_allocates_no_vocab_sized_intermediate():
    from vlmrl_fast import ops

    logits = torch.randn(4, 512, 152064, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    tokens = torch.randint(0, 152064, (4, 512), device="cuda")
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    logp, ent = ops.token_logprobs(logits, tokens, 0.2, return_entropy=True)
    (logp.sum() + ent.sum()).backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base - logits.numel() * logits.element_size()
    assert extra < 0.01 * logits.numel() * 4, f"extra peak {extra} bytes"


@pytest.mark.parametrize("num_steps,num_envs", [(512, 64), (1000, 3), (3, 1000)])
def test_gae_cuda_matches_reference(num_steps, num_envs):
    from vlmrl_fast import ops
    from vlmrl_fast.ops.kernels.gae_reference import gae_reference

    gen = torch.Generator(device="cuda").manual_seed(num_steps)
    shape = (num_steps, num_envs)
    batch = (
        torch.randn(shape, device="cuda", generator=gen),
        torch.randn(shape, device="cuda", generator=gen),
        torch.randn(shape, device="cuda", generator=gen),
        torch.rand(shape, device="cuda", generator=gen) < 0.02,
        torch.rand(shape, device="cuda", generator=gen) < 0.01,
    )
    adv, ret = ops.gae(*batch, 0.99, 0.95)
    adv_ref, ret_ref = gae_reference(*batch, 0.99, 0.95)
    torch.testing.assert_close(adv, adv_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ret, ret_ref, atol=1e-4, rtol=1e-4)


def test_gae_cuda_cached_launch_matches_reference():
    """The second call of a shape launches the cached compiled kernel directly (no JIT dispatch):
    new data through it, a misaligned view (JIT path) and a different gamma all still match."""
    from vlmrl_fast.ops.kernels import gae_triton as mod
    from vlmrl_fast.ops.kernels.gae_reference import gae_reference

    gen = torch.Generator(device="cuda").manual_seed(7)

    def batch(shape):
        return (torch.randn(shape, device="cuda", generator=gen), torch.randn(shape, device="cuda", generator=gen),
                torch.randn(shape, device="cuda", generator=gen), torch.rand(shape, device="cuda", generator=gen) < 0.05,
                torch.rand(shape, device="cuda", generator=gen) < 0.05)

    for gamma, lam in ((0.99, 0.95), (0.99, 0.95), (1.0, 0.5), (0.0, 1.0)):
        data = batch((129, 33))
        adv, ret = mod.gae_triton(*data, gamma, lam)
        adv_ref, ret_ref = gae_reference(*data, gamma, lam)
        torch.testing.assert_close(adv, adv_ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ret, ret_ref, atol=1e-4, rtol=1e-4)
    assert mod._FAST_LAUNCH["enabled"], "the cached launch raised and was switched off"
    assert any(k[1:3] == (129, 33) for k in mod._FAST_LAUNCH["kernels"])
    # Contiguous views one element into their storage are not 16-byte aligned: another specialization,
    # another key (twice: the second call takes the cached launch of that key).
    flat = batch((129 * 33 + 1,))
    data = tuple(x[1:].view(129, 33) for x in flat)
    assert all(x.is_contiguous() and x.data_ptr() % 16 for x in data)
    for _ in range(2):
        adv, _ = mod.gae_triton(*data, 0.9, 0.9)
        torch.testing.assert_close(adv, gae_reference(*data, 0.9, 0.9)[0], atol=1e-4, rtol=1e-4)
    assert any(k[1:3] == (129, 33) and not k[5] for k in mod._FAST_LAUNCH["kernels"])
