"""Batched rollouts and evaluation episodes: every environment's answer comes from ONE `generate` call
per step, is parsed in ONE `parse_actions` call, and the vector env steps once for the whole batch.

An answer that does not parse to exactly one action gets the configured fallback (a seeded random legal
action, as the paper does, or a fixed one) and is counted. An answer without an action key counts as
chain of thought entirely (Agent.action_token_starts returns its length), so its action log-prob is
lambda * (sum of its token log-probs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from vlmrl_fast.buffer import TrajectoryBuffer
from vlmrl_fast.perception import has_fields, perception_correct, thought_consistency
from vlmrl_fast.report import Episode, EpisodeStep


# -- environment glue ------------------------------------------------------------------------------------
def split_infos(infos: dict[str, Any], num_envs: int) -> list[dict[str, Any]]:
    """gymnasium's vector info (``{key: array[N], "_key": mask[N]}``) as one dict per env."""
    out: list[dict[str, Any]] = [{} for _ in range(num_envs)]
    for key, value in infos.items():
        if key.startswith("_") or key in ("final_obs", "final_info", "final_observation"):
            continue
        mask = infos.get("_" + key)
        for i in range(num_envs):
            if mask is None or bool(mask[i]):
                v = value[i]
                out[i][key] = v.item() if isinstance(v, np.generic) else v
    return out


