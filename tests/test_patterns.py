"""The shared-pattern planner of the formula games (`sft_thoughts = "pattern_plan"`), checked against the real
Rust env: every plan scores the target in the engine, it exists exactly where the env's solver finds one, and
expert demonstrations that follow it win their episodes."""

import itertools
import json
import re

import numpy as np
import pytest

import vlmrl_fast  # noqa: F401  (registers the envs)
from vlmrl_fast import parse_actions, patterns, prompts
from vlmrl_fast.envs import VlmrlEnv
from vlmrl_fast.sft import build_demonstrations

SUITS = "HSDC"


def _cards(values):
    rank = {1: "A", 10: "K"}
    return [SUITS[i % 4] + rank.get(v, str(v)) for i, v in enumerate(values)]


def _play(env, values, plan):
    """Play `plan` token by token in the real env from a deal of `values`, then "="; the final reward."""
    _, info = env.reset(seed=0, options={"state": {"cards": _cards(values)}})
    names = env.action_names
    for tok in [*patterns.plan_tokens(plan), "="]:
        _, reward, term, trunc, info = env.step(names.index(tok))
    assert term
    return reward, info


def test_every_points24_plan_scores_24_in_the_engine_and_exists_exactly_where_the_solver_finds_one():
    env = VlmrlEnv("Points24-v0")
    sets = list(itertools.combinations_with_replacement(range(1, 11), 4))
    rng = np.random.default_rng(0)
    solvable = 0
    for values in sets:
        plan = patterns.pattern_plan(values, 24)
        dealt = list(rng.permutation(values))  # the plan depends on the values, not on their order
        assert patterns.pattern_plan(dealt, 24) == plan
        _, info = env.reset(seed=0, options={"state": {"cards": _cards(dealt)}})
        assert (plan != "") == (env.expert_plan() != ""), (values, plan, env.expert_plan())
        if plan:
            solvable += 1
            assert sorted(int(t) for t in patterns.plan_tokens(plan) if t.isdigit()) == sorted(values)
            reward, _ = _play(env, dealt, plan)
            assert reward == 10, (values, plan)
    assert solvable == 566


def test_patterns_are_fewer_and_more_shared_than_the_solvers_solutions():
    """The point of the planner: the greedy cover uses far fewer patterns than there are solvable sets, and the
    ten most used cover about half of the dealt solvable deals."""
    ranked = patterns.ranking(4, 24, patterns.OPERATORS)
    assert len(ranked) == 566
    use = {}
    for values, toks in ranked.items():
        use[toks] = use.get(toks, 0) + patterns._deal_weight(values)
    top = sorted(use.values(), reverse=True)
    assert len(use) < 110
    assert sum(top[:10]) / sum(top) > 0.45


def test_ezpoints_plans_use_its_operators_only():
    env = VlmrlEnv("EZPoints-v0")
    ops = tuple(n for n in env.action_names if n in patterns.OPERATORS)
    assert set(ops) <= {"+", "*"}
    for values in itertools.combinations_with_replacement(range(1, 11), 2):
        plan = patterns.pattern_plan(values, 12, ops)
        _, _ = env.reset(seed=0, options={"state": {"cards": _cards(values)}})
        assert (plan != "") == (env.expert_plan() != ""), values
        if plan:
            assert set(re.sub(r"\d", "", plan)) <= set(ops)
            assert _play(env, values, plan)[0] == 10


def test_bad_planner_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="card values"):
        patterns.pattern_plan([0, 3, 4, 5], 24)
    with pytest.raises(ValueError, match="ops"):
        patterns.pattern_plan([2, 3, 4, 5], 24, ("+", "^"))
    with pytest.raises(ValueError, match="cards"):
        patterns.pattern_plan([1, 2, 3, 4, 5], 24)
    assert patterns.plan_tokens("(10-4)*(3+1)") == ["(", "10", "-", "4", ")", "*", "(", "3", "+", "1", ")"]


def test_pattern_plan_demonstrations_follow_the_plan_to_a_win_and_parse_back():
    demos = build_demonstrations("Points24-v0", 48, actions="expert", seed=5, thoughts="pattern_plan", num_envs=8)
    names = prompts.action_names("Points24-v0", {})
    parsed = parse_actions(demos.answers, [names] * len(demos))
    assert parsed.valid.all() and parsed.index.tolist() == demos.actions
    plans: dict[tuple[int, ...], str] = {}
    wins = finished = 0
    for answer in demos.answers:
        a = json.loads(answer)
        m = re.search(r"ascending ([\d, ]+)\. (?:A solution is (\S+)\.|No formula)", a["thoughts"])
        assert m is not None, a["thoughts"]
        values = tuple(int(x) for x in m.group(1).split(", "))
        plan = m.group(2) or ""
        assert plan == patterns.pattern_plan(values, 24)
        assert plans.setdefault(values, plan) == plan
        done = a["current formula"]
        assert plan.startswith(done)  # the played formula is always a prefix of the plan
        expected = patterns.plan_tokens(plan)[len(patterns.plan_tokens(done))] if plan != done else "="
        assert a["action"] == expected, (plan, done, a["action"])
        if a["action"] == "=":
            finished += 1
            wins += plan != ""
    assert finished >= 48 and 0.5 < wins / finished < 0.95
