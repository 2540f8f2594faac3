"""Trainer benchmarks (pytest-benchmark), baseline measured in the same run:

- batched rollouts (one `generate` call for all 16 envs per step, one `parse_actions`, one env step) against
  the paper's way (one `generate` call per env per step), in env steps/s, with the embedded tiny VLM;
- a per-phase time breakdown (prompt building, generation, log-prob evaluation, env, update) of one PPO
  iteration, in extra_info (time/<phase>_s).

extra_info: steps_per_s on both rollout rows, ratio_vs_one_at_a_time on the batched one.

    PYTHONPATH=python pytest bench/test_trainer_bench.py --benchmark-only
"""

import time

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import vlmrl_fast
from vlmrl_fast.config import load_config
from vlmrl_fast.ppo import build_agent, train_update
from vlmrl_fast.rollout import choose_actions, render_prompts, split_infos

NUM_ENVS = 16
STEPS = 2
MAX_NEW_TOKENS = 32
RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def setup():
    cfg = load_config(None, dict(lora=False, max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, num_envs=NUM_ENVS,
                                 num_steps=4, minibatch_size=16, grad_accum_steps=1, update_epochs=1,
                                 learning_rate=1e-5, warm_start="none", progress=False))
    agent = build_agent(cfg, "cpu")  # untrained: its answers run to MAX_NEW_TOKENS in both paths
    return cfg, agent


def play(agent, batched: bool) -> float:
    envs = vlmrl_fast.make_vec("NumberLine-v0", NUM_ENVS, seed=0, autoreset_mode=AutoresetMode.SAME_STEP)
    obs, infos = envs.reset(seed=0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for step in range(STEPS):
        prompts = render_prompts("NumberLine-v0", split_infos(infos, NUM_ENVS), True)
        if batched:
            texts = agent.generate(agent.prompt_batch(obs, prompts), seed=step).texts
        else:  # the paper's loop: one prompt, one generate call, one answer at a time
            texts = [agent.generate(agent.prompt_batch(obs[i:i + 1], prompts[i:i + 1]), seed=step).texts[0]
                     for i in range(NUM_ENVS)]
        actions, _, _ = choose_actions(texts, [envs.action_names] * NUM_ENVS, "random", 0, rng)
        obs, _, _, _, infos = envs.step(actions)
    envs.close()
    return STEPS * NUM_ENVS / (time.perf_counter() - t0)


@pytest.mark.benchmark(group="rollout env steps/s, 16 envs, tiny VLM, 32 new tokens")
def test_rollout_one_at_a_time(benchmark, setup):
    _, agent = setup
    sps = benchmark.pedantic(lambda: play(agent, batched=False), rounds=1, iterations=1, warmup_rounds=0)
    RESULTS["sequential"] = sps
    benchmark.extra_info["steps_per_s"] = round(sps, 2)


@pytest.mark.benchmark(group="rollout env steps/s, 16 envs, tiny VLM, 32 new tokens")
def test_rollout_batched(benchmark, setup):
    _, agent = setup
    sps = benchmark.pedantic(lambda: play(agent, batched=True), rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["steps_per_s"] = round(sps, 2)
    if "sequential" in RESULTS:
        benchmark.extra_info["ratio_vs_one_at_a_time"] = round(sps / RESULTS["sequential"], 2)
        print(f"\nbatched {sps:.1f} env steps/s vs one at a time {RESULTS['sequential']:.1f}: "
              f"{sps / RESULTS['sequential']:.1f}x")


@pytest.mark.benchmark(group="one PPO iteration (16 envs x 4 steps, tiny VLM)")
def test_ppo_iteration_phases(benchmark, setup):
    cfg, agent = setup
    envs = vlmrl_fast.make_vec("NumberLine-v0", NUM_ENVS, seed=0, autoreset_mode=AutoresetMode.SAME_STEP)
    from accelerate import Accelerator

    acc = Accelerator(cpu=True, gradient_accumulation_steps=1)
    opt = torch.optim.AdamW([p for p in agent.parameters() if p.requires_grad], lr=1e-5)
    record = benchmark.pedantic(lambda: train_update(agent, opt, acc, envs, cfg, update=0), rounds=1,
                                iterations=1)
    phases = {k: round(record[k], 3) for k in ("time/prompt_s", "time/generate_s", "time/logprob_s", "time/env_s",
                                     "time/update_s", "time/iteration_s")}
    benchmark.extra_info.update(phases)
    print("\n" + "  ".join(f"{k.split('/')[1]}={v:.2f}s" for k, v in phases.items()))
    envs.close()
