"""TrainConfig: defaults validate, TOML files and command-line overrides, and one clear error per bad value."""

import argparse
import dataclasses
from pathlib import Path

import pytest

from vlmrl_fast.config import ConfigError, TrainConfig, add_config_arguments, load_config, overrides_from_args

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_valid_and_every_field_has_help():
    cfg = TrainConfig().validate()
    assert cfg.env == "NumberLine-v0" and cfg.model == "tiny"
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name
        assert "\n" not in f.metadata["help"]


def test_toml_round_trip(tmp_path):
    cfg = load_config(overrides={"num_envs": 4, "minibatch_size": 4, "grad_accum_steps": 2, "learning_rate": 3e-4, "lora": False})
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    again = load_config(path)
    assert again == cfg


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[ppo]\nclip_coef = 0.2\nupdate_epochs = 2\n[run]\nenv = "Blackjack-v0"\n')
    cfg = load_config(path, {"update_epochs": 3})
    assert cfg.clip_coef == 0.2 and cfg.update_epochs == 3 and cfg.env == "Blackjack-v0"


@pytest.mark.parametrize("text, field", [
    ("clip_coef = -0.5", "clip_coef"),
    ("num_envs = 0", "num_envs"),
    ('num_envs = "16"', "num_envs"),
    ("gamma = 1.5", "gamma"),
    ('invalid_fallback = "maybe"', "invalid_fallback"),
    ("lora = 1", "lora"),
    ("learning_rate = nan", "learning_rate"),
    ("no_such_field = 3", "no_such_field"),
    ("grad_accum_steps = 7", "grad_accum_steps"),
])
def test_bad_values_name_field_and_file(tmp_path, text, field):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert field in msg and "bad.toml" in msg and "\n" not in msg


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "broken.toml").write_text("clip_coef = = 2")
    with pytest.raises(ConfigError, match="broken.toml"):
        load_config(tmp_path / "broken.toml")


def test_cli_generated_from_dataclass():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--env", "EZPoints-v0", "--num-envs", "4", "--no-lora", "--clip-coef", "0.3",
                              "--run-dir", "x"])
    over = overrides_from_args(args)
    assert over == {"env": "EZPoints-v0", "num_envs": 4, "lora": False, "clip_coef": 0.3, "run_dir": "x"}
    text = parser.format_help()
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata["help"].split("(")[0].strip()[:20] in " ".join(text.split())


def test_shipped_configs_load():
    files = sorted(CONFIGS.glob("*.toml"))
    assert {p.stem for p in files} >= {"numberline", "ezpoints", "points24", "blackjack", "alfworld"}
    for p in files:
        cfg = load_config(p)
        if p.stem in ("numberline", "ezpoints", "points24", "blackjack", "alfworld"):
            # the paper's PPO settings (METHOD.md)
            assert (cfg.gamma, cfg.gae_lambda, cfg.clip_coef, cfg.vf_coef) == (0.9, 0.95, 0.1, 0.5)
            assert (cfg.update_epochs, cfg.minibatch_size, cfg.grad_accum_steps) == (4, 1, 128)
            assert cfg.max_grad_norm == 0.01 and cfg.learning_rate == 1e-5 and cfg.min_learning_rate == 1e-9
            assert cfg.temperature == 0.2 and cfg.max_new_tokens == 256 and cfg.lora and cfg.lora_r == 128
            assert cfg.thought_coef == (0.2 if p.stem == "alfworld" else 0.5)
            steps = 1024 if p.stem in ("points24", "alfworld") else 512
            assert cfg.num_envs * cfg.num_steps == steps


def test_torch_threads_are_set_on_the_cpu_only():
    """torch_threads = 1 (the default) pins torch to one thread on the CPU device, so a CPU run sums in the
    same order on every machine; 0 and a GPU device leave torch's setting alone."""
    import torch

    from vlmrl_fast.trainer import apply_torch_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert TrainConfig().torch_threads == 1
        assert apply_torch_threads(TrainConfig(torch_threads=0), "cpu") == 2
        assert apply_torch_threads(TrainConfig(), "cuda") == 2
        assert apply_torch_threads(TrainConfig(), "cpu") == 1 == torch.get_num_threads()
        assert apply_torch_threads(TrainConfig(torch_threads=3), "cpu") == 3
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="torch_threads"):
        TrainConfig(torch_threads=-1).validate()
