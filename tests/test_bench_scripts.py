"""bench/seeds.py and bench/perception.py end to end at toy size: every documented key is written and the
aggregates are the rows' mean and min (real trainer, real tiny models)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from vlmrl_fast.models import build_tiny_vlm

REPO = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_seeds_benchmark_writes_rows_mean_and_min(tmp_path, capsys):
    seeds = _load("seeds")
    model = build_tiny_vlm("llava", tmp_path / "llava", seed=0)
    sets = [f"model={model}", "num_envs=2", "num_steps=2", "max_new_tokens=8", "update_epochs=1",
            "minibatch_size=2", "updates=1", "sft_episodes=2", "sft_epochs=1", "perception_steps=2",
            "perception_vision_steps=1", "perception_frames=8", "eval_episodes=3", "eval_batch=3",
            "eval_every=0", "report_episodes=0"]
    argv = ["--seeds", "0,1", "--out", str(tmp_path / "out")]
    for s in sets:
        argv += ["--set", s]
    assert seeds.main(argv) == 0
    res = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert [r["seed"] for r in res["rows"]] == [0, 1]
    for key in seeds.FIGURES:
        vals = [r[key] for r in res["rows"]]
        assert all(isinstance(v, float) and math.isfinite(v) for v in vals), (key, vals)
        assert math.isclose(res["mean"][key], sum(vals) / 2) and res["min"][key] == min(vals), key
    for r in res["rows"]:
        assert math.isclose(r["gain"], r["success_rate_after_rl"] - r["success_rate_before_rl"])
        assert (tmp_path / "out" / f"seed{r['seed']}" / "summary.json").is_file()
    assert "| mean |" in capsys.readouterr().out
    # --collect rebuilds the same figures from the run folders (seeds run by separate invocations)
    (tmp_path / "out" / "seeds.json").unlink()
    assert seeds.main(["--seeds", "0,1", "--out", str(tmp_path / "out"), "--collect"]) == 0
    again = json.loads((tmp_path / "out" / "seeds.json").read_text())
    for key in seeds.FIGURES:
        assert again["mean"][key] == res["mean"][key] and again["min"][key] == res["min"][key], key
    with pytest.raises(SystemExit, match="seed7"):
        seeds.main(["--seeds", "0,7", "--out", str(tmp_path / "out"), "--collect"])


def test_reader_benchmark_writes_accuracy_per_seed_and_env(tmp_path, capsys):
    perception = _load("perception")
    out = tmp_path / "p"
    assert perception.main(["--seeds", "0,1", "--set", "envs=NumberLine-v0,EZPoints-v0", "--set", "env_weights=1,1",
                            "--set", "vision_weights=1,3",
                            "--set", "steps=2", "--set", "vision_steps=1", "--set", "frames=8",
                            "--set", "held_out=4", "--set", "validation=4", "--set", "rebalance_every=1",
                            "--set", "batch_size=2", "--set", "threads=1", "--out", str(out)]) == 0
    res = json.loads((out / "reader.json").read_text())
    assert [r["seed"] for r in res["rows"]] == [0, 1] and res["recipe"]["steps"] == 2
    for r in res["rows"]:
        assert set(r["accuracy"]) == {"NumberLine-v0", "EZPoints-v0"} and r["build_seconds"] > 0
        assert all(0.0 <= a[k] <= 1.0 for a in r["accuracy"].values() for k in ("answer", "probe"))
        assert (out / f"seed{r['seed']}" / "perception.json").is_file()
    for env in ("NumberLine-v0", "EZPoints-v0"):
        vals = [r["accuracy"][env]["answer"] for r in res["rows"]]
        assert math.isclose(res["summary"]["answer"][env]["mean"], sum(vals) / 2)
        assert res["summary"]["answer"][env]["min"] == min(vals)
    assert "| min |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        perception.main(["--seeds", "0", "--set", "no_such_field=1", "--out", str(out)])
