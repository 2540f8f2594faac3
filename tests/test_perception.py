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


def _alf(location, holding, **extra):
    return json.dumps({"location": location, "holding": holding, **extra, "thoughts": "x", "action": "look"})


def test_alfworld_reads_the_two_status_lines():
    info = {**ALF, "location": "fridge 1", "holding": "apple 2"}
    assert P.truth_fields("ALFWorld-v0", info) == {"location": "fridge 1", "holding": "apple 2"}
    answers = [_alf("fridge 1", "apple 2"), _alf("fridge 2", "apple 2"), _alf("fridge 1", "nothing"),
               json.dumps({"location": "fridge 1", "thoughts": "x", "action": "look"}), "look"]
    assert P.perception_correct("ALFWorld-v0", answers, [info] * 5).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    # the real env's info and the template's answer agree: a true answer reads right
    from vlmrl_fast import make_vec, prompts
    from vlmrl_fast.rollout import split_infos

    envs = make_vec("ALFWorld-v0", 2, seed=3)
    try:
        _, infos = envs.reset(seed=3)
        real = split_infos(infos, 2)
    finally:
        envs.close()
    assert real[0]["location"] == "the middle of the room" and real[0]["holding"] == "nothing"
    true = [prompts.answer("ALFWorld-v0", i, i["admissible_commands"][0]) for i in real]
    assert P.perception_accuracy("ALFWorld-v0", true, real) == 1.0


def test_an_env_source_without_status_fields_has_no_perception_figure():
    # ALFWorld's info without location/holding (an older or external source): no truth, NaN accuracy
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
    # vision_weights route the vision-only steps: weight 0 gives EZPoints none, so its fresh heads stay at chance
    ez_train = P.perception_frames("EZPoints-v0", 256, seed=1)
    ez_held = P.perception_frames("EZPoints-v0", 96, seed=2)
    routed = P.train_perception(agent, [train, ez_train], steps=0, vision_steps=40, batch_size=16,
                                learning_rate=3e-4, vision_weights=[1.0, 0.0])
    assert P.probe_accuracy(agent, routed, held) >= 0.9 and P.probe_accuracy(agent, routed, ez_held) < 0.2
    with pytest.raises(ValueError, match="vision_weights"):
        P.train_perception(agent, [train, ez_train], steps=0, vision_steps=1, vision_weights=[1.0])


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


@pytest.mark.parametrize("env_id, info, values", [
    ("NumberLine-v0", NL, ["3", "1"]),
    ("EZPoints-v0", EZ, ["5", "Q"]),
    ("Points24-v0", P24, ["K", "7", "3", "10"]),
    ("Blackjack-v0", BJ, ["A", "4", "Q"]),
    ("ALFWorld-v0", {**ALF, "location": "countertop 2", "holding": "nothing"}, ["countertop", "2", "nothing"]),
])
def test_field_tokens_are_the_state_values(env_id, info, values):
    """The tokens `field_token_mask` flags (the perception stage weights them) hold every state value of a
    true answer, and no token outside the fields (thoughts, action) is flagged."""
    from vlmrl_fast import prompts
    from vlmrl_fast.models.corpus import corpus
    from vlmrl_fast.models.tiny import train_tokenizer

    tok = train_tokenizer(corpus())
    names = prompts.action_names(env_id, info)
    text = prompts.answer(env_id, info, names[0])
    mask = P.field_token_mask(tok, env_id, text)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    flagged = [tok.decode([i]) for i, m in zip(ids, mask) if m]
    assert len(mask) == len(ids) and any(mask) and not all(mask)
    if env_id != "ALFWorld-v0":
        # the values in order, each in tokens of its own (the tokenizer isolates digits and card letters)
        assert all(t.strip() in "".join(values) for t in flagged), flagged
        assert "".join(t.strip() for t in flagged) == "".join(values)
    else:
        # ALFWorld's names are words: BPE fuses one with the JSON around it ('{"location": "countertop ',
        # '", "holding": "nothing", "thoughts": "My task: '). The flagged tokens still cover every value in
        # order, and the action's tokens are not flagged.
        joined = "".join(flagged)
        at = [joined.find(v) for v in values]
        assert -1 not in at and at == sorted(at), (flagged, values)
        assert '"action"' not in joined and not mask[-1], flagged
    assert P.field_token_mask(tok, "ALFWorld-v0", '{"thoughts": "x", "action": "look"}') == \
        [False] * len(tok('{"thoughts": "x", "action": "look"}', add_special_tokens=False)["input_ids"])


