"""Scripted episodes of the four games from explicit states: reward,
terminated, truncated and info at every step, as gym_cards defines them."""

import gymnasium as gym
import numpy as np
import pytest

import vlmrl_fast  # noqa: F401  (registers the envs)
from vlmrl_fast import InvalidActionError, InvalidStateError


def play(env_id, state, script, **kwargs):
    """Runs `script` = [(action_name, reward, terminated, truncated, info_subset)]."""
    env = gym.make(f"vlmrl_fast/{env_id}", **kwargs).unwrapped
    obs, info = env.reset(seed=0, options={"state": state})
    assert obs.shape == (300, 300, 3) and obs.dtype == np.uint8
    names = env.action_names
    for i, (name, reward, terminated, truncated, expected) in enumerate(script):
        obs, r, te, tr, info = env.step(names.index(name))
        assert (r, te, tr) == (reward, terminated, truncated), f"step {i} ({name}): {(r, te, tr)}"
        for key, value in expected.items():
            assert info[key] == value, f"step {i} ({name}): info[{key!r}] = {info[key]!r}"
        assert isinstance(info["text"], str)
    return env, info


# ---- NumberLine ---------------------------------------------------------------


def test_numberline_reaches_the_goal():
    env, info = play(
        "NumberLine-v0",
        {"current": 2, "target": 4},
        [
            ("+", 0, False, False, {"Current": 3, "Target": 4}),
            ("+", 1, True, False, {"Current": 4, "Target": 4}),
        ],
    )
    assert info["text"] == "Target number: 4. Current number: 4."


def test_numberline_moving_away_and_the_step_limit():
    # At 0 "-" does not move: the distance does not shrink, -1 each step;
    # after 2 * max_position = 10 steps the episode is truncated.
    script = [("-", -1, False, False, {"Current": 0})] * 9 + [("-", -1, False, True, {"Current": 0})]
    play("NumberLine-v0", {"current": 0, "target": 5}, script)
    play("NumberLine-v0", {"current": 3, "target": 1}, [("+", -1, False, False, {"Current": 4})])


def test_numberline_reset_info_and_text():
    env = gym.make("vlmrl_fast/NumberLine-v0").unwrapped
    _, info = env.reset(options={"state": {"current": 1, "target": 3}})
    assert info == {"Target": 3, "Current": 1, "text": "Target number: 3. Current number: 1."}
    assert env.action_names == ["-", "+"]


# ---- EZPoints -------------------------------------------------------------------

EZ = {"cards": ["H5", "S7"]}


def test_ezpoints_solved_formula():
    _, info = play(
        "EZPoints-v0",
        EZ,
        [
            ("5", 0, False, False, {"Formula": [5]}),
            ("+", 0, False, False, {"Formula": [5, "+"]}),
            ("7", 0, False, False, {"Formula": [5, "+", 7]}),
            ("=", 10, True, False, {"Formula": [5, "+", 7], "Cards": ["H5", "S7"], "Numbers": [5, 7]}),
        ],
    )
    assert info["text"] == "Cards: H5, S7. Numbers: 5, 7. Current formula: 5+7"


def test_ezpoints_wrong_result_unused_card_and_reuse():
    play("EZPoints-v0", EZ, [("5", 0, False, False, {}), ("*", 0, False, False, {}), ("7", 0, False, False, {}), ("=", -1, True, False, {})])
    play("EZPoints-v0", EZ, [("5", 0, False, False, {}), ("=", -1, True, False, {})])
    play(
        "EZPoints-v0",
        EZ,
        [("5", 0, False, False, {}), ("+", 0, False, False, {}), ("5", -1, False, False, {"Formula": [5, "+", " "]})],
    )
    # A number no card shows is refused the same way.
    play("EZPoints-v0", EZ, [("9", -1, False, False, {"Formula": [" "]})])


def test_ezpoints_too_long_formula_truncates():
    script = [("+", 0, False, False, {})] * 6 + [("+", -1, False, True, {"Formula": ["+"] * 6})]
    play("EZPoints-v0", EZ, script)


def test_ezpoints_action_names():
    env = gym.make("vlmrl_fast/EZPoints-v0").unwrapped
    assert env.action_names == [str(i) for i in range(1, 11)] + ["+", "*", "="]


# ---- Points24 -------------------------------------------------------------------

P24 = {"cards": ["H8", "S3", "D8", "C3"]}


def test_points24_exact_arithmetic_8_over_3_minus_8_over_3():
    tokens = ["8", "/", "(", "3", "-", "8", "/", "3", ")"]
    script = [(t, 0, False, False, {}) for t in tokens] + [("=", 10, True, False, {"Formula": [8, "/", "(", 3, "-", 8, "/", 3, ")"]})]
    play("Points24-v0", P24, script)


def test_points24_solved_wrong_and_unused_cards():
    state = {"cards": ["HK", "S2", "D3", "CA"]}  # numbers 10, 2, 3, 1
    ok = ["10", "*", "2", "+", "3", "+", "1"]
    play("Points24-v0", state, [(t, 0, False, False, {}) for t in ok] + [("=", 10, True, False, {"Numbers": [10, 2, 3, 1]})])
    wrong = ["10", "+", "2", "+", "3", "+", "1"]
    play("Points24-v0", state, [(t, 0, False, False, {}) for t in wrong] + [("=", -1, True, False, {})])
    # 3 * 8 is 24, but two cards were not used.
    play("Points24-v0", P24, [("3", 0, False, False, {}), ("*", 0, False, False, {}), ("8", 0, False, False, {}), ("=", -1, True, False, {})])
    # An invalid formula (dangling operator) is -1 too.
    play("Points24-v0", P24, [("8", 0, False, False, {}), ("+", 0, False, False, {}), ("=", -1, True, False, {})])


