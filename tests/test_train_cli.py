"""`vlmrl train/sft/eval` command line: each bad input ends in a one-line error naming what was wrong,
before any heavy work; `python -m vlmrl_fast` is the same program."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vlmrl_fast.cli import main
from vlmrl_fast.models import build_tiny_vlm


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_vlm("llava", tmp_path_factory.mktemp("cli") / "llava", seed=0)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *needles):
    assert code == 2
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("vlmrl")]
    assert len(lines) == 1 and "error" in lines[0], err
    for n in needles:
        assert n in lines[0], lines[0]


def test_unknown_env(capsys, tmp_path):
    one_line_error(*run(capsys, "train", "--env", "Pong-v9", "--run-dir", str(tmp_path))[::2], "env", "Pong-v9")


def test_unknown_model_path(capsys, tmp_path):
    missing = str(tmp_path / "no_model_here")
    one_line_error(*run(capsys, "train", "--model", missing, "--run-dir", str(tmp_path))[::2], missing)


def test_config_wrong_type_and_range(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('num_envs = "sixteen"\n')
    one_line_error(*run(capsys, "train", "--config", str(bad))[::2], "num_envs", "bad.toml")
    one_line_error(*run(capsys, "train", "--clip-coef", "-0.5")[::2], "clip_coef")
    one_line_error(*run(capsys, "train", "--temperature", "0")[::2], "temperature")
    with pytest.raises(SystemExit):  # argparse: not an int at all
        main(["train", "--num-envs", "many"])


def test_processor_without_chat_template(capsys, tmp_path, tiny):
    broken = tmp_path / "no_template"
    shutil.copytree(tiny, broken)
    for f in broken.glob("chat_template*"):
        f.unlink()
    for name in ("processor_config.json", "tokenizer_config.json"):
        p = broken / name
        if p.exists():
            data = json.loads(p.read_text())
            data.pop("chat_template", None)
            p.write_text(json.dumps(data))
    one_line_error(*run(capsys, "train", "--model", str(broken), "--run-dir", str(tmp_path / "r"))[::2],
                   "chat template")
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_rollout_longer_than_context(capsys, tmp_path, tiny):
    code, _, err = run(capsys, "train", "--model", str(tiny), "--max-new-tokens", "100000",
                       "--run-dir", str(tmp_path / "r"), "--warm-start", "none", "--no-progress")
    one_line_error(code, err, "max_new_tokens", "context")
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_resume_without_checkpoint(capsys, tmp_path):
    one_line_error(*run(capsys, "train", "--resume", str(tmp_path / "nothing"))[::2], "resume")


def test_eval_unknown_env(capsys):
    one_line_error(*run(capsys, "eval", "--envs", "NumberLine-v0,Chess-v0")[::2], "Chess-v0")


def test_python_m_entry_point_lists_options():
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "vlmrl_fast", "train", "--help"], capture_output=True, text=True,
                         cwd=repo, check=True).stdout
    for flag in ("--config", "--env", "--model", "--num-envs", "--updates", "--seed", "--run-dir", "--resume"):
        assert flag in out


@pytest.mark.parametrize("env", ["", "0", "1"])
def test_failure_line_and_traceback_switch(env, monkeypatch, capsys):
    """Every failure is one line; VLMRL_FAST_TRACEBACK=1 also prints where it was raised (an error from
    deep inside a run, such as this TypeError of the first GPU run, is otherwise hard to place)."""
    from vlmrl_fast import train_cli

    monkeypatch.setenv(train_cli.TRACEBACK_ENV, env)

    def deep():
        raise TypeError("Got unsupported ScalarType BFloat16")

    try:
        deep()
    except TypeError as err:
        code = train_cli._fail("train", err)
    err_text = capsys.readouterr().err
    one_line_error(code, err_text, "Got unsupported ScalarType BFloat16")
    assert ("Traceback" in err_text and "in deep" in err_text) == (env == "1")
