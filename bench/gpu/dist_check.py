"""GPU check of the shipped accelerate configs: one PPO update of a small VLM per config, in bf16.

    python bench/gpu/dist_check.py --out OUT_DIR [--configs single_gpu,ddp,fsdp,deepspeed_zero2,deepspeed_zero3]

For each config it runs `accelerate launch --config_file configs/accelerate/<config>.yaml --num_processes P
-m vlmrl_fast train ...` (P = the GPUs visible, at most --max-processes; one process on a one-GPU machine,
which still runs the FSDP / ZeRO wrapping, the gathered rollout and the gathered checkpoint) with the
embedded tiny VLM, 1 update, no warm start, and records the exit status, wall time, the update's
metrics, the summary and the end of the log in OUT_DIR/dist_gpu.json (rewritten after each config, so a run
cut short keeps what it measured). DeepSpeed configs are recorded as skipped when deepspeed is not
importable. Needs the package importable (PYTHONPATH=python after `maturin develop`, or the wheel).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIGS = ("single_gpu", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")


def train_args(config: str, model: Path, run_dir: Path) -> list[str]:
    """`vlmrl train` options: one update of the tiny VLM; FSDP keeps fp32 master weights (bf16 compute)."""
    full_finetune = config == "fsdp"  # FSDP's case: all weights sharded and trained
    return ["--model", str(model), "--run-dir", str(run_dir), "--device", "cuda",
            "--dtype", "float32" if full_finetune else "bfloat16",
            "--lora" if not full_finetune else "--no-lora", "--lora-r", "8", "--lora-alpha", "16",
            "--lora-dropout", "0.0", "--num-envs", "8", "--num-steps", "4", "--max-new-tokens", "32",
            "--temperature", "1.0", "--update-epochs", "1", "--minibatch-size", "4", "--grad-accum-steps", "2",
            "--learning-rate", "1e-4", "--min-learning-rate", "1e-4", "--max-grad-norm", "1.0",
            "--warm-start", "none", "--eval-episodes", "8", "--eval-batch", "4", "--no-progress",
            "--updates", "1", "--dist-timeout", "300"]


def run_config(config: str, processes: int, model: Path, out: Path, timeout: float) -> dict:
    """Launch one config; return its record."""
    if config.startswith("deepspeed"):
        try:
            import deepspeed  # noqa: F401
        except ImportError:
            return {"config": config, "status": "skipped: deepspeed is not installed"}
    if config == "single_gpu":
        processes = 1
    run_dir = out / f"run_{config}"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs" / "accelerate" / f"{config}.yaml"), "--num_processes", str(processes),
           "-m", "vlmrl_fast", "train", *train_args(config, model, run_dir)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "python"),
                                                                      os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    rc: int | str
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, log = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        parts = [p.decode(errors="replace") if isinstance(p, bytes) else (p or "") for p in (e.stdout, e.stderr)]
        rc, log = "timeout", "".join(parts)
    record = {"config": config, "processes": processes, "returncode": rc,
              "wall_s": round(time.perf_counter() - t0, 2), "command": " ".join(cmd[1:])}
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        lines = metrics.read_text().splitlines()
        record["update"] = json.loads(lines[-1]) if lines else None
    if (run_dir / "summary.json").is_file():
        record["summary"] = json.loads((run_dir / "summary.json").read_text())
    record["status"] = "ok" if rc == 0 and "summary" in record else "failed"
    record["log_tail"] = log[-3000:]
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for dist_gpu.json and the runs")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configs/accelerate names")
    parser.add_argument("--max-processes", type=int, default=2, help="processes per multi-process config")
    parser.add_argument("--timeout", type=float, default=240, help="seconds per config")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("dist_check: no CUDA GPU visible", file=sys.stderr)
        return 2
    from vlmrl_fast.models import build_tiny_vlm

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    model = build_tiny_vlm("llava", out / "tiny_vlm", seed=0, size="default")
    processes = max(1, min(torch.cuda.device_count(), args.max_processes))
    results: list[dict] = []
    report = {"device": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(),
              "torch": torch.__version__, "python": platform.python_version(), "results": results}
    for config in [c.strip() for c in args.configs.split(",") if c.strip()]:
        if config not in CONFIGS:
            parser.error(f"--configs: unknown config {config!r}; known: {', '.join(CONFIGS)}")
        record = run_config(config, processes, model, out, args.timeout)
        results.append(record)
        (out / "dist_gpu.json").write_text(json.dumps(report, indent=1) + "\n")
        print(f"{config}: {record['status']} ({record.get('wall_s', '-')} s)", flush=True)
    return 0 if all(r["status"] != "failed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
