"""Triton kernels of vlmrl_fast and their plain-torch references.

This folder is the project's kernels/ (the design card's layout), kept inside the package as
``vlmrl_fast.ops.kernels``: a top-level ``kernels`` folder in the repository root would be
importable from there (as a package, or as a namespace package without ``__init__.py``) and
collides with Hugging Face's ``kernels`` package, which transformers imports. Users call the
public functions in ``vlmrl_fast.ops``; the modules here are the implementations:

- ``token_logprobs_reference`` / ``gae_reference``: plain torch, the specification.
- ``token_logprobs_triton`` / ``gae_triton``: the Triton kernels, their launchers and
  the autograd.Function. They import triton, so they are imported lazily by
  ``vlmrl_fast.ops`` (which lets ``TRITON_INTERPRET=1`` be set first).
"""
