"""SFT on expert demonstrations: the answer-token loss falls and the tiny model's answers parse as valid."""

import json
import numpy as np
import pytest
import torch
from accelerate import Accelerator

from vlmrl_fast.config import load_config
from vlmrl_fast.models import build_tiny_vlm
from vlmrl_fast.ppo import build_agent
from vlmrl_fast.sft import answer_token_ids, answer_token_loss, build_demonstrations, train_sft, valid_answer_rate


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_vlm("llava", tmp_path_factory.mktemp("sft") / "llava", seed=4)


def test_demonstrations_are_true_to_the_state():
    demos = build_demonstrations("NumberLine-v0", 6, actions="expert", seed=0, num_envs=3)
    assert len(demos) >= 6 and demos.frames.shape[1:] == (300, 300, 3)
    import json

    for prompt, answer, action in zip(demos.prompts, demos.answers, demos.actions):
        a = json.loads(answer)
        assert a["action"] == ["-", "+"][action]
        # the expert moves toward the target
        assert (a["current number"] < a["target number"]) == (action == 1)
    rand = build_demonstrations("NumberLine-v0", 20, actions="random", seed=0, num_envs=4)
    assert 0.2 < np.mean(rand.actions) < 0.8


def test_sft_lowers_loss_and_answers_parse(tiny):
    cfg = load_config(None, dict(model=str(tiny), lora=False, max_new_tokens=64, temperature=0.2))
    agent = build_agent(cfg, "cpu")
    demos = build_demonstrations("NumberLine-v0", 40, actions="expert", seed=1)
    held_out = build_demonstrations("NumberLine-v0", 24, actions="expert", seed=2)
    ids = answer_token_ids(agent, held_out.answers[:32])
    with torch.no_grad():
        before = float(answer_token_loss(agent, held_out.frames[:32], held_out.prompts[:32], ids, "cpu"))
    losses = train_sft(agent, demos, epochs=8, batch_size=8, learning_rate=3e-3,
                       accelerator=Accelerator(cpu=True), seed=0)
    assert all(np.isfinite(losses))
    agent.eval()
    with torch.no_grad():
        after = float(answer_token_loss(agent, held_out.frames[:32], held_out.prompts[:32], ids, "cpu"))
    assert after < 0.2 * before, (before, after, losses[-5:])
    valid = valid_answer_rate(agent, ["-", "+"], held_out, limit=64, seed=0)
    assert valid >= 0.95, (valid, losses[-5:])


SMALL_SFT = ["--sft-episodes", "2", "--sft-epochs", "1", "--max-new-tokens", "8", "--no-progress"]


def test_sft_command_runs_the_perception_stage_first(tiny, tmp_path, capsys):
    import json

    from vlmrl_fast.cli import main

    run = tmp_path / "run"
    code = main(["sft", "--env", "NumberLine-v0", "--model", str(tiny), "--perception-steps", "2",
                 "--perception-vision-steps", "1", "--perception-frames", "8", "--run-dir", str(run), *SMALL_SFT])
    assert code == 0, capsys.readouterr().err[-2000:]
    summary = json.loads((run / "sft_summary.json").read_text())
    assert summary["perception_stage"] == "ran" and 0.0 <= summary["perception_accuracy_held_out"] <= 1.0
    assert (run / "agent").is_dir() and summary["demonstrations"] > 0
    # after SFT, the same held-out frames: the saved agent reproduces the figure
    from vlmrl_fast.agent import Agent
    from vlmrl_fast.models import ModelSettings
    from vlmrl_fast.perception import held_out_accuracy, perception_frames
    from vlmrl_fast.ppo import derive_seed

    agent = Agent.load(run / "agent", ModelSettings(device="cpu", lora=False))
    held = perception_frames("NumberLine-v0", 128, seed=derive_seed(0, 0xF3))
    assert summary["perception_accuracy_after_sft"] == pytest.approx(held_out_accuracy(agent, held))


