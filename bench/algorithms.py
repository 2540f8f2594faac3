"""Side-by-side benchmark of the advantage estimators (issue 20): PPO, GRPO, RLOO and GiGPO from the same
warm start, with the same env-step budget and seeds, on one game.

The warm start is made once: the trainer's SFT warm start (its default recipe) of the `tiny` model as built
at the time, saved as a plain model folder (out/warm_start); every run starts from it with warm_start none
(the PPO runs add a freshly seeded value head).

    OMP_NUM_THREADS=1 .venv/bin/python bench/algorithms.py --out /tmp/algs --seeds 0 1 2 --updates 6

Each (algorithm, seed) run is one `vlmrl_fast.trainer.train` job in its own process (so its peak RSS is
its own), evaluated on the same fixed held-out set (eval_seed) before RL and every `--eval-every` updates.
Writes runs.json (one row per run), the table table.md and the figure algorithms.png (evaluation success
against env steps: mean over seeds, min-max band) into --out.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ALGORITHMS = ("ppo", "grpo", "rloo", "gigpo")


def config_values(args: argparse.Namespace, algorithm: str, seed: int, run_dir: Path) -> dict:
    return dict(env=args.env, model=str(Path(args.out) / "warm_start"), algorithm=algorithm, group_size=args.group_size, seed=seed,
                num_envs=args.num_envs, num_steps=args.num_steps, updates=args.updates,
                minibatch_size=args.minibatch_size, update_epochs=args.update_epochs, warm_start="none",
                eval_episodes=args.eval_episodes, eval_batch=args.eval_episodes, eval_every=args.eval_every,
                eval_every_episodes=args.eval_episodes, report_episodes=0, checkpoint_every=10_000,
                progress=False, run_dir=str(run_dir), learning_rate=args.learning_rate,
                min_learning_rate=args.learning_rate / 3)


def run_one(spec: str) -> None:
    """Child process: train one run, then print its peak RSS and wall time as one JSON line."""
    import torch

    torch.set_num_threads(1)
    from vlmrl_fast.config import load_config
    from vlmrl_fast.trainer import train

    values = json.loads(spec)
    t0 = time.perf_counter()
    summary = train(load_config(None, values))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"summary": summary, "peak_rss_mb": peak_mb, "wall_s": time.perf_counter() - t0}),
          flush=True)


def make_warm_start(args: argparse.Namespace) -> None:
    """Child process: SFT the tiny model on args.env once and save it as a plain model folder."""
    import torch
    from accelerate import Accelerator

    torch.set_num_threads(1)
    from vlmrl_fast.config import load_config
    from vlmrl_fast.ppo import build_agent
    from vlmrl_fast.trainer import warm_start

    cfg = load_config(None, dict(env=args.env, model="tiny", progress=False, seed=12345,
                                 sft_episodes=args.sft_episodes))
    agent = build_agent(cfg, "cpu")
    stats = warm_start(agent, cfg, Accelerator(cpu=True))
    dest = Path(args.out) / "warm_start"
    agent.model.save_pretrained(dest)
    agent.processor.save_pretrained(dest)
    print("RESULT " + json.dumps({k: v for k, v in stats.items() if isinstance(v, (int, float, str))}), flush=True)


def curve(run_dir: Path, before: float) -> list[tuple[int, float]]:
    """(env steps, eval success) of a run: before RL at 0, then every periodic evaluation."""
    points = [(0, before)]
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "eval/success_rate" in rec:
            points.append((int(rec["global_step"]), float(rec["eval/success_rate"])))
    return points


def update_seconds(run_dir: Path) -> float:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    times = [r["time/iteration_s"] for r in recs if "time/iteration_s" in r]
    return sum(times) / max(len(times), 1)


def plot(rows: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for alg in ALGORITHMS:
        # the periodic evaluations, then the evaluation after RL at the run's last env step
        runs = [r["curve"] + ([[r["env_steps"], r["success_after"]]] if r["curve"][-1][0] < r["env_steps"] else [])
                for r in rows if r["algorithm"] == alg]
        if not runs:
            continue
        steps = [s for s, _ in runs[0]]
        ys = np.array([[y for _, y in c][: len(steps)] for c in runs])
        ax.plot(steps, ys.mean(0), marker="o", label=f"{alg} (mean of {len(runs)} seeds)")
        ax.fill_between(steps, ys.min(0), ys.max(0), alpha=0.15)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval success rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--env", default="NumberLine-v0")
    p.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--updates", type=int, default=6)
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--num-steps", type=int, default=4)
    p.add_argument("--minibatch-size", type=int, default=8)
    p.add_argument("--update-epochs", type=int, default=2)
    p.add_argument("--learning-rate", type=float, default=3e-4)
    p.add_argument("--eval-episodes", type=int, default=24)
    p.add_argument("--eval-every", type=int, default=2)
    p.add_argument("--sft-episodes", type=int, default=40)
    p.add_argument("--report-only", action="store_true", help="only write table.md and the figure from runs.json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--warm-start-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        run_one(args.child)
        return
    if args.warm_start_child:
        make_warm_start(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "warm_start" / "config.json").is_file():
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--out", str(out), "--env", args.env, "--sft-episodes",
                               str(args.sft_episodes), "--warm-start-child"], capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"warm start failed:\n{proc.stderr[-3000:]}")
        print(f"warm start: {time.perf_counter() - t0:.0f} s", proc.stdout.splitlines()[-1], flush=True)
    rows_path = out / "runs.json"
    rows: list[dict] = json.loads(rows_path.read_text()) if rows_path.exists() else []
    if args.report_only:
        write_outputs(rows, out, args)
        return
    done = {(r["algorithm"], r["seed"]) for r in rows}
    for seed in args.seeds:  # seed-major: an interrupted benchmark still has every algorithm side by side
        for alg in args.algorithms:
            if (alg, seed) in done:
                continue
            run_dir = out / f"{alg}-seed{seed}"
            spec = json.dumps(config_values(args, alg, seed, run_dir))
            proc = subprocess.run([sys.executable, __file__, "--out", str(out), "--child", spec],
                                  capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                sys.exit(f"{alg} seed {seed} failed:\n{proc.stderr[-3000:]}")
            res = json.loads(line[len("RESULT "):])
            s = res["summary"]
            rows.append({"algorithm": alg, "seed": seed, "success_before": s["success_rate_before_rl"],
                         "success_after": s["success_rate_after_rl"], "env_steps": s["env_steps"],
                         "wall_s": res["wall_s"], "update_s": update_seconds(run_dir),
                         "peak_rss_mb": res["peak_rss_mb"],
                         "curve": curve(run_dir, s["success_rate_before_rl"])})
            rows_path.write_text(json.dumps(rows, indent=1))
            print(f"{alg} seed {seed}: success {s['success_rate_before_rl']:.3f} -> {s['success_rate_after_rl']:.3f}"
                  f", {res['wall_s']:.0f} s", flush=True)
    write_outputs(rows, out, args)


def write_outputs(rows: list[dict], out: Path, args: argparse.Namespace) -> None:
    import numpy as np

    lines = ["| algorithm | seeds | eval success before RL | final success mean | final success min | "
             "s per update | job wall s | peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    for alg in ALGORITHMS:
        rs = [r for r in rows if r["algorithm"] == alg]
        if not rs:
            continue
        after = np.array([r["success_after"] for r in rs])
        lines.append(f"| {alg} | {len(rs)} | {np.mean([r['success_before'] for r in rs]):.3f} | {after.mean():.3f} | "
                     f"{after.min():.3f} | {np.mean([r['update_s'] for r in rs]):.1f} | "
                     f"{np.mean([r['wall_s'] for r in rs]):.0f} | {max(r['peak_rss_mb'] for r in rs):.0f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    title = (f"{args.env}, SFT warm start of the tiny model,\n{args.num_envs} envs x {args.num_steps} steps x {args.updates} updates, "
             f"group_size {args.group_size}, eval {args.eval_episodes} episodes")
    plot(rows, out / "algorithms.png", title)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
