"""FSDP2 on the CPU (gloo, one process): the rollout-then-update sequence of an FSDP run, on the real agent.

accelerate runs FSDP only on accelerators, but torch's FSDP2 (`fully_shard`) also runs on the CPU. The
agent is sharded here the way accelerate's config does it (each transformer layer a unit, the agent the
root, bf16 compute over float32 weights), then: generation and evaluation inside
`distributed.fsdp_gathered` (what a rollout does), a training forward + backward through the root, and
the full state dict gathered and written by `Agent.save`. The first GPU runs failed at these steps:
inner units set up as roots (this test fails the same way without the fix), the save reading sharded
parameters. A third GPU failure, the root resharded after its forward (freed bf16 weights in the
backward), does not reproduce here, so the test does not cover that fix.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist

from vlmrl_fast.agent import Agent
from vlmrl_fast.distributed import fsdp_gathered
from vlmrl_fast.models import ModelSettings, build_tiny_vlm, load_model

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["Move the marker to the target.", "Where is the target?"]


@pytest.fixture
def gloo_group():
    if dist.is_initialized():
        pytest.skip("a process group is already set up in this process")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def shard_like_accelerate(agent: Agent) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh("cpu", (1,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    layer_classes = set(agent.model._no_split_modules or [])
    assert layer_classes, "the tiny model names no transformer layer classes"
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        CheckpointImpl, apply_activation_checkpointing, checkpoint_wrapper)

    def is_layer(m: torch.nn.Module) -> bool:
        return type(m).__name__ in layer_classes

    # fsdp.yaml: activation checkpointing per layer, then each layer a unit, then the root.
    apply_activation_checkpointing(
        agent, checkpoint_wrapper_fn=lambda m: checkpoint_wrapper(m, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
        check_fn=is_layer)
    layers = [m for m in agent.modules() if type(m).__name__ == "CheckpointWrapper"]
    assert layers
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    fully_shard(agent, mesh=mesh, mp_policy=policy)


def test_rollout_update_and_save_under_fsdp2(gloo_group, tmp_path):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    path = build_tiny_vlm("llava", tmp_path / "llava", seed=0)
    model, processor = load_model(path, ModelSettings(lora=False))
    agent = Agent(model, processor, temperature=1.0, max_new_tokens=6)
    shard_like_accelerate(agent)
    obs = np.random.default_rng(0).integers(0, 256, (2, 300, 300, 3), dtype=np.uint8)
    batch = agent.prompt_batch(obs, PROMPTS)

    with fsdp_gathered(agent, inner_reshard=True):  # the rollout: generate, then score the answers
        gen = agent.generate(batch, seed=0)
        with torch.no_grad():
            old = agent.evaluate(batch, gen.answer_ids, [0, 0], lam=0.5)
    assert len(gen.answer_ids) == 2 and torch.isfinite(old.logprob).all()

    agent.train()
    for _ in range(2):  # the update: forward through the root, backward, twice (resharding in between)
        ev = agent(batch, gen.answer_ids, [0, 0], lam=0.5)
        (-(ev.logprob.float().sum()) + ev.value.float().pow(2).sum()).backward()
    grads = [p.grad for p in agent.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g.full_tensor() if hasattr(g, "full_tensor") else g).all() for g in grads)

    full = get_model_state_dict(agent, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    assert all(not hasattr(v, "full_tensor") for v in full.values())  # plain tensors, not shards
    agent.save(tmp_path / "agent", state_dict=full)
    loaded = Agent.load(tmp_path / "agent", ModelSettings(lora=False)).state_dict()
    for name in ("value_head.net.0.weight", "value_head.net.4.bias"):
        assert torch.equal(loaded[name], full[name]), name
    layer = next(n for n in full if n.startswith("model.") and n.endswith("q_proj.weight"))
    assert torch.equal(loaded[layer], full[layer])
