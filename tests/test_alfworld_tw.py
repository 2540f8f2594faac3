"""ALFWorldTW-v0: small ALFWorld games built offline from the alfworld wheel's
own PDDL domain and grammar, played to the end through the adapter with
alfworld's handcoded expert; our image and prompt are produced at each step.
Skipped where the optional extra (alfworld, textworld[pddl]) is missing, except
under `make test` (VLMRL_REQUIRE_ALFWORLD=1), which installs it: there a missing
package is a failure, not a skip."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

if os.environ.get("VLMRL_REQUIRE_ALFWORLD") == "1":
    import alfworld  # noqa: F401
    import fast_downward  # noqa: F401
    import textworld  # noqa: F401
else:
    alfworld = pytest.importorskip("alfworld")
    pytest.importorskip("textworld")
    pytest.importorskip("fast_downward")

import vlmrl_fast  # noqa: E402
from vlmrl_fast.alfworld_tw import ALFWorldTWEnv  # noqa: E402

DATA = os.path.join(os.path.dirname(alfworld.__file__), "data")


def _mangle(kind: str, i: int) -> str:
    """ALFRED's object ids ("Apple|+00.10|+00.90|+00.20") as PDDL names."""
    return f"{kind}_bar__plus_0{i}_dot_10_bar__plus_00_dot_90_bar__plus_00_dot_2{i}"


def write_game(folder, task_type: str, goal_text: str, receps, objects, goal: str, params: dict) -> str:
    """A game.tw-pddl + traj_data.json: receps [(Kind, openable)], objects
    [(Kind, recep index, extra predicates)], goal as PDDL over types."""
    names = {}
    lines, objs = [], ["agent1 - agent"]
    types = {f"{k}Type - rtype" for k, _ in receps} | {f"{k}Type - otype" for k, _, _ in objects}
    start = "loc_bar_0_bar_0_bar_0_bar_30"
    objs.append(f"{start} - location")
    lines.append(f"(atLocation agent1 {start})")
    for i, (kind, openable) in enumerate(receps, 1):
        r, loc = _mangle(kind, i), f"loc_bar_{i}_bar_{i}_bar_0_bar_30"
        names[i - 1] = (r, loc)
        objs += [f"{r} - receptacle", f"{loc} - location"]
        lines += [f"(receptacleAtLocation {r} {loc})", f"(receptacleType {r} {kind}Type)"]
        if openable:
            lines.append(f"(openable {r})")
        for okind, _, _ in objects:
            lines.append(f"(canContain {kind}Type {okind}Type)")
    for j, (kind, ri, extra) in enumerate(objects, 1):
        o = _mangle(kind, j)
        r, loc = names[ri]
        objs.append(f"{o} - object")
        lines += [f"(objectType {o} {kind}Type)", f"(inReceptacle {o} {r})", f"(objectAtLocation {o} {loc})"]
        lines += [f"({p} {o})" for p in extra]
    problem = (
        "(define (problem plan_test)\n (:domain alfred)\n (:objects\n  "
        + "\n  ".join(objs + sorted(types))
        + ")\n (:init\n  " + "\n  ".join(sorted(set(lines))) + ")\n"
        + f" (:goal {goal})\n)\n"
    )
    grammar = open(os.path.join(DATA, "alfred.twl2")).read().replace("UNKNOWN GOAL", goal_text)
    game = {"pddl_domain": open(os.path.join(DATA, "alfred.pddl")).read(), "grammar": grammar,
            "pddl_problem": problem, "solvable": True}
    folder.mkdir(parents=True)
    (folder / "game.tw-pddl").write_text(json.dumps(game))
    (folder / "traj_data.json").write_text(json.dumps({"task_type": task_type, "pddl_params": params}))
    return str(folder / "game.tw-pddl")


PARAMS = {"toggle_target": "", "mrecep_target": "", "object_sliced": False}


