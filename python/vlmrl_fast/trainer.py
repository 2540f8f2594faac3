"""The main job behind `vlmrl train`: check inputs, warm start, evaluate, PPO updates, evaluate again,
and write the run's artifacts (config, metrics, checkpoints, summary, learning curve, episode report)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmrl_fast import distributed
from vlmrl_fast.checkpoint import latest_checkpoint, load_checkpoint, write_file_atomic
from vlmrl_fast.config import ConfigError, TrainConfig
from vlmrl_fast.ppo import build_agent, derive_seed, reference_evaluator, train_update
from vlmrl_fast.report import MetricsLogger, plot_learning_curve, write_episode_report, write_summary
from vlmrl_fast.rollout import EvalResult, evaluate_agent, prompt_batch, render_prompts, split_infos


def apply_torch_threads(cfg: TrainConfig, device: str) -> int:
    """Sets torch's intra-op threads to cfg.torch_threads on the CPU device (0 or another device: left as
    it is). Returns the number in force."""
    if device == "cpu" and cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    return torch.get_num_threads()


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; a CUDA device without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config field 'device': {device!r} requested but no CUDA GPU is visible")
    return device


def check_inputs(cfg: TrainConfig) -> None:
    """Fail fast, before loading weights: unknown env, missing model folder, processor without a chat
    template. (The context-length check needs the model and runs right after loading it.)"""
    import vlmrl_fast
    from vlmrl_fast.models import load_processor

    from vlmrl_fast import byo

    known = list(vlmrl_fast.list_envs())
    if byo.is_python_env(cfg.env):
        byo.check_env(cfg.env, cfg.prompt_template, vectorization=cfg.env_vectorization, cot=cfg.cot)
    elif cfg.env not in known and f"vlmrl_fast/{cfg.env}" not in known:
        short = sorted(k.split("/")[-1] for k in known)
        raise ConfigError(f"config field 'env': unknown environment {cfg.env!r}; known: {', '.join(short)}")
    resolve_device(cfg.device)
    load_processor(cfg.model, image_backend=cfg.image_backend)  # ValueError naming the path, or the missing chat template


def check_context(agent: Any, cfg: TrainConfig, envs: Any) -> None:
    """A prompt of this env plus max_new_tokens must fit the language model's context."""
    obs, infos = envs.reset(seed=cfg.seed)
    prompts = render_prompts(cfg.env, split_infos(infos, 1)[:1], cfg.cot, cfg.state_text)
    batch = prompt_batch(agent, np.asarray(obs)[:1], prompts)
    limit = getattr(agent.model.config.get_text_config(), "max_position_embeddings", None)
    need = int(batch.input_ids.shape[1]) + cfg.max_new_tokens
    if limit is not None and need > limit:
        raise ConfigError(f"config field 'max_new_tokens': prompt ({batch.input_ids.shape[1]} tokens) + "
                          f"max_new_tokens ({cfg.max_new_tokens}) = {need} exceeds the model's context of "
                          f"{limit} tokens")


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=True)


