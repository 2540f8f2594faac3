"""Fused token log-probabilities and entropy in Triton: forward, backward, autograd.Function.

One program per position (row of the vocabulary). The forward streams the row in
blocks of ``BLOCK_V`` and keeps three running scalars, never a [rows, V] intermediate:

    m = max of z seen so far              (z = x / tau, in float32)
    s = sum_j exp(z_j - m)
    u = sum_j exp(z_j - m) * (z_j - m)

When a block raises the maximum from m to m', every term gains the factor
exp(m - m') and every (z_j - m) the shift (m - m'), so

    s' = exp(m - m') * s,   u' = exp(m - m') * (u + (m - m') * s)

before the block's own terms are added; both updates are exact. At the end

    lse = m + log(s),   log p_k = z_k - lse,   H = log(s) - u / s

(H = -sum_j p_j log p_j with log p_j = (z_j - m) - log s). Keeping z - m rather than
z in u avoids the cancellation of two numbers of the size of the logits in lse - E[z].
The forward saves only lse and H per row (8 bytes), and the backward recomputes
p_j = exp(z_j - lse) block by block:

    d logp_k / d z_j = [j == k] - p_j
    d H      / d z_j = -p_j * (log p_j + H)
    d L / d x_j      = (g_logp * ([j == k] - p_j) - g_H * p_j * (log p_j + H)) / tau

so the only tensor the size of the logits it writes is their gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _token_logprobs_fwd_kernel(
    logits_ptr, tokens_ptr, logp_ptr, lse_ptr, entropy_ptr,
    seq_len, stride_lb, stride_lt, stride_tb, stride_tt,
    vocab, inv_temp,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    b = row // seq_len
    t = row % seq_len
    row_ptr = logits_ptr + b * stride_lb + t * stride_lt
    cols = tl.arange(0, BLOCK_V)

    m = tl.full((), -float("inf"), tl.float32)
    s = tl.full((), 0.0, tl.float32)
    u = tl.full((), 0.0, tl.float32)
    for start in range(0, vocab, BLOCK_V):
        mask = start + cols < vocab
        z = tl.load(row_ptr + start + cols, mask=mask, other=-float("inf")).to(tl.float32) * inv_temp
        m_new = tl.maximum(m, tl.max(z, axis=0))
        # While every entry seen is -inf, shift by 0 instead (avoids -inf - -inf).
        m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)
        scale = tl.exp(m - m_safe)
        # With s == 0 nothing was accumulated yet (and m - m_safe may be -inf).
        u = scale * (u + tl.where(s > 0.0, m - m_safe, 0.0) * s)
        s = s * scale
        e = tl.exp(z - m_safe)
        # Entries with e == 0 (masked, -inf, or underflowed) add nothing; selecting
        # before the product avoids 0 * -inf.
        s += tl.sum(e, axis=0)
        u += tl.sum(e * tl.where(e > 0.0, z - m_safe, 0.0), axis=0)
        m = m_new

    log_s = tl.log(s)
    lse = m + log_s
    token = tl.load(tokens_ptr + b * stride_tb + t * stride_tt)
    z_tok = tl.load(row_ptr + token).to(tl.float32) * inv_temp
    tl.store(logp_ptr + row, z_tok - lse)
    tl.store(lse_ptr + row, lse)
    tl.store(entropy_ptr + row, log_s - u / s)


@triton.jit
def _token_logprobs_bwd_kernel(
    logits_ptr, tokens_ptr, grad_ptr, lse_ptr, entropy_ptr, grad_logp_ptr, grad_entropy_ptr,
    seq_len, stride_lb, stride_lt, stride_tb, stride_tt, stride_gb, stride_gt,
    vocab, inv_temp,
    HAS_GRAD_ENTROPY: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    b = row // seq_len
    t = row % seq_len
    row_ptr = logits_ptr + b * stride_lb + t * stride_lt
    grad_row_ptr = grad_ptr + b * stride_gb + t * stride_gt
    cols = tl.arange(0, BLOCK_V)

    token = tl.load(tokens_ptr + b * stride_tb + t * stride_tt)
    lse = tl.load(lse_ptr + row)
    g_logp = tl.load(grad_logp_ptr + row)
    if HAS_GRAD_ENTROPY:
        entropy = tl.load(entropy_ptr + row)
        g_ent = tl.load(grad_entropy_ptr + row)
    for start in range(0, vocab, BLOCK_V):
        idx = start + cols
        mask = idx < vocab
        z = tl.load(row_ptr + idx, mask=mask, other=-float("inf")).to(tl.float32) * inv_temp
        p = tl.exp(z - lse)
        g = g_logp * (tl.where(idx == token, 1.0, 0.0) - p)
        if HAS_GRAD_ENTROPY:
            # Entries with p == 0 (masked or -inf) get no entropy gradient; selecting
            # before the product avoids 0 * -inf.
            g -= g_ent * p * tl.where(p > 0.0, z - lse + entropy, 0.0)
        tl.store(grad_row_ptr + idx, (g * inv_temp).to(grad_ptr.dtype.element_ty), mask=mask)


def default_block_v(vocab: int) -> int:
    """Vocabulary block per loop step: 4096 (16 bf16 loads per thread at 8 warps), 8192 for
    vocabularies over 64k, or the whole row when it is smaller. On an H200 at V = 152064,
    B*T = 8192, bf16, forward+backward took 2.15-2.18 ms with 8192 against 2.25-2.28 with 4096
    (the block sweep of bench/gpu/run.py, four runs). The interpreter tests use the same
    blocks, so V = 4097 takes the multi-block (rescaling) path with a last block of one entry."""
    return max(16, min(triton.next_power_of_2(vocab), 8192 if vocab > 65536 else 4096))


def _num_warps(block_v: int) -> int:
    return 8 if block_v >= 2048 else 4


def token_logprobs_forward(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float, block_v: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the forward on ``logits [B, T, V]`` (last dim contiguous, any other strides)
    and ``tokens [B, T]``. Returns float32 (logp, lse, entropy), each [B, T]."""
    batch, seq_len, vocab = logits.shape
    rows = batch * seq_len
    logp = torch.empty((batch, seq_len), dtype=torch.float32, device=logits.device)
    lse = torch.empty_like(logp)
    entropy = torch.empty_like(logp)
    if rows == 0:
        return logp, lse, entropy
    block_v = block_v or default_block_v(vocab)
    _token_logprobs_fwd_kernel[(rows,)](
        logits, tokens, logp, lse, entropy,
        seq_len, logits.stride(0), logits.stride(1), tokens.stride(0), tokens.stride(1),
        vocab, 1.0 / temperature,
        BLOCK_V=block_v, num_warps=_num_warps(block_v),
    )
    return logp, lse, entropy


