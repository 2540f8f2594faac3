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


def test_scale_script_smoke_writes_every_key(tmp_path):
    """bench/gpu/scale.py --smoke: both architectures at toy size through one real PPO iteration, the
    one-at-a-time rollout and every generation variant, on the CPU; the JSON has the issue's schema."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu" / "scale.py"), "--smoke", "--out", str(tmp_path)],
                          env=_env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = tmp_path.glob("scale_*.json")
    result = json.loads(path.read_text())
    assert result["smoke"] is True and result["complete"] is True and result["device"].startswith("cpu")
    assert {r["model"] for r in result["rows"]} == {"qwen2_vl_2b", "llava_next_mistral_7b"}
    settings = result["settings"]
    for row in result["rows"]:
        assert row["errors"] == [], row["errors"]
        assert {"model", "num_envs", "seconds", "tokens_per_s", "peak_memory_gb", "batched_vs_one_at_a_time",
                "generation_variants"} <= set(row)
        assert row["num_envs"] == settings["num_envs"] == 2
        assert set(row["seconds"]) == {"prompt", "generate", "logprob", "update", "env"}
        assert all(v > 0 for v in row["seconds"].values()), row["seconds"]
        assert row["tokens_per_s"] > 0 and row["batched_vs_one_at_a_time"] > 0
        assert "peak_memory_gb" in row  # null on the CPU
        # the forced length: every answer is exactly max_new_tokens long (no early EOS)
        n = settings["num_envs"] * settings["num_steps"]
        assert row["answer_tokens"] == {"min": settings["max_new_tokens"], "max": settings["max_new_tokens"], "count": n}
        assert row["one_at_a_time"]["envs"] == settings["serial_envs"]
        variants = row["generation_variants"]
        assert {"plain_generate", "eager_attention", "flash_attention_2", "static_cache_compile",
                "continuous_batching"} <= set(variants)
        for name in ("plain_generate", "eager_attention", "static_cache_compile", "continuous_batching"):
            assert "error" not in variants[name], (name, variants[name])
            assert variants[name]["vs_plain_generate"] > 0 and variants[name]["tokens"] > 0
            if name != "continuous_batching":  # generate_batch takes no suppressed tokens: EOS may end it early
                assert variants[name]["tokens"] == settings["num_envs"] * settings["max_new_tokens"], (name, variants[name])
        assert "error" not in variants["flash_attention_2"]
