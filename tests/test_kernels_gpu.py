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
