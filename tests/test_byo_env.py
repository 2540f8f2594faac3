"""Bring your own env (vlmrl_fast.byo): `vlmrl train --env MODULE:ENV_ID --prompt-template FILE.toml` trains
the example env of examples/ end to end; a Python env looks to the rollout like the engine's vector env;
each bad input is a one-line error before any model loads."""

import json
from pathlib import Path

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

from vlmrl_fast import byo, make_vec
from vlmrl_fast.cli import main
from vlmrl_fast.rollout import final_observations, split_infos

REPO = Path(__file__).resolve().parents[1]
FROG = "examples.frog_fly:FrogFly-v0"
FROG_TOML = str(REPO / "examples" / "frog_fly.toml")
COUNT_TOML = str(REPO / "tests" / "count_to.toml")
SMALL = ["--num-envs", "2", "--num-steps", "2", "--max-new-tokens", "8", "--minibatch-size", "2",
         "--update-epochs", "1", "--no-progress"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("vlmrl")]
    assert len(lines) == 1 and "error" in lines[0], err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_python_vector_env_matches_engine_interface(vectorization):
    byo.register(FROG, FROG_TOML, vectorization=vectorization)
    envs = make_vec(FROG, 3, seed=5, autoreset_mode=AutoresetMode.SAME_STEP)
    try:
        obs, infos = envs.reset()
        assert obs.shape == (3, 64, 160, 3) and obs.dtype == np.uint8
        assert envs.action_names == ["left", "right", "eat"] and envs.has_expert
        first = split_infos(infos, 3)
        assert all("frog" in i and "text" in i for i in first)
        wins = 0
        for _ in range(12):
            obs, rew, term, trunc, infos = envs.step(envs.expert_actions())
            done = term | trunc
            if done.any():
                frames, fin = final_observations(infos, done, obs, 3)
                for i in np.flatnonzero(done):
                    assert fin[i]["frog"] == fin[i]["fly"]  # the expert ends episodes by eating the fly
                    assert frames[i].shape == (64, 160, 3)
            wins += int(rew[term].sum())
        assert wins >= 3
    finally:
        envs.close()
        byo.register(FROG, FROG_TOML)


def test_text_env_puts_observation_in_info():
    byo.register("byo_envs:CountTo-v0", COUNT_TOML)
    envs = make_vec("byo_envs:CountTo-v0", 2, seed=0, autoreset_mode=AutoresetMode.SAME_STEP)
    obs, infos = envs.reset()
    assert obs.shape == (2, *byo.TEXT_FRAME)
    assert [i["text"] for i in split_infos(infos, 2)][0].startswith("You are at ")
    assert not envs.has_expert
    envs.close()


def test_example_env_trains_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", "--env", FROG, "--prompt-template", FROG_TOML, "--updates", "2",
                         "--sft-episodes", "2", "--sft-epochs", "1", "--sft-actions", "expert",
                         "--eval-episodes", "2", "--eval-every", "0", "--report-episodes", "1", *SMALL,
                         "--perception-steps", "2", "--run-dir", run_dir)
    assert code == 0, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["updates_done"] == 2 and summary["env_id"] == FROG
    assert summary["eval_episodes_played"] == 2 and summary["sft_seconds"] > 0
    # the perception stage, asked for, is skipped: a BYO env's format names no state fields
    assert summary["perception_stage"].startswith("skipped: ")
    assert (run_dir / "checkpoints" / "update_000002").exists() and (run_dir / "report.html").exists()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["update"] for r in rows if "update" in r][-1] == 2

    code, out, err = run(capsys, "eval", "--model", run_dir, "--envs", FROG, "--prompt-template", FROG_TOML,
                         "--episodes", "2", "--batch", "2", "--max-new-tokens", "8")
    assert code == 0, err[-2000:]
    assert f"| {FROG} | 2 |" in out

    code, out, err = run(capsys, "play", "--env", FROG, "--prompt-template", FROG_TOML, "--episodes", "4",
                         "--num-envs", "2", "--quiet", "--out", tmp_path / "play")
    assert code == 0, err
    assert "success_rate=1.000" in out


@pytest.mark.parametrize("env, template, needles", [
    ("no_such_module_xyz:Foo-v0", FROG_TOML, ["no_such_module_xyz", "does not import"]),
    ("examples.frog_fly:Toad-v0", FROG_TOML, ["Toad-v0", "does not register"]),
    (FROG, "", ["--prompt-template"]),
    (FROG, "missing.toml", ["missing.toml", "no such file"]),
    ("byo_envs:Nameless-v0", COUNT_TOML, ["Nameless-v0", "no action names"]),
    ("byo_envs:VectorObs-v0", COUNT_TOML, ["VectorObs-v0", "neither an RGB image"]),
])
def test_bad_input_is_one_line_before_model_loads(capsys, tmp_path, monkeypatch, env, template, needles):
    import vlmrl_fast.models.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    args = ["train", "--env", env, "--run-dir", tmp_path / "r", "--no-progress"]
    if template:
        args += ["--prompt-template", template]
    one_line_error(*run(capsys, *args)[::2], *needles)


def test_template_missing_a_field(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(FROG_TOML).read_text().replace("$fly.", "$wings."))
    one_line_error(*run(capsys, "train", "--env", FROG, "--prompt-template", bad, "--run-dir", tmp_path / "r",
                        "--no-progress")[::2], "$wings", "bad.toml")
    bad.write_text(Path(FROG_TOML).read_text().replace("default_thoughts", "other_thoughts"))
    one_line_error(*run(capsys, "train", "--env", FROG, "--prompt-template", bad, "--run-dir", tmp_path / "r",
                        "--no-progress")[::2], "default_thoughts")
