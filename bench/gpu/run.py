"""GPU check of vlmrl_fast's Triton kernels: correctness at full size, then timings and memory.

One command on a CUDA machine, installs nothing, needs torch and triton:

    python bench/gpu/run.py --out OUT_DIR

It imports ``vlmrl_fast.ops`` when the package is installed (the abi3 wheel, installed
with --no-deps) and otherwise loads the kernel modules straight from this checkout's
python/vlmrl_fast/ops/kernels/. It writes OUT_DIR/kernels_gpu.json, naming the device, after every
section, so a run cut short still leaves what it measured. ``--smoke`` runs the same
code at toy sizes (on the CPU under TRITON_INTERPRET=1) to check the script itself.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import torch
import triton
import triton.language as tl

REPO = Path(__file__).resolve().parents[2]
SMOKE = False  # --smoke: one or two repetitions per timing, the interpreter is slow


@triton.jit
def empty_kernel(x_ptr, n: tl.constexpr):
    """Does nothing: its launch time is the floor the GAE kernel is measured against."""
    pass


def _load_folder(name, folder):
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return package


def load_kernels():
    """The kernel modules: from the installed package; else its kernels folder loaded on
    its own (``import vlmrl_fast`` also imports the environments, whose dependencies a
    GPU machine may lack); else this checkout's python/vlmrl_fast/ops/kernels/."""
    try:
        package = importlib.import_module("vlmrl_fast.ops.kernels")
        source = f"installed {Path(package.__file__).parent}"
    except ImportError as err:
        installed = [Path(p) / "vlmrl_fast" / "ops" / "kernels" for p in sys.path if p]
        installed = [p for p in installed if (p / "__init__.py").is_file()]
        folder = installed[0] if installed else REPO / "python" / "vlmrl_fast" / "ops" / "kernels"
        package = _load_folder("vlmrl_kernels_src", folder)
        source = f"{folder} (import vlmrl_fast failed: {err})"
    mods = {m: importlib.import_module(f"{package.__name__}.{m}") for m in (
        "token_logprobs_reference", "token_logprobs_triton", "gae_reference", "gae_triton")}
    return source, mods


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_call(fn, device, warmup=3, reps=10):
    """Mean seconds per call over ``reps`` back-to-back calls, after ``warmup`` calls.
    Back-to-back includes each call's host-side launch cost, as in a training step."""
    if SMOKE:
        warmup, reps = 1, 1
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / reps


def peak_extra_bytes(fn, device):
    """Peak bytes allocated by ``fn`` beyond what was allocated before it (CUDA only)."""
    if device.type != "cuda":
        return None
    sync(device)
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated() - base


def max_errors(a, b, chunk=1 << 26):
    """(max abs error, max error relative to |b|+1e-3) without full-size temporaries."""
    a, b = a.reshape(-1), b.reshape(-1)
    worst_abs = worst_rel = 0.0
    for s in range(0, a.numel(), chunk):
        d = (a[s:s + chunk].float() - b[s:s + chunk].float()).abs()
        worst_abs = max(worst_abs, d.max().item())
        worst_rel = max(worst_rel, (d / (b[s:s + chunk].float().abs() + 1e-3)).max().item())
    return worst_abs, worst_rel


