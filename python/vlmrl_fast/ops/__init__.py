"""Fused operations of the PPO update: token log-probabilities (with entropy) and GAE.

Both functions take a ``backend``:

- ``"auto"``: the Triton kernel for CUDA tensors; on the CPU the plain-torch reference
  for ``token_logprobs`` and the engine's Rust GAE for ``gae`` (the torch reference if
  the native module has no GAE).
- ``"triton"``: always the Triton kernel. CPU tensors run only under the Triton
  interpreter (``TRITON_INTERPRET=1`` set before triton is first imported).
- ``"torch"``: the plain-torch reference, the specification of both operations.

The implementations live in ``vlmrl_fast.ops.kernels`` (``python/vlmrl_fast/ops/kernels/``,
the project's kernels folder); triton is imported only when a Triton path runs.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from typing import Any

import torch

from vlmrl_fast.ops.kernels.gae_reference import gae_reference
from vlmrl_fast.ops.kernels.token_logprobs_reference import token_logprobs_reference

__all__ = ["BACKENDS", "gae", "token_logprobs", "triton_available"]

BACKENDS = ("auto", "triton", "torch")


@functools.cache
def triton_available() -> bool:
    """True when triton can be imported (looked up once per process)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _gae_triton() -> Any:
    from vlmrl_fast.ops.kernels.gae_triton import gae_triton

    return gae_triton


_GAE_NAMES = ("rewards", "values", "next_values", "terminated", "truncated")
_NOT_REAL = frozenset({torch.bool, torch.complex32, torch.complex64, torch.complex128})


def _unit_interval(x: Any) -> bool:
    return (type(x) is float or isinstance(x, numbers.Real)) and 0.0 <= float(x) <= 1.0


def _gae_inputs_ok(tensors: tuple, gamma: Any, lam: Any) -> bool:
    """True when gae's inputs pass every check of :func:`_raise_gae_input_error` (the fast test)."""
    r, v, nv, term, trunc = tensors
    T = torch.Tensor
    if not (isinstance(r, T) and isinstance(v, T) and isinstance(nv, T) and isinstance(term, T)
            and isinstance(trunc, T)):
        return False
    shape, device = r.shape, r.device
    return (len(shape) == 2 and v.shape == shape and nv.shape == shape and term.shape == shape
            and trunc.shape == shape and v.device == device and nv.device == device and term.device == device
            and trunc.device == device and r.dtype not in _NOT_REAL and v.dtype not in _NOT_REAL
            and nv.dtype not in _NOT_REAL and _unit_interval(gamma) and _unit_interval(lam))


def _raise_gae_input_error(tensors: tuple, gamma: Any, lam: Any) -> None:
    """Raise the error that names the first bad input of gae."""
    for i, x in enumerate(tensors):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"gae: {_GAE_NAMES[i]} must be a torch.Tensor, got {type(x).__name__}")
    shape, device = tensors[0].shape, tensors[0].device
    for i, x in enumerate(tensors):
        if x.dim() != 2:
            raise ValueError(f"gae: {_GAE_NAMES[i]} must be [T, N], got shape {tuple(x.shape)}")
        if x.shape != shape:
            raise ValueError(
                f"gae: {_GAE_NAMES[i]} has shape {tuple(x.shape)}, rewards {tuple(shape)}; all must match"
            )
        if x.device != device:
            raise ValueError(f"gae: {_GAE_NAMES[i]} is on {x.device}, rewards on {device}")
        if i < 3 and x.dtype in _NOT_REAL:
            raise TypeError(f"gae: {_GAE_NAMES[i]} must be a real dtype, got {x.dtype}")
    for name, number in (("gamma", gamma), ("lam", lam)):
        if not _unit_interval(number):
            raise ValueError(f"gae: {name} must be a number in [0, 1], got {number!r}")
    raise AssertionError("gae: _gae_inputs_ok and _raise_gae_input_error disagree")  # pragma: no cover


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _use_triton(backend: str, device: torch.device, what: str) -> bool:
    """Resolve ``backend`` for tensors on ``device``; raise if "triton" cannot run there."""
    if backend == "torch":
        return False
    if backend == "auto":
        return device.type == "cuda" and triton_available()
    if not triton_available():
        raise RuntimeError(f"{what}: backend='triton' needs the triton package, which is not installed")
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        raise RuntimeError(
            f"{what}: backend='triton' on {device.type} tensors runs only under the Triton "
            "interpreter; set TRITON_INTERPRET=1 before triton is imported, or use "
            "backend='auto' / 'torch'"
        )
    return True


