"""GPU check of the shipped accelerate configs: one PPO update of a small VLM per config, in bf16.

    python bench/gpu/dist_check.py --out OUT_DIR [--configs single_gpu,ddp,fsdp,deepspeed_zero2,deepspeed_zero3]
                                   [--work DIR] [--parallel]

For each config it runs `accelerate launch --config_file configs/accelerate/<config>.yaml --num_processes P
-m vlmrl_fast train ...` (P = the GPUs visible, at most --max-processes; one process on a one-GPU machine,
which still runs the FSDP / ZeRO wrapping, the gathered rollout and the gathered checkpoint) with the
embedded tiny VLM, 1 update, no warm start, and records the exit status, wall time, the update's
metrics, the summary and the end of the log in OUT_DIR/dist_gpu.json (rewritten after each config, so a run
cut short keeps what it measured); each config's run folder and whole log go under --work (default: OUT_DIR).
--parallel launches every config at once, each on its own rendezvous port (one GPU holds several tiny
runs; wall times then include the sharing). DeepSpeed configs are recorded as skipped when deepspeed is not
importable. Needs the package importable (PYTHONPATH=python after `maturin develop`, or the wheel); the
launched processes get the same vlmrl_fast (its folder leads their PYTHONPATH).
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


def train_args(config: str, model: Path, run_dir: Path, device: str = "cuda") -> list[str]:
    """`vlmrl train` options: one update of the tiny VLM; FSDP keeps fp32 master weights (bf16 compute)."""
    full_finetune = config == "fsdp"  # FSDP's case: all weights sharded and trained
    return ["--model", str(model), "--run-dir", str(run_dir), "--device", device,
            "--dtype", "float32" if full_finetune else "bfloat16",
            "--lora" if not full_finetune else "--no-lora", "--lora-r", "8", "--lora-alpha", "16",
            "--lora-dropout", "0.0", "--num-envs", "8", "--num-steps", "4", "--max-new-tokens", "32",
            "--temperature", "1.0", "--update-epochs", "1", "--minibatch-size", "4", "--grad-accum-steps", "2",
            "--learning-rate", "1e-4", "--min-learning-rate", "1e-4", "--max-grad-norm", "1.0",
            "--warm-start", "none", "--eval-episodes", "8", "--eval-batch", "4", "--no-progress",
            "--updates", "1", "--dist-timeout", "300"]


def package_root() -> str:
    """The folder holding the vlmrl_fast this script imports (the wheel's or the checkout's python/)."""
    import vlmrl_fast

    return str(Path(vlmrl_fast.__file__).resolve().parents[1])


def launch_config(config: str, processes: int, model: Path, work: Path, port: int, device: str = "cuda") -> dict:
    """Start one config's `accelerate launch` (or record why it is skipped); returns its record, with the
    running process under "proc" (removed by :func:`finish_config`)."""
    if config.startswith("deepspeed"):
        try:
            import deepspeed  # noqa: F401
        except ImportError as err:
            return {"config": config, "status": f"skipped: deepspeed is not importable ({err})"}
    if config == "single_gpu":
        processes = 1
    run_dir = work / f"run_{config}"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs" / "accelerate" / f"{config}.yaml"), "--num_processes", str(processes),
           "--main_process_port", str(port),
           "-m", "vlmrl_fast", "train", *train_args(config, model, run_dir, device)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root(),
                                                                      os.environ.get("PYTHONPATH")])),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # one-process launches init from these too
    log_path = work / f"log_{config}.txt"
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    return {"config": config, "processes": processes, "command": " ".join(cmd[1:]), "proc": proc,
            "log_file": log, "log_path": log_path, "run_dir": run_dir, "t0": time.perf_counter()}


def finish_config(record: dict, timeout: float) -> dict:
    """Wait for a launched config (killing it after `timeout` seconds from its start); fill in its result."""
    proc = record.pop("proc", None)
    if proc is None:
        return record
    rc: int | str
    try:
        rc = proc.wait(timeout=max(1.0, timeout - (time.perf_counter() - record["t0"])))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = "timeout"
    record.pop("log_file").close()
    run_dir = record.pop("run_dir")
    log = record.pop("log_path").read_text(errors="replace")
    record.update(returncode=rc, wall_s=round(time.perf_counter() - record.pop("t0"), 2))
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        lines = metrics.read_text().splitlines()
        record["update"] = json.loads(lines[-1]) if lines else None
    if (run_dir / "summary.json").is_file():
        record["summary"] = json.loads((run_dir / "summary.json").read_text())
    saved = sorted((run_dir / "agent").rglob("*.safetensors"))
    if saved:  # the agent written at the end: gathered weights, no empty (still partitioned) tensor
        from safetensors import safe_open

        counts = {"files": len(saved), "tensors": 0, "empty": 0}
        for path in saved:
            with safe_open(str(path), "pt") as f:
                for name in f.keys():
                    counts["tensors"] += 1
                    counts["empty"] += int(0 in f.get_slice(name).get_shape())  # no elements (a scalar has one)
        record["saved_agent"] = counts
    record["status"] = ("ok" if rc == 0 and "summary" in record and record.get("saved_agent", {}).get("empty", 1) == 0
                        else "failed")
    record["log_tail"] = log[-6000:]
    first = log.find("Traceback (most recent call last)")
    if record["status"] != "ok" and first >= 0:
        start = log.rfind("\n", 0, first) + 1
        record["first_traceback"] = log[start:start + 12000]
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for dist_gpu.json and the runs")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configs/accelerate names")
    parser.add_argument("--max-processes", type=int, default=2, help="processes per multi-process config")
    parser.add_argument("--timeout", type=float, default=240, help="seconds per config")
    parser.add_argument("--work", help="folder for the tiny model, the runs and their logs (default: --out)")
    parser.add_argument("--parallel", action="store_true", help="launch every config at once")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cpu: check this script itself on a machine without a GPU (one process per config)")
    args = parser.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"--configs: unknown config(s) {', '.join(map(repr, unknown))}; known: {', '.join(CONFIGS)}")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("dist_check: no CUDA GPU visible", file=sys.stderr)
        return 2
    from vlmrl_fast.models import build_tiny_vlm

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else out
    work.mkdir(parents=True, exist_ok=True)
    model = build_tiny_vlm("llava", work / "tiny_vlm", seed=0, size="default")
    gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    processes = max(1, min(gpus, args.max_processes))
    results: list[dict] = []
    report = {"device": torch.cuda.get_device_name(0) if gpus else "cpu", "gpus": gpus,
              "torch": torch.__version__, "python": platform.python_version(), "results": results}
    report["parallel"] = args.parallel

    def finish(record: dict) -> None:
        results.append(finish_config(record, args.timeout))
        (out / "dist_gpu.json").write_text(json.dumps(report, indent=1) + "\n")
        print(f"{record['config']}: {record['status']} ({record.get('wall_s', '-')} s)", flush=True)

    if args.parallel:
        launched = [launch_config(c, processes, model, work, 29500 + 7 * i, args.device) for i, c in enumerate(configs)]
        for record in launched:
            finish(record)
    else:
        for i, config in enumerate(configs):
            finish(launch_config(config, processes, model, work, 29500 + 7 * i, args.device))
    return 0 if all(r["status"] != "failed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
