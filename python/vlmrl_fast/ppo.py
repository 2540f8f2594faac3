"""PPO for VLM agents, read top to bottom: `train_update` is one iteration (a batched rollout, advantages
(`vlmrl_fast.advantages`: GAE, or value-free GRPO / RLOO / GiGPO over groups of envs), `ppo_update`'s
epochs of minibatches with the clipped objective, the metrics record); the job
around it (input checks, warm start, evaluations, checkpoints, artifacts) is vlmrl_fast.trainer.

Design choices worth knowing:
- Every update starts its envs from a reset seeded by (seed, rank, update), so a run resumed from a
  checkpoint sees exactly the episodes the uninterrupted run would have seen; the rollout's last step
  bootstraps from the value of the state it stops in.
- The policy stays in eval mode (no dropout) in rollout and update, so the first minibatch's ratio is 1.
- accelerate's Accelerator places the model, accumulates gradients, clips them and reduces the metrics
  over processes; each process steps its own envs with its own seed stream.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

import numpy as np
import torch

from vlmrl_fast.advantages import compute_advantages, diagnostics
from vlmrl_fast.config import TrainConfig
from vlmrl_fast.ppo_math import TOKEN_KL_ESTIMATORS, cosine_lr, explained_variance, normalize_advantages, ppo_losses
from vlmrl_fast.rollout import Rollout, collect_rollout, select_rows


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from integers (independent streams for rank, update, purpose)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


def reference_evaluator(agent: Any, cfg: TrainConfig) -> Callable[..., Any] | None:
    """What evaluates the initial policy (the one RL starts from) for the KL penalty: the base model with the
    LoRA adapters switched off when nothing trained them before RL (LoRA and no warm start), else a frozen
    copy of the current weights. None when kl_coef is 0 (nothing is kept)."""
    if cfg.kl_coef <= 0:
        return None
    model = agent.model
    if hasattr(model, "disable_adapter") and cfg.warm_start == "none":
        def evaluate(*args: Any, **kwargs: Any) -> Any:
            with model.disable_adapter():
                return agent.evaluate(*args, **kwargs)
        return evaluate
    # the frozen copy shares what is not weights (processor, tokenizer, the Rust image pipeline, which
    # cannot be copied); nn.Module keeps its submodules and tensors in underscore dicts, which are copied
    shared = {id(v): v for k, v in vars(agent).items() if not k.startswith("_")}
    frozen = copy.deepcopy(agent, memo=shared).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen.evaluate


def ppo_update(agent: Any, optimizer: torch.optim.Optimizer, accelerator: Any, ro: Rollout,
               advantages: np.ndarray, returns: np.ndarray, cfg: TrainConfig, rng: np.random.Generator,
               evaluate: Callable[..., Any] | None = None, wrapped: Any = None) -> dict[str, float]:
    """update_epochs passes over the rollout in minibatches; an optimizer step every grad_accum_steps.

    A minibatch whose loss is NaN or inf contributes no gradient and is counted (losses/nonfinite_skipped);
    an optimizer step whose clipped gradient norm is not finite is dropped and counted too, so the weights
    never see a non-finite update. `wrapped` is what accelerator.prepare returned for the agent (it
    decides when gradients synchronise); `evaluate` defaults to agent.evaluate. Returns averaged diagnostics.
    """
    # through the wrapper accelerate returned (DDP/FSDP/ZeRO hook their gradient reduction into its forward)
    evaluate = evaluate or (wrapped if wrapped is not None else agent.evaluate)
    device = accelerator.device
    params = [p for p in agent.parameters() if p.requires_grad]
    B = ro.num_steps * ro.num_envs
    b_logprobs = torch.as_tensor(ro.logprobs.reshape(-1), device=device)
    b_values = torch.as_tensor(ro.values.reshape(-1), device=device)
    b_adv = torch.as_tensor(advantages.reshape(-1), device=device)
    b_ret = torch.as_tensor(returns.reshape(-1), device=device)
    b_ref = None if ro.ref_logprobs is None else torch.as_tensor(ro.ref_logprobs.reshape(-1), device=device)
    b_ref_tok = None
    if ro.ref_token_logprobs is not None and cfg.kl_estimator in TOKEN_KL_ESTIMATORS:
        b_ref_tok = torch.as_tensor(ro.ref_token_logprobs.reshape(B, -1), device=device)
    if cfg.norm_adv:
        b_adv = normalize_advantages(b_adv)
    stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl",
                                                     "old_approx_kl", "clipfrac", "kl_ref", "ratio_guarded")}
    drift = float("nan") if b_ref_tok is None else 0.0  # largest fall of a token's log-prob below the reference's
    skipped = dropped_steps = opt_steps = 0
    epochs_done = 0
    for _ in range(cfg.update_epochs):
        if epochs_done and cfg.target_kl > 0 and np.mean(stats["approx_kl"][-(B // cfg.minibatch_size):]) > cfg.target_kl:
            break  # the policy moved far enough from the one that collected the rollout (CleanRL's target_kl)
        epochs_done += 1
        order = rng.permutation(B)
        for start in range(0, B, cfg.minibatch_size):
            idx = order[start:start + cfg.minibatch_size]
            with accelerator.accumulate(wrapped if wrapped is not None else agent):
                batch = select_rows(ro.batches, ro.num_envs, idx, agent.pad_token_id)
                ev = evaluate(batch, [ro.answer_ids[i] for i in idx], [ro.action_starts[i] for i in idx],
                              lam=cfg.thought_coef)
                value = ev.value.float() if agent.value_head is not None else None  # value-free: no value loss
                tok_kw = {}
                if b_ref_tok is not None:  # k2_token / k3_token: the per-token KL over each answer's tokens
                    width = ev.token_logprobs.shape[1]
                    lengths = torch.as_tensor([len(ro.answer_ids[i]) for i in idx], device=device)
                    tok_kw = dict(new_token_logprob=ev.token_logprobs.float(),
                                  ref_token_logprob=b_ref_tok[idx, :width],
                                  token_mask=torch.arange(width, device=device)[None, :] < lengths[:, None])
                    fall = (tok_kw["ref_token_logprob"] - tok_kw["new_token_logprob"].detach()).masked_fill(
                        ~tok_kw["token_mask"], 0.0)
                    drift = max(drift, float(fall.max()))
                out = ppo_losses(ev.logprob.float(), b_logprobs[idx], b_adv[idx], value,
                                 b_values[idx], b_ret[idx], clip_coef=cfg.clip_coef, clip_vloss=cfg.clip_vloss,
                                 vf_coef=cfg.vf_coef, ratio_guard=cfg.ratio_guard, entropy=ev.entropy.float(),
                                 ent_coef=cfg.ent_coef, ref_logprob=None if b_ref is None else b_ref[idx],
                                 kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, **tok_kw)
                if torch.isfinite(out.loss):
                    accelerator.backward(out.loss)
                    for k in stats:
                        stats[k].append(float(torch.as_tensor(getattr(out, k)).detach()))
                else:
                    skipped += 1
                    if accelerator.num_processes > 1:
                        # every process must join the gradient all-reduce: the non-finite gradient reaches
                        # all of them and each drops this optimizer step (weights stay untouched)
                        accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                    if norm is not None and not torch.isfinite(torch.as_tensor(norm)):
                        dropped_steps += 1
                    else:
                        optimizer.step()
                        opt_steps += 1
                    optimizer.zero_grad(set_to_none=True)
    result = {k: float(np.mean(v)) if v else float("nan") for k, v in stats.items()}
    result.update(ref_drift_max=drift, nonfinite_skipped=float(skipped), dropped_steps=float(dropped_steps),
                  optimizer_steps=float(opt_steps), epochs=float(epochs_done))
    return result


def _sum_over_processes(accelerator: Any, values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return [float(x) for x in accelerator.reduce(t, reduction="sum").cpu()]


def rollout_metrics(accelerator: Any, ro: Rollout) -> dict[str, float]:
    """Episode return, success rate and invalid-answer rate of a rollout, over every process."""
    r = np.array(ro.episode_returns)
    sums = _sum_over_processes(accelerator, [float(len(r)), float((r > 0).sum()), float(r.sum()),
                                             float((~ro.valid).sum()), float(ro.valid.size),
                                             float(sum(ro.episode_lengths)),
                                             float(len(ro.perception)), float(np.sum(ro.perception))])
    episodes, successes, ret, invalid, steps, length, perceived, perceived_right = sums
    nan = float("nan")
    return {"charts/episodes": episodes,
            "charts/success_rate": successes / episodes if episodes else nan,
            "charts/episodic_return": ret / episodes if episodes else nan,
            "charts/episodic_length": length / episodes if episodes else nan,
            # share of this rollout's answers whose state fields equal the truth (vlmrl_fast.perception)
            "charts/perception_accuracy": perceived_right / perceived if perceived else nan,
            "charts/invalid_rate": invalid / steps}


def train_update(agent: Any, optimizer: torch.optim.Optimizer, accelerator: Any, envs: Any, cfg: TrainConfig,
                 update: int, rank: int = 0, ref_evaluate: Callable[..., Any] | None = None,
                 wrapped: Any = None) -> dict[str, Any]:
    """One iteration: rollout -> advantages (cfg.algorithm) -> clipped update. Returns its metrics record."""
    t_start = time.perf_counter()
    lr = cosine_lr(update, cfg.updates, cfg.learning_rate, cfg.min_learning_rate)
    for group in optimizer.param_groups:
        group["lr"] = lr

    # 1. rollout: num_steps batched steps of all envs, from a reset seeded by (seed, rank, update); each
    #    group of group_size envs starts from one state
    options = {"group_size": cfg.group_size} if cfg.group_size > 1 else None
    obs, infos = envs.reset(seed=derive_seed(cfg.seed, rank, update, 0), options=options)
    agent.eval()
    from vlmrl_fast.distributed import rollout_context, wait_for_all
    with rollout_context(accelerator, agent, wrapped):  # sharded weights (FSDP, ZeRO-3) gathered meanwhile
        ro = collect_rollout(agent, envs, cfg.env, np.asarray(obs), infos, num_steps=cfg.num_steps, cot=cfg.cot,
                             state_text=cfg.state_text, lam=cfg.thought_coef, fallback=cfg.invalid_fallback,
                             fallback_action=cfg.fallback_action, invalid_penalty=cfg.invalid_penalty,
                             seed=derive_seed(cfg.seed, rank, update, 1), ref_evaluate=ref_evaluate,
                             history_steps=cfg.history_steps)
        # every process finishes its rollout before the update's collectives (unequal durations: no time-out)
        wait_for_all(accelerator, "rollout", update)

    # 2. advantages [T, N] of cfg.algorithm (vlmrl_fast.advantages; PPO's GAE runs in Rust)
    advantages, returns = compute_advantages(ro, cfg)

    # 3. PPO epochs over minibatches
    t_update = time.perf_counter()
    stats = ppo_update(agent, optimizer, accelerator, ro, advantages, returns, cfg,
                       np.random.default_rng(derive_seed(cfg.seed, rank, update, 2)), wrapped=wrapped)
    update_s = time.perf_counter() - t_update

    # 4. metrics (CleanRL names), reduced over processes
    wall = time.perf_counter() - t_start
    steps = ro.num_steps * ro.num_envs * accelerator.num_processes
    record: dict[str, Any] = {"update": update + 1, "global_step": (update + 1) * steps}
    record.update(rollout_metrics(accelerator, ro))
    record.update({
        "charts/learning_rate": lr,
        "charts/SPS": steps / wall,
        "losses/policy_loss": stats["policy_loss"],
        "losses/value_loss": stats["value_loss"],
        "losses/entropy": stats["entropy"],
        "losses/approx_kl": stats["approx_kl"],
        "losses/old_approx_kl": stats["old_approx_kl"],
        "losses/clipfrac": stats["clipfrac"],
        "losses/kl_ref": stats["kl_ref"],
        # per-token KL estimators: the most a sampled token's log-prob fell below the reference's in this
        # update (nats; k3_token's term for it is exp of this)
        "losses/ref_drift_max": stats["ref_drift_max"],
        "losses/ratio_guarded": stats["ratio_guarded"],
        "losses/explained_variance": (explained_variance(ro.values.reshape(-1), returns.reshape(-1))
                                      if agent.value_head is not None else float("nan")),
        "losses/nonfinite_skipped": stats["nonfinite_skipped"],
        "losses/dropped_steps": stats["dropped_steps"],
        "losses/epochs": stats["epochs"],
        "perf/tokens_per_s": ro.tokens_generated / max(ro.seconds["generate"], 1e-9),
        "perf/env_steps_per_s": ro.num_steps * ro.num_envs / max(sum(ro.seconds.values()), 1e-9),
        "time/generate_s": ro.seconds["generate"],
        "time/logprob_s": ro.seconds["logprob"],
        "time/prompt_s": ro.seconds["prompt"],
        "time/env_s": ro.seconds["env"],
        "time/update_s": update_s,
        "time/iteration_s": wall,
    })
    record.update(diagnostics(cfg.algorithm, advantages, ro, cfg.group_size))
    return record


# -- the whole job ---------------------------------------------------------------------------------------
def build_agent(cfg: TrainConfig, device: str) -> Any:
    """Load the model named by cfg.model with cfg's LoRA/dtype options and wrap it in an Agent."""
    from vlmrl_fast.agent import Agent
    from vlmrl_fast.models import ModelSettings, load_model

    targets: Any = cfg.lora_target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    settings = ModelSettings(dtype=cfg.dtype, device=device, lora=cfg.lora, lora_r=cfg.lora_r,
                             lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, lora_target_modules=targets,
                             lora_vision=cfg.lora_vision, gradient_checkpointing=cfg.gradient_checkpointing,
                             quantization=None if cfg.quantization == "none" else cfg.quantization,
                             image_backend=cfg.image_backend)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the value head's initialisation, the same on every process
        model, processor = load_model(cfg.model, settings)
        agent = Agent(model, processor, temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                      preprocess=cfg.preprocess, with_value_head=cfg.algorithm == "ppo")
    return agent.eval()
