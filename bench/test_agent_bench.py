"""Batched generation vs one answer at a time (the paper's way), with the embedded tiny VLM.

    PYTHONPATH=python pytest bench/test_agent_bench.py --benchmark-only

One "rollout step" is: N NumberLine observations -> prompts -> answers -> parsed actions. The batched
agent does it with one processor call, ONE `generate` call and one `parse_actions` call; the baseline
loops over the N observations with a batch of one each (what the paper's code does). Both sample the
same way (temperature 0.2, KV cache, same max_new_tokens). The model is the random-weight default,
with max_new_tokens capped so that both paths generate the same number of tokens per answer
(a random model rarely stops early). extra_info holds steps_per_s (env steps/s, median round) and, on the batched
row, ratio_vs_one_at_a_time.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vlmrl_fast
from vlmrl_fast import parse_actions, prompts
from vlmrl_fast.agent import Agent
from vlmrl_fast.models import ModelSettings, build_tiny_vlm, load_model

NUM_ENVS = 16
MAX_NEW_TOKENS = 12  # the length of a NumberLine CoT answer with the tiny tokenizer
RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)  # tiny matrices: threads only add spin-wait overhead
    path = build_tiny_vlm("llava", tmp_path_factory.mktemp("bench") / "tiny", size="default")
    model, processor = load_model(path, ModelSettings(lora=False))
    agent = Agent(model, processor, temperature=0.2, max_new_tokens=MAX_NEW_TOKENS)
    agent.suppressed_token_ids = agent.suppressed_token_ids + [agent.eos_token_id]  # fixed length
    env = vlmrl_fast.make_vec("NumberLine-v0", NUM_ENVS, seed=0)
    obs, infos = env.reset(seed=0)
    texts = [prompts.render("NumberLine-v0", {"Target": 0, "Current": 1})] * NUM_ENVS
    return agent, np.asarray(obs).copy(), texts, env.action_names


def _batched(agent, obs, texts, names):
    gen = agent.generate(agent.prompt_batch(obs, texts), seed=0)
    return parse_actions(gen.texts, names).index


def _one_at_a_time(agent, obs, texts, names):
    out = []
    for i in range(len(texts)):
        gen = agent.generate(agent.prompt_batch(obs[i : i + 1], texts[i : i + 1]), seed=i)
        out.append(parse_actions(gen.texts, names).index[0])
    return out


@pytest.mark.parametrize("mode", ["one_at_a_time", "batched"])
def test_rollout_step_generation(benchmark, setup, mode):
    agent, obs, texts, names = setup
    fn = _batched if mode == "batched" else _one_at_a_time
    benchmark.pedantic(fn, args=(agent, obs, texts, names), rounds=3, iterations=1, warmup_rounds=1)
    RESULTS[mode] = benchmark.stats.stats.median  # a preempted round on a shared machine moves a mean
    benchmark.extra_info["steps_per_s"] = round(NUM_ENVS / RESULTS[mode], 2)
    if mode != "one_at_a_time" and "one_at_a_time" in RESULTS:
        benchmark.extra_info["ratio_vs_one_at_a_time"] = round(RESULTS["one_at_a_time"] / RESULTS[mode], 2)