def test_points24_too_long_formula_truncates():
    script = [("(", 0, False, False, {})] * 21 + [("(", -1, False, True, {})]
    play("Points24-v0", P24, script)


def test_points24_face_cards_not_ten():
    env = gym.make("vlmrl_fast/Points24-v0", treat_face_cards_as_10=False).unwrapped
    assert env.action_names == [str(i) for i in range(1, 14)] + ["+", "-", "*", "/", "(", ")", "="]
    _, info = env.reset(options={"state": {"cards": ["HK", "SQ", "DJ", "CT"]}})
    assert info["Numbers"] == [13, 12, 11, 10]


# ---- Blackjack ------------------------------------------------------------------


def test_blackjack_bust():
    state = {"player": ["H9", "S7"], "dealer": ["DK", "C7"], "deck": ["SK"]}
    play("Blackjack-v0", state, [("hit", -1, True, False, {"Player Card": ["H9", "S7", "SK"], "Dealer Card": ["DK", "C7"]})])


def test_blackjack_hit_then_stand_with_dealer_bust():
    state = {"player": ["H2", "S3"], "dealer": ["DK", "C6"], "deck": ["C9", "S9"]}
    _, info = play(
        "Blackjack-v0",
        state,
        [
            ("hit", 0, False, False, {"Player Card": ["H2", "S3", "C9"], "Dealer Card": ["DK"]}),
            ("stand", 1, True, False, {"Dealer Card": ["DK", "C6", "S9"]}),
        ],
    )


def test_blackjack_draw_and_soft_hand_loss():
    play("Blackjack-v0", {"player": ["HT", "S7"], "dealer": ["DK", "C7"]}, [("stand", 0, True, False, {})])
    # Ace + 6 is a soft 17; the dealer's 18 wins.
    play("Blackjack-v0", {"player": ["HA", "S6"], "dealer": ["DK", "C8"]}, [("stand", -1, True, False, {})])


def test_blackjack_hidden_card_in_text_and_image():
    env = gym.make("vlmrl_fast/Blackjack-v0").unwrapped
    obs_a, info = env.reset(options={"state": {"player": ["H5", "S9"], "dealer": ["DK", "C7"]}})
    assert info["Dealer Card"] == ["DK"] and "face-down" in info["text"]
    obs_b, _ = env.reset(options={"state": {"player": ["H5", "S9"], "dealer": ["DK", "HA"]}})
    assert np.array_equal(obs_a, obs_b), "the dealer's second card is face down"
    obs_c, _ = env.reset(options={"state": {"player": ["H5", "S8"], "dealer": ["DK", "HA"]}})
    assert not np.array_equal(obs_a, obs_c)


# ---- images ---------------------------------------------------------------------


def test_images_show_the_state():
    nl = gym.make("vlmrl_fast/NumberLine-v0").unwrapped
    a, _ = nl.reset(options={"state": {"current": 1, "target": 3}})
    b, _ = nl.reset(options={"state": {"current": 2, "target": 3}})
    assert (a[0, 0] == 255).all(), "NumberLine is drawn on white"
    diff_rows = np.flatnonzero((a != b).any(axis=(1, 2)))
    assert diff_rows.min() >= 170, "only the 'Current' line changes"
    p24 = gym.make("vlmrl_fast/Points24-v0").unwrapped
    c, _ = p24.reset(options={"state": {"cards": ["H5", "S3", "DQ", "CA"]}})
    assert tuple(c[0, 0]) == (0x35, 0x65, 0x4D), "the card table is green"
    red = (c[..., 0] > 150) & (c[..., 1] < 60) & (c[..., 2] < 80)
    assert red[:, :72].any() and not red[:, 80:144].any(), "hearts are red, spades are not"


# ---- bad states -----------------------------------------------------------------


@pytest.mark.parametrize(
    "env_id,state,needle",
    [
        ("EZPoints-v0", {"cards": ["Z9", "H5"]}, "Z9"),
        ("Points24-v0", {"cards": ["H5", "S3"]}, "4 cards"),
        ("NumberLine-v0", {"current": 9, "target": 1}, "9"),
        ("NumberLine-v0", {"current": 1}, "target"),
        ("Blackjack-v0", {"player": ["H5"], "dealer": ["DK", "C7"]}, "at least 2"),
        ("Blackjack-v0", {"player": ["H5", "S5"], "dealer": ["DK", "C7"], "deck": ["X1"]}, "X1"),
        ("Points24-v0", {"cards": "H5 S3 D4 C2"}, "list"),
        ("Points24-v0", {"hand": ["H5"]}, "hand"),
    ],
)
def test_malformed_states_raise_value_errors(env_id, state, needle):
    env = gym.make(f"vlmrl_fast/{env_id}").unwrapped
    with pytest.raises(InvalidStateError, match=needle) as err:
        env.reset(options={"state": state})
    assert isinstance(err.value, ValueError)
    assert "env 0" in str(err.value)


def test_out_of_range_action_names_env_and_value():
    env = gym.make("vlmrl_fast/Blackjack-v0").unwrapped
    env.reset(seed=1)
    with pytest.raises(InvalidActionError, match=r"env 0: action 2 is out of range"):
        env.step(2)
    with pytest.raises(TypeError):
        env.step(1.5)
