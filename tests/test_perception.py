"""Perception: the accuracy metric on hand-made answers for every env, frames with their truth, and the
perception stage raising the test-size tiny model's held-out accuracy on NumberLine."""

import json

import numpy as np
import pytest

from vlmrl_fast import perception as P

NL = {"Current": 3, "Target": 1}
EZ = {"Cards": ["C5", "SQ"], "Formula": [], "Numbers": [5, 10]}
P24 = {"Cards": ["CK", "C7", "H3", "DT"], "Formula": [], "Numbers": [10, 7, 3, 10]}
BJ = {"Player Card": ["HA", "C4"], "Dealer Card": ["CQ"]}
ALF = {"text": "You are in the middle of a room.", "admissible_commands": ["look"], "task": "look."}


def _nl(cur, tgt, thoughts="x"):
    return json.dumps({"current number": cur, "target number": tgt, "thoughts": thoughts, "action": "-"})


def _cards(cards):
    return json.dumps({"cards": cards, "current formula": "", "thoughts": "x", "action": "="})


def _bj(player, dealer):
    t = f"My cards are {player}, a total of 15, and the dealer shows {dealer}. I choose to hit."
    return json.dumps({"thoughts": t, "action": "hit"})


@pytest.mark.parametrize("env_id, info, right, wrong, missing", [
    ("NumberLine-v0", NL, _nl(3, 1), _nl(3, 2), json.dumps({"current number": 3, "action": "-"})),
    ("EZPoints-v0", EZ, _cards(["5", "Q"]), _cards(["5", "K"]), json.dumps({"action": "="})),
    ("Points24-v0", P24, _cards(["K", "7", "3", "10"]), _cards(["K", "7", "3", "9"]),
     json.dumps({"current formula": "", "action": "="})),
    ("Blackjack-v0", BJ, _bj("A, 4", "Q"), _bj("A, 5", "Q"), json.dumps({"thoughts": "I hit.", "action": "hit"})),
])
def test_accuracy_on_hand_made_answers(env_id, info, right, wrong, missing):
    infos = [info] * 4
    answers = [right, wrong, missing, "I think the answer is {not json"]
    assert P.perception_correct(env_id, answers, infos).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert P.perception_accuracy(env_id, answers, infos) == 0.25
    assert P.perception_accuracy(env_id, [right, right], [info, info]) == 1.0
    # text around the JSON object (as a model may write) is ignored
    assert P.perception_accuracy(env_id, ["Sure. " + right + " done"], [info]) == 1.0


def test_numberline_numbers_must_be_exact():
    # "3" as a string still names the number 3; 3.5 or true does not
    assert P.perception_correct("NumberLine-v0", [_nl("3", 1), _nl(3.5, 1), _nl(True, 1)], [NL] * 3).tolist() \
        == [1.0, 0.0, 0.0]


def test_alfworld_has_no_state_fields():
    ans = json.dumps({"thoughts": "My task: look.", "action": "look"})
    assert P.truth_fields("ALFWorld-v0", ALF) is None
    assert np.isnan(P.perception_accuracy("ALFWorld-v0", [ans], [ALF]))
    with pytest.raises(ValueError, match="Nope-v0"):
        P.truth_fields("Nope-v0", {})


def test_numberline_thought_consistency():
    good = _nl(3, 1, "The current number 3 is larger than the target number 1. I choose \"-\".")
    contradicts = _nl(3, 1, "The current number 3 is smaller than the target number 1. I choose \"-\".")
    misread = _nl(2, 1, "The current number 2 is larger than the target number 1. I choose \"-\".")
    answers = [good, contradicts, misread, _nl(3, 1, "no comparison")]
    assert P.thought_consistency("NumberLine-v0", answers, [NL] * 4) == 0.25
    assert np.isnan(P.thought_consistency("EZPoints-v0", [_cards(["5", "Q"])], [EZ]))


@pytest.mark.parametrize("env_id", ["NumberLine-v0", "EZPoints-v0", "Points24-v0", "Blackjack-v0"])
def test_frames_come_with_true_answers(env_id):
    data = P.perception_frames(env_id, 20, seed=3, num_envs=4)
    assert len(data) == 20 and data.frames.shape == (20, 300, 300, 3) and data.frames.dtype == np.uint8
    assert P.perception_accuracy(env_id, data.answers, data.infos) == 1.0
    again = P.perception_frames(env_id, 20, seed=3, num_envs=4)
    assert np.array_equal(again.frames, data.frames) and again.answers == data.answers


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from vlmrl_fast.models import build_tiny_vlm

    return build_tiny_vlm("llava", tmp_path_factory.mktemp("perception") / "llava", seed=5)


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    """The llava family at the default model's size (128 px images in 32 px patches): its vision side is
    the one the perception stage is measured on (the test size's 14 px patches learn far slower)."""
    from vlmrl_fast.models import build_tiny_vlm

    return build_tiny_vlm("llava", tmp_path_factory.mktemp("perception") / "reader", seed=0, size="default")


def test_stage_makes_the_image_features_carry_the_numbers(reader):
    """NumberLine: before the stage the image features do not tell the numbers apart (fresh heads on them:
    chance); after its vision phase the auxiliary heads read both numbers of held-out frames."""
    import torch

    from vlmrl_fast.config import load_config
    from vlmrl_fast.ppo import build_agent

    torch.manual_seed(0)
    agent = build_agent(load_config(None, dict(model=str(reader), lora=False, max_new_tokens=48)), "cpu")
    train = P.perception_frames("NumberLine-v0", 2048, seed=1)
    held = P.perception_frames("NumberLine-v0", 96, seed=2)
    untrained = P.train_perception(agent, [train], steps=1, learning_rate=0.0)  # heads on, nothing learned
    before = P.probe_accuracy(agent, untrained, held)
    stage = P.train_perception(agent, [train], steps=0, vision_steps=150, batch_size=16, learning_rate=3e-4)
    after = P.probe_accuracy(agent, stage, held)
    assert stage.aux_losses[-1] < 0.2 * stage.aux_losses[0], stage.aux_losses[::20]
    assert before < 0.2 and after >= 0.9, (before, after)


def test_train_reports_perception(tmp_path, tiny):
    from vlmrl_fast.config import load_config
    from vlmrl_fast.report import read_metrics
    from vlmrl_fast.trainer import train

    cfg = load_config(None, dict(
        model=str(tiny), run_dir=str(tmp_path / "run"), lora=False, num_envs=2, num_steps=2, max_new_tokens=8,
        update_epochs=1, minibatch_size=2, grad_accum_steps=1, updates=2, warm_start="sft", sft_episodes=2,
        sft_epochs=1, perception_steps=2, perception_vision_steps=2, perception_frames=8, state_text=False,
        eval_episodes=2, eval_batch=2, eval_every=0, report_episodes=0, progress=False))
    summary = train(cfg)
    for key in ("perception_accuracy_before_rl", "perception_accuracy_after_rl",
                "thought_consistency_before_rl", "thought_consistency_after_rl"):
        assert 0.0 <= summary[key] <= 1.0, (key, summary[key])
    assert summary["perception_stage"] == "ran"
    records = read_metrics(tmp_path / "run")
    assert len(records) == 2 and all(0.0 <= r["charts/perception_accuracy"] <= 1.0 for r in records)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["perception_accuracy_after_rl"] \
        == summary["perception_accuracy_after_rl"]
