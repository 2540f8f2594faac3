"""Supervised warm start (`vlmrl sft`): demonstrations from the environments, loss on answer tokens only.

A demonstration is (image, prompt, answer): the observation, the user message `prompts.render` makes of
the env's info, and an answer in the CoT JSON format from `prompts.answer`, whose fields are true to the
state and whose action is the expert's (``actions="expert"``) or uniformly random (``actions="random"``).
The random variant teaches the answer format and what the image shows but nothing about which action is
good, so any improvement after it is RL's doing (the main job uses it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from vlmrl_fast.rollout import action_names_per_env, render_prompts, split_infos


@dataclass
class Demonstrations:
    """Parallel lists of demonstration steps."""

    frames: np.ndarray  # [M, H, W, 3] uint8
    prompts: list[str]
    answers: list[str]
    actions: list[int]
    action_names: list[list[str]] | None = None  # the legal action names of each step (ALFWorld: its commands)
    plans: list[str | None] | None = None  # the solution each answer's thoughts state (None: they state none)

    def __len__(self) -> int:
        return len(self.prompts)


def state_thoughts(env_id: str, info: dict[str, Any], action_name: str) -> str | None:
    """Thoughts that state what the image shows, including the comparison the decision rests on, but not
    why the action was taken (so a random action stays uninformative); None: the template's default.

    NumberLine: "The current number 1 is smaller than the target number 3. I choose "+".", true to the state
    whatever the action. Other envs use their template's default thoughts.
    """
    if env_id.split("/")[-1] == "NumberLine-v0":
        cur, tgt = int(info["Current"]), int(info["Target"])
        rel = "smaller than" if cur < tgt else ("larger than" if cur > tgt else "equal to")
        return f'The current number {cur} is {rel} the target number {tgt}. I choose "{action_name}".'
    return None


@dataclass
class PlayedStep:
    """One env's step of recorded play: its frame, prompt, answer, the action the answer names and the info."""

    frame: np.ndarray
    prompt: str
    answer: str
    action: int
    info: dict[str, Any]
    action_names: list[str] = dataclasses.field(default_factory=list)  # the legal actions at this step
    plan: str | None = None  # the solution the thoughts state, where they state one


def record_play(env_id: str, num_envs: int, *, seed: int, salt: int, actions: str, cot: bool,
                state_text: bool, thoughts: str, answer_actions: str = "played",
                **env_kwargs: Any) -> Iterator[tuple[list[PlayedStep], int]]:
    """Play `num_envs` envs of `env_id` with the expert's (`actions="expert"`, where the env has one) or
    uniformly random actions (drawn from the stream (seed, salt)) and yield, per vector step, that step's
    `PlayedStep`s and the number of episodes it ended. Each answer names the action played, or with
    `answer_actions="random"` a uniformly random one (the expert then only leads the envs into deeper
    states, and no answer teaches its decision). The envs close when the generator is closed."""
    from gymnasium.vector import AutoresetMode

    from vlmrl_fast import make_vec, prompts

    if answer_actions not in ("played", "random"):
        raise ValueError(f"record_play: answer_actions must be 'played' or 'random', got {answer_actions!r}")
    envs = make_vec(env_id, num_envs, seed=seed, autoreset_mode=AutoresetMode.SAME_STEP, **env_kwargs)
    rng = np.random.default_rng([seed, salt])
    try:
        obs, infos = envs.reset(seed=seed)
        while True:
            names = action_names_per_env(envs, num_envs)
            if actions == "expert" and getattr(envs, "has_expert", True):  # else random (a Python env without one)
                chosen = np.asarray(envs.expert_actions(), dtype=np.int64)
            else:
                chosen = np.array([rng.integers(len(nm)) for nm in names], dtype=np.int64)
            env_infos = split_infos(infos, num_envs)
            texts = render_prompts(env_id, env_infos, cot, state_text)
            plans = None
            if thoughts in prompts.PLAN_VARIANTS:  # None per env where the env source has no expert plans (a BYO env)
                plans = envs.expert_plans() if hasattr(envs, "expert_plans") else [None] * num_envs
            if thoughts == "pattern_plan":
                plans, chosen = _follow_patterns(env_id, env_infos, names, plans, chosen, actions == "expert")
            named = chosen if answer_actions == "played" else \
                np.array([rng.integers(len(nm)) for nm in names], dtype=np.int64)
            rows = []
            for i, info in enumerate(env_infos):
                name = names[i][named[i]]
                if thoughts == "state":
                    extra = state_thoughts(env_id, info, name)
                elif plans is not None:
                    extra = prompts.plan_thoughts(env_id, info, name, plans[i], variant=thoughts)
                else:
                    extra = None
                stated = plans[i] if plans is not None and extra is not None and plans[i] else None
                rows.append(PlayedStep(np.array(obs[i], copy=True), texts[i],
                                       prompts.answer(env_id, info, name, cot=cot, thoughts=extra),
                                       int(named[i]), info, list(names[i]), stated))
            obs, _, term, trunc, infos = envs.step(chosen)
            yield rows, int(np.sum(np.asarray(term) | np.asarray(trunc)))
    finally:
        envs.close()


