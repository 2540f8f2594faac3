"""Benchmarks of vlmrl_fast.ops against torch eager and torch.compile of the references.

    PYTHONPATH=python pytest bench/test_kernels_bench.py --benchmark-only

On the CPU this measures what runs there (the torch reference of token_logprobs, the
Rust or torch GAE) against the straightforward torch code and torch.compile; with
CUDA it adds the Triton kernels (bench/gpu/run.py is the full-size GPU run). Each
benchmark's extra_info holds the peak memory allocated beyond its inputs (peak_memory_mb, the
gradient included for forward+backward) and ratio_vs_<baseline>: the baseline's median time over
its own (a speed-up), the baseline of its group measured in the same run.
"""

from __future__ import annotations

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vlmrl_fast import ops
from vlmrl_fast.ops.kernels.gae_reference import gae_loop, gae_reference
from vlmrl_fast.ops.kernels.token_logprobs_reference import (
    token_logprobs_naive,
    token_logprobs_reference,
)

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
ROWS, VOCAB = (8192, 152064) if CUDA else (128, 32000)
STEPS, ENVS = 512, 64
BASELINE_MEDIANS: dict[str, float] = {}


class _PeakBytes(TorchDispatchMode):
    """Peak bytes of tensor storage created by torch ops inside the block (CPU has no
    allocator statistics): each new storage is counted until it is freed."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.seen: set[int] = set()

    def _free(self, key, nbytes):
        self.seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in tree_leaves(out):
            if isinstance(x, torch.Tensor) and x.device.type == "cpu":
                storage = x.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes and key not in self.seen:
                    self.seen.add(key)
                    self.live += nbytes
                    weakref.finalize(storage, self._free, key, nbytes)
                    self.peak = max(self.peak, self.live)
        return out


def peak_bytes(fn) -> int:
    if CUDA:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with _PeakBytes() as tracker:
        fn()
    return tracker.peak


def run(benchmark, group, name, fn, rounds, baseline):
    """Time ``fn``, record its peak memory and its ratio to the group's baseline."""
    if CUDA:
        inner = fn

        def fn():
            inner()
            torch.cuda.synchronize()

    benchmark.group = group
    benchmark.extra_info["device"] = torch.cuda.get_device_name(0) if CUDA else "cpu"
    # On the CPU the peak is counted from torch ops; a torch.compile graph allocates its
    # buffers inside generated code, out of the counter's sight, so it is not reported.
    compiled = name.startswith("compiled")
    peak = None if compiled and not CUDA else peak_bytes(fn)
    benchmark.extra_info["peak_memory_mb"] = None if peak is None else round(peak / 2**20, 3)
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    median = benchmark.stats.stats.median  # medians: a preempted round on a shared machine moves a mean
    if name == baseline:
        BASELINE_MEDIANS[group] = median
    elif group in BASELINE_MEDIANS:  # the speed-up: the baseline's median time over this one's
        benchmark.extra_info[f"ratio_vs_{baseline}"] = round(BASELINE_MEDIANS[group] / median, 3)


@pytest.fixture(scope="module")
def logits_batch():
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    logits = torch.randn(1, ROWS, VOCAB, device=DEVICE, generator=gen).to(torch.bfloat16)
    tokens = torch.randint(0, VOCAB, (1, ROWS), device=DEVICE, generator=gen)
    return logits.requires_grad_(True), tokens


_compiled_reference = None


def _token_impls():
    global _compiled_reference
    if _compiled_reference is None:
        _compiled_reference = torch.compile(token_logprobs_reference)
    impls = {
        # The baseline first: the paper's full float32 log-softmax, then a gather.
        "naive": token_logprobs_naive,
        "ops_auto": lambda x, t, temp: ops.token_logprobs(x, t, temp),
        "compiled_reference": _compiled_reference,
    }
    return impls


TOKEN_IMPLS = ["naive", "ops_auto", "compiled_reference"]


@pytest.mark.parametrize("impl", TOKEN_IMPLS)
def test_token_logprobs_forward(benchmark, logits_batch, impl):
    logits, tokens = logits_batch
    fn = _token_impls()[impl]

    def forward():
        with torch.no_grad():
            return fn(logits, tokens, 0.2)

    if impl == "compiled_reference":
        forward()  # compile outside the timing
    run(benchmark, f"token_logprobs forward {ROWS}x{VOCAB} bf16", impl, forward, 5, "naive")


@pytest.mark.parametrize("impl", TOKEN_IMPLS)
def test_token_logprobs_forward_backward(benchmark, logits_batch, impl):
    logits, tokens = logits_batch
    fn = _token_impls()[impl]

    def forward_backward():
        logits.grad = None
        fn(logits, tokens, 0.2).sum().backward()

    if impl == "compiled_reference":
        forward_backward()
    run(benchmark, f"token_logprobs forward+backward {ROWS}x{VOCAB} bf16", impl, forward_backward, 5, "naive")
    logits.grad = None


@pytest.fixture(scope="module")
def rollout():
    gen = torch.Generator(device=DEVICE).manual_seed(1)
    shape = (STEPS, ENVS)
    return (
        torch.randn(shape, device=DEVICE, generator=gen),
        torch.randn(shape, device=DEVICE, generator=gen),
        torch.randn(shape, device=DEVICE, generator=gen),
        torch.rand(shape, device=DEVICE, generator=gen) < 0.02,
        torch.rand(shape, device=DEVICE, generator=gen) < 0.01,
    )


GAE_IMPLS = {
    "python_loop": gae_loop,
    "reference": gae_reference,
    "ops_auto": ops.gae,
}


@pytest.mark.parametrize("impl", list(GAE_IMPLS))
def test_gae(benchmark, rollout, impl):
    fn = GAE_IMPLS[impl]
    run(benchmark, f"gae T={STEPS} N={ENVS}", impl, lambda: fn(*rollout, 0.99, 0.95), 20, "python_loop")


def test_gae_dispatch_host_cost(benchmark, rollout, monkeypatch):
    """What `ops.gae` adds on the host before the kernel (argument checks, backend choice): on a GPU a
    call is host-bound (the T=512, N=64 kernel runs ~13 us on an H200), so this is most of the gap to
    one empty launch. The kernel call is replaced by a no-op to time the dispatch alone (any device)."""
    monkeypatch.setattr(ops, "_use_triton", lambda backend, device, what: True)
    monkeypatch.setattr(ops, "_gae_triton", lambda: (lambda *args: None))
    benchmark.group = "gae dispatch host cost"
    benchmark.pedantic(lambda: ops.gae(*rollout, 0.99, 0.95), rounds=20, iterations=5000, warmup_rounds=1)
    benchmark.extra_info["us_per_call"] = round(benchmark.stats.stats.min * 1e6, 2)
