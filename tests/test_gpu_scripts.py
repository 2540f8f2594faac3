"""The GPU machine's scripts (bench/gpu/), run here the way they check themselves without a GPU.

A GPU is lent rarely and for minutes, so its scripts must work the first time: the kernel check at toy
sizes under the Triton interpreter, and the accelerate-config check with `--device cpu` (one real
`accelerate launch -m vlmrl_fast train` of the tiny VLM, its record and its saved agent checked).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"), OMP_NUM_THREADS="1", **extra)
    return env


def test_kernel_check_script_runs_at_toy_sizes(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu" / "run.py"), "--out", str(tmp_path), "--smoke"],
                          env=_env(TRITON_INTERPRET="1"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "kernels_gpu.json").read_text())
    assert result["errors"] == [] and result["smoke"] is True and "interpreter" in result["device"]
    assert result["token_logprobs"]["correctness"]["ok"]
    gae = result["gae"]
    assert gae["correctness"]["ok"] and gae["correctness_cached_launch"]["adv_max_abs_err"] < 1e-3
    # every implementation was timed (none recorded an error instead)
    assert not [k for k in gae["timings_s"] if k.endswith("/error")]
    assert {"triton", "python_loop", "ops.gae", "empty_triton_launch"} <= set(gae["timings_s"])
    sweep = gae["block_sweep_device_us"]
    assert sweep and all(isinstance(v, dict) and v["adv_max_abs_err"] < 1e-3 for v in sweep.values()), sweep


def test_accelerate_config_check_script_on_the_cpu(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu" / "dist_check.py"), "--out", str(out),
                           "--work", str(work), "--device", "cpu", "--parallel", "--timeout", "400",
                           "--configs", "single_gpu,deepspeed_zero2"],
                          env=_env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    report = json.loads((out / "dist_gpu.json").read_text())
    records = {r["config"]: r for r in report["results"]}
    single = records["single_gpu"]
    assert single["status"] == "ok", single.get("first_traceback") or single.get("log_tail")
    assert single["summary"]["world_size"] == 1 and single["summary"]["updates_done"] == 1
    assert single["update"]["update"] == 1 and "losses/policy_loss" in single["update"]
    assert single["saved_agent"]["tensors"] > 0 and single["saved_agent"]["empty"] == 0
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        assert records["deepspeed_zero2"]["status"].startswith("skipped: deepspeed is not importable")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
