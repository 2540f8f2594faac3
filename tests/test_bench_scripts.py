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


def test_perception_benchmark_writes_accuracy_per_env(tmp_path, capsys):
    perception = _load("perception")
    out = tmp_path / "p"
    assert perception.main(["--envs", "NumberLine-v0,EZPoints-v0", "--steps", "2", "--vision-steps", "1",
                            "--frames", "8", "--out", str(out)]) == 0
    res = json.loads((out / "perception.json").read_text())
    assert set(res["accuracy"]) == {"NumberLine-v0", "EZPoints-v0"}
    for acc in res["accuracy"].values():
        assert 0.0 <= acc["answer"] <= 1.0 and 0.0 <= acc["probe"] <= 1.0
    assert res["stage_seconds"] > 0 and math.isfinite(res["last_joint_loss"])
    assert "| EZPoints-v0 |" in capsys.readouterr().out