def test_sft_command_on_alfworld_reads_the_status_lines_and_checks_answers_against_each_states_commands(
        tiny, tmp_path, capsys):
    """ALFWorld's actions differ from state to state: the held-out valid-answer rate parses each answer against
    its own step's admissible commands (one list for all once crashed the command), and the perception stage
    runs on expert-led frames (its answers state location and held object)."""
    import json

    from vlmrl_fast.cli import main
    from vlmrl_fast.sft import build_demonstrations

    demos = build_demonstrations("ALFWorld-v0", 2, actions="expert", seed=1, num_envs=2)
    assert demos.action_names is not None and len(demos.action_names) == len(demos)
    assert len({tuple(n) for n in demos.action_names}) > 1  # the command lists differ between steps
    assert all(json.loads(a)["action"] in n for a, n in zip(demos.answers, demos.action_names))
    run = tmp_path / "run"
    code = main(["sft", "--env", "ALFWorld-v0", "--model", str(tiny), "--sft-actions", "expert",
                 "--perception-steps", "2", "--perception-vision-steps", "1", "--perception-frames", "8",
                 "--perception-play", "expert", "--run-dir", str(run), *SMALL_SFT])
    assert code == 0, capsys.readouterr().err[-2000:]
    summary = json.loads((run / "sft_summary.json").read_text())
    assert summary["perception_stage"] == "ran" and 0.0 <= summary["perception_accuracy_held_out"] <= 1.0
    assert 0.0 <= summary["valid_answer_rate"] <= 1.0


def test_sft_command_skips_the_perception_stage_where_it_cannot_run(tmp_path, capsys):
    import json
    from pathlib import Path

    from vlmrl_fast.cli import main

    template = Path(__file__).resolve().parent / "count_to.toml"
    run = tmp_path / "run"
    code = main(["sft", "--env", "byo_envs:CountTo-v0", "--prompt-template", str(template), "--model", "tiny:text",
                 "--sft-actions", "expert", "--perception-steps", "300", "--run-dir", str(run), *SMALL_SFT])
    assert code == 0, capsys.readouterr().err[-2000:]
    summary = json.loads((run / "sft_summary.json").read_text())
    assert summary["perception_stage"].startswith("skipped: ") and "perception_accuracy_held_out" not in summary
    assert "perception_accuracy_after_sft" not in summary  # the format states no fields of the state


@pytest.mark.parametrize("env_id", ["Points24-v0", "EZPoints-v0"])
def test_plan_thoughts_state_the_expert_solution_and_its_next_token(env_id):
    """sft_thoughts = "plan": every demonstration's thoughts name the expert's whole solution, which extends
    the formula so far by the demonstrated action (or no solution, then "="); the answers parse back to the
    expert's actions."""
    import re

    from vlmrl_fast import parse_actions, prompts
    from vlmrl_fast.sft import build_demonstrations

    demos = build_demonstrations(env_id, 12, actions="expert", seed=3, thoughts="plan", num_envs=4)
    solved = 0
    for answer, action in zip(demos.answers, demos.actions):
        obj = json.loads(answer)
        m = re.search(r"A solution is (\S+)\. The formula so far is '([^']*)'\. I append \"([^\"]+)\"", obj["thoughts"])
        if m is None:
            assert "No formula of them reaches" in obj["thoughts"] and obj["action"] == "=", obj
            continue
        plan, so_far, nxt = m.groups()
        assert so_far == obj["current formula"] and plan.startswith(so_far) and nxt == obj["action"]
        assert plan[len(so_far):].startswith(nxt) or (plan == so_far and nxt == "="), obj
        solved += 1
    assert solved > len(demos) // 2
    parsed = parse_actions(demos.answers, [prompts.action_names(env_id, {})] * len(demos))
    assert parsed.valid.all() and parsed.index.tolist() == demos.actions


def test_sorted_plan_thoughts_name_the_values_in_order_and_one_solution_per_set_of_values():
    """sft_thoughts = "sorted_plan" (Points24): the thoughts list the card values as dealt, then ascending, then
    the plan thoughts' solution; deals with the same values in any order share the text from "ascending" to
    the solution. Elsewhere (Blackjack) the variant falls back to the plan lines; an unknown one is refused."""
    import re

    from vlmrl_fast import prompts
    from vlmrl_fast.sft import build_demonstrations

    demos = build_demonstrations("Points24-v0", 40, actions="expert", seed=3, thoughts="sorted_plan", num_envs=8)
    first: dict[tuple[int, ...], str] = {}
    for answer in demos.answers:
        thoughts = json.loads(answer)["thoughts"]
        m = re.match(r"The cards are [^.]*, worth ([\d, ]+), ascending ([\d, ]+)\. (A solution is \S+|No formula)",
                     thoughts)
        assert m is not None, thoughts
        dealt = [int(x) for x in m.group(1).split(", ")]
        ordered = [int(x) for x in m.group(2).split(", ")]
        assert ordered == sorted(dealt), thoughts
        assert first.setdefault(tuple(ordered), m.group(3)) == m.group(3), thoughts
    assert len(first) > 10
    info = {"Cards": ["C5", "H3", "SK", "D3"], "Numbers": [5, 3, 10, 3], "Formula": []}
    a = prompts.plan_thoughts("Points24-v0", info, "3", "3*5+10-3", variant="sorted_plan")
    assert "worth 5, 3, 10, 3, ascending 3, 3, 5, 10. A solution is 3*5+10-3." in a
    bj = {"Player Card": ["HA", "C4"], "Dealer Card": ["CQ"]}
    assert prompts.plan_thoughts("Blackjack-v0", bj, "stand", None, variant="sorted_plan") == \
        prompts.plan_thoughts("Blackjack-v0", bj, "stand", None)
    with pytest.raises(prompts.PromptError, match="variant"):
        prompts.plan_thoughts("Points24-v0", info, "3", "3*5+10-3", variant="sorted")


