"""The `vlmrl` command line: `envs` and `play`."""

import numpy as np
from PIL import Image

from vlmrl_fast.cli import main


def test_envs_lists_every_game(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for game in ["NumberLine-v0", "EZPoints-v0", "Points24-v0", "Blackjack-v0"]:
        assert f"vlmrl_fast/{game}" in out
    assert "['stand', 'hit']" in out


def test_play_expert_reports_success_and_writes_a_strip(tmp_path, capsys):
    code = main(["play", "--env", "EZPoints-v0", "--policy", "expert", "--episodes", "30", "--num-envs", "4", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "success_rate=1.000" in out and "episodes=30" in out
    strip = np.asarray(Image.open(tmp_path / "EZPoints-v0-expert-episode.png"))
    # An expert EZPoints episode is 4 steps: the reset frame + 4 frames, side by side.
    assert strip.shape == (300, 5 * 304 - 4, 3)


def test_play_random_policy_is_worse_than_the_expert(tmp_path, capsys):
    main(["play", "--env", "NumberLine-v0", "--policy", "random", "--episodes", "200", "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    rate = float(out.split("success_rate=")[1].split()[0])
    assert 0.1 < rate < 0.99


def test_play_rejects_zero_episodes(capsys):
    assert main(["play", "--episodes", "0"]) == 2
