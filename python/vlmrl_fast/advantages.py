"""Advantage estimators, as small pure functions of a rollout's [T, N] numpy arrays.

`compute_advantages` is the one call the update makes; it dispatches on the config's `algorithm`:

- ``ppo``: GAE with the value head (the paper's PPO).
- ``grpo``: the episode return normalised within its group.
- ``rloo``: the episode return minus the mean return of the other members of its group.
- ``gigpo``: GRPO's episode advantage plus a step advantage from groups of identical states.

Groups and episodes (the value-free methods): env n belongs to group ``n // group_size``; the envs of a
group start the rollout from one state (`VlmrlVectorEnv.reset(options={"group_size": G})`: one shared
random stream, so in games whose steps draw nothing, NumberLine, EZPoints and Points24 but not Blackjack,
their later episodes start in step too). Episodes
auto-reset on the same step (SAME_STEP), so one env plays several episodes in a rollout: the k-th
episode of env n (k = 0, 1, ... counted from the rollout's first step) is compared with the k-th
episodes of the other envs of its group. An episode's return R is the sum of its rewards; an episode
cut by the rollout's end (neither terminated nor truncated at step T-1) uses what is known: the sum of
the rewards it received within the rollout. Every step of an episode gets that episode's advantage
(outcome supervision; no discount). A group of one member, or one whose returns are all equal, gives
advantage 0. The returns these methods hand back (for a value loss) are the episode returns per step;
they train no value head, so nothing uses them but the metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlmrl_fast.ppo_math import compute_gae

ALGORITHMS = ("ppo", "grpo", "rloo", "gigpo")
VALUE_FREE = ("grpo", "rloo", "gigpo")


def episode_index(terminated: np.ndarray, truncated: np.ndarray) -> np.ndarray:
    """[T, N] int64: which episode of its env (0, 1, ... from the rollout's start) each step belongs to.
    A step that ends an episode (terminated or truncated) still belongs to it."""
    done = (np.asarray(terminated, bool) | np.asarray(truncated, bool)).astype(np.int64)
    ended_before = np.cumsum(done, axis=0) - done
    return ended_before


def episode_returns(rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> np.ndarray:
    """[T, N] float64: the return R of the episode each step belongs to (the sum of that episode's rewards
    within the rollout; for an episode cut by the rollout's end, the rewards it received so far)."""
    r = np.asarray(rewards, np.float64)
    ep = episode_index(terminated, truncated)
    out = np.zeros_like(r)
    for n in range(r.shape[1]):
        sums = np.bincount(ep[:, n], weights=r[:, n])
        out[:, n] = sums[ep[:, n]]
    return out


def _episode_table(rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, group_size: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keys [T, N] of (group, episode k) as one int64, returns [T, N], first [T, N] bool: the first step
    of each episode, so each episode is counted once in its group's statistics)."""
    T, N = np.shape(rewards)
    if group_size < 1 or N % group_size:
        raise ValueError(f"group_size must divide num_envs ({N}), got {group_size}")
    ep = episode_index(terminated, truncated)
    group = np.arange(N) // group_size
    keys = group[None, :] * (T + 1) + ep
    first = np.ones((T, N), bool)
    first[1:] = ep[1:] != ep[:-1]
    return keys, episode_returns(rewards, terminated, truncated), first


def _by_group(values: np.ndarray, keys: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per element: (size, mean, population std) of its group (elements with equal `keys`, counting only
    those where `count` is True)."""
    flat_k, flat_v, flat_c = keys.reshape(-1), values.reshape(-1), count.reshape(-1)
    uniq, inv = np.unique(flat_k, return_inverse=True)
    size = np.bincount(inv, weights=flat_c.astype(np.float64), minlength=len(uniq))
    total = np.bincount(inv, weights=flat_v * flat_c, minlength=len(uniq))
    mean = total / np.maximum(size, 1)
    sq = np.bincount(inv, weights=(flat_v - mean[inv]) ** 2 * flat_c, minlength=len(uniq))
    std = np.sqrt(sq / np.maximum(size, 1))
    shape = values.shape
    return size[inv].reshape(shape), mean[inv].reshape(shape), std[inv].reshape(shape)


def _normalized(values: np.ndarray, keys: np.ndarray, count: np.ndarray, eps: float) -> np.ndarray:
    """(v - mean_group) / (std_group + eps); 0 for groups of one member or of equal values."""
    size, mean, std = _by_group(values, keys, count)
    adv = (values - mean) / (std + eps)
    return np.where((size > 1) & (std > 0), adv, 0.0)


def grpo(rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, group_size: int,
         eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """GRPO: A_i = (R_i - mean_j R_j) / (std_j R_j + eps) over the episodes j of episode i's group
    (population std; 0 for a single member or all-equal returns). Returns (advantages, returns) [T, N]
    float32, every step carrying its episode's values."""
    keys, ret, first = _episode_table(rewards, terminated, truncated, group_size)
    adv = _normalized(ret, keys, first, eps)
    return adv.astype(np.float32), ret.astype(np.float32)


def rloo(rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, group_size: int
         ) -> tuple[np.ndarray, np.ndarray]:
    """RLOO: A_i = R_i - (1 / (m - 1)) * sum_{j != i} R_j = m / (m - 1) * (R_i - mean_j R_j) over the m
    episodes of episode i's group (the leave-one-out baseline; 0 when m = 1). Returns (advantages,
    returns) [T, N] float32."""
    keys, ret, first = _episode_table(rewards, terminated, truncated, group_size)
    size, mean, _ = _by_group(ret, keys, first)
    adv = np.where(size > 1, size / np.maximum(size - 1, 1) * (ret - mean), 0.0)
    return adv.astype(np.float32), ret.astype(np.float32)


def step_returns(rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, gamma: float) -> np.ndarray:
    """[T, N] float64: the discounted return-to-go within its episode, G_t = sum_{t' >= t} gamma^(t'-t) r_t'
    over the steps t' of the same episode (cut at the rollout's end: the rewards received so far)."""
    r = np.asarray(rewards, np.float64)
    done = np.asarray(terminated, bool) | np.asarray(truncated, bool)
    out = np.zeros_like(r)
    running = np.zeros(r.shape[1])
    for t in range(r.shape[0] - 1, -1, -1):
        running = r[t] + gamma * running * ~done[t]
        out[t] = running
    return out


def gigpo(rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, state_keys: np.ndarray,
          group_size: int, gamma: float = 0.95, step_coef: float = 1.0, eps: float = 1e-6
          ) -> tuple[np.ndarray, np.ndarray]:
    """GiGPO: A_t = A_episode + step_coef * A_step.

    A_episode is GRPO's advantage of the step's episode. A_step normalises the discounted return-to-go
    G_t (`step_returns`) within the step group: every step, of any episode of the same env group, taken
    from a state with the same engine state key (`state_keys` [T, N], the key of the state the action
    was chosen in): A_step = (G_t - mean G) / (std G + eps), 0 for a state met once or with equal G.
    Returns (advantages, returns) [T, N] float32; returns are the episode returns.
    """
    adv_ep, ret = grpo(rewards, terminated, truncated, group_size, eps)
    keys = np.asarray(state_keys).astype(np.uint64)
    N = keys.shape[1]
    group = np.broadcast_to((np.arange(N) // group_size).astype(np.uint64), keys.shape)
    # one integer per (env group, state): the group in the top bits over the 64-bit key's low bits
    pair = np.stack([group.reshape(-1), keys.reshape(-1)], 1)
    _, step_group = np.unique(pair, axis=0, return_inverse=True)
    step_group = step_group.reshape(keys.shape)
    g = step_returns(rewards, terminated, truncated, gamma)
    adv_step = _normalized(g, step_group, np.ones(keys.shape, bool), eps)
    return (adv_ep + step_coef * adv_step).astype(np.float32), ret


def compute_advantages(ro: Any, cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(advantages, returns) [T, N] of rollout `ro` for `cfg.algorithm` (see the module docstring)."""
    if cfg.algorithm == "ppo":
        return compute_gae(ro.rewards, ro.values, ro.next_values, ro.terminated, ro.truncated,
                           cfg.gamma, cfg.gae_lambda)
    if cfg.algorithm == "grpo":
        return grpo(ro.rewards, ro.terminated, ro.truncated, cfg.group_size)
    if cfg.algorithm == "rloo":
        return rloo(ro.rewards, ro.terminated, ro.truncated, cfg.group_size)
    if cfg.algorithm == "gigpo":
        return gigpo(ro.rewards, ro.terminated, ro.truncated, ro.state_keys, cfg.group_size, cfg.gamma,
                     cfg.gigpo_step_coef)
    raise ValueError(f"unknown algorithm {cfg.algorithm!r}; known: {', '.join(ALGORITHMS)}")


def diagnostics(algorithm: str, advantages: np.ndarray, ro: Any, group_size: int) -> dict[str, float]:
    """Metrics of the advantages (CleanRL-style names): their mean and std for every algorithm; for the
    group methods the share of steps whose episode advantage is 0 (groups whose returns all tie: no
    signal), and for GiGPO the share of steps whose state another step of their env group also met."""
    adv = np.asarray(advantages, np.float64)
    out = {"adv/mean": float(adv.mean()), "adv/std": float(adv.std())}
    if algorithm in VALUE_FREE:
        ep_adv, _ = grpo(ro.rewards, ro.terminated, ro.truncated, group_size)
        out["adv/zero_episode_frac"] = float((ep_adv == 0).mean())
    if algorithm == "gigpo" and ro.state_keys is not None:
        keys = np.asarray(ro.state_keys).astype(np.uint64)
        group = np.broadcast_to((np.arange(keys.shape[1]) // group_size).astype(np.uint64), keys.shape)
        pair = np.stack([group.reshape(-1), keys.reshape(-1)], 1)
        _, inv, counts = np.unique(pair, axis=0, return_inverse=True, return_counts=True)
        out["adv/gigpo_shared_state_frac"] = float((counts[inv.reshape(-1)] > 1).mean())
    return out
