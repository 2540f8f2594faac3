"""The perception stage on frames of several envs at once, on a fresh default-size tiny VLM: how well the model
reads each env's image afterwards, and how long the stage takes (issue 18's "default model reads every env").

    .venv/bin/python bench/perception.py --envs NumberLine-v0,EZPoints-v0,Points24-v0,Blackjack-v0 \\
        --steps 600 --vision-steps 300 --frames 2048 --out runs/bench_perception

Builds the default-size tiny llava (seed 0) into OUT/model, draws `--frames` frames of random play per env
(seed 1) and 64 held-out frames per env (seed 2), runs `train_perception` over all envs (round robin), then
writes OUT/perception.json: per env the held-out perception accuracy of greedy answers (`answer`) and of
the stage's auxiliary classifiers on the image features (`probe`: do the image tokens carry the fields at
all), and the seconds of each phase. One thread (`torch.set_num_threads(1)`), as the trainer runs on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def run(envs: list[str], steps: int, vision_steps: int, frames: int, out: Path, learning_rate: float,
        vision_lr_scale: float = 3.0, threads: int = 1) -> dict:
    import torch

    from vlmrl_fast.config import load_config
    from vlmrl_fast.models.tiny import build_tiny_vlm
    from vlmrl_fast.perception import held_out_accuracy, perception_frames, probe_accuracy, train_perception
    from vlmrl_fast.ppo import build_agent

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    path = build_tiny_vlm("llava", out / "model", seed=0, size="default")
    agent = build_agent(load_config(None, dict(model=str(path), lora=False, max_new_tokens=96)), "cpu")
    t1 = time.perf_counter()
    sets = [perception_frames(e, frames, seed=1) for e in envs]
    held = [perception_frames(e, 64, seed=2) for e in envs]
    t2 = time.perf_counter()
    stage = train_perception(agent, sets, steps=steps, vision_steps=vision_steps, batch_size=16,
                             learning_rate=learning_rate, vision_lr_scale=vision_lr_scale)
    t3 = time.perf_counter()
    result: dict = {"envs": envs, "steps": steps, "vision_steps": vision_steps, "frames": frames,
                    "learning_rate": learning_rate, "build_seconds": t1 - t0, "frames_seconds": t2 - t1,
                    "stage_seconds": t3 - t2, "accuracy": {}}
    for d in held:
        result["accuracy"][d.env_id] = {"answer": held_out_accuracy(agent, d), "probe": probe_accuracy(agent, stage, d)}
    result["last_joint_loss"] = stage.losses[-1] if stage.losses else None
    out.mkdir(parents=True, exist_ok=True)
    (out / "perception.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", default="NumberLine-v0,EZPoints-v0,Points24-v0,Blackjack-v0")
    p.add_argument("--steps", type=int, default=600, help="joint steps (answer NLL + auxiliary heads)")
    p.add_argument("--vision-steps", type=int, default=300, help="vision-only steps before them")
    p.add_argument("--frames", type=int, default=2048, help="training frames per env")
    p.add_argument("--learning-rate", type=float, default=3e-4)
    p.add_argument("--vision-lr-scale", type=float, default=3.0, help="vision tower / projector lr multiplier")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default="runs/bench_perception")
    args = p.parse_args(argv)
    envs = [e.strip() for e in args.envs.split(",") if e.strip()]
    if not envs:
        p.error("--envs: no env named")
    res = run(envs, args.steps, args.vision_steps, args.frames, Path(args.out), args.learning_rate, args.vision_lr_scale,
              args.threads)
    print("| env | answer accuracy | probe accuracy |\n|---|---|---|")
    for env, acc in res["accuracy"].items():
        print(f"| {env} | {acc['answer']:.3f} | {acc['probe']:.3f} |")
    print(f"stage {res['stage_seconds']:.0f} s, build {res['build_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
