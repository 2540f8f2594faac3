"""Text corpus that the embedded tiny VLM's tokenizer is trained on.

The tokenizer of the tiny model is trained offline on the texts the agent will actually read and
write: the environments' prompts and CoT answers. Words and JSON pieces of those texts then become
single tokens, which keeps prompts short and answers a handful of tokens long (fast generation on
a CPU). The texts come from `vlmrl_fast.prompts.render` / `vlmrl_fast.prompts.answer` when the
prompt templates are available; sample texts written here stand in for them otherwise, so the
builder works at every stage of the project.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from collections.abc import Iterator

# Action vocabularies of the engine's games (action-index order of the envs).
_NUMBERLINE_ACTIONS = ["-", "+"]
_BLACKJACK_ACTIONS = ["stand", "hit"]
_POINTS_ACTIONS = [str(i) for i in range(1, 11)] + ["+", "-", "*", "/", "(", ")", "="]
_RANKS = ["A", "2", "3", "4", "5", "6", "7", "8", "9", "T", "J", "Q", "K"]
_SUITS = ["C", "D", "H", "S"]


def _numberline_states() -> Iterator[dict]:
    for target, current in itertools.product(range(6), range(6)):
        yield {"Target": target, "Current": current}


def _numberline_text(state: dict) -> str:
    """NumberLine's info["text"] (the engine's one-line description of the image)."""
    return f"Target number: {state['Target']}. Current number: {state['Current']}."


def _fallback_numberline_prompt(cot: bool) -> str:
    fmt = (
        '{"current number": x, "target number": x, "thoughts": "first read out the current and '
        'target number, then think about which action to choose", "action": "-" or "+"}'
        if cot
        else '{"action": "-" or "+"}'
    )
    return (
        "You are playing a game called number line. The image shows a target number and a "
        "current number. Your goal is to move the current number to the target number by "
        'choosing the action "+" (add one) or "-" (subtract one). Your answer must be valid '
        f"json in the following format: {fmt}"
    )


def _fallback_numberline_answer(state: dict, action: str, cot: bool) -> str:
    if not cot:
        return json.dumps({"action": action})
    cur, tgt = state["Current"], state["Target"]
    rel = "smaller than" if cur < tgt else ("larger than" if cur > tgt else "equal to")
    return json.dumps(
        {
            "current number": cur,
            "target number": tgt,
            "thoughts": f"The current number is {rel} the target number, so I choose {action}.",
            "action": action,
        }
    )


def _fallback_other_texts() -> list[str]:
    """Sample prompts/answers of the card games and ALFWorld (vocabulary coverage only)."""
    texts = []
    cards = [s + r for s in _SUITS for r in _RANKS]
    texts.append(
        "You are a blackjack player. You see the dealer's face-up card and your own cards. "
        'Choose "stand" or "hit". Your answer must be valid json in the following format: '
        '{"thoughts": "think about your total and the dealer card", "action": "stand" or "hit"}'
    )
    for action in _BLACKJACK_ACTIONS:
        texts.append(json.dumps({"thoughts": f"My total is 15 and the dealer shows 10, so I {action}.", "action": action}))
    for target in (12, 24):
        texts.append(
            f"You are an expert card game player. Build a formula that evaluates to {target} with "
            "the numbers of the cards, each card used once. Face cards J, Q and K count as 10. "
            'Your answer must be valid json in the following format: {"cards": [x, y], '
            '"current formula": "...", "thoughts": "which number or operator comes next", '
            '"action": "1" to "10", "+", "-", "*", "/", "(", ")" or "="}'
        )
    for i, action in enumerate(_POINTS_ACTIONS):
        hand = [cards[(7 * i + k) % len(cards)] for k in range(4)]
        texts.append(
            json.dumps(
                {
                    "cards": hand,
                    "current formula": "10+",
                    "thoughts": f"The next token of the formula is {action}.",
                    "action": action,
                }
            )
        )
    texts.append(
        "You are in the middle of a room. Your task is to: put a clean apple in the fridge. "
        "Your admissible actions are: go to countertop 1, take apple 1 from countertop 1, open "
        "fridge 1, clean apple 1 with sinkbasin 1, look, inventory. Your answer must be valid json: "
        '{"thoughts": "plan the next step", "action": "an admissible action"}'
    )
    return texts


def _template_texts(render, answer, plan_thoughts=None) -> list[str]:
    """Prompts and answers of every game from the real templates (sample states)."""
    texts: list[str] = []
    for cot in (True, False):
        for state in _numberline_states():
            prompt = render("NumberLine-v0", state, cot=cot)
            texts.append(prompt)
            # The trainer's state_text option appends the env's description of the image.
            texts.append(f"{prompt}\nThe image shows: {_numberline_text(state)}")
            texts.extend(answer("NumberLine-v0", state, a, cot=cot) for a in _NUMBERLINE_ACTIONS)
    cards = [s + r for s in _SUITS for r in _RANKS]
    samples = []
    for i in range(12):
        hand = [cards[(11 * i + 7 * k) % len(cards)] for k in range(4)]
        numbers = [min(_RANKS.index(c[1]) + 1, 10) for c in hand]
        formula = [] if i % 3 == 0 else [numbers[0], "+"] if i % 3 == 1 else ["(", numbers[0], "*"]
        samples.append(("Points24-v0", {"Cards": hand, "Numbers": numbers, "Formula": formula}, _POINTS_ACTIONS))
        samples.append(("EZPoints-v0", {"Cards": hand[:2], "Numbers": numbers[:2], "Formula": formula},
                        _POINTS_ACTIONS[:10] + ["+", "*", "="]))
        samples.append(("Blackjack-v0", {"Player Card": hand[:2 + i % 2], "Dealer Card": hand[3:]},
                        _BLACKJACK_ACTIONS))
    for env_id, info, actions in samples:
        for cot in (True, False):
            try:
                texts.append(render(env_id, info, cot=cot))
                texts.extend(answer(env_id, info, a, cot=cot) for a in actions[:: max(1, len(actions) // 4)])
            except ValueError:  # a template that wants other fields: its vocabulary is optional here
                break
    if plan_thoughts is not None:  # the expert's plan in the thoughts (sft_thoughts = "plan")
        for k, (env_id, info, actions) in enumerate(s for s in samples if s[0] != "Blackjack-v0"):
            plan = "" if k % 4 == 3 else ("10+2" if env_id == "EZPoints-v0" else "(10-4)*(3+1)")
            try:
                thoughts = plan_thoughts(env_id, info, actions[k % len(actions)], plan)
                texts.append(answer(env_id, info, actions[k % len(actions)], thoughts=thoughts))
            except ValueError:
                break
    return texts


@functools.lru_cache(maxsize=1)
def _alfworld_texts() -> tuple[str, ...]:
    """Prompts and answers of ALFWorld-v0 from seeded play of the real engine (expert-led and random, the
    answers' thoughts stating the state): its households' names, commands and observations. Without them
    the byte-level BPE codes an ALFWorld prompt in ~530 tokens (the card games' in 3-41); with them ~65."""
    from vlmrl_fast.sft import record_play

    texts: list[str] = []
    for seed, actions, thoughts in ((1, "expert", "state"), (2, "random", "template")):
        for cot in (True, False):
            record = record_play("ALFWorld-v0", 32, seed=seed, salt=0xC0, actions=actions, cot=cot,
                                 state_text=False, thoughts=thoughts, answer_actions="played")
            try:
                for _ in range(12):
                    rows, _ = next(record)
                    texts += [r.prompt for r in rows] + [r.answer for r in rows]
            finally:
                record.close()
    return tuple(texts)


def corpus(repeat: int = 3) -> list[str]:
    """The tokenizer training corpus: every prompt and CoT answer of NumberLine plus samples of
    the other games, from the real templates (`vlmrl_fast.prompts`) when they are importable, and
    ALFWorld-v0's from its engine."""
    try:
        from vlmrl_fast import prompts  # noqa: PLC0415 (lands with the parser branch)

        texts = _template_texts(prompts.render, prompts.answer, getattr(prompts, "plan_thoughts", None))
        texts += _alfworld_texts()
    except (ImportError, AttributeError):
        texts = []
        for cot in (True, False):
            for state in _numberline_states():
                texts.append(_fallback_numberline_prompt(cot))
                texts.extend(_fallback_numberline_answer(state, a, cot) for a in _NUMBERLINE_ACTIONS)
    texts.extend(_fallback_other_texts())
    return texts * repeat


def corpus_digest(texts: list[str]) -> str:
    """A short hash of the corpus: part of the tiny model's cache key, so new templates rebuild it."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:10]