def run_evaluation(agent: Any, cfg: TrainConfig, accelerator: Any, desc: str, record: int = 0,
                   episodes: int | None = None) -> tuple[dict[str, float], EvalResult | None]:
    """The fixed evaluation set (`episodes` episodes, by default cfg.eval_episodes, seeded by cfg.eval_seed),
    split over processes."""
    total = cfg.eval_episodes if episodes is None else episodes
    if total == 0:
        return {"success_rate": float("nan"), "mean_return": float("nan"), "invalid_rate": float("nan")}, None
    world, rank = accelerator.num_processes, accelerator.process_index
    share = total // world + (1 if rank < total % world else 0)
    offset = rank * (total // world) + min(rank, total % world)
    with _bar(total, desc, cfg.progress and accelerator.is_main_process) as bar:
        res = evaluate_agent(agent, cfg.env, episodes=share, seed=cfg.eval_seed + offset, batch=cfg.eval_batch,
                             cot=cfg.cot, state_text=cfg.state_text, fallback=cfg.invalid_fallback,
                             fallback_action=cfg.fallback_action, record=record if rank == 0 else 0, progress=bar,
                             history_steps=cfg.history_steps)
    distributed.wait_for_all(accelerator, "eval")  # evaluations of unequal duration end outside collectives
    r = np.array(res.returns)
    # perception figures: NaN (no state fields) stays NaN through the episode-weighted sum
    t = torch.tensor([len(r), float((r > 0).sum()), float(r.sum()), res.invalid_rate * len(r),
                      res.perception_accuracy * len(r), res.thought_consistency * len(r)],
                     dtype=torch.float64, device=accelerator.device)
    n, succ, total, inv, perc, cons = (float(x) for x in accelerator.reduce(t, reduction="sum").cpu())
    return {"success_rate": succ / n, "mean_return": total / n, "invalid_rate": inv / n, "episodes": n,
            "perception_accuracy": perc / n, "thought_consistency": cons / n}, res


def warm_start(agent: Any, cfg: TrainConfig, accelerator: Any) -> dict[str, Any]:
    """SFT on demonstrations of cfg.env (cfg.sft_actions: expert or random actions). Returns its stats."""
    from vlmrl_fast.sft import build_demonstrations, train_sft

    t0 = time.perf_counter()
    rank = accelerator.process_index
    stats = perception_warm_start(agent, cfg, accelerator)
    if stats.get("perception_stage", "").startswith("skipped") and accelerator.is_main_process:
        print(f"perception stage {stats['perception_stage']}", flush=True)
    demos = build_demonstrations(cfg.env, cfg.sft_episodes, actions=cfg.sft_actions,
                                 seed=derive_seed(cfg.seed, rank, 0xD3), cot=cfg.cot,
                                 state_text=cfg.state_text, thoughts=cfg.sft_thoughts)
    steps = cfg.sft_epochs * -(-len(demos) // cfg.sft_batch_size)
    with _bar(steps, f"warm start (SFT, {len(demos)} steps of {cfg.sft_actions} play)",
              cfg.progress and accelerator.is_main_process) as bar:
        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")

        losses = train_sft(agent, demos, epochs=cfg.sft_epochs, batch_size=cfg.sft_batch_size,
                           learning_rate=cfg.sft_learning_rate, accelerator=accelerator,
                           plan_weight=cfg.sft_plan_weight,
                           seed=derive_seed(cfg.seed, rank, 0xD4), on_step=on_step)
    agent.eval()
    return {**stats, "sft_demonstrations": len(demos), "sft_first_loss": losses[0] if losses else None,
            "sft_last_loss": losses[-1] if losses else None, "sft_seconds": time.perf_counter() - t0}


def perception_skipped(agent: Any, cfg: TrainConfig) -> str | None:
    """Why the perception stage (on by default) cannot run for this env and model, or None when it can: it
    needs an answer format with state fields to supervise and a model that sees images."""
    from vlmrl_fast.perception import has_fields

    if not has_fields(cfg.env):
        return f"the answer format of {cfg.env!r} has no state fields (vlmrl_fast.perception.FIELDS)"
    if agent.text_only:
        return f"{cfg.model!r} is a text-only model"
    return None


def perception_warm_start(agent: Any, cfg: TrainConfig, accelerator: Any) -> dict[str, Any]:
    """The perception stage on frames of cfg.env (cfg.perception_steps steps), before the SFT warm start.
    Returns its stats with `perception_stage` "ran", or only `perception_stage` "skipped: <why>" where it
    cannot run (`perception_skipped`); {} when cfg.perception_steps is 0."""
    from vlmrl_fast.perception import perception_frames, train_perception

    if cfg.perception_steps == 0:
        return {}
    skipped = perception_skipped(agent, cfg)
    if skipped is not None:
        return {"perception_stage": f"skipped: {skipped}"}
    t0 = time.perf_counter()
    rank = accelerator.process_index
    data = perception_frames(cfg.env, cfg.perception_frames, seed=derive_seed(cfg.seed, rank, 0xF1), cot=cfg.cot,
                             play=cfg.perception_play)
    with _bar(cfg.perception_steps, f"perception stage ({len(data)} frames)",
              cfg.progress and accelerator.is_main_process) as bar:
        stage = train_perception(agent, [data], steps=cfg.perception_steps, batch_size=cfg.sft_batch_size,
                                  learning_rate=cfg.perception_learning_rate,
                                  vision_steps=cfg.perception_vision_steps,
                                  field_weight=cfg.perception_field_weight, probe=cfg.perception_probe,
                                  seed=derive_seed(cfg.seed, rank, 0xF2), device=accelerator.device,
                                  on_step=lambda s, t, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
    return {"perception_last_loss": stage.losses[-1] if stage.losses else None,
            "perception_seconds": time.perf_counter() - t0, "perception_stage": "ran"}


RUN_MARKERS = ("config.toml", "metrics.jsonl", "summary.json", "checkpoints")


def keep_earlier_run(run_dir: Path) -> Path | None:
    """A new run (not --resume) into a folder that holds an earlier run moves that run aside to
    <folder>.prev-<UTC time> instead of overwriting it; returns where it went (None: nothing was there)."""
    if not run_dir.is_dir() or not any((run_dir / m).exists() for m in RUN_MARKERS):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    dest = run_dir.with_name(f"{run_dir.name}.prev-{stamp}")
    k = 1
    while dest.exists():
        dest, k = run_dir.with_name(f"{run_dir.name}.prev-{stamp}-{k}"), k + 1
    run_dir.rename(dest)
    print(f"{run_dir} held an earlier run: moved it to {dest} (vlmrl train --resume continues a run instead)",
          flush=True)
    return dest


def train(cfg: TrainConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run the job described by cfg (validated here); with resume, continue cfg's run folder from its
    latest checkpoint. Returns the summary (also written to summary.json when the run completes)."""
    from gymnasium.vector import AutoresetMode

    from vlmrl_fast import make_vec

    cfg.validate()
    t_job = time.perf_counter()
    check_inputs(cfg)
    device = resolve_device(cfg.device)
    apply_torch_threads(cfg, device)
    run_dir = cfg.resolved_run_dir()
    ckpt = latest_checkpoint(run_dir) if resume else None  # CheckpointError before any heavy work
    accelerator = distributed.make_accelerator(cfg, device)
    rank, main = accelerator.process_index, accelerator.is_main_process
    torch.manual_seed(derive_seed(cfg.seed, rank, 0xA11))
    np.random.seed(derive_seed(cfg.seed, rank, 0xA12))
    if main:
        if not resume:
            keep_earlier_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_file_atomic(run_dir / "config.toml", cfg.to_toml())

    with distributed.model_loading(accelerator):
        agent = build_agent(cfg, str(accelerator.device) if device != "cpu" else "cpu")
    envs = make_vec(cfg.env, cfg.num_envs, seed=derive_seed(cfg.seed, rank, 0xE0),
                    autoreset_mode=AutoresetMode.SAME_STEP)
    check_context(agent, cfg, envs)
    params = [p for p in agent.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)

    state: dict[str, Any] = {}
    if ckpt is None:
        if cfg.warm_start == "sft":
            state.update(warm_start(agent, cfg, accelerator))
            distributed.broadcast_trainable(accelerator, agent)  # every process continues from rank 0's
        before, _ = run_evaluation(agent, cfg, accelerator, "eval before RL")
        state["eval_before_rl"] = before
        state["wall_seconds_before"] = 0.0
    wrapped, optimizer = distributed.prepare(accelerator, agent, optimizer, micro_batch_size=cfg.minibatch_size)
    if ckpt is not None and cfg.kl_coef > 0:  # the KL reference is the policy RL started from
        load_checkpoint(ckpt.parent / "update_000000", agent, None, rank=rank, restore_rng=False)
    ref_evaluate = reference_evaluator(agent, cfg)
    if ckpt is not None:
        distributed.check_resume_supported(accelerator)
        state = load_checkpoint(ckpt, agent, optimizer, rank=rank)
        start = int(state["update"])
    else:
        start = 0
        distributed.save_checkpoint_all(accelerator, run_dir, 0, agent, optimizer, state, wrapped)
    logger = MetricsLogger(run_dir, tensorboard=cfg.tensorboard and main, wandb=cfg.wandb and main,
                           config=cfg.to_dict(), resume_from_step=start if ckpt is not None else None) \
        if main else None

    stopped, done, train_episodes = False, start, 0.0
    with _bar(cfg.updates, "PPO", cfg.progress and main) as bar:
        bar.update(start)
        for update in range(start, cfg.updates):
            record = train_update(agent, optimizer, accelerator, envs, cfg, update, rank, ref_evaluate, wrapped)
            record = distributed.mean_over_processes(accelerator, record)
            train_episodes += record["charts/episodes"]
            if periodic_eval_due(cfg, update + 1):  # in the update's record: a resume drops or keeps both
                with distributed.rollout_context(accelerator, agent, wrapped):
                    ev, _ = run_evaluation(agent, cfg, accelerator, f"eval at update {update + 1}",
                                           episodes=cfg.eval_every_episodes)
                record.update({f"eval/{k}": ev[k] for k in ("success_rate", "mean_return", "invalid_rate")})
                state["eval_last"] = {"update": update + 1, "success_rate": ev["success_rate"]}
            if logger is not None:
                logger.log(record)
            bar.update(1)
            bar.set_postfix_str(live_figures(record, state), refresh=False)
            done = update + 1
            last = done == cfg.updates or (cfg.stop_after and done - start >= cfg.stop_after)
            if done % cfg.checkpoint_every == 0 or last:
                st = dict(state, wall_seconds_before=state.get("wall_seconds_before", 0.0)
                          + time.perf_counter() - t_job)
                distributed.save_checkpoint_all(accelerator, run_dir, done, agent, optimizer, st, wrapped)
            if cfg.stop_after and done - start >= cfg.stop_after and done < cfg.updates:
                stopped = True
                break
    envs.close()
    distributed.dump_weights(accelerator, agent)
    if logger is not None:
        logger.close()
    summary: dict[str, Any] = {"env_id": cfg.env, "model": cfg.model, "seed": cfg.seed,
                               "world_size": accelerator.num_processes, "algorithm": cfg.algorithm, "group_size": cfg.group_size,
                               "updates_done": done, "stopped_early": stopped}
    if stopped:
        return summary

    with distributed.rollout_context(accelerator, agent, wrapped):  # full weights, no lock-step generation
        after, res = run_evaluation(agent, cfg, accelerator, "eval after RL", record=cfg.report_episodes)
    before = state["eval_before_rl"]
    wall = state.get("wall_seconds_before", 0.0) + time.perf_counter() - t_job
    summary.update({
        "eval_episodes": cfg.eval_episodes,
        "success_rate_before_rl": before["success_rate"], "success_rate_after_rl": after["success_rate"],
        "mean_return_before_rl": before["mean_return"], "mean_return_after_rl": after["mean_return"],
        "invalid_rate_before_rl": before["invalid_rate"], "invalid_rate_after_rl": after["invalid_rate"],
        "perception_accuracy_before_rl": before.get("perception_accuracy"),
        "perception_accuracy_after_rl": after.get("perception_accuracy"),
        "thought_consistency_before_rl": before.get("thought_consistency"),
        "thought_consistency_after_rl": after.get("thought_consistency"),
        "env_steps": cfg.updates * cfg.batch_size * accelerator.num_processes,
        "eval_episodes_played": after.get("episodes"), "train_episodes_this_invocation": train_episodes,
        "wall_seconds": wall, "sft_seconds": state.get("sft_seconds"), "run_dir": str(run_dir),
        "perception_stage": state.get("perception_stage", "off"),
    })
    full = distributed.full_state_dict(accelerator, agent, wrapped)  # sharded weights: a collective
    if main:
        agent.save(run_dir / "agent", state_dict=full)
        write_summary(run_dir, summary)
        plot_learning_curve(run_dir, before=before["success_rate"], after=after["success_rate"],
                            eval_episodes=(cfg.eval_every_episodes, cfg.eval_episodes))
        if res is not None and res.recorded:
            write_episode_report(run_dir, res.recorded, title=f"{cfg.env}: evaluation episodes after RL")
    return summary


def periodic_eval_due(cfg: TrainConfig, done: int) -> bool:
    """Whether the periodic held-out evaluation runs after update `done` (not after the last update: the
    evaluation after RL, on the full set, measures that one)."""
    return cfg.eval_every > 0 and done % cfg.eval_every == 0 and done < cfg.updates


def live_figures(record: dict[str, Any], state: dict[str, Any]) -> str:
    """The progress bar's figures, each labelled with where it comes from: rollout_succ is this update's
    rollout (short successful episodes are over-represented), eval_succ@N the latest held-out evaluation
    (the one before RL until the first periodic one)."""
    last = state.get("eval_last") or {"update": 0, "success_rate": state["eval_before_rl"]["success_rate"]}
    return (f"rollout_succ={_fmt(record['charts/success_rate'])} ret={_fmt(record['charts/episodic_return'])} "
            f"invalid={_fmt(record['charts/invalid_rate'])} eval_succ@{last['update']}={_fmt(last['success_rate'])}")


def _fmt(x: float) -> str:
    return "-" if x is None or x != x else f"{x:.2f}"


def print_summary(summary: dict[str, Any]) -> None:
    """One readable block of the headline figures."""
    print(json.dumps(summary, indent=1))