def _follow_patterns(env_id: str, infos: list[dict[str, Any]], names: list[list[str]], plans: list[str | None],
                     chosen: np.ndarray, expert: bool) -> tuple[list[str | None], np.ndarray]:
    """`sft_thoughts = "pattern_plan"`: each formula game's plan from the shared patterns
    (`patterns.pattern_plan`) and, when the expert plays, its next token as the action ("=" once the formula is
    complete or where the deal has no solution). An env whose formula has left the pattern's solution keeps the
    solver's plan and action; envs without card values (not a formula game) keep theirs."""
    from vlmrl_fast import patterns, prompts

    plans, chosen = list(plans), np.array(chosen, copy=True)
    for i, info in enumerate(infos):
        if info.get("Numbers") is None or info.get("Formula") is None:
            continue
        ops = tuple(n for n in names[i] if n in patterns.OPERATORS)
        plan = patterns.pattern_plan(info["Numbers"], prompts.template(env_id)["target"], ops)
        toks = patterns.plan_tokens(plan)
        done = [str(t) for t in info["Formula"]]
        if toks[:len(done)] != done:
            continue
        plans[i] = plan
        if expert:
            chosen[i] = names[i].index(toks[len(done)] if len(done) < len(toks) else "=")
    return plans, chosen


def build_demonstrations(env_id: str, episodes: int, *, actions: str = "expert", seed: int = 0,
                         cot: bool = True, state_text: bool = False, thoughts: str = "template",
                         num_envs: int = 16,
                         max_steps: int = 100_000,
                         **env_kwargs: Any) -> Demonstrations:
    """Play `episodes` episodes with the expert's (or random) actions and record every step. `thoughts`:
    "template" (the prompt template's default thoughts), "state" (`state_thoughts`), "plan" (the expert's
    whole plan and the action as its next step, `prompts.plan_thoughts`, for games whose expert plans: the
    formula games; the template's thoughts elsewhere), "sorted_plan" (the same with the card values in
    ascending order before the plan, where the template has such lines) or "pattern_plan" (as "sorted_plan",
    with the solution and the expert's moves taken from the shared patterns of `vlmrl_fast.patterns`)."""
    if actions not in ("expert", "random"):
        raise ValueError(f"sft actions must be 'expert' or 'random', got {actions!r}")
    n = max(1, min(num_envs, episodes))
    steps: list[PlayedStep] = []
    finished = 0
    play = record_play(env_id, n, seed=seed, salt=0xDE70, actions=actions, cot=cot, state_text=state_text,
                       thoughts=thoughts, **env_kwargs)
    frames = _FrameStore()
    try:
        for _ in range(max_steps):
            if finished >= episodes:
                break
            rows, ended = next(play)
            for row in rows:  # each frame goes into one growing array at once: memory holds it once
                frames.append(row.frame)
                row.frame = _NO_FRAME
            steps.extend(rows)
            finished += ended
    finally:
        play.close()
    return Demonstrations(frames.array(), [s.prompt for s in steps],
                          [s.answer for s in steps], [s.action for s in steps], [s.action_names for s in steps],
                          [s.plan for s in steps])


_NO_FRAME = np.zeros((0, 0, 3), dtype=np.uint8)


