"""configs/tiny recipes and `vlmrl table`: each recipe loads and validates, its warm-start demonstrations
parse back to the expert's action, and the table runs end to end at toy size (real trainer, real tiny
model) writing every file with the documented schema."""

import json
import math

import numpy as np
import pytest

from vlmrl_fast.cli import main
from vlmrl_fast.config import load_config
from vlmrl_fast.models import build_tiny_vlm
from vlmrl_fast.parser import parse_actions
from vlmrl_fast.sft import build_demonstrations
from vlmrl_fast.table import PAPER_ROWS, RECIPES, ROW_KEYS, SUMMARY_KEYS, TABLE_ENVS, summarize


@pytest.mark.parametrize("env_id", TABLE_ENVS)
def test_recipe_loads_validates_and_is_image_only_with_cot(env_id):
    cfg = load_config(RECIPES / f"{env_id}.toml")
    assert cfg.env == env_id and cfg.model == "tiny"
    assert cfg.state_text is False and cfg.cot is True
    assert cfg.warm_start == "sft" and cfg.eval_episodes >= 200
    assert cfg.validate() is cfg


def test_numberline_recipe_is_the_main_job():
    """`vlmrl table`'s NumberLine row trains exactly what `make train` trains (checkpoint spacing aside)."""
    recipe = load_config(RECIPES / "NumberLine-v0.toml").to_dict()
    main_job = load_config(None).to_dict()
    differ = {k for k in recipe if recipe[k] != main_job[k]}
    assert differ == {"checkpoint_every"}, differ


@pytest.mark.parametrize("env_id", TABLE_ENVS)
def test_card_recipes_keep_what_the_embedded_model_reads(env_id):
    """The card games' recipes rely on the embedded model's build for reading (no perception stage; the build
    teaches every one of them), then keep it: SFT below the learning rate that erased what a model had learned
    to read (2e-3: held-out perception 1.0 -> 0.045; Points24's 1e-3 kept it, 0.98-1.0 after RL over seeds
    0-2) and a KL to the warm start during RL."""
    from vlmrl_fast.perception import READER

    cfg = load_config(RECIPES / f"{env_id}.toml")
    assert cfg.model == "tiny" and cfg.perception_steps == 0
    assert env_id in READER.envs and cfg.sft_learning_rate <= 1e-3 and cfg.kl_coef > 0


@pytest.mark.parametrize("env_id", TABLE_ENVS)
def test_recipe_demonstrations_parse_back_to_the_expert_action(env_id):
    cfg = load_config(RECIPES / f"{env_id}.toml")
    demos = build_demonstrations(env_id, 6, actions="expert", seed=3, cot=cfg.cot, state_text=cfg.state_text,
                                 thoughts=cfg.sft_thoughts, num_envs=3)
    assert len(demos) >= 6
    # Replay the same episodes (same seed, envs, expert) for each step's action names (ALFWorld: that
    # step's admissible commands), then parse every answer against its own step's names.
    from gymnasium.vector import AutoresetMode

    from vlmrl_fast import make_vec
    from vlmrl_fast.rollout import action_names_per_env

    envs = make_vec(env_id, 3, seed=3, autoreset_mode=AutoresetMode.SAME_STEP)
    envs.reset(seed=3)
    names: list[list[str]] = []
    while len(names) < len(demos):
        names.extend(action_names_per_env(envs, 3))
        envs.step(np.asarray(envs.expert_actions(), dtype=np.int64))
    envs.close()
    for answer, action, step_names in zip(demos.answers, demos.actions, names):
        parsed = parse_actions([answer], [step_names])
        assert parsed.valid[0] and parsed.index[0] == action, (answer, step_names)
        assert json.loads(answer)["action"] == step_names[action]
    # The answers fit the recipe's generation budget (the agent's tokenizer counts more finely than chars).
    assert max(len(a) for a in demos.answers) < 8 * cfg.max_new_tokens


def test_summary_mean_and_min_over_seeds():
    rows = [dict(env="A", seed=s, success_before_rl=b, success_after_rl=a, invalid_rate_after_rl=0.0,
                 wall_seconds=1.0) for s, b, a in [(0, 0.1, 0.5), (1, 0.3, 0.9)]]
    (s,) = summarize(rows)
    assert s["seeds"] == [0, 1] and s["success_after_rl_min"] == 0.5
    assert s["success_after_rl_mean"] == pytest.approx(0.7) and s["success_before_rl_mean"] == pytest.approx(0.2)