def test_schedule_gives_each_env_its_share():
    equal = P._schedule(12, np.full(4, 0.25))
    assert equal == [0, 1, 2, 3] * 3  # equal shares: round robin
    order = P._schedule(700, np.array([1.0, 1.5, 3.0, 1.5]) / 7.0)
    assert np.bincount(order).tolist() == [100, 150, 300, 150]
    assert max(np.diff([i for i, k in enumerate(order) if k == 0])) <= 10  # every ~7th step, not in blocks


def test_rebalanced_schedule_gives_the_misread_env_the_steps():
    # env 0 read perfectly on validation, env 1 never: env 1 gets ten times env 0's steps
    order = P._schedule(110, P._rebalanced(np.array([0.5, 0.5]), [1.0, 0.0]))
    assert abs(np.bincount(order)[0] - 10) <= 1 and len(order) == 110
    assert np.allclose(P._rebalanced(np.array([0.25, 0.75]), [0.5, float("nan")]), [0.6 * 0.25 / 0.225, 0.075 / 0.225])
    # a lower floor leaves a perfectly read env less: 0.02 of its share instead of 0.1
    assert np.allclose(P._rebalanced(np.array([0.5, 0.5]), [1.0, 0.0], 0.02), [0.02 / 1.04, 1.02 / 1.04])
    with pytest.raises(ValueError, match="floor"):
        P._rebalanced(np.array([0.5, 0.5]), [1.0, 0.0], 0.0)


def test_attentive_heads_share_one_classifier_per_field():
    import torch

    classes = {"cards[0]": ["K", "3"], "cards[1]": ["3", "7"], "dealer card": ["Q"]}
    heads = P.AuxHeads(16, 8, classes, "attentive")
    assert heads.classes["cards[0]"] == heads.classes["cards[1]"] == ["K", "3", "7"]
    out = heads(torch.randn(5, 16, 8))
    assert [o.shape for o in out] == [torch.Size([5, 3]), torch.Size([5, 3]), torch.Size([5, 1])]
    assert P.AuxHeads(16, 8, classes, "linear").classes["cards[1]"] == ["3", "7"]
    auto = P.AuxHeads(16, 8, classes, "auto")  # attentive for the hand's slots, linear for the single card
    assert auto.names == ["dealer card", "cards[0]", "cards[1]"] and len(auto.heads) == 1
    assert auto.classes["cards[1]"] == ["K", "3", "7"] and auto.classes["dealer card"] == ["Q"]
    both = P.AuxHeads(16, 8, classes, "both")
    assert len(both(torch.randn(2, 16, 8))) == 6 and {both.slot(n) for n in both.names} == set(classes)
    with pytest.raises(ValueError, match="attentive"):
        P.AuxHeads(16, 8, classes, "conv")


TOY_READER = P.ReaderRecipe(envs=("NumberLine-v0", "Blackjack-v0"), env_weights=(1.0, 1.0), frames=32, held_out=8,
                            vision_steps=3, vision_weights=(1.0, 3.0), steps=4, batch_size=4, threads=1, validation=4,
                            rebalance_every=2)


