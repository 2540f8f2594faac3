"""One batched rollout + one PPO update on real tiny VLMs of each family (real engine, real parser)."""

import math

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from gymnasium.vector import AutoresetMode

import vlmrl_fast
from vlmrl_fast.config import load_config
from vlmrl_fast.models import TINY_FAMILIES, build_tiny_vlm
from vlmrl_fast.ppo import build_agent, ppo_update, reference_evaluator, train_update
from vlmrl_fast.ppo_math import compute_gae
from vlmrl_fast.rollout import collect_rollout, select_rows


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_ppo")
    return {f: build_tiny_vlm(f, root / f, seed=3) for f in TINY_FAMILIES}


def small_config(path, **over):
    values = dict(model=str(path), lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, num_envs=3, num_steps=2,
                  max_new_tokens=8, temperature=1.0, update_epochs=1, minibatch_size=3, grad_accum_steps=1,
                  learning_rate=1e-2, min_learning_rate=1e-2, max_grad_norm=1.0, warm_start="none",
                  eval_episodes=0, progress=False)
    values.update(over)
    return load_config(None, values)


def rollout_for(cfg, agent, seed=0):
    envs = vlmrl_fast.make_vec(cfg.env, cfg.num_envs, seed=seed, autoreset_mode=AutoresetMode.SAME_STEP)
    obs, infos = envs.reset(seed=seed)
    ro = collect_rollout(agent, envs, cfg.env, np.asarray(obs), infos, num_steps=cfg.num_steps, cot=True,
                         lam=cfg.thought_coef, fallback="random", fallback_action=0, invalid_penalty=0.0, seed=seed)
    return ro, envs


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_rollout_and_update(tiny_dirs, family):
    cfg = small_config(tiny_dirs[family])
    agent = build_agent(cfg, "cpu")
    ro, envs = rollout_for(cfg, agent)
    B = cfg.num_envs * cfg.num_steps
    assert len(ro.answer_ids) == B and ro.logprobs.shape == (2, 3)
    assert np.isfinite(ro.logprobs).all() and np.isfinite(ro.values).all() and np.isfinite(ro.next_values).all()
    assert ro.actions.min() >= 0 and ro.actions.max() < 2  # invalid answers got the fallback
    # The per-step numbers and token ids live in the engine's Rust buffer; the fields are views of it.
    assert len(ro.buffer) == 2 and np.shares_memory(ro.rewards, ro.buffer.rewards)
    for k, ids in enumerate(ro.answer_ids):
        assert ro.buffer.tokens(k // 3, k % 3).tolist() == ids and 1 <= len(ids) <= agent.max_new_tokens

    # the old log-probs of the rollout equal those recomputed for minibatches in another order/padding
    order = [5, 0, 3, 2]
    batch = select_rows(ro.batches, ro.num_envs, order, agent.pad_token_id)
    with torch.no_grad():
        ev = agent.evaluate(batch, [ro.answer_ids[i] for i in order], [ro.action_starts[i] for i in order],
                            lam=cfg.thought_coef)
    torch.testing.assert_close(ev.logprob, torch.as_tensor(ro.logprobs.reshape(-1)[order]), atol=1e-4, rtol=0)
    torch.testing.assert_close(ev.value, torch.as_tensor(ro.values.reshape(-1)[order]), atol=1e-4, rtol=0)

    # lambda only scales the chain-of-thought part
    with torch.no_grad():
        lo = agent.evaluate(batch, [ro.answer_ids[i] for i in order], [ro.action_starts[i] for i in order], lam=0.1)
        hi = agent.evaluate(batch, [ro.answer_ids[i] for i in order], [ro.action_starts[i] for i in order], lam=0.9)
    torch.testing.assert_close(lo.action_logprob, hi.action_logprob)
    torch.testing.assert_close(hi.logprob - lo.logprob, 0.8 * lo.cot_logprob, atol=1e-4, rtol=1e-4)

    trainable = {n: p.detach().clone() for n, p in agent.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("value_head" in n for n in trainable)
    adv, ret = compute_gae(ro.rewards, ro.values, ro.next_values, ro.terminated, ro.truncated, 0.9, 0.95)
    params = [p for p in agent.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    acc = Accelerator(cpu=True, gradient_accumulation_steps=cfg.grad_accum_steps)
    cfg.update_epochs = 2  # two optimizer steps: LoRA's A matrices get gradient once B is non-zero
    stats = ppo_update(agent, opt, acc, ro, adv, ret, cfg, np.random.default_rng(0))
    assert stats["optimizer_steps"] == 2 * B / cfg.minibatch_size
    for key in ("policy_loss", "value_loss", "approx_kl", "clipfrac", "entropy"):
        assert math.isfinite(stats[key]), key
    unchanged = [n for n, p in agent.named_parameters() if p.requires_grad and torch.equal(p, trainable[n])]
    assert unchanged == []
    envs.close()


def test_nonfinite_loss_is_skipped_counted_and_logged(tiny_dirs):
    cfg = small_config(tiny_dirs["llava"], minibatch_size=1, grad_accum_steps=1)
    agent = build_agent(cfg, "cpu")
    envs = vlmrl_fast.make_vec(cfg.env, cfg.num_envs, seed=0, autoreset_mode=AutoresetMode.SAME_STEP)
    params = [p for p in agent.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    acc = Accelerator(cpu=True, gradient_accumulation_steps=1)
    real = agent.evaluate
    calls = {"grad": 0}

    def evaluate_with_nan(*args, **kwargs):
        ev = real(*args, **kwargs)
        if torch.is_grad_enabled():  # only the update's forward passes; the rollout runs without grad
            calls["grad"] += 1
            if calls["grad"] == 2:
                ev.logprob = ev.logprob * float("nan")
        return ev

    agent.evaluate = evaluate_with_nan
    record = train_update(agent, opt, acc, envs, cfg, update=0)
    assert record["losses/nonfinite_skipped"] == 1.0
    assert math.isfinite(record["losses/policy_loss"])
    assert all(torch.isfinite(p).all() for p in params)
    assert calls["grad"] == cfg.num_envs * cfg.num_steps
    envs.close()


def test_kl_reference_of_a_fully_fine_tuned_agent_is_a_frozen_copy(tiny_dirs):
    """Full fine-tuning after a warm start keeps a frozen copy as the KL reference: it shares the processor and
    the Rust image pipeline (which cannot be copied) and keeps the weights RL started from."""
    cfg = small_config(tiny_dirs["llava"], lora=False, warm_start="sft", kl_coef=0.1, learning_rate=1e-3,
                       min_learning_rate=1e-3)
    agent = build_agent(cfg, "cpu")
    ref = reference_evaluator(agent, cfg)
    frozen = ref.__self__
    assert frozen is not agent and frozen.image_pipeline is agent.image_pipeline
    assert all(not p.requires_grad for p in frozen.parameters())
    start = {n: p.detach().clone() for n, p in agent.named_parameters()}
    envs = vlmrl_fast.make_vec(cfg.env, cfg.num_envs, seed=0, autoreset_mode=AutoresetMode.SAME_STEP)
    params = [p for p in agent.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    record = train_update(agent, opt, Accelerator(cpu=True), envs, cfg, 0, 0, ref)
    assert math.isfinite(record["losses/kl_ref"]) and record["losses/kl_ref"] >= 0
    moved = [n for n, p in agent.named_parameters() if not torch.equal(p, start[n])]
    assert moved, "the update changed no weight"
    assert all(torch.equal(p, start[n]) for n, p in frozen.named_parameters())
    envs.close()


def test_k3_token_update_stores_the_references_tokens_and_starts_at_zero_kl(tiny_dirs):
    """kl_estimator k3_token: the rollout keeps the reference's per-token log-probs aligned with each answer
    (with thought_coef 1 they sum to the reference's answer log-prob), and an update whose reference is the
    policy itself measures a KL of 0 on its first minibatch; after steps away from a frozen copy it is > 0."""
    cfg = small_config(tiny_dirs["llava"], lora=False, warm_start="sft", kl_coef=0.1, kl_estimator="k3_token",
                       thought_coef=1.0, minibatch_size=6, learning_rate=1e-3, min_learning_rate=1e-3)
    agent = build_agent(cfg, "cpu")
    envs = vlmrl_fast.make_vec(cfg.env, cfg.num_envs, seed=0, autoreset_mode=AutoresetMode.SAME_STEP)
    obs, infos = envs.reset(seed=0)
    ro = collect_rollout(agent, envs, cfg.env, np.asarray(obs), infos, num_steps=cfg.num_steps, cot=True,
                         lam=1.0, fallback="random", fallback_action=0, invalid_penalty=0.0, seed=0,
                         ref_evaluate=agent.evaluate)
    ro.finish()
    tok = ro.ref_token_logprobs.reshape(cfg.num_steps * cfg.num_envs, -1)
    lengths = np.array([len(a) for a in ro.answer_ids])
    assert tok.shape[1] == cfg.max_new_tokens and lengths.max() > 0
    assert np.allclose(tok.sum(1), ro.ref_logprobs.reshape(-1), atol=1e-4)
    assert all(np.all(tok[i, lengths[i]:] == 0) for i in range(len(lengths)))
    adv = np.zeros((cfg.num_steps, cfg.num_envs), np.float32)
    params = [p for p in agent.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    stats = ppo_update(agent, opt, Accelerator(cpu=True), ro, adv, adv, cfg, np.random.default_rng(0))
    assert stats["kl_ref"] == pytest.approx(0.0, abs=1e-5)  # one minibatch, evaluated before the step
    assert stats["ref_drift_max"] == pytest.approx(0.0, abs=1e-5)

    more = small_config(tiny_dirs["llava"], lora=False, warm_start="sft", kl_coef=0.1, kl_estimator="k3_token",
                        update_epochs=3, target_kl=0.0, learning_rate=1e-3, min_learning_rate=1e-3)
    record = train_update(agent, opt, Accelerator(cpu=True), envs, more, 1, 0, reference_evaluator(agent, more))
    assert math.isfinite(record["losses/kl_ref"]) and record["losses/kl_ref"] > 0
    assert record["losses/ref_drift_max"] > 0  # some sampled token fell below the frozen copy's log-prob
    whole = small_config(tiny_dirs["llava"], lora=False, warm_start="sft", kl_coef=0.1, kl_estimator="k3")
    record = train_update(agent, opt, Accelerator(cpu=True), envs, whole, 2, 0, reference_evaluator(agent, whole))
    assert math.isnan(record["losses/ref_drift_max"])  # whole-answer estimators keep no per-token log-probs
    envs.close()
