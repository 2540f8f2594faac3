"""`vlmrl train`, `vlmrl sft` and `vlmrl eval`: subcommands registered into vlmrl_fast.cli.

Every TrainConfig field is an option (`--field-name`, help from the field); `--config FILE` reads a TOML
file first and options override it. Bad input (unknown env, model path, wrong type or range) ends the
command with a one-line error naming the field or file, before any heavy work.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vlmrl_fast.config import ConfigError, TrainConfig, add_config_arguments, load_config, overrides_from_args


TRACEBACK_ENV = "VLMRL_FAST_TRACEBACK"


def _fail(command: str, err: BaseException) -> int:
    """One line naming the error. With VLMRL_FAST_TRACEBACK=1 the traceback comes first: a ValueError /
    TypeError may also come from deep inside a run (a model or library rejecting something)."""
    import os
    import traceback

    if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        traceback.print_exception(err, file=sys.stderr)
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    print(f"vlmrl {command}: error: {msg}", file=sys.stderr)
    return 2


def _errors() -> tuple[type[BaseException], ...]:
    from vlmrl_fast.checkpoint import CheckpointError

    from vlmrl_fast.distributed import PeerFailure

    return (ConfigError, ValueError, TypeError, CheckpointError, FileNotFoundError, PeerFailure)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """--config file (or, when resuming, the run's saved config.toml) + command-line overrides, validated."""
    overrides = overrides_from_args(args)
    path = args.config
    resume = getattr(args, "resume", None)
    if resume is not None:
        if resume:  # `--resume RUN_DIR`
            overrides["run_dir"] = resume
        saved = Path(overrides.get("run_dir") or load_config(path, overrides).resolved_run_dir()) / "config.toml"
        if path is None:
            if not saved.is_file():
                raise ConfigError(f"--resume: no run to continue, {saved} does not exist")
            path = saved
    return load_config(path, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    """Run (or resume) the PPO job; prints the summary."""
    from vlmrl_fast.trainer import print_summary, train

    try:
        from vlmrl_fast.distributed import failure_guard

        cfg = config_from_args(args)
        with failure_guard():  # with several processes, a failure here ends the others with this error
            summary = train(cfg, resume=args.resume is not None)
    except _errors() as e:
        return _fail("train", e)
    print_summary(summary)
    return 0


def cmd_sft(args: argparse.Namespace) -> int:
    """Build demonstrations of --env, fine-tune on their answer tokens, save the agent to <run_dir>/agent."""
    from accelerate import Accelerator

    from vlmrl_fast.ppo import build_agent, derive_seed
    from vlmrl_fast.sft import build_demonstrations, train_sft, valid_answer_rate
    from vlmrl_fast.trainer import apply_torch_threads, check_inputs, resolve_device

    try:
        cfg = config_from_args(args)
        check_inputs(cfg)
        device = resolve_device(cfg.device)
        apply_torch_threads(cfg, device)
        accelerator = Accelerator(cpu=device == "cpu")
        agent = build_agent(cfg, str(accelerator.device))
        demos = build_demonstrations(cfg.env, cfg.sft_episodes, actions=cfg.sft_actions, seed=cfg.seed,
                                     cot=cfg.cot, state_text=cfg.state_text, thoughts=cfg.sft_thoughts)
    except _errors() as e:
        return _fail("sft", e)
    from tqdm.auto import tqdm

    from vlmrl_fast.perception import has_fields, held_out_accuracy, perception_frames
    from vlmrl_fast.trainer import perception_warm_start

    extra = perception_warm_start(agent, cfg, accelerator)  # the perception stage first, where it applies
    held = None
    if cfg.cot and has_fields(cfg.env):  # the same held-out frames after the stage and after SFT
        held = perception_frames(cfg.env, 128, seed=derive_seed(cfg.seed, 0xF3), cot=cfg.cot, play=cfg.perception_play)
    if extra.get("perception_stage") == "ran" and held is not None:
        extra["perception_accuracy_held_out"] = held_out_accuracy(agent, held)
    steps = cfg.sft_epochs * -(-len(demos) // cfg.sft_batch_size)
    with tqdm(total=steps, desc=f"SFT on {len(demos)} demonstration steps", disable=not cfg.progress) as bar:
        losses = train_sft(agent, demos, epochs=cfg.sft_epochs, batch_size=cfg.sft_batch_size,
                           learning_rate=cfg.sft_learning_rate, accelerator=accelerator,
                           plan_weight=cfg.sft_plan_weight, seed=cfg.seed,
                           on_step=lambda s, t, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
    held_out = build_demonstrations(cfg.env, 16, actions=cfg.sft_actions, seed=derive_seed(cfg.seed, 0xE7),
                                    cot=cfg.cot, state_text=cfg.state_text, thoughts=cfg.sft_thoughts)
    valid = valid_answer_rate(agent, None, held_out, seed=cfg.seed)  # each step's own legal actions
    if held is not None:  # SFT can erase what the stage taught (a learning rate too high): say so
        extra["perception_accuracy_after_sft"] = held_out_accuracy(agent, held)
    run_dir = cfg.resolved_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    agent.save(run_dir / "agent")
    summary = {"env_id": cfg.env, "model": cfg.model, "demonstrations": len(demos), "first_loss": losses[0],
               "last_loss": losses[-1], "valid_answer_rate": valid, "agent": str(run_dir / "agent"), **extra}
    (run_dir / "sft_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


def load_agent_for_eval(model: str, args: argparse.Namespace) -> Any:
    """An agent from a saved agent folder (agent.json), a run folder (its agent/), or any model."""
    from vlmrl_fast.agent import Agent
    from vlmrl_fast.models import ModelSettings, load_model

    path = Path(model)
    if (path / "agent" / "agent.json").is_file():
        path = path / "agent"
    settings = ModelSettings(device=args.device, lora=False)
    if (path / "agent.json").is_file():
        agent = Agent.load(path, settings)
    else:
        m, processor = load_model(model, settings)
        agent = Agent(m, processor)
    agent.temperature = args.temperature
    agent.max_new_tokens = args.max_new_tokens
    return agent.eval()


def cmd_eval(args: argparse.Namespace) -> int:
    """Success-rate table over --envs (the paper's Table 1 layout)."""
    import vlmrl_fast
    from vlmrl_fast.rollout import evaluate_agent

    envs = [e.strip() for e in args.envs.split(",") if e.strip()]
    known = {k.split("/")[-1] for k in vlmrl_fast.list_envs()}
    try:
        from vlmrl_fast import byo

        for e in envs:
            if byo.is_python_env(e):
                byo.check_env(e, args.prompt_template)
            elif e.split("/")[-1] not in known:
                raise ConfigError(f"--envs: unknown environment {e!r}; known: {', '.join(sorted(known))}")
        if args.episodes < 1:
            raise ConfigError(f"--episodes: must be >= 1, got {args.episodes}")
        agent = load_agent_for_eval(args.model, args)
    except _errors() as e:
        return _fail("eval", e)
    rows = []
    for env_id in envs:
        res = evaluate_agent(agent, env_id, episodes=args.episodes, seed=args.seed, batch=args.batch,
                             cot=not args.action_only, state_text=args.state_text)
        rows.append({"env": env_id, "episodes": res.episodes, "success_rate": res.success_rate,
                     "mean_return": res.mean_return, "invalid_rate": res.invalid_rate,
                     "perception_accuracy": res.perception_accuracy})
    print("| env | episodes | success % | mean return | invalid answers % | perception % |\n|---|---|---|---|---|---|")
    for r in rows:
        perc = "-" if r["perception_accuracy"] != r["perception_accuracy"] else f"{100 * r['perception_accuracy']:.1f}"
        print(f"| {r['env']} | {r['episodes']} | {100 * r['success_rate']:.1f} | {r['mean_return']:.2f} | "
              f"{100 * r['invalid_rate']:.1f} | {perc} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def add_subcommands(sub: Any) -> None:
    """Register train, sft and eval on the `vlmrl` subparsers."""
    p = sub.add_parser("train", help="warm start + PPO on an environment; writes runs/<name>/",
                       description="Train a VLM agent with PPO. Defaults: NumberLine-v0, the embedded tiny VLM, "
                                   "CPU. Options override --config, which overrides the defaults.")
    p.add_argument("--config", default=None, help="TOML config file (see configs/)")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (default: --run-dir) from its latest checkpoint")
    add_config_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sft", help="fine-tune on expert (or random-action) demonstrations; answer tokens only",
                       description="Supervised fine-tuning on demonstrations built from an environment. "
                                   "Uses the sft_* options; saves the agent to <run_dir>/agent.")
    p.add_argument("--config", default=None, help="TOML config file (see configs/)")
    add_config_arguments(p)
    p.set_defaults(func=cmd_sft, resume=None)

    p = sub.add_parser("eval", help="success-rate table of a model over environments")
    p.add_argument("--model", default="tiny", help="model folder or hub id, an agent folder, or a run folder")
    p.add_argument("--envs", default="NumberLine-v0", help="comma-separated env ids (or MODULE:ENV_ID)")
    p.add_argument("--prompt-template", default="", help="prompt template TOML file of a MODULE:ENV_ID env")
    p.add_argument("--episodes", type=int, default=200, help="episodes per env (a fixed, seeded set)")
    p.add_argument("--seed", type=int, default=1_000_003, help="seed of the episode set")
    p.add_argument("--batch", type=int, default=64, help="episodes played at once")
    p.add_argument("--temperature", type=float, default=0.2, help="sampling temperature")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest answer")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--action-only", action="store_true", help="action-only prompts (no chain of thought)")
    p.add_argument("--state-text", action="store_true", help="append the env's text description to the prompt")
    p.add_argument("--out", default="", help="also write the table as JSON to this file")
    p.set_defaults(func=cmd_eval)