def token_logprobs_backward(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor,
    grad_logp: torch.Tensor,
    grad_entropy: torch.Tensor | None,
    temperature: float,
    block_v: int | None = None,
) -> torch.Tensor:
    """Launch the backward: the gradient of the logits, same shape and dtype as them."""
    batch, seq_len, vocab = logits.shape
    rows = batch * seq_len
    grad = torch.empty((batch, seq_len, vocab), dtype=logits.dtype, device=logits.device)
    if rows == 0:
        return grad
    block_v = block_v or default_block_v(vocab)
    grad_logp = grad_logp.float().contiguous()
    has_grad_entropy = grad_entropy is not None
    if grad_entropy is None:
        grad_entropy = grad_logp  # a valid pointer the kernel never reads
    else:
        grad_entropy = grad_entropy.float().contiguous()
    _token_logprobs_bwd_kernel[(rows,)](
        logits, tokens, grad, lse, entropy, grad_logp, grad_entropy,
        seq_len, logits.stride(0), logits.stride(1), tokens.stride(0), tokens.stride(1),
        grad.stride(0), grad.stride(1),
        vocab, 1.0 / temperature,
        HAS_GRAD_ENTROPY=has_grad_entropy,
        BLOCK_V=block_v, num_warps=_num_warps(block_v),
    )
    return grad


class TokenLogprobsFunction(torch.autograd.Function):
    """Autograd wrapper: saves the logits (no copy), the tokens and two floats per row."""

    @staticmethod
    def forward(ctx, logits, tokens, temperature, block_v):  # type: ignore[override]
        logp, lse, entropy = token_logprobs_forward(logits, tokens, temperature, block_v)
        ctx.save_for_backward(logits, tokens, lse, entropy)
        ctx.temperature = temperature
        ctx.block_v = block_v
        # An output the loss does not use gets None, not zeros: then the backward
        # skips the entropy term entirely.
        ctx.set_materialize_grads(False)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):  # type: ignore[override]
        logits, tokens, lse, entropy = ctx.saved_tensors
        if grad_logp is None:
            grad_logp = torch.zeros_like(lse)
        grad = token_logprobs_backward(
            logits, tokens, lse, entropy, grad_logp, grad_entropy, ctx.temperature, ctx.block_v
        )
        return grad, None, None, None


def token_logprobs_triton(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    return_entropy: bool = False,
    block_v: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Triton path for ``logits [B, T, V]`` and ``tokens [B, T]`` (already validated)."""
    logp, entropy = TokenLogprobsFunction.apply(logits, tokens, temperature, block_v)
    return (logp, entropy) if return_entropy else logp
