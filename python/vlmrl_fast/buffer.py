"""Rollout storage and CPU advantages, backed by the Rust engine.

:class:`TrajectoryBuffer` keeps T steps x N envs of actions, rewards, flags,
values, log-probs and generated token ids; every field is a numpy view of the
Rust storage (``buf.rewards[t, i]``), so nothing is copied. :func:`gae` is the
CPU path of the project's GAE (same semantics as the Triton kernel).
"""

from __future__ import annotations

import numpy as np

from vlmrl_fast._core import TrajectoryBuffer
from vlmrl_fast._core import gae as _gae

__all__ = ["TrajectoryBuffer", "gae"]


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    gamma: float = 0.9,
    lam: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns over [T, N] arrays.

    ``next_values[t]`` is the value of step t's true successor (the final
    state for a truncated step). delta_t = r_t + gamma (1 - terminated_t)
    next_values_t - values_t; A_t = delta_t + gamma lam (1 - (terminated_t or
    truncated_t)) A_{t+1}; returns = A + values. float32 inputs give float32
    outputs, anything else float64.
    """
    dtype = np.float32 if all(np.asarray(x).dtype == np.float32 for x in (rewards, values, next_values)) else np.float64
    r, v, nv = (np.ascontiguousarray(x, dtype=dtype) for x in (rewards, values, next_values))
    te, tr = (np.ascontiguousarray(x, dtype=bool) for x in (terminated, truncated))
    if r.ndim != 2:
        raise ValueError(f"gae: rewards must be [T, N], got shape {r.shape}")
    return _gae(r, v, nv, te, tr, float(gamma), float(lam))
