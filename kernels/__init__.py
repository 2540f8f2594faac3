"""Triton kernels of vlmrl_fast and their plain-torch references.

This folder is shipped inside the wheel as the subpackage ``vlmrl_fast.ops.kernels``
(``python/vlmrl_fast/ops/kernels`` is a symlink to it), so it never shows up as a
top-level ``kernels`` package. Users call the public functions in ``vlmrl_fast.ops``;
the modules here are the implementations:

- ``token_logprobs_reference`` / ``gae_reference``: plain torch, the specification.
- ``token_logprobs_triton`` / ``gae_triton``: the Triton kernels, their launchers and
  the autograd.Function. They import triton, so they are imported lazily by
  ``vlmrl_fast.ops`` (which lets ``TRITON_INTERPRET=1`` be set first).
"""
