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


TOKEN_KL_ESTIMATORS = ("k2_token", "k3_token")  # on per-token log-probs (kl_to_reference_tokens)


def _kl_terms(d: torch.Tensor, estimator: str) -> torch.Tensor:
    """One estimator's terms of the log-ratios d = ref - new."""
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k3":
        return d.exp() - d - 1
    raise ValueError(f"kl estimator must be k1, k2 or k3, got {estimator!r}")


def kl_to_reference(new_logprob: torch.Tensor, ref_logprob: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Mean estimate of KL(policy || reference) from log-probs of answers sampled by the policy:
    k1 = new - ref (unbiased, can be negative); k2 = (new - ref)^2 / 2 (as a loss its gradient is the
    reverse KL's gradient, and it grows with the square of the log-ratio); k3 = exp(ref - new) - (ref - new)
    - 1 (unbiased, non-negative, low variance, but exponential in a log-ratio)."""
    if estimator in TOKEN_KL_ESTIMATORS:
        raise ValueError(f"{estimator} needs per-token log-probs: use kl_to_reference_tokens")
    return _kl_terms(ref_logprob - new_logprob, estimator).mean()


def kl_to_reference_tokens(new_token_logprob: torch.Tensor, ref_token_logprob: torch.Tensor,
                           mask: torch.Tensor, estimator: str = "k3_token") -> torch.Tensor:
    """Mean over answers of a per-token estimator summed over each answer's tokens ([B, L] inputs, mask
    true on answer tokens). k3_token: sum_t exp(ref_t - new_t) - (ref_t - new_t) - 1 (each term sees one
    token's log-ratio instead of exp of the whole answer's, which reaches 5e4 on single answers; still, one
    token whose log-prob falls by 30 nats adds e^30). k2_token: sum_t (new_t - ref_t)^2 / 2, whose gradient
    is sum_t (new_t - ref_t) grad new_t: the reverse KL's gradient in expectation (E[grad new_t] = 0 under
    the policy), linear in a drifted token's log-ratio rather than exponential."""
    if estimator not in TOKEN_KL_ESTIMATORS:
        raise ValueError(f"per-token kl estimator must be one of {TOKEN_KL_ESTIMATORS}, got {estimator!r}")
    d = (ref_token_logprob - new_token_logprob).masked_fill(~mask, 0.0)
    return (_kl_terms(d, estimator.removesuffix("_token")) * mask).sum(1).mean()


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
    KL to the initial policy (optional): `kl_to_reference` with `kl_estimator` (k1, k2 or k3) on the sampled
    answers' log-probs, or with k2_token / k3_token `kl_to_reference_tokens` on their per-token log-probs ([B, L]
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
    if kl_coef > 0 and kl_estimator in TOKEN_KL_ESTIMATORS and ref_token_logprob is not None:
        if new_token_logprob is None or token_mask is None:
            raise ValueError(f"kl_estimator {kl_estimator} needs new_token_logprob and token_mask")
        kl_ref = kl_to_reference_tokens(new_token_logprob, ref_token_logprob, token_mask, kl_estimator)
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
