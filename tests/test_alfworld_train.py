"""`vlmrl train --env ALFWorld-v0` with the embedded tiny VLM completes one PPO
update on the CPU (admissible commands as per-env action names, the -1
penalty for unparsable answers, lambda from the config)."""

import json
import math

import pytest

from vlmrl_fast.cli import main


@pytest.mark.slow
def test_train_alfworld_one_ppo_update(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main([
        "train", "--env", "ALFWorld-v0", "--model", "tiny", "--updates", "1",
        "--num-envs", "1", "--num-steps", "2", "--max-new-tokens", "8",
        "--grad-accum-steps", "1", "--minibatch-size", "1", "--update-epochs", "1",
        "--warm-start", "none", "--eval-episodes", "0", "--thought-coef", "0.2",
        "--no-progress", "--run-dir", str(run_dir),
    ])
    assert code == 0, capsys.readouterr().err[-2000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    update = [r for r in rows if r.get("update") == 1]
    assert update and update[0]["global_step"] == 2
    for key in ("losses/policy_loss", "losses/value_loss", "losses/approx_kl"):
        assert math.isfinite(update[0][key]), key
    assert (run_dir / "checkpoints" / "update_000001").exists()