def token_logprobs_section(mods, device, rows, vocab, dtype, temperature, with_compile, result, save):
    ref_mod, tri_mod = mods["token_logprobs_reference"], mods["token_logprobs_triton"]
    gen = torch.Generator(device=device).manual_seed(0)
    leaf = (3 * torch.randn(1, rows, vocab, device=device, generator=gen)).to(dtype).requires_grad_(True)
    tokens = torch.randint(0, vocab, (1, rows), device=device, generator=gen)
    g_logp = torch.randn(1, rows, device=device, generator=gen)
    g_ent = torch.randn(1, rows, device=device, generator=gen)
    out = result.setdefault("token_logprobs", {"rows": rows, "vocab": vocab, "dtype": str(dtype),
                                               "temperature": temperature})

    def triton_fwd(return_entropy=False):
        return tri_mod.token_logprobs_triton(leaf, tokens, temperature, return_entropy)

    # Correctness at full size: log-probs, entropy and the gradient of a loss using both.
    checks = {}
    for impl in ("triton", "reference"):
        leaf.grad = None
        if impl == "triton":
            lp, ent = triton_fwd(True)
        else:
            lp, ent = ref_mod.token_logprobs_reference(leaf, tokens, temperature, True)
        ((lp * g_logp).sum() + (ent * g_ent).sum()).backward()
        checks[impl] = (lp.detach(), ent.detach(), leaf.grad)
        del lp, ent
        leaf.grad = None
    (lp, ent, grad), (lp_r, ent_r, grad_r) = checks["triton"], checks["reference"]
    out["correctness"] = {
        "logp_max_abs_err": max_errors(lp, lp_r)[0],
        "entropy_max_abs_err": max_errors(ent, ent_r)[0],
        "grad_max_abs_err": max_errors(grad, grad_r)[0],
        "grad_max_rel_err": max_errors(grad, grad_r)[1],
    }
    tol_grad = {torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 4e-3}[dtype]
    out["correctness"]["ok"] = bool(
        out["correctness"]["logp_max_abs_err"] < 2e-3
        and out["correctness"]["entropy_max_abs_err"] < 2e-3
        and out["correctness"]["grad_max_rel_err"] < tol_grad * 4 + 1e-6
    )
    del checks, lp, ent, grad, lp_r, ent_r, grad_r
    save()

    impls = {
        "triton": lambda: tri_mod.token_logprobs_triton(leaf, tokens, temperature),
        "reference": lambda: ref_mod.token_logprobs_reference(leaf, tokens, temperature),
        "naive": lambda: ref_mod.token_logprobs_naive(leaf, tokens, temperature),
    }
    if with_compile:
        compiled = torch.compile(ref_mod.token_logprobs_reference)
        impls["compiled_reference"] = lambda: compiled(leaf, tokens, temperature)
    timings = out.setdefault("timings_s", {})
    memory = out.setdefault("peak_extra_bytes", {})
    for name, fwd in impls.items():
        def fwd_bwd(fwd=fwd):
            leaf.grad = None
            (fwd() * g_logp).sum().backward()
        try:
            with torch.no_grad():
                timings[f"{name}/forward"] = time_call(fwd, device)
            timings[f"{name}/forward_backward"] = time_call(fwd_bwd, device)
            leaf.grad = None
            # Beyond the logits, which are already allocated; the gradient is subtracted
            # so what remains is what each implementation adds on top of logits + grad.
            peak = peak_extra_bytes(fwd_bwd, device)
            if peak is not None:
                memory[f"{name}/forward_backward_beyond_grad"] = peak - leaf.numel() * leaf.element_size()
            leaf.grad = None
        except Exception as err:  # one failing baseline must not lose the others
            timings[f"{name}/error"] = f"{type(err).__name__}: {err}"
        save()
    if "reference/forward_backward" in timings and "triton/forward_backward" in timings:
        out["target_time_ratio_fwd_bwd"] = timings["triton/forward_backward"] / timings["reference/forward_backward"]
        out["target_time_met"] = out["target_time_ratio_fwd_bwd"] <= 0.7
    ref_mem = memory.get("reference/forward_backward_beyond_grad")
    if ref_mem:
        out["target_memory_ratio"] = memory["triton/forward_backward_beyond_grad"] / ref_mem
        out["target_memory_met"] = out["target_memory_ratio"] <= 0.01
    # Block size sweep, to tune default_block_v on this device.
    sweep = out.setdefault("block_v_sweep_fwd_bwd_s", {})
    for block_v in (256, 1024) if device.type != "cuda" else (1024, 2048, 4096, 8192, 16384):
        def run(block_v=block_v):
            leaf.grad = None
            lp, _ = tri_mod.TokenLogprobsFunction.apply(leaf, tokens, temperature, block_v)
            (lp * g_logp).sum().backward()
        try:
            sweep[str(block_v)] = time_call(run, device, warmup=2, reps=5)
        except Exception as err:
            sweep[str(block_v)] = f"{type(err).__name__}: {err}"
    save()


