"""The native image pipeline on real observations of every environment of the engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from preprocess_cases import PROCESSORS, hf_outputs
from vlmrl_fast.preprocess import ImagePipeline

envs = pytest.importorskip("vlmrl_fast.envs", reason="needs the engine (branch engine)")

TOLERANCE = 0.02


def _observations(env_id: str, n: int = 3, steps: int = 4) -> np.ndarray:
    """Observations of `n` envs over a few steps (reset frame and later frames)."""
    vec = envs.make_vec(env_id, n, seed=7)
    obs, _ = vec.reset(seed=7)
    frames = [np.array(obs)]
    for _ in range(steps):
        # The experts' moves are legal in every env, ALFWorld's changing command lists included.
        obs, *_ = vec.step(vec.expert_actions())
        frames.append(np.array(obs))
    vec.close()
    return np.concatenate(frames)


@pytest.fixture(scope="module", params=envs.list_envs())
def observations(request):
    obs = _observations(request.param)
    assert obs.dtype == np.uint8 and obs.shape[1:] == (300, 300, 3)
    return obs


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_env_observations_equal_hugging_face(observations, name):
    ip = PROCESSORS[name]()
    pipeline = ImagePipeline.from_processor(ip)
    ref, got = hf_outputs(ip, observations), pipeline(observations)
    assert got["pixel_values"].shape == ref["pixel_values"].shape
    diff = (got["pixel_values"] - ref["pixel_values"]).abs().max().item()
    assert diff <= TOLERANCE, f"{name}: max abs diff {diff:.4f}"
    if "image_grid_thw" in ref:
        assert torch.equal(got["image_grid_thw"], ref["image_grid_thw"])


def test_reads_the_engine_buffer_in_place():
    """The vector env's read-only observation view goes in without a copy."""
    vec = envs.make_vec(envs.list_envs()[0], 2, seed=1)
    obs, _ = vec.reset(seed=1)
    pipeline = ImagePipeline.from_processor(PROCESSORS["siglip224_tv"]())
    out = pipeline(obs)
    assert out["pixel_values"].shape == (2, 3, 224, 224)
    vec.close()