class _FrameStore:
    """Frames appended one by one into a single array that grows in place (`ndarray.resize`: realloc, which
    moves large blocks by remapping pages, not by copying): the demonstrations' frames are held once, not as
    per-step copies plus their `np.stack`."""

    def __init__(self) -> None:
        self._a: np.ndarray | None = None
        self._n = 0

    def append(self, frame: np.ndarray) -> None:
        if self._a is None:
            self._a = np.empty((256, *frame.shape), dtype=frame.dtype)
        elif self._n == len(self._a):
            # resize zero-fills the new rows (their pages become resident): grow by a quarter, not double
            self._a.resize((self._n + max(256, self._n // 4), *self._a.shape[1:]), refcheck=False)
        self._a[self._n] = frame
        self._n += 1

    def array(self) -> np.ndarray:
        if self._a is None:
            raise ValueError("build_demonstrations: no step was played (episodes < 1?)")
        self._a.resize((self._n, *self._a.shape[1:]), refcheck=False)
        out, self._a = self._a, None
        return out


def answer_token_ids(agent: Any, answers: list[str]) -> list[list[int]]:
    """Token ids of answer texts as the model would generate them: the text, then the end-of-answer token."""
    tok = agent.processor.tokenizer
    eos = tok.eos_token_id
    return [list(tok(a, add_special_tokens=False)["input_ids"]) + [eos] for a in answers]


def plan_token_weights(agent: Any, answers: list[str], plans: list[str | None], weight: float) -> list[list[float]]:
    """Per answer token (as `answer_token_ids` makes them, end-of-answer token included): `weight` on the
    tokens that overlap the solution the thoughts state (its first occurrence after "thoughts"), 1 elsewhere.
    Needs a fast tokenizer (character offsets)."""
    tok = agent.processor.tokenizer
    if not getattr(tok, "is_fast", False):
        raise ValueError("sft_plan_weight needs a fast tokenizer (character offsets of the answer tokens); "
                         f"{type(tok).__name__} is not one: leave sft_plan_weight at 1")
    out = []
    for answer, plan in zip(answers, plans):
        offsets = tok(answer, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        w = [1.0] * (len(offsets) + 1)
        start = answer.find(plan, max(answer.find('"thoughts"'), 0)) if plan else -1
        if start >= 0:
            end = start + len(plan)
            for k, (a, b) in enumerate(offsets):
                if a < end and b > start:
                    w[k] = weight
        out.append(w)
    return out


def answer_token_loss(agent: Any, frames: np.ndarray, prompts: list[str], answer_ids: list[list[int]],
                      device: torch.device | str, weights: list[list[float]] | None = None) -> torch.Tensor:
    """Mean negative log-likelihood per answer token (temperature 1; prompt tokens carry no loss); with
    `weights` (one per answer token), the weighted mean."""
    batch = agent.prompt_batch(frames, prompts).to(device)
    starts = [len(a) for a in answer_ids]  # whole answer weighted 1: lam = 1 makes cot + action = all tokens
    temperature = agent.temperature
    agent.temperature = 1.0  # SFT fits the model's own distribution, not the sharpened sampling one
    try:
        ev = agent.evaluate(batch, answer_ids, starts, lam=1.0)
    finally:
        agent.temperature = temperature
    if weights is None:
        return -(ev.logprob.sum() / ev.num_tokens.sum().clamp_min(1))
    w = torch.zeros_like(ev.token_logprobs)
    for i, row in enumerate(weights):
        w[i, :len(row)] = torch.as_tensor(row, dtype=w.dtype)
    return -((ev.token_logprobs * w).sum() / w.sum().clamp_min(1e-9))


def valid_answer_rate(agent: Any, action_names: list[str] | None, demos: Demonstrations, *, limit: int = 64,
                      seed: int = 0, device: torch.device | str = "cpu") -> float:
    """Share of the model's sampled answers on demonstration states that parse to a valid action: one of
    `action_names`, or with None one of the step's own legal actions (`demos.action_names`: ALFWorld's
    admissible commands differ from state to state)."""
    from vlmrl_fast import parse_actions

    idx = np.arange(min(limit, len(demos)))
    if action_names is None:
        if demos.action_names is None:
            raise ValueError("valid_answer_rate: no action_names given and the demonstrations record none")
        names: list[str] | list[list[str]] = [demos.action_names[i] for i in idx]
    else:
        names = action_names
    batch = agent.prompt_batch(demos.frames[idx], [demos.prompts[i] for i in idx]).to(device)
    gen = agent.generate(batch, seed=seed)
    parsed = parse_actions(gen.texts, names)
    return float(np.mean(parsed.valid))


def train_sft(agent: Any, demos: Demonstrations, *, epochs: int, batch_size: int, learning_rate: float,
              accelerator: Any, seed: int = 0, max_grad_norm: float = 1.0, plan_weight: float = 1.0,
              on_step: Callable[[int, int, float], None] | None = None) -> list[float]:
    """Fine-tune the trainable parameters on the answer tokens of the demonstrations (AdamW, cosine to 0).
    `plan_weight` != 1 weights the tokens of the solution each answer's thoughts state (`plan_token_weights`;
    the loss is then the weighted mean).

    Returns the loss of every optimizer step. Non-finite losses are skipped (no step taken).
    """
    params = [p for p in agent.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    device = accelerator.device
    answer_ids = answer_token_ids(agent, demos.answers)
    weights = None
    if plan_weight != 1.0 and demos.plans is not None and any(demos.plans):
        weights = plan_token_weights(agent, demos.answers, demos.plans, plan_weight)
        if any(len(w) != len(a) for w, a in zip(weights, answer_ids)):
            raise ValueError("plan_token_weights: token counts differ from answer_token_ids")
    rng = np.random.default_rng([seed, 0x5F7])
    steps_per_epoch = math.ceil(len(demos) / batch_size)
    total = epochs * steps_per_epoch
    losses: list[float] = []
    agent.train()
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(demos))
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))
            loss = answer_token_loss(agent, demos.frames[idx], [demos.prompts[i] for i in idx],
                                     [answer_ids[i] for i in idx], device,
                                     weights=None if weights is None else [weights[i] for i in idx])
            step += 1
            if not torch.isfinite(loss):
                optimizer.zero_grad(set_to_none=True)
                continue
            # accelerator.backward divides by the PPO accumulation count; SFT steps every batch
            accelerator.backward(loss * accelerator.gradient_accumulation_steps)
            accelerator.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step, total, losses[-1])
    agent.eval()
    return losses