def test_teach_reading_saves_the_model_and_its_report(tmp_path, tiny):
    """`teach_reading` (what the embedded model's build runs, here at toy size): the weights in the folder
    change, the folder still loads, perception.json holds every env's held-out accuracies; the same seed gives
    the same weights."""
    import shutil

    from safetensors.torch import load_file

    from vlmrl_fast.models import ModelSettings, load_model

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny, a)
    shutil.copytree(tiny, b)
    before = load_file(str(a / "model.safetensors"))
    report = P.teach_reading(a, seed=4, recipe=TOY_READER, progress=False)
    P.teach_reading(b, seed=4, recipe=TOY_READER, progress=False)
    after, again = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert set(after) == set(before) and any(not np.array_equal(after[k], before[k]) for k in after)
    assert all(np.array_equal(after[k], again[k]) for k in after)
    on_disk = json.loads((a / P.READER_REPORT).read_text())
    assert on_disk["accuracy"] == report["accuracy"] and on_disk["seed"] == 4
    assert set(report["accuracy"]) == {"NumberLine-v0", "Blackjack-v0"}
    assert all(0.0 <= v[k] <= 1.0 for v in report["accuracy"].values() for k in ("answer", "probe"))
    assert on_disk["recipe"]["steps"] == 4 and on_disk["seconds"] > 0
    # halfway, the validation accuracy of each env was measured to re-share the remaining steps
    assert [r["step"] for r in report["rebalances"]] == [2]
    assert all(0.0 <= report["rebalances"][0][e] <= 1.0 for e in TOY_READER.envs)
    model, _ = load_model(str(a), ModelSettings(lora=False))
    assert type(model).__name__ == "LlavaForConditionalGeneration"


def test_default_model_build_teaches_reading(tmp_path, monkeypatch):
    """The embedded model's first use builds it and runs `teach_reading` (the toy recipe here); with
    VLMRL_FAST_TINY_PRETRAIN=0 (the test suite's setting) it is the untrained build, under its own key."""
    from vlmrl_fast.models.tiny import default_model_path

    monkeypatch.setenv("VLMRL_FAST_CACHE", str(tmp_path))
    monkeypatch.setattr(P, "READER", TOY_READER)
    monkeypatch.setenv("VLMRL_FAST_TINY_PRETRAIN", "1")
    taught = default_model_path()
    monkeypatch.setenv("VLMRL_FAST_TINY_PRETRAIN", "0")
    untrained = default_model_path()
    assert taught != untrained and untrained.name.endswith("-untrained")
    assert (taught / P.READER_REPORT).is_file() and not (untrained / P.READER_REPORT).exists()
    assert json.loads((taught / P.READER_REPORT).read_text())["recipe"]["envs"] == list(TOY_READER.envs)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == sorted([taught.name, untrained.name])


def test_expert_led_frames_reach_held_objects_and_answers_stay_truthful():
    """perception_frames(play="expert"): the envs follow the expert (ALFWorld: objects get picked up, which
    random play of the same length almost never does); every answer states the true status lines and names
    an admissible action that is not the expert's every time (no decision is taught)."""
    from vlmrl_fast import prompts

    led = P.perception_frames("ALFWorld-v0", 96, seed=4, num_envs=8, play="expert")
    rand = P.perception_frames("ALFWorld-v0", 96, seed=4, num_envs=8)
    held = [sum(i["holding"] != "nothing" for i in d.infos) for d in (led, rand)]
    assert held[0] >= 20 and held[0] > 2 * held[1], held
    assert P.perception_accuracy("ALFWorld-v0", led.answers, led.infos) == 1.0
    actions = [json.loads(a)["action"] for a in led.answers]
    assert all(a in prompts.action_names("ALFWorld-v0", i) for a, i in zip(actions, led.infos))
    assert len(set(actions)) > 10
    with pytest.raises(ValueError, match="play"):
        P.perception_frames("ALFWorld-v0", 4, play="greedy")
    # By default expert play goes 16 steps deep (random play: 2), so its frames hold objects as well.
    deep = P.perception_frames("ALFWorld-v0", 256, seed=4, play="expert")
    shallow = P.perception_frames("ALFWorld-v0", 256, seed=4, play="expert", num_envs=128)
    held = [sum(i["holding"] != "nothing" for i in d.infos) for d in (deep, shallow)]
    assert held[0] >= 64 and held[1] == 0, held