def final_observations(infos: dict[str, Any], done: np.ndarray, obs: np.ndarray, num_envs: int
                       ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Final observation and info of every env that ended this step (SAME_STEP auto-reset); other rows hold
    the current observation. Returns (frames [N, H, W, 3], infos per env)."""
    frames = np.array(obs, copy=True)
    per_env = split_infos(infos, num_envs)
    final_obs = infos.get("final_obs")
    final_info = infos.get("final_info")
    final_per_env = split_infos(final_info, num_envs) if isinstance(final_info, dict) else per_env
    for i in np.flatnonzero(done):
        if final_obs is not None and final_obs[i] is not None:
            frames[i] = final_obs[i]
        per_env[i] = final_per_env[i]
    return frames, per_env


def action_names_per_env(envs: Any, num_envs: int) -> list[list[str]]:
    """The legal action names of every env: one shared list, or one list per env (ALFWorld-style)."""
    names = envs.action_names
    if names and isinstance(names[0], str):
        return [list(names)] * num_envs
    return [list(n) for n in names]


def choose_actions(texts: list[str], names: list[list[str]], fallback: str, fallback_action: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse all answers in one `parse_actions` call; invalid ones get the fallback.

    Returns (actions int64 [N], valid bool [N], key_start int64 [N]).
    """
    from vlmrl_fast import parse_actions

    shared = all(n is names[0] for n in names)
    parsed = parse_actions(texts, names[0] if shared else names)
    valid = np.asarray(parsed.valid, dtype=bool)
    actions = np.asarray(parsed.index, dtype=np.int64).copy()
    sizes = np.array([len(n) for n in names])
    if fallback == "random":
        draws = (rng.random(len(texts)) * sizes).astype(np.int64)  # one draw per env keeps the stream aligned
    else:
        draws = np.minimum(fallback_action, sizes - 1)
    actions[~valid] = draws[~valid]
    return actions, valid, np.asarray(parsed.key_start, dtype=np.int64)


class EpisodeHistory:
    """The last `k` steps (action name, the env's text feedback after it) of every env's current episode,
    for the prompt's history window (`history_steps`); emptied when an episode ends."""

    def __init__(self, num_envs: int, k: int):
        self.k = int(k)
        self.steps: list[list[tuple[str, str]]] = [[] for _ in range(num_envs)]

    def window(self, i: int) -> list[tuple[str, str]]:
        """Env i's last k steps, oldest first (none when k = 0)."""
        return self.steps[i][-self.k:] if self.k else []

    def record(self, action_names: Sequence[str], infos: list[dict[str, Any]], done: np.ndarray) -> None:
        """After a step: append each env's action and feedback (info["text"] of the state it led to); an env
        whose episode ended starts its next one with an empty history."""
        if not self.k:
            return
        for i, name in enumerate(action_names):
            if done[i]:
                self.steps[i] = []
            else:
                self.steps[i] = (self.steps[i] + [(str(name), str(infos[i].get("text", "")))])[-self.k:]


def render_prompts(env_id: str, infos: list[dict[str, Any]], cot: bool, state_text: bool = False,
                   histories: Sequence[Sequence[tuple[str, str]]] | None = None) -> list[str]:
    """User messages of every env from its info (`vlmrl_fast.prompts.render`, with each env's history
    window when `histories` is given); with `state_text` the env's one-line text description of the image
    (info["text"]) is appended."""
    from vlmrl_fast import prompts

    hist = histories if histories is not None else [()] * len(infos)
    out = [prompts.render(env_id, info, cot=cot, history=h) for info, h in zip(infos, hist)]
    if state_text:
        out = [f"{p}\nThe image shows: {info.get('text', '')}" for p, info in zip(out, infos)]
    return out


def prompt_batch(agent: Any, images: np.ndarray, prompts: list[str]) -> Any:
    """agent.prompt_batch on the device of the agent's weights."""
    device = next(agent.parameters()).device
    return agent.prompt_batch(np.asarray(images), prompts).to(device)


def concat_prompt_batches(parts: Sequence[Any], pad_token_id: int) -> Any:
    """Rows of several PromptBatches as one: token rows left-padded to the longest, vision inputs
    concatenated along their first axis (per-image patches of Qwen2-VL style models included)."""
    if len(parts) == 1:
        return parts[0]
    width = max(p.input_ids.shape[1] for p in parts)

    def left_pad(x: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(x, (width - x.shape[1], 0), value=value)

    ids = torch.cat([left_pad(p.input_ids, pad_token_id) for p in parts])
    mask = torch.cat([left_pad(p.attention_mask, 0) for p in parts])
    vision = {}
    for key in parts[0].vision:
        if key in ("mm_token_type_ids", "token_type_ids"):  # one entry per token (agent.TOKEN_ROW_KEYS)
            vision[key] = torch.cat([left_pad(p.vision[key], 0) for p in parts])
        else:
            vision[key] = torch.cat([p.vision[key] for p in parts])
    return type(parts[0])(ids, mask, vision)


def select_rows(batches: Sequence[Any], num_envs: int, flat_indices: Sequence[int], pad_token_id: int) -> Any:
    """One PromptBatch of the rollout samples `flat_indices` (t * num_envs + n) from the per-step batches,
    without running the processor again."""
    by_step: dict[int, list[int]] = {}
    for i in flat_indices:
        by_step.setdefault(int(i) // num_envs, []).append(int(i) % num_envs)
    parts = [batches[t].select(rows) for t, rows in by_step.items()]
    order = [t * num_envs + r for t, rows in by_step.items() for r in rows]
    merged = concat_prompt_batches(parts, pad_token_id)
    # back to the caller's order, so row k is flat_indices[k]
    pos = {flat: k for k, flat in enumerate(order)}
    perm = [pos[int(i)] for i in flat_indices]
    return merged if perm == list(range(len(perm))) else merged.select(perm)


@torch.no_grad()
def values_of(agent: Any, images: np.ndarray, prompts: list[str]) -> np.ndarray:
    """V(s) of observations: the value head on the last prompt token (the answer does not enter it, so a
    one-token dummy answer is evaluated)."""
    if len(prompts) == 0 or getattr(agent, "value_head", True) is None:  # no value head: V = 0
        return np.zeros(len(prompts), np.float32)
    batch = prompt_batch(agent, images, prompts)
    eos = agent.processor.tokenizer.eos_token_id
    ev = agent.evaluate(batch, [[eos]] * len(prompts), [1] * len(prompts), lam=1.0)
    return ev.value.float().cpu().numpy()


# -- rollout storage -------------------------------------------------------------------------------------
@dataclass
class Rollout:
    """T steps x N envs of experience (flattened index = t * N + n where lists are flat).

    The numeric per-step fields (`actions`, `rewards`, `terminated`, `truncated`, `values`,
    `logprobs`, `next_values`) and the generated token ids live in the engine's Rust
    `TrajectoryBuffer` (`buffer`); the attributes here are numpy views of it, nothing is copied.
    """

    num_steps: int
    num_envs: int
    frames: np.ndarray  # [T, N, H, W, 3] uint8
    max_tokens: int = 256
    prompts: list[str] = field(default_factory=list)  # [T * N]
    answers: list[str] = field(default_factory=list)
    answer_ids: list[list[int]] = field(default_factory=list)  # filled from the buffer when complete
    action_starts: list[int] = field(default_factory=list)
    valid: np.ndarray = None  # type: ignore[assignment]
    ref_logprobs: np.ndarray | None = None
    ref_token_logprobs: np.ndarray | None = None  # [T, N, max_tokens] float32: the reference's per-token log-probs
    state_keys: np.ndarray | None = None  # [T, N] uint64: the engine's key of the state each action was taken in
    batches: list[Any] = field(default_factory=list)  # [T] PromptBatch of each step, reused by the update
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    tokens_generated: int = 0
    perception: list[float] = field(default_factory=list)  # per answer: state fields all true (1/0)
    seconds: dict[str, float] = field(default_factory=dict)
    buffer: TrajectoryBuffer = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.buffer is None:
            self.buffer = TrajectoryBuffer(self.num_steps, self.num_envs, self.max_tokens)
        if self.valid is None:
            self.valid = np.zeros((self.num_steps, self.num_envs), bool)

    # Views of the Rust buffer ([T, N]).
    actions = property(lambda self: self.buffer.actions)
    rewards = property(lambda self: self.buffer.rewards)
    terminated = property(lambda self: self.buffer.terminated)
    truncated = property(lambda self: self.buffer.truncated)
    values = property(lambda self: self.buffer.values)
    logprobs = property(lambda self: self.buffer.logprobs)
    next_values = property(lambda self: self.buffer.next_values)

    def add_step(self, actions: np.ndarray, valid: np.ndarray, rewards: np.ndarray, terminated: np.ndarray,
                 truncated: np.ndarray, values: np.ndarray, logprobs: np.ndarray,
                 answer_ids: list[list[int]]) -> int:
        """Store one step of all envs (one Rust call); returns its index."""
        t = self.buffer.add(np.ascontiguousarray(actions, np.int64), np.ascontiguousarray(rewards, np.float32),
                            np.ascontiguousarray(terminated, bool), np.ascontiguousarray(truncated, bool),
                            np.ascontiguousarray(values, np.float32), np.ascontiguousarray(logprobs, np.float32),
                            answer_ids)
        self.valid[t] = valid
        return t

    def finish(self) -> None:
        """Read the generated token ids back from the buffer once every step is stored."""
        lengths = self.buffer.token_lengths
        ids = self.buffer.token_ids
        self.answer_ids = [ids[t, i, : lengths[t, i]].tolist() for t in range(self.num_steps)
                           for i in range(self.num_envs)]


def collect_rollout(agent: Any, envs: Any, env_id: str, obs: np.ndarray, infos: dict[str, Any], *,
                    num_steps: int, cot: bool, lam: float, state_text: bool = False, fallback: str, fallback_action: int,
                    invalid_penalty: float, seed: int, ref_evaluate: Any = None, history_steps: int = 0
                    ) -> Rollout:
    """Play num_steps steps of every env from (obs, infos), storing what the PPO update needs.

    The prompts carry each env's last `history_steps` steps of its episode (`EpisodeHistory`); the state
    key of every step is stored when the envs offer `state_keys()` (GiGPO's step groups).
    `seed` drives generation sampling and the fallback actions, one derived seed per step, so a rollout
    does not depend on global RNG state. `ref_evaluate`, when given, evaluates the initial policy (the KL
    penalty's reference) with agent.evaluate's signature.
    """
    n = obs.shape[0]
    ro = Rollout(num_steps, n, np.zeros((num_steps, *obs.shape), np.uint8), max_tokens=agent.max_new_tokens)
    if ref_evaluate is not None:
        ro.ref_logprobs = np.zeros((num_steps, n), np.float32)
        ro.ref_token_logprobs = np.zeros((num_steps, n, agent.max_new_tokens), np.float32)
    secs = {"generate": 0.0, "logprob": 0.0, "env": 0.0, "prompt": 0.0}
    rng = np.random.default_rng([seed, 0x5EED])
    running_return = np.zeros(n, np.float64)
    running_len = np.zeros(n, np.int64)
    env_infos = split_infos(infos, n)
    history = EpisodeHistory(n, history_steps)
    if hasattr(envs, "state_keys"):
        ro.state_keys = np.zeros((num_steps, n), np.uint64)
    for t in range(num_steps):
        t0 = time.perf_counter()
        if ro.state_keys is not None:
            ro.state_keys[t] = envs.state_keys()
        prompts = render_prompts(env_id, env_infos, cot, state_text, [history.window(i) for i in range(n)])
        batch = prompt_batch(agent, obs, prompts)
        t1 = time.perf_counter()
        gen = agent.generate(batch, seed=int(rng.integers(2**31)))
        t2 = time.perf_counter()
        names = action_names_per_env(envs, n)
        actions, valid, key_starts = choose_actions(gen.texts, names, fallback, fallback_action, rng)
        starts = agent.action_token_starts(gen.answer_ids, gen.texts, key_starts)
        with torch.no_grad():
            ev = agent.evaluate(batch, gen.answer_ids, starts, lam=lam)
            if ref_evaluate is not None:
                ref = ref_evaluate(batch, gen.answer_ids, starts, lam=lam)
                ro.ref_logprobs[t] = ref.logprob.float().cpu().numpy()
                tok = ref.token_logprobs.float().cpu().numpy()
                ro.ref_token_logprobs[t, :, :tok.shape[1]] = tok[:, :agent.max_new_tokens]
        t3 = time.perf_counter()
        ro.frames[t] = obs
        ro.batches.append(batch)
        ro.prompts.extend(prompts)
        ro.answers.extend(gen.texts)
        if cot and has_fields(env_id):  # action-only answers state nothing: no perception figure
            ro.perception.extend(perception_correct(env_id, gen.texts, env_infos).tolist())
        ro.action_starts.extend(int(s) for s in starts)
        ro.tokens_generated += sum(len(a) for a in gen.answer_ids)

        obs, reward, term, trunc, infos = envs.step(actions)
        obs = np.asarray(obs)
        t4 = time.perf_counter()
        reward = np.asarray(reward, np.float32) - invalid_penalty * (~valid)
        term, trunc = np.asarray(term, bool), np.asarray(trunc, bool)
        ro.add_step(actions, valid, reward, term, trunc, ev.value.float().cpu().numpy(),
                    ev.logprob.float().cpu().numpy(), gen.answer_ids)
        running_return += reward
        running_len += 1
        done = term | trunc
        for i in np.flatnonzero(done):
            ro.episode_returns.append(float(running_return[i]))
            ro.episode_lengths.append(int(running_len[i]))
        running_return[done] = 0.0
        running_len[done] = 0
        # the value of the true successor: the next step's value for running envs (filled below), the
        # final state's value for truncated ones; terminated steps do not bootstrap
        need = np.flatnonzero(trunc & ~term)
        if len(need):
            frames, fin_infos = final_observations(infos, done, obs, n)
            fin_hist = [(history.window(i) + [(names[i][actions[i]], str(fin_infos[i].get("text", "")))])
                        [-history_steps:] if history_steps else [] for i in need]
            fin_prompts = render_prompts(env_id, [fin_infos[i] for i in need], cot, state_text, fin_hist)
            ro.next_values[t, need] = values_of(agent, frames[need], fin_prompts)
        if t > 0:
            running = ~(ro.terminated[t - 1] | ro.truncated[t - 1])
            ro.next_values[t - 1, running] = ro.values[t, running]
        env_infos = split_infos(infos, n)
        history.record([names[i][a] for i, a in enumerate(actions)], env_infos, done)
        secs["prompt"] += t1 - t0
        secs["generate"] += t2 - t1
        secs["logprob"] += t3 - t2
        secs["env"] += t4 - t3
    # bootstrap the last step from the state the rollout stops in
    running = ~(ro.terminated[-1] | ro.truncated[-1])
    if running.any():
        t0 = time.perf_counter()
        last = render_prompts(env_id, env_infos, cot, state_text, [history.window(i) for i in range(n)])
        boot = values_of(agent, obs[running], [p for p, r in zip(last, running) if r])
        ro.next_values[-1, running] = boot
        secs["logprob"] += time.perf_counter() - t0
    ro.seconds = secs
    ro.finish()
    return ro


# -- evaluation ------------------------------------------------------------------------------------------
@dataclass
class EvalResult:
    """Outcome of a fixed set of evaluation episodes (success = positive total reward)."""

    episodes: int
    success_rate: float
    mean_return: float
    invalid_rate: float
    returns: list[float]
    recorded: list[Episode]
    perception_accuracy: float = float("nan")  # share of answers whose state fields equal the truth
    thought_consistency: float = float("nan")  # NumberLine: thoughts state the true comparison


def _eval_chunks(episodes: int, batch: int) -> list[tuple[int, int]]:
    """(first episode, episodes in the chunk) of the fixed evaluation set: chunks of min(batch, episodes)
    envs, reset with seed + first episode."""
    size = min(batch, episodes)
    return [(start, min(size, episodes - start)) for start in range(0, episodes, size)] if size > 0 else []


def solvable_share(env_id: str, *, episodes: int, seed: int, batch: int, make_vec: Any = None,
                   **env_kwargs: Any) -> float:
    """Share of the episodes of `evaluate_agent`'s fixed set (same arguments) whose start the built-in
    expert can solve: the ceiling of the success rate on Points24 and EZPoints (a deal with no formula
    reaching the target cannot be won). NaN for games without an expert plan (every other env)."""
    from gymnasium.vector import AutoresetMode

    if make_vec is None:
        from vlmrl_fast import make_vec
    chunks = _eval_chunks(episodes, batch)
    if not chunks:
        return float("nan")
    envs = make_vec(env_id, chunks[0][1], seed=seed, autoreset_mode=AutoresetMode.SAME_STEP, **env_kwargs)
    try:
        if not callable(getattr(envs, "expert_plans", None)):
            return float("nan")
        solvable = 0
        for start, m in chunks:
            envs.reset(seed=seed + start)
            plans = envs.expert_plans()[:m]
            if any(p is None for p in plans):
                return float("nan")
            solvable += sum(p != "" for p in plans)
    finally:
        envs.close()
    return solvable / episodes


def evaluate_agent(agent: Any, env_id: str, *, episodes: int, seed: int, batch: int, cot: bool = True,
                   state_text: bool = False,
                   fallback: str = "random", fallback_action: int = 0, record: int = 0,
                   max_steps: int = 1000, make_vec: Any = None, progress: Any = None, history_steps: int = 0,
                   **env_kwargs: Any) -> EvalResult:
    """Play `episodes` episodes: chunks of `batch` envs, each env plays the first episode of its seeded
    reset only, so the set of episodes is fixed by `seed` whatever the policy does. Returns the success
    rate and records the first `record` episodes (frames, prompts, answers) for the HTML report."""
    from gymnasium.vector import AutoresetMode

    if make_vec is None:
        from vlmrl_fast import make_vec
    returns: list[float] = []
    recorded: list[Episode] = []
    invalid = steps = 0
    perceived: list[float] = []
    consistent: list[float] = []
    rng = np.random.default_rng([seed, 0xE7A1])
    size = min(batch, episodes)
    envs = make_vec(env_id, size, seed=seed, autoreset_mode=AutoresetMode.SAME_STEP, **env_kwargs)
    try:
        for start, m in _eval_chunks(episodes, batch):
            obs, infos = envs.reset(seed=seed + start)
            active = np.zeros(size, bool)
            active[:m] = True
            ret = np.zeros(size)
            eps = {i: Episode() for i in range(m) if start + i < record}
            history = EpisodeHistory(size, history_steps)
            for _ in range(max_steps):
                if not active.any():
                    break
                idx = np.flatnonzero(active)
                env_infos = split_infos(infos, size)
                prompts = render_prompts(env_id, [env_infos[i] for i in idx], cot, state_text,
                                         [history.window(i) for i in idx])
                gen = agent.generate(prompt_batch(agent, np.asarray(obs)[idx], prompts),
                                     seed=int(rng.integers(2**31)))
                names = action_names_per_env(envs, size)
                if cot and has_fields(env_id):
                    seen = [env_infos[i] for i in idx]
                    perceived.extend(perception_correct(env_id, gen.texts, seen))
                    consistent.append(thought_consistency(env_id, gen.texts, seen) * len(idx))
                acts, valid, _ = choose_actions(gen.texts, [names[i] for i in idx], fallback, fallback_action, rng)
                actions = np.zeros(size, np.int64)
                actions[idx] = acts
                frames = np.array(obs)[idx] if eps else None
                obs, reward, term, trunc, infos = envs.step(actions)
                history.record([names[i][a] for i, a in enumerate(actions)], split_infos(infos, size),
                               np.asarray(term, bool) | np.asarray(trunc, bool))
                invalid += int((~valid).sum())
                steps += len(idx)
                for j, i in enumerate(idx):
                    ret[i] += float(reward[i])
                    if i in eps:
                        eps[i].steps.append(EpisodeStep(frames[j], prompts[j], gen.texts[j],
                                                        names[i][acts[j]], bool(valid[j]), float(reward[i])))
                    if term[i] or trunc[i]:
                        active[i] = False
                        returns.append(float(ret[i]))
                        if progress is not None:
                            progress.update(1)
            else:
                returns.extend(float(ret[i]) for i in np.flatnonzero(active))
            recorded.extend(eps[i] for i in sorted(eps))
    finally:
        envs.close()
    r = np.array(returns)
    return EvalResult(len(r), float((r > 0).mean()) if len(r) else float("nan"),
                      float(r.mean()) if len(r) else float("nan"), invalid / max(steps, 1), returns, recorded,
                      float(np.mean(perceived)) if perceived else float("nan"),
                      sum(consistent) / len(perceived) if perceived else float("nan"))  # NaN but on NumberLine
