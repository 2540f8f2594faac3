"""The embedded tiny VLM learns NumberLine's answer format within a short SFT on the CPU.

Real engine observations, real prompt templates (with the trainer's state-text line), the default
model built into a temporary cache, trained through `Agent.evaluate` (answer tokens only).
"""

import json

import numpy as np
import pytest
import torch

import vlmrl_fast
from vlmrl_fast import parse_actions, prompts
from vlmrl_fast.agent import Agent
from vlmrl_fast.models import ModelSettings, default_model_path, load_model


pytestmark = pytest.mark.usefixtures("one_thread")


def _read(text: str) -> dict:
    try:
        out = json.loads(text)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def test_default_model_learns_the_numberline_answer_format(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMRL_FAST_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model, processor = load_model(default_model_path(), ModelSettings(lora=False))
    agent = Agent(model, processor, temperature=1.0, max_new_tokens=24)

    env = vlmrl_fast.make_vec("NumberLine-v0", 1, seed=0)
    states = [{"Target": t, "Current": c} for t in range(6) for c in range(6) if t != c]
    frames = []
    for s in states:
        obs, _ = env.reset(options={"states": [{"current": s["Current"], "target": s["Target"]}]})
        frames.append(np.array(obs[0], copy=True))
    texts = [
        prompts.render("NumberLine-v0", s) + f"\nThe image shows: Target number: {s['Target']}. "
        f"Current number: {s['Current']}."
        for s in states
    ]
    expert = ["+" if s["Current"] < s["Target"] else "-" for s in states]
    answers = agent.encode_answers([prompts.answer("NumberLine-v0", s, a) for s, a in zip(states, expert)])
    batch = agent.prompt_batch(np.stack(frames), texts)

    opt = torch.optim.AdamW(agent.model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(80):
        idx = rng.integers(0, len(states), 16)
        ev = agent.evaluate(batch.select(idx), [answers[i] for i in idx], [0] * 16, lam=1.0)
        loss = -(ev.logprob / ev.num_tokens).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.2 * np.mean(losses[:5])

    agent.temperature = 0.0
    gen = agent.generate(batch)
    parsed = parse_actions(gen.texts, env.action_names)
    assert parsed.valid.mean() >= 0.95
    fields = [_read(t) for t in gen.texts]
    correct = [f.get("current number") == s["Current"] and f.get("target number") == s["Target"]
               for f, s in zip(fields, states)]
    assert np.mean(correct) >= 0.95
    assert max(len(a) for a in gen.answer_ids) <= 13  # 11 answer tokens + EOS with the tiny tokenizer