def token_logprobs(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    return_entropy: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Float32 log-probability of each token under ``softmax(logits / temperature)``.

    Args:
        logits: ``[B, T, V]`` (any leading shape ``[..., V]``), float32, bfloat16 or
            float16. Only the vocabulary dimension needs to be contiguous: a slice such
            as ``logits[:, start:-1]`` is read in place, without a copy.
        tokens: integer token ids with the leading shape of ``logits`` (``[B, T]``),
            each in ``[0, V)`` (checked: on CUDA that check is one device sync per call).
        temperature: the sampling temperature (> 0); log-probs are those of
            ``logits / temperature``, as in the sampler.
        return_entropy: also return the entropy of each position's distribution.
        backend: "auto", "triton" or "torch" (see the module docstring).

    Returns:
        ``logp`` float32 ``[B, T]``, or ``(logp, entropy)`` when ``return_entropy``.
        Both are differentiable with respect to ``logits``. The Triton path keeps one
        log-sum-exp and one entropy per position: besides the logits and their
        gradient it allocates no tensor of size ``B * T * V``.
    """
    _check_backend(backend)
    if not isinstance(logits, torch.Tensor) or not isinstance(tokens, torch.Tensor):
        raise TypeError("token_logprobs: logits and tokens must be torch.Tensor")
    if not logits.is_floating_point():
        raise TypeError(f"token_logprobs: logits must be a floating dtype, got {logits.dtype}")
    if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
        raise TypeError(f"token_logprobs: tokens must be an integer dtype, got {tokens.dtype}")
    if logits.dim() < 1 or tuple(tokens.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            "token_logprobs: tokens must have the shape of logits without its last "
            f"(vocabulary) dimension; got logits {tuple(logits.shape)}, tokens {tuple(tokens.shape)}"
        )
    if tokens.device != logits.device:
        raise ValueError(
            f"token_logprobs: logits are on {logits.device} but tokens on {tokens.device}"
        )
    vocab = logits.shape[-1]
    if vocab == 0:
        raise ValueError("token_logprobs: the vocabulary dimension of logits is empty")
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"token_logprobs: temperature must be finite and > 0, got {temperature}")
    if tokens.numel() > 0:
        bad = (tokens < 0) | (tokens >= vocab)
        if bool(bad.any()):
            first = tokens[bad].flatten()[0].item()
            raise ValueError(f"token_logprobs: token id {first} is outside the vocabulary [0, {vocab})")
    tokens = tokens.long()

    if not _use_triton(backend, logits.device, "token_logprobs"):
        return token_logprobs_reference(logits, tokens, temperature, return_entropy)

    from vlmrl_fast.ops.kernels.token_logprobs_triton import token_logprobs_triton

    lead_shape = tokens.shape
    logits3 = logits.reshape(1, 1, vocab) if logits.dim() == 1 else logits
    logits3 = logits3.unsqueeze(0) if logits3.dim() == 2 else logits3.flatten(0, -3)
    tokens2 = tokens.reshape(logits3.shape[:2])
    if logits3.stride(-1) != 1:
        logits3 = logits3.contiguous()
    out: Any = token_logprobs_triton(logits3, tokens2, temperature, return_entropy)
    if return_entropy:
        return out[0].reshape(lead_shape), out[1].reshape(lead_shape)
    return out.reshape(lead_shape)


def _rust_gae() -> Any:
    """The engine's Rust GAE (``vlmrl_fast._core.gae``) if the native module has it."""
    try:
        from vlmrl_fast import _core
    except ImportError:
        return None
    return getattr(_core, "gae", None)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    lam: float,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over a rollout of T steps by N environments.

    ``delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t`` and
    ``A_t = delta_t + gamma * lam * (1 - (terminated_t or truncated_t)) * A_{t+1}``,
    ``A_T = 0``; the same semantics as the engine's Rust GAE.

    Args:
        rewards, values, next_values: ``[T, N]`` real tensors. ``next_values[t]`` is the
            value of the true successor state of step t (for a truncated step, the
            final state before the reset).
        terminated, truncated: ``[T, N]`` bool (other dtypes are read as ``!= 0``).
        gamma, lam: discount and GAE lambda, each in [0, 1].
        backend: "auto", "triton" or "torch" (see the module docstring).

    Returns:
        ``(advantages, returns)``, float32 ``[T, N]`` on the inputs' device, with
        ``returns = advantages + values``. Not differentiable (computed under no_grad).
    """
    if backend not in BACKENDS:
        _check_backend(backend)
    # A call costs about two kernel launches on a GPU, so the checks are one chain of cheap tests;
    # only when it fails are they run one by one to name what is wrong.
    tensors = (rewards, values, next_values, terminated, truncated)
    if not _gae_inputs_ok(tensors, gamma, lam):
        _raise_gae_input_error(tensors, gamma, lam)
    device = rewards.device
    gamma, lam = float(gamma), float(lam)
    if rewards.requires_grad or values.requires_grad or next_values.requires_grad:
        rewards, values, next_values = rewards.detach(), values.detach(), next_values.detach()

    if _use_triton(backend, device, "gae"):
        return _gae_triton()(rewards, values, next_values, terminated, truncated, gamma, lam)
    with torch.no_grad():
        rust = _rust_gae() if backend == "auto" and rewards.device.type == "cpu" else None
        # Empty rollouts skip Rust: its binding rejects N = 0 (and there is nothing to do).
        if rust is None or rewards.numel() == 0:
            return gae_reference(rewards, values, next_values, terminated, truncated, gamma, lam)
        arrays = [x.detach().float().contiguous().numpy() for x in (rewards, values, next_values)]
        dones = [x.detach().bool().contiguous().numpy() for x in (terminated, truncated)]
        advantages, returns = rust(*arrays, *dones, gamma, lam)
        return torch.as_tensor(advantages), torch.as_tensor(returns)
