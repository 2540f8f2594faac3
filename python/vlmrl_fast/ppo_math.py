"""The arithmetic of PPO, as small pure functions on tensors (tested against numpy references).

Kept apart from the training loop (ppo.py) so that each formula can be read and tested on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from vlmrl_fast.ops import gae


def cosine_lr(update: int, total_updates: int, max_lr: float, min_lr: float) -> float:
    """Learning rate of update `update` (0-based) on a cosine from max_lr (first) to min_lr (last)."""
    if total_updates <= 1:
        return max_lr
    progress = min(max(update / (total_updates - 1), 0.0), 1.0)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def compute_gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray, terminated: np.ndarray,
                truncated: np.ndarray, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """GAE of a rollout's numpy arrays through `vlmrl_fast.ops.gae` (for these CPU arrays: the
    engine's Rust GAE).

    All arrays are [T, N]; returns float32 numpy (advantages, returns).
    """
    args = [torch.as_tensor(np.ascontiguousarray(a)).float() for a in (rewards, values, next_values)]
    flags = [torch.as_tensor(np.ascontiguousarray(a)).bool() for a in (terminated, truncated)]
    adv, ret = gae(*args, *flags, gamma=gamma, lam=lam)
    return np.asarray(adv, dtype=np.float32), np.asarray(ret, dtype=np.float32)


def normalize_advantages(adv: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(adv - mean) / (std + eps) over the whole rollout; a single sample is only centred."""
    if adv.numel() < 2:
        return adv - adv.mean()
    return (adv - adv.mean()) / (adv.std() + eps)


@dataclass
class PPOLosses:
    """Losses and diagnostics of one minibatch (tensors; the losses carry gradients)."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    kl_ref: torch.Tensor
    approx_kl: torch.Tensor
    old_approx_kl: torch.Tensor
    clipfrac: torch.Tensor
    ratio_guarded: bool


def kl_to_reference(new_logprob: torch.Tensor, ref_logprob: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Mean estimate of KL(policy || reference) from log-probs of answers sampled by the policy:
    k1 = new - ref (unbiased, can be negative); k3 = exp(ref - new) - (ref - new) - 1 (unbiased,
    non-negative, low variance)."""
    d = ref_logprob - new_logprob
    if estimator == "k3_token":
        raise ValueError("k3_token needs per-token log-probs: use kl_to_reference_tokens")
    if estimator == "k1":
        return (-d).mean()
    if estimator == "k3":
        return (d.exp() - d - 1).mean()
    raise ValueError(f"kl estimator must be k1 or k3, got {estimator!r}")


def kl_to_reference_tokens(new_token_logprob: torch.Tensor, ref_token_logprob: torch.Tensor,
                           mask: torch.Tensor) -> torch.Tensor:
    """Mean over answers of the per-token k3 summed over each answer's tokens ([B, L] inputs, mask true on
    answer tokens): sum_t exp(ref_t - new_t) - (ref_t - new_t) - 1. Estimates the same sequence KL as k3
    on whole answers, but each term sees one token's log-ratio, so one drifted answer adds a sum of
    bounded-looking terms instead of exp(sum) (the whole-answer k3 reaches 5e4 on single answers)."""
    d = (ref_token_logprob - new_token_logprob).masked_fill(~mask, 0.0)
    return ((d.exp() - d - 1) * mask).sum(1).mean()


def ppo_losses(new_logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor,
               new_value: torch.Tensor | None, old_value: torch.Tensor | None, returns: torch.Tensor, *,
               clip_coef: float, clip_vloss: bool = True, vf_coef: float = 0.5, ratio_guard: float = 10.0,
               entropy: torch.Tensor | None = None, ent_coef: float = 0.0,
               ref_logprob: torch.Tensor | None = None, kl_coef: float = 0.0,
               kl_estimator: str = "k3", new_token_logprob: torch.Tensor | None = None,
               ref_token_logprob: torch.Tensor | None = None,
               token_mask: torch.Tensor | None = None) -> PPOLosses:
    """Clipped PPO objective for one minibatch (all inputs [B]).

    Policy: max(-A * r, -A * clip(r, 1 - c, 1 + c)), except that when any ratio of the minibatch exceeds
    `ratio_guard` only the clipped term is used (the paper's guard against exploding ratios, which would
    otherwise let one token sequence dominate the step).
    Value: 0.5 * max((v - R)^2, (v_old + clip(v - v_old, -c, c) - R)^2) when clip_vloss, else 0.5 * (v - R)^2.
    Without a value head (new_value None: the value-free algorithms) there is no value loss (0).
    KL to the initial policy (optional): `kl_to_reference` with `kl_estimator` (k1 or k3) on the sampled
    answers' log-probs, or with k3_token `kl_to_reference_tokens` on their per-token log-probs ([B, L]
    new_token_logprob, ref_token_logprob and token_mask).
    """
    logratio = new_logprob - old_logprob
    ratio = logratio.exp()
    with torch.no_grad():
        old_approx_kl = (-logratio).mean()
        approx_kl = ((ratio - 1) - logratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()

    pg_unclipped = -advantages * ratio
    pg_clipped = -advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    guarded = bool((ratio.detach() > ratio_guard).any())
    policy_loss = pg_clipped.mean() if guarded else torch.max(pg_unclipped, pg_clipped).mean()

    if new_value is None:
        value_loss = new_logprob.new_zeros(())
    elif clip_vloss:
        v_unclipped = (new_value - returns) ** 2
        v_clipped = old_value + torch.clamp(new_value - old_value, -clip_coef, clip_coef)
        value_loss = 0.5 * torch.max(v_unclipped, (v_clipped - returns) ** 2).mean()
    else:
        value_loss = 0.5 * ((new_value - returns) ** 2).mean()

    zero = new_logprob.new_zeros(())
    ent = entropy.mean() if entropy is not None else zero
    if kl_coef > 0 and kl_estimator == "k3_token" and ref_token_logprob is not None:
        if new_token_logprob is None or token_mask is None:
            raise ValueError("kl_estimator k3_token needs new_token_logprob and token_mask")
        kl_ref = kl_to_reference_tokens(new_token_logprob, ref_token_logprob, token_mask)
    elif ref_logprob is not None and kl_coef > 0:
        kl_ref = kl_to_reference(new_logprob, ref_logprob, kl_estimator)
    else:
        kl_ref = zero
    loss = policy_loss + vf_coef * value_loss - ent_coef * ent + kl_coef * kl_ref
    return PPOLosses(loss, policy_loss, value_loss, ent, kl_ref, approx_kl, old_approx_kl, clipfrac, guarded)


def explained_variance(values: np.ndarray, returns: np.ndarray) -> float:
    """1 - Var(returns - values) / Var(returns); nan when the returns do not vary."""
    var = float(np.var(returns))
    return float("nan") if var == 0 else 1.0 - float(np.var(returns - values)) / var
