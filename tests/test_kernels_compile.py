"""The Triton kernels compile for an H100 (sm_90) without a GPU.

The interpreter runs the kernels' maths with numpy types and is lenient about what
the compiler rejects (loop-carried types, constexpr branches, pointer arithmetic), so
this compiles each kernel ahead of time for the GPU target, down to PTX and a cubin
through the ptxas that ships with triton. Skipped where triton or its CUDA backend
is missing.
"""

from __future__ import annotations

import os

import pytest

triton = pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter replaces the compiler"
)


def _compile(fn, signature, constexprs, num_warps):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    try:
        target = GPUTarget("cuda", 90, 32)
        kernel = triton.compile(
            ASTSource(fn=fn, signature=signature, constexprs=constexprs),
            target=target,
            options={"num_warps": num_warps},
        )
    except (ImportError, FileNotFoundError, RuntimeError) as err:
        if "ptxas" in str(err) or "backend" in str(err).lower():
            pytest.skip(f"no CUDA compiler backend here: {err}")
        raise
    assert ".entry" in kernel.asm["ptx"] and len(kernel.asm["cubin"]) > 0
    return kernel


def test_token_logprobs_kernels_compile_for_sm90():
    from vlmrl_fast.ops.kernels import token_logprobs_triton as k

    common = {"seq_len": "i32", "stride_lb": "i64", "stride_lt": "i64", "stride_tb": "i64", "stride_tt": "i64"}
    fwd = {"logits_ptr": "*bf16", "tokens_ptr": "*i64", "logp_ptr": "*fp32", "lse_ptr": "*fp32",
           "entropy_ptr": "*fp32", **common, "vocab": "i32", "inv_temp": "fp32", "BLOCK_V": "constexpr"}
    block_v = k.default_block_v(152064)  # Qwen2's vocabulary: the block the GPU runs at full size
    _compile(k._token_logprobs_fwd_kernel, fwd, {"BLOCK_V": block_v}, num_warps=k._num_warps(block_v))
    bwd = {"logits_ptr": "*bf16", "tokens_ptr": "*i64", "grad_ptr": "*bf16", "lse_ptr": "*fp32",
           "entropy_ptr": "*fp32", "grad_logp_ptr": "*fp32", "grad_entropy_ptr": "*fp32", **common,
           "stride_gb": "i64", "stride_gt": "i64", "vocab": "i32", "inv_temp": "fp32",
           "HAS_GRAD_ENTROPY": "constexpr", "BLOCK_V": "constexpr"}
    _compile(k._token_logprobs_bwd_kernel, bwd, {"HAS_GRAD_ENTROPY": True, "BLOCK_V": block_v},
             num_warps=k._num_warps(block_v))


def test_gae_kernel_compiles_for_sm90():
    from vlmrl_fast.ops.kernels import gae_triton as k

    sig = {"rewards_ptr": "*fp32", "values_ptr": "*fp32", "next_values_ptr": "*fp32",
           "terminated_ptr": "*i1", "truncated_ptr": "*i1", "adv_ptr": "*fp32", "ret_ptr": "*fp32",
           "num_steps": "i32", "num_envs": "i32", "gamma": "fp32", "gamma_lam": "fp32",
           "BLOCK_T": "constexpr", "BLOCK_N": "constexpr"}
    block_t, block_n = k.default_blocks(512, 64)
    _compile(k._gae_kernel, sig, {"BLOCK_T": block_t, "BLOCK_N": block_n}, num_warps=4)
