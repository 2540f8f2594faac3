"""The ``vlmrl`` command line.

Subcommands: ``envs`` lists the environments; ``play`` runs a built-in policy
(expert or random) for a number of episodes, prints success rates and writes a
PNG strip of one episode.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from vlmrl_fast.envs import list_envs, make_vec


def _cmd_envs(args: argparse.Namespace) -> int:
    for env_id in list_envs():
        env = make_vec(env_id, 1, seed=0, num_threads=1)
        names = env.action_names
        print(f"{env_id}: {len(names)} actions {names}")
    return 0


def _strip(frames: list[np.ndarray], max_frames: int = 12) -> np.ndarray:
    """Frames side by side with a 4-pixel gap (at most `max_frames`)."""
    frames = frames[:max_frames]
    h, w, _ = frames[0].shape
    out = np.full((h, len(frames) * (w + 4) - 4, 3), 255, dtype=np.uint8)
    for i, f in enumerate(frames):
        out[:, i * (w + 4) : i * (w + 4) + w] = f
    return out


def _cmd_play(args: argparse.Namespace) -> int:
    from PIL import Image
    from tqdm import tqdm

    from vlmrl_fast import byo
    from vlmrl_fast.config import ConfigError

    try:
        if byo.is_python_env(args.env):
            if args.prompt_template:
                byo.check_env(args.env, args.prompt_template)
            else:
                byo.split_spec(args.env)
    except (ConfigError, ValueError) as e:
        print(f"vlmrl play: error: {e}", file=sys.stderr)
        return 2
    env = make_vec(args.env, args.num_envs, seed=args.seed, num_threads=args.num_threads)
    rng = np.random.default_rng(args.seed)
    obs, info = env.reset()
    n = env.num_envs
    returns = np.zeros(n)
    lengths = np.zeros(n, dtype=np.int64)
    resetting = np.zeros(n, dtype=bool)  # NEXT_STEP: this step only resets
    finished_returns: list[float] = []
    finished_lengths: list[int] = []
    frames = [obs[0].copy()]
    recording = True
    with tqdm(total=args.episodes, desc=f"{args.env} {args.policy}", unit="ep", disable=args.quiet) as bar:
        while len(finished_returns) < args.episodes:
            if args.policy == "expert":
                actions = env.expert_actions()
            elif isinstance(env.action_names[0], list):  # per-env action sets (ALFWorld)
                actions = np.array([rng.integers(0, len(names)) for names in env.action_names])
            else:
                actions = rng.integers(0, len(env.action_names), size=n)
            obs, rewards, terminated, truncated, info = env.step(actions)
            live = ~resetting
            returns[live] += rewards[live]
            lengths[live] += 1
            if recording:
                frames.append(obs[0].copy())
            done = (terminated | truncated) & live
            for i in np.flatnonzero(done):
                if len(finished_returns) < args.episodes:
                    finished_returns.append(float(returns[i]))
                    finished_lengths.append(int(lengths[i]))
                    bar.update(1)
                returns[i] = 0.0
                lengths[i] = 0
                if i == 0:
                    recording = False
            resetting = done
    rets = np.array(finished_returns)
    success = float(np.mean(rets > 0))
    print(
        f"{args.env} policy={args.policy} episodes={len(rets)} success_rate={success:.3f} "
        f"mean_return={rets.mean():.3f} mean_length={np.mean(finished_lengths):.2f}"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.env.split('/')[-1]}-{args.policy}-episode.png"
    Image.fromarray(_strip(frames)).save(path)
    print(f"episode strip: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``vlmrl`` (subcommands are added here)."""
    parser = argparse.ArgumentParser(prog="vlmrl", description="vlmrl_fast command line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("envs", help="list the environments and their actions")
    p.set_defaults(func=_cmd_envs)

    p = sub.add_parser("play", help="run a built-in policy and report success rates")
    p.add_argument("--env", default="Points24-v0", help="env id, with or without the vlmrl_fast/ namespace, "
                   "or MODULE:ENV_ID (a gymnasium env that importing MODULE registers)")
    p.add_argument("--prompt-template", default="", help="prompt template TOML file of a MODULE:ENV_ID env "
                   "(where the action names come from it)")
    p.add_argument("--policy", choices=["expert", "random"], default="expert", help="which built-in policy plays")
    p.add_argument("--episodes", type=int, default=200, help="episodes to finish before reporting")
    p.add_argument("--num-envs", type=int, default=16, help="envs stepped together")
    p.add_argument("--num-threads", type=int, default=None, help="engine threads (default: one per core)")
    p.add_argument("--seed", type=int, default=0, help="seed of the envs and of the random policy")
    p.add_argument("--out", default="runs/play", help="folder for the PNG strip of one episode")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_play)

    from vlmrl_fast.train_cli import add_subcommands  # train, sft, eval

    add_subcommands(sub)
    from vlmrl_fast.table import add_subcommand as add_table  # table

    add_table(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vlmrl`` script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "episodes", 1) < 1:
        print("vlmrl: --episodes must be at least 1", file=sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