@pytest.fixture(scope="module")
def games(tmp_path_factory):
    root = tmp_path_factory.mktemp("alfworld_games")
    return {
        "pick_and_place_simple": write_game(
            root / "pick", "pick_and_place_simple", "put a apple in fridge",
            [("CounterTop", False), ("Fridge", True), ("Cabinet", True)],
            [("Apple", 2, ["pickupable"]), ("Mug", 0, ["pickupable"])],
            "(exists (?r - receptacle) (exists (?o - object) (and (inReceptacle ?o ?r) "
            "(objectType ?o AppleType) (receptacleType ?r FridgeType))))",
            {**PARAMS, "object_target": "Apple", "parent_target": "Fridge"},
        ),
        "pick_heat_then_place_in_recep": write_game(
            root / "heat", "pick_heat_then_place_in_recep", "put a hot potato in countertop",
            [("CounterTop", False), ("Microwave", True), ("Fridge", True)],
            [("Potato", 2, ["pickupable", "heatable"]), ("Egg", 0, ["pickupable", "heatable"])],
            "(exists (?r - receptacle) (exists (?o - object) (and (inReceptacle ?o ?r) (isHot ?o) "
            "(objectType ?o PotatoType) (receptacleType ?r CounterTopType))))",
            {**PARAMS, "object_target": "Potato", "parent_target": "CounterTop"},
        ),
        "look_at_obj_in_light": write_game(
            root / "look", "look_at_obj_in_light", "look at book under the desklamp",
            [("Bed", False), ("Desk", False), ("Drawer", True)],
            [("Book", 2, ["pickupable"]), ("DeskLamp", 1, ["toggleable"])],
            "(exists (?o - object) (exists (?l - object) (exists (?a - agent) (and (objectType ?o BookType) "
            "(objectType ?l DeskLampType) (holds ?a ?o) (isOn ?l)))))",
            {**PARAMS, "object_target": "Book", "parent_target": "", "toggle_target": "DeskLamp"},
        ),
    }


@pytest.mark.parametrize("task_type", ["pick_and_place_simple", "pick_heat_then_place_in_recep", "look_at_obj_in_light"])
def test_expert_plays_offline_game_to_completion(games, task_type):
    env = ALFWorldTWEnv(game_files=[games[task_type]], max_steps=30)
    obs, info = env.reset(seed=0)
    assert info["text"].startswith("-= Welcome to TextWorld, ALFRED! =-")
    assert info["task_type"] == task_type and info["task"]
    frames = [obs.copy()]
    for _ in range(30):
        assert obs.shape == (300, 300, 3) and obs.dtype == np.uint8
        prompt = vlmrl_fast.prompts.render("ALFWorld-v0", info)
        assert info["task"] in prompt and all(f'"{c}"' in prompt for c in info["admissible_commands"])
        a = env.expert_action()
        obs, reward, terminated, truncated, info = env.step(a)
        frames.append(obs.copy())
        if terminated:
            break
    assert info["won"] and terminated and not truncated
    assert reward == 51.0 and info["goal_condition_success_rate"] == 1.0
    assert len({f.tobytes() for f in frames}) > 3, "the image follows the game"


def test_inadmissible_and_out_of_range(games):
    env = ALFWorldTWEnv(game_files=[games["pick_and_place_simple"]])
    _, info = env.reset(seed=0)
    before = info["admissible_commands"]
    obs, reward, terminated, truncated, info = env.step(-1)
    assert info["text"] == "Nothing happens." and reward == -1.0
    assert info["admissible_commands"] == before and not terminated and not truncated
    with pytest.raises(ValueError, match="out of range"):
        env.step(len(before))


def test_text_feedback_matches_the_native_env_grammar(games):
    """Our native ALFWorld-v0 writes the same sentences as the real engine."""
    env = ALFWorldTWEnv(game_files=[games["pick_and_place_simple"]])
    _, info = env.reset(seed=0)
    assert (info["location"], info["holding"]) == ("the middle of the room", "nothing")
    cmds = info["admissible_commands"]
    _, _, _, _, info = env.step(cmds.index("go to countertop 1"))
    assert info["text"] == "You arrive at countertop 1. On the countertop 1, you see a mug 1."
    _, _, _, _, info = env.step(info["admissible_commands"].index("go to cabinet 1"))
    assert info["text"] == "You arrive at cabinet 1. The cabinet 1 is closed."
    assert info["location"] == "cabinet 1"
    _, _, _, _, info = env.step(info["admissible_commands"].index("open cabinet 1"))
    assert info["text"] == "You open the cabinet 1. The cabinet 1 is open. In it, you see a apple 1."
    obs, _, _, _, info = env.step(info["admissible_commands"].index("take apple 1 from cabinet 1"))
    assert info["text"] == "You pick up the apple 1 from the cabinet 1."
    assert (info["location"], info["holding"]) == ("cabinet 1", "apple 1")  # as the native env reports them
    # The image's held band (rows 204..232) now shows an icon and text.
    assert (obs[204:232] != obs[204, 299]).any()


def test_no_games_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="ALFWORLD_DATA"):
        ALFWorldTWEnv(data_path=str(tmp_path))
