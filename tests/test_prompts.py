"""Prompt templates: every env renders, formats parse back, answers are
truthful and round-trip through the parser."""

from __future__ import annotations

import json
import pathlib


import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlmrl_fast import _core, parse_actions, prompts
from vlmrl_fast.prompts import tomllib

REPO_PROMPTS = pathlib.Path(__file__).resolve().parents[1] / "envs" / "prompts"

INFOS = {
    "NumberLine-v0": {"Target": 4, "Current": 1, "text": "Target number: 4. Current number: 1."},
    "EZPoints-v0": {"Cards": ["H5", "SQ"], "Numbers": [5, 10], "Formula": [5, "+"], "text": "..."},
    "Points24-v0": {"Cards": ["HT", "S2", "CA", "DK"], "Numbers": [10, 2, 1, 10], "Formula": [], "text": "..."},
    "Blackjack-v0": {"Player Card": ["HA", "S6"], "Dealer Card": ["DK"], "text": "..."},
    "ALFWorld-v0": {
        "admissible_commands": ["go to cabinet 1", "go to countertop 2", "inventory", "look", "take apple 1 from countertop 2"],
        "text": "You arrive at countertop 2. On the countertop 2, you see a apple 1.\nYour task is to: put a clean apple in fridge.",
    },
}


@pytest.mark.parametrize("env_id", prompts.ENV_IDS)
@pytest.mark.parametrize("cot", [True, False])
def test_every_template_renders_and_its_format_parses_back(env_id: str, cot: bool) -> None:
    info = INFOS[env_id]
    text = prompts.render(env_id, info, cot=cot)
    assert "$" not in text and len(text) > 100
    names = prompts.action_names(env_id, info)
    # The format shows the choices as "a" or "b" ...: the example parses to the first.
    fmt = text[text.index("Answer with") :]
    p = parse_actions([fmt, text], names)
    assert p.index.tolist() == [0, 0]
    assert ("thoughts" in fmt) == cot
    for name in names:
        assert json.dumps(name) in fmt
    assert prompts.render("vlmrl_fast/" + env_id, info, cot=cot) == text


def test_renders_show_the_state() -> None:
    assert "'5+'" in prompts.render("EZPoints-v0", INFOS["EZPoints-v0"])
    assert "''" in prompts.render("Points24-v0", INFOS["Points24-v0"])
    alf = prompts.render("ALFWorld-v0", INFOS["ALFWorld-v0"])
    assert "Your task: put a clean apple in fridge." in alf and "you see a apple 1" in alf
    alf2 = prompts.render("ALFWorld-v0", {**INFOS["ALFWorld-v0"], "task": "heat an egg."})
    assert "Your task: heat an egg." in alf2


@pytest.mark.parametrize("env_id", prompts.ENV_IDS)
@pytest.mark.parametrize("cot", [True, False])
def test_answers_round_trip_for_every_action(env_id: str, cot: bool) -> None:
    info = INFOS[env_id]
    names = prompts.action_names(env_id, info)
    answers = [prompts.answer(env_id, info, a, cot=cot) for a in names]
    p = parse_actions(answers, names)
    assert p.index.tolist() == list(range(len(names)))
    for a, text in zip(answers, answers):
        obj = json.loads(text)
        assert list(obj)[-1] == "action"
        assert ("thoughts" in obj) == cot


def test_answers_are_truthful() -> None:
    nl = json.loads(prompts.answer("NumberLine-v0", INFOS["NumberLine-v0"], "+"))
    assert nl["current number"] == 1 and nl["target number"] == 4 and nl["action"] == "+"
    assert "1" in nl["thoughts"] and "4" in nl["thoughts"]
    ez = json.loads(prompts.answer("EZPoints-v0", INFOS["EZPoints-v0"], "7"))
    assert ez["cards"] == ["5", "Q"] and ez["current formula"] == "5+"
    p24 = json.loads(prompts.answer("Points24-v0", INFOS["Points24-v0"], "("))
    assert p24["cards"] == ["10", "2", "A", "K"] and p24["current formula"] == ""
    bj = json.loads(prompts.answer("Blackjack-v0", INFOS["Blackjack-v0"], "hit"))
    assert "A, 6" in bj["thoughts"] and "total of 17" in bj["thoughts"] and "shows K" in bj["thoughts"]
    bj2 = prompts.answer("Blackjack-v0", {"Player Card": ["HA", "S6", "DK"], "Dealer Card": "C7"}, "stand")
    assert "total of 17" in bj2 and "shows 7" in bj2
    custom = json.loads(prompts.answer("Blackjack-v0", INFOS["Blackjack-v0"], "stand", thoughts='say "action": "hit"'))
    assert custom["thoughts"] == 'say "action": "hit"'


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(thoughts=st.text(max_size=80), env_id=st.sampled_from(prompts.ENV_IDS), pick=st.integers(0, 100))
def test_answer_with_any_thoughts_parses_back(thoughts: str, env_id: str, pick: int) -> None:
    info = INFOS[env_id]
    names = prompts.action_names(env_id, info)
    a = names[pick % len(names)]
    assert parse_actions([prompts.answer(env_id, info, a, thoughts=thoughts)], names).index[0] == names.index(a)


def test_errors_name_what_is_wrong() -> None:
    with pytest.raises(prompts.PromptError, match="no prompt template for env 'Chess-v0'"):
        prompts.render("Chess-v0", {})
    with pytest.raises(prompts.PromptError, match="lacks 'Target'"):
        prompts.render("NumberLine-v0", {"Current": 1})
    with pytest.raises(prompts.PromptError, match="'jump' is not among"):
        prompts.answer("Blackjack-v0", INFOS["Blackjack-v0"], "jump")
    with pytest.raises(prompts.PromptError, match="admissible_commands"):
        prompts.render("ALFWorld-v0", {"text": "x"})
    assert issubclass(prompts.PromptError, ValueError)


def test_built_in_templates_match_the_repository_files() -> None:
    """The templates compiled into _core are those in envs/prompts/ (a stale
    build fails here), and every file is built in."""
    built = _core.prompt_templates()
    if not REPO_PROMPTS.is_dir():
        pytest.skip("not running from the repository")
    files = {p.stem: p.read_text(encoding="utf-8") for p in REPO_PROMPTS.glob("*.toml")}
    assert files == built
    for env_id, text in built.items():
        t = tomllib.loads(text)
        assert t["env_id"] == env_id
        assert set(t) >= {"task", "cot_format", "action_only_format", "default_thoughts", "cot_answer"}


def test_template_copy_is_independent() -> None:
    t = prompts.template("Blackjack-v0")
    t["actions"].append("double")
    assert prompts.action_names("Blackjack-v0") == ["stand", "hit"]