def gae_section(mods, device, num_steps, num_envs, with_compile, result, save):
    ref_mod, tri_mod = mods["gae_reference"], mods["gae_triton"]
    gen = torch.Generator(device=device).manual_seed(1)
    shape = (num_steps, num_envs)
    batch = (
        torch.randn(shape, device=device, generator=gen),
        torch.randn(shape, device=device, generator=gen),
        torch.randn(shape, device=device, generator=gen),
        torch.rand(shape, device=device, generator=gen) < 0.02,
        torch.rand(shape, device=device, generator=gen) < 0.01,
    )
    gamma, lam = 0.99, 0.95
    out = result.setdefault("gae", {"num_steps": num_steps, "num_envs": num_envs})
    adv, ret = tri_mod.gae_triton(*batch, gamma, lam)
    adv_r, ret_r = ref_mod.gae_reference(*batch, gamma, lam)
    out["correctness"] = {"adv_max_abs_err": max_errors(adv, adv_r)[0], "ret_max_abs_err": max_errors(ret, ret_r)[0]}
    out["correctness"]["ok"] = out["correctness"]["adv_max_abs_err"] < 1e-3
    save()

    flag = torch.zeros(1, device=device)
    impls = {
        "empty_triton_launch": lambda: empty_kernel[(1,)](flag, 1),
        "triton": lambda: tri_mod.gae_triton(*batch, gamma, lam),
        "python_loop": lambda: ref_mod.gae_loop(*batch, gamma, lam),
        "reference": lambda: ref_mod.gae_reference(*batch, gamma, lam),
    }
    try:
        from vlmrl_fast import ops

        impls["ops.gae"] = lambda: ops.gae(*batch, gamma, lam)
    except ImportError:  # the package itself is not importable here: kernels only
        pass
    def bare_launch(bt, bn):
        """The GAE kernel launched directly (no wrapper) with blocks (bt, bn) into outputs allocated
        once: (launch, its advantages buffer)."""
        adv_buf, ret_buf = torch.empty_like(batch[0]), torch.empty_like(batch[0])

        def launch():
            tri_mod._gae_kernel[(-(-num_envs // bn),)](
                *batch, adv_buf, ret_buf, num_steps, num_envs, gamma, gamma * lam, BLOCK_T=bt, BLOCK_N=bn)

        return launch, adv_buf

    def graph_x100(launch):
        """100 launches captured in a CUDA graph: its replay times the kernel's device time alone."""
        launch()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(100):
                launch()
        return graph.replay

    # Diagnostics: the bare launch of the GAE kernel with its default blocks, and its device time.
    launch_only, _ = bare_launch(*tri_mod.default_blocks(num_steps, num_envs))
    impls["triton_launch_only"] = launch_only
    if device.type == "cuda":
        # The empty kernel launched the way gae_triton launches a cached kernel (compiled kernel, no
        # JIT dispatch): the floor of that launch path, against the JIT-launched empty kernel.
        try:
            empty_compiled = empty_kernel[(1,)](flag, 1)
            empty_compiled[(1, 1, 1)](flag, 1)
            impls["empty_cached_launch"] = lambda: empty_compiled[(1, 1, 1)](flag, 1)
        except Exception as err:
            out["empty_cached_launch_error"] = f"{type(err).__name__}: {err}"
        try:
            impls["triton_device_time_x100_graph"] = graph_x100(launch_only)
        except Exception as err:
            out["graph_error"] = f"{type(err).__name__}: {err}"
    # Block sweep of the kernel's device time (to tune default_blocks): each (BLOCK_T, BLOCK_N) is
    # checked against the reference, then timed as 100 launches in a CUDA graph.
    sweep = out.setdefault("block_sweep_device_us", {})
    combos = [(256, 16), (512, 8), (512, 4), (256, 8), (128, 16), (512, 2), (512, 1)] if device.type == "cuda" \
        else [(16, 4), (64, 2)]
    for bt, bn in combos:
        try:
            launch, adv_buf = bare_launch(bt, bn)
            launch()
            err = max_errors(adv_buf, adv_r)[0]
            per = time_call(graph_x100(launch), device, warmup=2, reps=20) / 100 if device.type == "cuda" else None
            sweep[f"{bt}x{bn}"] = {"us": None if per is None else round(per * 1e6, 2), "adv_max_abs_err": err}
        except Exception as exc:
            sweep[f"{bt}x{bn}"] = f"{type(exc).__name__}: {exc}"
    save()
    if with_compile:
        compiled = torch.compile(ref_mod.gae_reference)
        impls["compiled_reference"] = lambda: compiled(*batch, gamma, lam)
    timings = out.setdefault("timings_s", {})
    for name, fn in impls.items():
        reps = 5 if name in ("python_loop", "reference", "compiled_reference") else 20 if "graph" in name else 200
        try:
            timings[name] = time_call(fn, device, warmup=3, reps=reps)
        except Exception as err:
            timings[f"{name}/error"] = f"{type(err).__name__}: {err}"
        save()
    # The timed calls after the first launch the cached compiled kernel: check that path's result too.
    adv, ret = tri_mod.gae_triton(*batch, gamma, lam)
    out["correctness_cached_launch"] = {"adv_max_abs_err": max_errors(adv, adv_r)[0],
                                        "ret_max_abs_err": max_errors(ret, ret_r)[0],
                                        "fast_launch_enabled": bool(getattr(tri_mod, "_FAST_LAUNCH", {}).get("enabled"))}
    out["correctness"]["ok"] = out["correctness"]["ok"] and out["correctness_cached_launch"]["adv_max_abs_err"] < 1e-3
    if "triton" in timings:
        out["target_speedup_vs_python_loop"] = timings["python_loop"] / timings["triton"]
        out["target_ratio_vs_empty_launch"] = timings["triton"] / timings["empty_triton_launch"]
        out["target_met"] = (out["target_speedup_vs_python_loop"] >= 200
                             and out["target_ratio_vs_empty_launch"] <= 2)
    if "ops.gae" in timings:
        out["ops_gae_ratio_vs_empty_launch"] = timings["ops.gae"] / timings["empty_triton_launch"]
    save()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for kernels_gpu.json")
    parser.add_argument("--smoke", action="store_true", help="toy sizes, to check the script (CPU ok)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    parser.add_argument("--compile-gae", action="store_true",
                        help="also torch.compile the GAE reference (its time loop unrolls T steps: slow to compile)")
    parser.add_argument("--rows", type=int, default=8192, help="B*T of the token_logprobs check")
    parser.add_argument("--vocab", type=int, default=152064, help="V of the token_logprobs check")
    args = parser.parse_args(argv)
    global SMOKE
    SMOKE = args.smoke

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        parser.error("no CUDA device: run with --smoke (and TRITON_INTERPRET=1) to check the script")
    source, mods = load_kernels()

    result = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, interpreter)",
        "capability": list(torch.cuda.get_device_capability(0)) if device.type == "cuda" else None,
        "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "kernels_from": source, "smoke": args.smoke,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "errors": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "kernels_gpu.json"

    def save():
        path.write_text(json.dumps(result, indent=2))

    save()
    rows, vocab = (7, 1000) if args.smoke else (args.rows, args.vocab)
    steps, envs = (37, 5) if args.smoke else (512, 64)
    sections = [
        ("token_logprobs", lambda: token_logprobs_section(
            mods, device, rows, vocab, torch.bfloat16, 0.2, not args.no_compile and not args.smoke, result, save)),
        ("gae", lambda: gae_section(mods, device, steps, envs, args.compile_gae, result, save)),
    ]
    for name, run in sections:
        start = time.perf_counter()
        try:
            run()
        except Exception:
            result["errors"].append(f"{name}: {traceback.format_exc()}")
        result.setdefault("section_seconds", {})[name] = round(time.perf_counter() - start, 1)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        save()
    print(json.dumps(result, indent=2))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
