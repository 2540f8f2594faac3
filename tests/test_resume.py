"""Resume: 2 updates, stop, resume, 2 more == 4 uninterrupted updates (CPU, fixed seeds)."""

import json

import pytest
from safetensors.torch import load_file

from vlmrl_fast.checkpoint import latest_checkpoint
from vlmrl_fast.config import load_config
from vlmrl_fast.models import build_tiny_vlm
from vlmrl_fast.report import read_metrics
from vlmrl_fast.trainer import train

VOLATILE = ("charts/SPS", "perf/", "time/")


def config(model, run_dir, **over):
    values = dict(model=str(model), run_dir=str(run_dir), lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                  num_envs=2, num_steps=2, max_new_tokens=6, temperature=1.0, update_epochs=1, minibatch_size=2,
                  grad_accum_steps=1, learning_rate=1e-2, min_learning_rate=1e-3, max_grad_norm=1.0, updates=4,
                  warm_start="none", eval_episodes=2, eval_batch=2, report_episodes=1, checkpoint_every=1, kl_coef=0.1,
                  progress=False)
    values.update(over)
    return load_config(None, values)


def stable(records):
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in records]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_vlm("llava", tmp_path_factory.mktemp("resume") / "llava", seed=2)


def test_resume_equals_uninterrupted(tmp_path, tiny):
    full = train(config(tiny, tmp_path / "full"))
    assert full["updates_done"] == 4 and not full["stopped_early"]

    part = train(config(tiny, tmp_path / "part", stop_after=2))
    assert part["stopped_early"] and part["updates_done"] == 2
    assert latest_checkpoint(tmp_path / "part").name == "update_000002"
    assert not (tmp_path / "part" / "summary.json").exists()
    rest = train(config(tiny, tmp_path / "part"), resume=True)
    assert rest["updates_done"] == 4

    assert stable(read_metrics(tmp_path / "part")) == stable(read_metrics(tmp_path / "full"))
    a = load_file(str(latest_checkpoint(tmp_path / "full") / "trainable.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "part") / "trainable.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    for key in ("success_rate_before_rl", "success_rate_after_rl", "mean_return_after_rl"):
        assert rest[key] == full[key]
    assert json.loads((latest_checkpoint(tmp_path / "part") / "state.json").read_text())["update"] == 4

    # the run folder holds every artifact
    run = tmp_path / "full"
    summary = json.loads((run / "summary.json").read_text())
    for key in ("env_id", "model", "world_size", "eval_episodes", "success_rate_before_rl",
                "success_rate_after_rl", "wall_seconds"):
        assert key in summary
    assert summary["world_size"] == 1 and summary["eval_episodes"] == 2
    for name in ("config.toml", "metrics.jsonl", "learning_curve.png", "report.html"):
        assert (run / name).is_file(), name
    ckpt = latest_checkpoint(run)
    for name in ("trainable.safetensors", "optimizer.pt", "rng_0.pt", "state.json"):
        assert (ckpt / name).is_file(), name
    assert json.loads((ckpt / "state.json").read_text())["update"] == 4
    assert (run / "agent" / "agent.json").is_file()
    records = read_metrics(run)
    assert [r["update"] for r in records] == [1, 2, 3, 4]
    for key in ("charts/success_rate", "charts/invalid_rate", "losses/policy_loss", "losses/value_loss",
                "losses/approx_kl", "losses/clipfrac", "losses/entropy", "losses/explained_variance",
                "perf/tokens_per_s", "perf/env_steps_per_s", "time/generate_s", "time/logprob_s", "time/update_s",
                "time/env_s"):
        assert key in records[0], key
    html = (run / "report.html").read_text()
    assert "<img src='data:image/png;base64," in html and "episode 0" in html


def test_a_new_run_into_a_used_folder_moves_the_earlier_run_aside(tmp_path, tiny):
    run = tmp_path / "run"
    first = train(config(tiny, run, updates=1, seed=1))
    second = train(config(tiny, run, updates=2, seed=2))
    earlier = [p for p in tmp_path.iterdir() if p.name.startswith("run.prev-")]
    assert len(earlier) == 1
    kept = json.loads((earlier[0] / "summary.json").read_text())
    assert kept["updates_done"] == 1 and kept["seed"] == first["seed"] == 1
    assert [r["update"] for r in read_metrics(earlier[0])] == [1]
    assert json.loads((run / "summary.json").read_text())["updates_done"] == second["updates_done"] == 2
    assert [r["update"] for r in read_metrics(run)] == [1, 2]


def test_checkpoint_round_trip_is_atomic_and_pruned(tmp_path):
    import random

    import numpy as np
    import torch

    from vlmrl_fast.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    with pytest.raises(CheckpointError, match="no checkpoint"):
        latest_checkpoint(tmp_path)
    net = torch.nn.Linear(3, 2)
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    module = torch.nn.Sequential(net, frozen)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    module(torch.ones(1, 3)).sum().backward()
    opt.step()
    for update in (0, 1, 2, 3):
        save_checkpoint(tmp_path, update, module, opt, {"note": update})
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "update_000000", "update_000002", "update_000003"]
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    save_checkpoint(tmp_path, 4, module, opt, {"note": 4})
    expected = (torch.rand(3), random.random(), np.random.rand())
    weights = {n: p.detach().clone() for n, p in module.named_parameters()}
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    opt2 = torch.optim.AdamW(net.parameters(), lr=0.1)
    state = load_checkpoint(latest_checkpoint(tmp_path), module, opt2)
    assert state == {"update": 4, "note": 4}
    assert (torch.rand(3), random.random(), np.random.rand())[1:] == expected[1:]
    for n, p in module.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, weights[n])
        else:  # frozen weights are not part of the checkpoint
            assert torch.equal(p, weights[n] + 1.0)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary leftovers