def test_blackjack_plan_thoughts_work_the_total_out_card_by_card():
    import re

    from vlmrl_fast import perception, prompts
    from vlmrl_fast.sft import build_demonstrations

    demos = build_demonstrations("Blackjack-v0", 20, actions="expert", seed=5, thoughts="plan", num_envs=5)
    for answer in demos.answers:
        thoughts = json.loads(answer)["thoughts"]
        m = re.search(r"a total of ((?:\d+ \+ )+\d+) = (\d+),", thoughts)
        assert m is not None, thoughts
        terms = [int(x) for x in m.group(1).split(" + ")]
        cards = perception.answer_fields("Blackjack-v0", answer)["player cards"]  # still read as the cards
        assert sum(terms) == int(m.group(2)) == prompts._blackjack_total(cards) and len(terms) == len(cards)
        assert terms.count(11) <= 1 and (11 not in terms or sum(terms) <= 21)
    assert prompts.plan_thoughts("NumberLine-v0", {"Current": 1, "Target": 3}, "+", None) is None


@pytest.mark.parametrize("thoughts", ["sorted_plan", "pattern_plan"])
def test_plan_weight_marks_exactly_the_solution_tokens_and_changes_the_loss(tiny, thoughts):
    """sft_plan_weight: the weighted tokens of each answer spell the solution its thoughts state (nothing else),
    answers without a solution weigh 1 throughout, and training with the weight takes another first loss
    than without (same model, same batches)."""
    from vlmrl_fast.sft import plan_token_weights

    agent = build_agent(load_config(None, {"model": str(tiny), "env": "Points24-v0", "device": "cpu"}), "cpu")
    demos = build_demonstrations("Points24-v0", 8, actions="expert", seed=2, thoughts=thoughts, num_envs=8)
    assert demos.plans is not None and any(demos.plans) and not all(demos.plans)  # some deals have no solution
    ids = answer_token_ids(agent, demos.answers)
    weights = plan_token_weights(agent, demos.answers, demos.plans, 5.0)
    tok = agent.processor.tokenizer
    for plan, row, w in zip(demos.plans, ids, weights):
        assert len(w) == len(row)
        at = [k for k, x in enumerate(w) if x == 5.0]
        assert at == list(range(at[0], at[-1] + 1)) if at else not plan  # one contiguous run, or none
        marked = "".join(tok.decode([row[k]]) for k in at)
        assert (plan or "") in marked, (plan, marked)  # the end tokens may run past it (merged pieces)
        assert all(tok.decode([row[k]]) in plan for k in at[1:-1])
        assert set(w) <= {1.0, 5.0}
    state = {k: v.clone() for k, v in agent.state_dict().items()}
    first = []
    for weight in (1.0, 5.0):
        agent.load_state_dict(state)
        losses = train_sft(agent, demos, epochs=1, batch_size=16, learning_rate=1e-4,
                           accelerator=Accelerator(cpu=True), seed=0, plan_weight=weight)
        assert np.isfinite(losses).all()
        first.append(losses[0])
    assert abs(first[0] - first[1]) > 1e-5  # CPU runs are deterministic: equal inputs give equal losses


def test_demonstration_frames_grow_in_one_array_and_equal_the_played_frames():
    """build_demonstrations stores frames in one array grown in place (held once, not per step plus a stack):
    across several growths (> 256 + 320 frames) they equal the frames the play yields, in order."""
    from vlmrl_fast.sft import record_play

    demos = build_demonstrations("NumberLine-v0", 300, actions="expert", seed=4, num_envs=8)
    assert len(demos) > 600 and demos.frames.shape == (len(demos), 300, 300, 3) and demos.frames.flags.owndata
    play = record_play("NumberLine-v0", 8, seed=4, salt=0xDE70, actions="expert", cot=True, state_text=False,
                       thoughts="template")
    want = []
    while len(want) < len(demos):
        want.extend(row.frame for row in next(play)[0])
    play.close()
    assert np.array_equal(demos.frames, np.stack(want[:len(demos)]))
