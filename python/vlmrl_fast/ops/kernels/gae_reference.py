"""Plain-torch reference of generalized advantage estimation (the specification).

Shared with the engine's Rust GAE. Inputs are ``[T, N]`` (time, environment)::

    delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t
    A_t     = delta_t + gamma * lam * (1 - (terminated_t or truncated_t)) * A_{t+1},  A_T = 0
    returns = A + values

``next_values_t`` is the value of the true successor state of step t (for a truncated
step the final state before the auto-reset), so truncation bootstraps from it while
cutting the recursion, and termination does neither.
"""

from __future__ import annotations

import torch


def gae_reference(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) as float32 ``[T, N]``.

    The per-step terms are computed for all steps at once; only the recursion itself
    loops over time, one fused multiply-add per step, written in place.
    """
    rewards = rewards.float()
    values = values.float()
    next_values = next_values.float()
    terminated = terminated.bool()
    done = terminated | truncated.bool()
    delta = rewards + gamma * (~terminated).float() * next_values - values
    coef = (gamma * lam) * (~done).float()
    advantages = torch.empty_like(delta)
    num_steps = delta.shape[0]
    if num_steps > 0:
        advantages[num_steps - 1] = delta[num_steps - 1]
    for t in range(num_steps - 2, -1, -1):
        torch.addcmul(delta[t], coef[t], advantages[t + 1], out=advantages[t])
    return advantages, advantages + values


def gae_loop(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The textbook Python loop over time (CleanRL style), every term computed inside
    the loop. Kept as the benchmark baseline the kernels are measured against."""
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards, dtype=torch.float32)
    last = torch.zeros_like(rewards[0], dtype=torch.float32)
    for t in reversed(range(num_steps)):
        not_terminated = 1.0 - terminated[t].float()
        not_done = 1.0 - (terminated[t] | truncated[t]).float()
        delta = rewards[t] + gamma * not_terminated * next_values[t] - values[t]
        last = delta + gamma * lam * not_done * last
        advantages[t] = last
    return advantages, advantages + values
