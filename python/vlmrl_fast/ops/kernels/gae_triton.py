"""GAE in Triton: one program per block of environment columns, a parallel scan over time.

The recursion A_t = delta_t + c_t * A_{t+1}, with c_t = gamma * lam * (1 - done_t), is a
composition of affine maps f_t(x) = delta_t + c_t * x: A_t = f_t(f_{t+1}(...f_{T-1}(0))).
Composition is associative, (c1, d1) after (c2, d2) = (c1 * c2, d1 + c1 * d2), so a chunk
of BLOCK_T steps is solved with one ``tl.associative_scan`` (log2(BLOCK_T) dependent steps
instead of BLOCK_T). Time is walked from the end in chunks (sequential across chunks, so
any T works); each chunk's scan starts from 0 and adds prod(c) * A_carry of the
chunk after it, which is the same affine composition written out. The loads of a chunk do
not depend on the carry, so the whole kernel is a handful of memory round trips: that is
what brings it close to the cost of an empty launch, where a loop over time is T launches.

The scan runs over the reversed time index (row k of a chunk is step end - 1 - k), so it
is an ordinary forward scan. Summation order differs from the sequential loop, so results
agree with the reference to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl


@triton.jit
def _compose(c_prev, d_prev, c_next, d_next):
    # (c_prev, d_prev) is the map of the later steps (already scanned); the new step
    # applies after it in scan order: x -> d_next + c_next * (d_prev + c_prev * x).
    return c_next * c_prev, d_next + c_next * d_prev


@triton.jit
def _gae_kernel(
    rewards_ptr, values_ptr, next_values_ptr, terminated_ptr, truncated_ptr,
    adv_ptr, ret_ptr,
    num_steps, num_envs, gamma, gamma_lam,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
):
    env = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    env_mask = env < num_envs
    k = tl.arange(0, BLOCK_T)
    carry = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for chunk in range(0, tl.cdiv(num_steps, BLOCK_T)):
        chunk_end = num_steps - chunk * BLOCK_T
        step = chunk_end - 1 - k
        mask = (step >= 0)[:, None] & env_mask[None, :]
        offs = step.to(tl.int64)[:, None] * num_envs + env[None, :]
        r = tl.load(rewards_ptr + offs, mask=mask, other=0.0)
        v = tl.load(values_ptr + offs, mask=mask, other=0.0)
        nv = tl.load(next_values_ptr + offs, mask=mask, other=0.0)
        term = tl.load(terminated_ptr + offs, mask=mask, other=1) != 0
        trunc = tl.load(truncated_ptr + offs, mask=mask, other=1) != 0
        delta = r + tl.where(term, 0.0, gamma * nv) - v
        coef = tl.where(term | trunc, 0.0, gamma_lam)
        prod, adv = tl.associative_scan((coef, delta), axis=0, combine_fn=_compose)
        adv = adv + prod * carry[None, :]
        tl.store(adv_ptr + offs, adv, mask=mask)
        tl.store(ret_ptr + offs, adv + v, mask=mask)
        # A at the earliest step of this chunk (row BLOCK_T - 1, or the last valid row
        # of the final partial chunk) is the carry of the chunk before it.
        last_row = tl.minimum(chunk_end, BLOCK_T) - 1
        carry = tl.sum(tl.where((k == last_row)[:, None], adv, 0.0), axis=0)


@functools.lru_cache(maxsize=64)
def default_blocks(num_steps: int, num_envs: int) -> tuple[int, int]:
    """(BLOCK_T, BLOCK_N): up to 16 environments per program and up to 4096 elements per
    chunk tile (T = 512, N = 64 runs as 4 programs, each scanning two 256-step chunks)."""
    block_n = max(1, min(triton.next_power_of_2(max(num_envs, 1)), 16))
    block_t = max(2, min(triton.next_power_of_2(max(num_steps, 1)), 4096 // block_n))
    return block_t, block_n


def _as_f32(x: torch.Tensor) -> torch.Tensor:
    # Attribute checks first: the common case (float32, contiguous) costs no torch call.
    return x if x.dtype is torch.float32 and x.is_contiguous() else x.float().contiguous()


def _as_flag(x: torch.Tensor) -> torch.Tensor:
    # bool tensors go to the kernel as they are (one byte per flag); others become bool.
    x = x if x.dtype is torch.bool else x != 0
    return x if x.is_contiguous() else x.contiguous()


def gae_triton(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    lam: float,
    block_t: int | None = None,
    block_n: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the GAE kernel on ``[T, N]`` tensors of one device; float32 (advantages, returns)."""
    # The host side of this call is most of its cost at rollout sizes (the kernel itself runs
    # about 13 us on an H200 at T = 512, N = 64), so inputs that are already float32 / bool and contiguous pass through
    # untouched and nothing else is allocated besides the two outputs.
    num_steps, num_envs = rewards.shape
    rewards, values, next_values = _as_f32(rewards), _as_f32(values), _as_f32(next_values)
    terminated, truncated = _as_flag(terminated), _as_flag(truncated)
    advantages = torch.empty_like(rewards)
    returns = torch.empty_like(rewards)
    if num_steps == 0 or num_envs == 0:
        return advantages, returns
    if block_t is None or block_n is None:
        default_t, default_n = default_blocks(num_steps, num_envs)
        block_t, block_n = block_t or default_t, block_n or default_n
    args = (rewards, values, next_values, terminated, truncated, advantages, returns,
            num_steps, num_envs, float(gamma), float(gamma) * float(lam))
    grid = -(-num_envs // block_n)
    key = None
    if rewards.is_cuda and _FAST_LAUNCH["enabled"]:
        # The outputs come fresh from the caching allocator (512-byte aligned): only inputs can be views.
        ptrs = rewards.data_ptr() | values.data_ptr() | next_values.data_ptr() | terminated.data_ptr() \
            | truncated.data_ptr()
        key = (rewards.get_device(), num_steps, num_envs, block_t, block_n, ptrs % 16 == 0)
        launch = _FAST_LAUNCH["kernels"].get(key)
        if launch is not None:
            try:
                launch(*args, block_t, block_n)
                return advantages, returns
            except (TypeError, AttributeError, ValueError):  # a Triton whose launcher differs: JIT path from now on
                _FAST_LAUNCH["enabled"] = False
    compiled = _gae_kernel[(grid,)](*args, BLOCK_T=block_t, BLOCK_N=block_n)
    if key is not None and hasattr(compiled, "run") and len(_FAST_LAUNCH["kernels"]) < 64:
        try:
            _FAST_LAUNCH["kernels"][key] = compiled[(grid, 1, 1)]  # a launcher bound to this grid
        except (TypeError, AttributeError):
            _FAST_LAUNCH["enabled"] = False
    return advantages, returns


# Launching through Triton's JIT entry point re-derives the kernel's specialization from every argument
# on each call (on the H200 machine: 25 us for this kernel's launch alone, against 12 us for a
# cached compiled kernel's launch, and 13 us for the kernel itself on the device). The compiled kernel for a
# rollout shape is looked up once and then launched directly (measured on an H200: bench/README.md).
# The key holds everything its specialization depends on: the device, the two sizes (which also fix
# the grid), the blocks, and whether the input pointers are 16-byte aligned (the dtypes are fixed:
# float32 and bool). A launcher that does not take these arguments raises, and the JIT path is used
# from then on.
_FAST_LAUNCH: dict = {"enabled": True, "kernels": {}}
