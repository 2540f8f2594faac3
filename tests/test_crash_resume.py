"""Crash safety: `vlmrl train` killed with SIGKILL (at a random moment, half-way through a checkpoint write,
between a checkpoint's rename and its `latest` pointer, half-way through a metrics line) and continued with
`vlmrl train --resume RUN_DIR` each time ends with the weights, metrics and evaluations of an uninterrupted
run (CPU, fixed seeds). After every kill the checkpoint `latest` names is whole.

The named kill points come from the test switch VLMRL_FAST_INJECT_KILL (vlmrl_fast.checkpoint.maybe_kill);
the timed kills land wherever the run is (rollout, update, evaluation, checkpoint write)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlmrl_fast.checkpoint import INJECT_KILL_ENV, latest_checkpoint
from vlmrl_fast.report import read_metrics

REPO = Path(__file__).resolve().parents[1]
UPDATES = 4
VOLATILE = ("charts/SPS", "perf/", "time/")
FLAGS = ["--lora", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.0", "--num-envs", "2",
         "--num-steps", "2", "--max-new-tokens", "6", "--temperature", "1.0", "--update-epochs", "1",
         "--minibatch-size", "2", "--grad-accum-steps", "1", "--learning-rate", "1e-2", "--min-learning-rate",
         "1e-3", "--kl-coef", "0.1", "--warm-start", "none", "--eval-episodes", "2", "--eval-batch", "2",
         "--eval-every", "2", "--eval-every-episodes", "2", "--report-episodes", "1", "--checkpoint-every", "1",
         "--updates", str(UPDATES), "--seed", "4", "--no-progress"]


def start(args: list[str], kill_at: str = "") -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLMRL_FAST_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "python"))
    if kill_at:
        env[INJECT_KILL_ENV] = kill_at
    return subprocess.Popen([sys.executable, "-m", "vlmrl_fast", "train", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> int:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, -signal.SIGKILL), err[-3000:]
    return proc.returncode


def fresh(model: Path, run: Path, kill_at: str = "") -> subprocess.Popen:
    return start(["--model", str(model), "--run-dir", str(run), *FLAGS], kill_at)


def resume(run: Path, kill_at: str = "") -> subprocess.Popen:
    return start(["--resume", str(run)], kill_at)


def lines(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def timed_kill(proc: subprocess.Popen, run: Path, after_lines: int, delay: float) -> int:
    """SIGKILL `delay` seconds after metrics.jsonl has more than `after_lines` lines (or the run ended)."""
    while lines(run) <= after_lines and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    return finish(proc)


def latest_update(run: Path) -> int:
    """The update of the checkpoint `latest` names, after checking that checkpoint is whole."""
    ckpt = latest_checkpoint(run)
    state = json.loads((ckpt / "state.json").read_text())
    assert ckpt.name == f"update_{state['update']:06d}"
    assert load_file(str(ckpt / "trainable.safetensors"))
    torch.load(ckpt / "optimizer.pt", weights_only=False)
    torch.load(ckpt / "rng_0.pt", weights_only=False)
    return int(state["update"])


def stable(records):
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in records]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from vlmrl_fast.models import build_tiny_vlm

    return build_tiny_vlm("llava", tmp_path_factory.mktemp("crash") / "llava", seed=2)


@pytest.mark.slow
def test_sigkill_and_resume_equals_uninterrupted(model, tmp_path):
    rnd = random.Random(18)
    full, run = tmp_path / "full", tmp_path / "killed"
    reference = fresh(model, full)  # the uninterrupted run, beside the killed one (an update takes < 1 s)

    # 1. a random moment after the first update (the second's rollout or update, or a checkpoint write)
    assert timed_kill(fresh(model, run), run, 1, rnd.uniform(0.0, 0.4)) == -signal.SIGKILL
    k = latest_update(run)
    assert k < UPDATES, "the timed kill came after the last checkpoint: the machine was too slow for the test"

    # 2. half-way through writing checkpoint k+1: its temporary folder holds the weights, `latest` is unmoved
    assert finish(resume(run, "checkpoint_files")) == -signal.SIGKILL
    assert latest_update(run) == k and not (run / "checkpoints" / f"update_{k + 1:06d}").exists()
    assert list((run / "checkpoints").glob(f".update_{k + 1:06d}.tmp-*/trainable.safetensors"))

    # 3. half-way through the metrics line of update k+1
    assert finish(resume(run, "metrics_write")) == -signal.SIGKILL
    assert not (run / "metrics.jsonl").read_text().endswith("\n") and latest_update(run) == k

    # 4. after checkpoint k+1 is renamed into place, before `latest` points to it (and the temporary folder
    # of step 2 is gone: the checkpoint write removes what a killed writer left)
    assert finish(resume(run, "checkpoint_rename")) == -signal.SIGKILL
    assert latest_update(run) == k and (run / "checkpoints" / f"update_{k + 1:06d}" / "state.json").is_file()
    assert not list((run / "checkpoints").glob(".*"))

    # 5. the rest of the run, uninterrupted
    assert finish(resume(run)) == 0
    assert finish(reference) == 0

    ckpt_full, ckpt_run = latest_checkpoint(full), latest_checkpoint(run)
    assert ckpt_full.name == ckpt_run.name == f"update_{UPDATES:06d}"
    a, b = load_file(str(ckpt_full / "trainable.safetensors")), load_file(str(ckpt_run / "trainable.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    records = read_metrics(run)
    assert [r["update"] for r in records] == list(range(1, UPDATES + 1))
    assert stable(records) == stable(read_metrics(full))
    assert "eval/success_rate" in records[1] and "eval/success_rate" not in records[0]  # eval_every = 2
    s_full = json.loads((full / "summary.json").read_text())
    s_run = json.loads((run / "summary.json").read_text())
    for key in ("success_rate_before_rl", "success_rate_after_rl", "mean_return_after_rl", "invalid_rate_after_rl",
                "updates_done", "env_steps"):
        assert s_run[key] == s_full[key], key
    assert (run / "learning_curve.png").is_file() and (run / "agent" / "agent.json").is_file()
    assert not list((run / "checkpoints").glob(".*"))


def test_resumed_metrics_drop_a_cut_line_and_later_records(tmp_path):
    from vlmrl_fast.report import MetricsLogger

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"update": 1, "x": 1}\n{"update": 2, "x": 2}\n{"update": 3, "x"')  # killed mid-line
    with pytest.raises(ValueError, match="line 3 is not JSON"):
        read_metrics(tmp_path)
    MetricsLogger(tmp_path, resume_from_step=1).log({"update": 2, "x": 20})
    assert read_metrics(tmp_path) == [{"update": 1, "x": 1}, {"update": 2, "x": 20}]
    path.write_text('{"update": 1}\n{"upd\n{"update": 2}\n')  # not a cut last line: corruption, named
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        MetricsLogger(tmp_path, resume_from_step=2)


def test_checkpoint_write_removes_what_a_killed_writer_left(tmp_path):
    from vlmrl_fast.checkpoint import save_checkpoint

    root = tmp_path / "checkpoints"
    (root / ".update_000003.tmp-abc").mkdir(parents=True)
    (root / ".update_000003.tmp-abc" / "trainable.safetensors").write_bytes(b"half")
    (root / ".latest.xyz").write_text("upd")
    (root / "notes.txt").write_text("kept")
    save_checkpoint(tmp_path, 3, torch.nn.Linear(2, 2), None, {})
    assert sorted(p.name for p in root.iterdir()) == ["latest", "notes.txt", "update_000003"]
    assert json.loads((latest_checkpoint(tmp_path) / "state.json").read_text())["update"] == 3


def test_kill_switch_ignores_other_points(monkeypatch):
    from vlmrl_fast.checkpoint import maybe_kill

    monkeypatch.setenv(INJECT_KILL_ENV, "checkpoint_files:2")
    maybe_kill("checkpoint_files", 1)  # another update
    maybe_kill("metrics_write", 2)  # another point
    monkeypatch.delenv(INJECT_KILL_ENV)
    maybe_kill("checkpoint_files", 2)  # switch off