def test_bad_inputs_are_one_line_errors(capsys, tmp_path):
    for argv, needle in [(["--seeds", "0,x"], "'x'"), (["--envs", "Chess-v0"], "Chess-v0"),
                         (["--seeds", "-1"], "-1")]:
        assert main(["table", "--out", str(tmp_path), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("vlmrl table: error") and needle in err[0], err
    assert not (tmp_path / "table.json").exists()


@pytest.fixture(scope="module")
def toy_recipes(tmp_path_factory):
    """The NumberLine recipe shrunk to toy size, with the test-size tiny model."""
    d = tmp_path_factory.mktemp("recipes")
    model = build_tiny_vlm("llava", d / "llava", seed=0)
    cfg = load_config(RECIPES / "NumberLine-v0.toml", dict(
        model=str(model), num_envs=2, num_steps=2, max_new_tokens=8, update_epochs=1, minibatch_size=2,
        sft_episodes=2, sft_epochs=1, sft_batch_size=4, eval_episodes=3, eval_batch=3, report_episodes=1,
        perception_steps=2, perception_vision_steps=1, perception_frames=8))
    (d / "NumberLine-v0.toml").write_text(cfg.to_toml())
    return d


def test_table_end_to_end_at_toy_size(capsys, tmp_path, toy_recipes):
    out = tmp_path / "table"
    code = main(["table", "--envs", "NumberLine-v0", "--seeds", "0,1", "--updates", "1", "--out", str(out),
                 "--recipes", str(toy_recipes), "--action-only"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    table = json.loads((out / "table.json").read_text())
    assert set(table) == {"action_only", "envs", "seeds", "rows", "summary", "paper_source", "paper"}
    assert table["action_only"] is True and table["envs"] == ["NumberLine-v0"] and table["seeds"] == [0, 1]
    assert [(r["env"], r["seed"]) for r in table["rows"]] == [("NumberLine-v0", 0), ("NumberLine-v0", 1)]
    for r in table["rows"]:
        assert tuple(r) == ROW_KEYS
        assert 0.0 <= r["success_after_rl"] <= 1.0 and r["updates"] == 1 and r["eval_episodes"] == 3
        run = out / f"NumberLine-v0-seed{r['seed']}"
        assert r["run_dir"] == str(run)
        for f in ("summary.json", "config.toml", "metrics.jsonl", "learning_curve.png"):
            assert (run / f).is_file(), f
        saved = load_config(run / "config.toml")
        assert saved.seed == r["seed"] and saved.cot is False and saved.state_text is False
        summary = json.loads((run / "summary.json").read_text())
        assert summary["success_rate_after_rl"] == r["success_after_rl"]
        assert r["solvable_share"] is None  # NumberLine has no expert plan
        # action only: no state fields in the answers, so no perception figure (null, not NaN, in JSON)
        assert r["perception_after_rl"] is None
    (s,) = table["summary"]
    assert tuple(s) == SUMMARY_KEYS
    after = [r["success_after_rl"] for r in table["rows"]]
    assert s["success_after_rl_min"] == min(after) and s["success_after_rl_mean"] == pytest.approx(np.mean(after))
    assert table["paper"] == PAPER_ROWS
    md = (out / "table.md").read_text()
    assert "action only" in md and "cited from the paper, different model class" in md.lower()
    assert "| LLaVA-7B SFT + RL (the paper) (cited from the paper) | 89.4 |" in md
    assert f"| ours, after RL (min) | {100 * min(after):.1f} |" in md
    assert "| solvable deals of the evaluation set | - |" in md and s["solvable_share"] is None
    assert (out / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "table.md" in printed

    # --collect rebuilds the same table from the run folders, training nothing
    before = {f: (out / f).read_bytes() for f in ("table.json", "table.md")}
    for f in ("table.json", "table.md", "table.png"):
        (out / f).unlink()
    assert main(["table", "--envs", "NumberLine-v0", "--seeds", "0,1", "--out", str(out), "--collect"]) == 0
    assert {f: (out / f).read_bytes() for f in before} == before
    assert (out / "table.png").is_file()
    capsys.readouterr()
    assert main(["table", "--envs", "NumberLine-v0", "--seeds", "0,2", "--out", str(out), "--collect"]) == 2
    err = capsys.readouterr().err
    assert "NumberLine-v0-seed2" in err and "does not exist" in err


def test_solvable_share_is_the_expert_success_rate_on_the_evaluation_deals():
    """The share of the evaluation set's deals the expert can solve equals the success rate of the expert
    playing those same deals (chunks of `batch` envs reset with seed + first episode, first episode each)."""
    from gymnasium.vector import AutoresetMode

    from vlmrl_fast import make_vec
    from vlmrl_fast.rollout import solvable_share

    episodes, seed, batch = 40, 11, 16
    share = solvable_share("Points24-v0", episodes=episodes, seed=seed, batch=batch)
    wins = 0
    envs = make_vec("Points24-v0", batch, seed=seed, autoreset_mode=AutoresetMode.SAME_STEP)
    for start in range(0, episodes, batch):
        m = min(batch, episodes - start)
        envs.reset(seed=seed + start)
        ret, live = np.zeros(batch), np.ones(batch, bool)
        live[m:] = False
        while live.any():
            _, reward, term, trunc, _ = envs.step(envs.expert_actions())
            ret[live] += reward[live]
            live &= ~(np.asarray(term) | np.asarray(trunc))
        wins += int((ret[:m] > 0).sum())
    envs.close()
    assert 0.0 < share < 1.0  # Points24 has deals without a solution
    assert share == wins / episodes
    assert math.isnan(solvable_share("NumberLine-v0", episodes=8, seed=0, batch=4))  # no expert plan
    assert math.isnan(solvable_share("Points24-v0", episodes=0, seed=0, batch=4))
