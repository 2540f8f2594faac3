"""Prompt templates: env info -> the user message, and truthful JSON answers.

The templates are data, one TOML file per environment in ``envs/prompts/``
of the repository. They are compiled into the native module
(``_core.prompt_templates()``), so the same text ships inside every wheel and
needs no data-file lookup; a template edited in the repository takes effect
after the next build (``tests/test_prompts.py`` checks that the two agree).

Placeholders are ``$name`` (``string.Template``), so the JSON braces of the
answer formats need no escaping. The fields each env offers are computed from
its info dict by this module and listed at the top of each TOML file.
"""

from __future__ import annotations

import json
import re

import numpy as np
import string
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from vlmrl_fast import _core

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["ENV_IDS", "template", "action_names", "render", "answer", "PromptError"]

ENV_IDS = ("NumberLine-v0", "EZPoints-v0", "Points24-v0", "Blackjack-v0", "ALFWorld-v0")


class PromptError(ValueError):
    """An unknown env id, or an info dict that lacks what the template needs."""


@lru_cache(maxsize=None)
def _templates() -> dict[str, dict[str, Any]]:
    out = {}
    for env_id, text in _core.prompt_templates().items():
        t = tomllib.loads(text)
        for section in ("cot_answer", "action_only_answer"):
            if list(t[section])[-1] != "action":
                raise PromptError(f"{env_id}: the last key of [{section}] must be 'action'")
        out[env_id] = t
    return out


# Templates of Python envs (``MODULE:ENV_ID``, `vlmrl_fast.byo`), read from --prompt-template files, and
# their action names (from the env, else the template's `actions`).
_USER: dict[str, dict[str, Any]] = {}
_USER_ACTIONS: dict[str, list[str]] = {}
_REQUIRED = ("task", "cot_format", "action_only_format", "default_thoughts", "cot_answer", "action_only_answer")


def load_template_file(env_key: str, path: str) -> dict[str, Any]:
    """Read the TOML template `path` (the schema of envs/prompts/*.toml; `actions` optional) for the Python
    env `env_key`. A missing file, bad TOML or a missing section is a one-line PromptError naming it."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise PromptError(f"prompt template {path}: no such file")
    try:
        t = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise PromptError(f"prompt template {path}: not valid TOML ({e})") from None
    for name in _REQUIRED:
        if name not in t:
            raise PromptError(f"prompt template {path}: missing {name!r}")
    for section in ("cot_answer", "action_only_answer"):
        if not isinstance(t[section], dict) or not t[section] or list(t[section])[-1] != "action":
            raise PromptError(f"prompt template {path}: the last key of [{section}] must be 'action'")
    if "actions" in t and (not isinstance(t["actions"], list) or not all(isinstance(a, str) for a in t["actions"])):
        raise PromptError(f"prompt template {path}: 'actions' must be a list of strings")
    t["_path"] = str(path)
    _USER[env_key] = t
    return t


def template_actions(env_key: str) -> list[str]:
    """The `actions` list of a Python env's template (empty when it has none)."""
    return list(_USER[env_key].get("actions", [])) if env_key in _USER else []


def set_template_actions(env_key: str, names: list[str]) -> None:
    """The action names of a Python env (set by `vlmrl_fast.byo.PythonVectorEnv`)."""
    _USER_ACTIONS[env_key] = list(names)


def _table(key: str) -> dict[str, Any]:
    return _USER[key] if key in _USER else _templates()[key]


def _user_names(key: str, info: Mapping[str, Any]) -> list[str]:
    """A Python env's action names: info["admissible_commands"] where the env gives them per step."""
    cmds = info.get("admissible_commands")
    if cmds is not None and not isinstance(cmds, str):
        return [str(c) for c in cmds]
    return _USER_ACTIONS.get(key) or template_actions(key)


def _user_fields(key: str, info: Mapping[str, Any]) -> dict[str, Any]:
    """A Python env's fields: every info value (lists joined with ", ") and $action_choices."""
    names = _user_names(key, info)
    f: dict[str, Any] = {}
    for k, v in info.items():
        if not isinstance(k, str) or k.startswith("_"):
            continue
        if isinstance(v, np.ndarray):
            v = v.tolist()
        f[k] = ", ".join(str(x) for x in v) if isinstance(v, (list, tuple)) else v
    f["action_choices"] = " or ".join(json.dumps(n) for n in names)
    return f


def _env_key(env_id: str) -> str:
    """Accept "NumberLine-v0" as well as "vlmrl_fast/NumberLine-v0"."""
    if env_id in _USER:
        return env_id
    key = env_id.rsplit("/", 1)[-1]
    if key not in _templates():
        raise PromptError(f"no prompt template for env {env_id!r}; known: {', '.join(ENV_IDS)}")
    return key


def template(env_id: str) -> dict[str, Any]:
    """The parsed TOML template of ``env_id`` (a fresh copy)."""
    return json.loads(json.dumps(_table(_env_key(env_id))))


def action_names(env_id: str, info: Mapping[str, Any] | None = None) -> list[str]:
    """The action names of ``env_id``: the template's list, or for ALFWorld
    the admissible commands of ``info``."""
    key = _env_key(env_id)
    if key in _USER:
        return _user_names(key, info or {})
    if key == "ALFWorld-v0":
        cmds = _need(info or {}, "admissible_commands", key)
        if isinstance(cmds, str) or not all(isinstance(c, str) for c in cmds):
            raise PromptError(f"{key}: info['admissible_commands'] must be a list of str")
        return list(cmds)
    return list(_templates()[key]["actions"])


def _need(info: Mapping[str, Any], name: str, env_id: str) -> Any:
    try:
        return info[name]
    except (KeyError, TypeError):
        raise PromptError(f"{env_id}: info lacks {name!r} (has {sorted(info) if isinstance(info, Mapping) else info!r})") from None


def _rank(card: Any) -> str:
    """"H5" -> "5", "SQ" -> "Q", "HT" -> "10"; anything else as given."""
    s = str(card)
    rank = s[1:] if len(s) >= 2 and s[0].upper() in "SHDC" else s
    return "10" if rank.upper() == "T" else rank


def _cards(x: Any) -> list[str]:
    return [_rank(c) for c in ([x] if isinstance(x, str) else list(x))]


def _blackjack_values(ranks: Sequence[str]) -> list[int]:
    """What each card counts: J, Q, K 10; the first ace 11 while that keeps the hand within 21, else 1."""
    values = [1 if r.upper() == "A" else 10 if r.upper() in ("J", "Q", "K") else int(r) for r in ranks]
    if 1 in values and sum(values) + 10 <= 21:
        values[values.index(1)] = 11
    return values


def _blackjack_total(ranks: Sequence[str]) -> int:
    return sum(_blackjack_values(ranks))


def _blackjack_sum_text(ranks: Sequence[str]) -> str:
    """The total worked out card by card: "10 + 3 + 7 = 20"."""
    values = _blackjack_values(ranks)
    return f"{' + '.join(str(v) for v in values)} = {sum(values)}"


_TASK_RE = re.compile(r"Your task is to:\s*([^\n]*)")


def _fields(key: str, info: Mapping[str, Any]) -> dict[str, Any]:
    """The template fields of one env, computed from its info dict."""
    if key in _USER:
        return _user_fields(key, info)
    names = action_names(key, info)
    f: dict[str, Any] = {"action_choices": " or ".join(json.dumps(n) for n in names)}
    if key == "NumberLine-v0":
        f["current"] = int(_need(info, "Current", key))
        f["target"] = int(_need(info, "Target", key))
    elif key in ("EZPoints-v0", "Points24-v0"):
        f["cards"] = _cards(_need(info, "Cards", key))
        f["cards_text"] = ", ".join(f["cards"])
        numbers = info.get("Numbers")
        f["numbers_text"] = ", ".join(str(n) for n in numbers) if numbers is not None else "unknown"
        f["sorted_numbers_text"] = ", ".join(str(n) for n in sorted(numbers)) if numbers is not None else "unknown"
        f["formula"] = "".join(str(t) for t in _need(info, "Formula", key))
        f["target"] = _templates()[key]["target"]
    elif key == "Blackjack-v0":
        player = _cards(_need(info, "Player Card", key))
        dealer = _cards(_need(info, "Dealer Card", key))
        f["player_cards_text"] = ", ".join(player)
        f["dealer_card"] = dealer[0] if dealer else "nothing"
        try:
            f["player_total"] = _blackjack_total(player)
            f["player_sum_text"] = _blackjack_sum_text(player)
        except ValueError:
            f["player_total"] = f["player_sum_text"] = "unknown"
    elif key == "ALFWorld-v0":
        text = str(info.get("text", ""))
        task = info.get("task")
        if task is None:
            m = _TASK_RE.search(text)
            task = m.group(1) if m else "see the observation."
        f["task"] = str(task).strip()
        f["observation"] = " ".join(text.split()) or "nothing yet."
        f["location"] = str(info.get("location", "unknown"))
        f["holding"] = str(info.get("holding", "unknown"))
    return f


_HISTORY_HEADER = "Your last steps in this episode, oldest first:"
_HISTORY_STEP = '$step. You chose "$action". Then: $feedback'


def _history_block(t: Mapping[str, Any], history: Sequence[tuple[str, str]]) -> str:
    """The template's history section (``history_header``, then ``history_step`` per (action, feedback)
    step, oldest first; defaults for templates without them)."""
    lines = [t.get("history_header", _HISTORY_HEADER)]
    step = string.Template(t.get("history_step", _HISTORY_STEP))
    for i, (action, feedback) in enumerate(history, 1):
        lines.append(step.substitute(step=i, action=action, feedback=" ".join(str(feedback).split())))
    return "\n".join(lines)


def render(env_id: str, info: Mapping[str, Any], cot: bool = True,
           history: Sequence[tuple[str, str]] = ()) -> str:
    """The user message for one step of ``env_id``: task description, the
    state from ``info`` where the template uses it, the episode's last steps
    when ``history`` holds any ((action name, the env's text feedback) pairs,
    oldest first; see `_history_block`), and the JSON answer format (with
    chain-of-thought fields when ``cot``, else action only). The model's chat
    template is applied later by the trainer."""
    key = _env_key(env_id)
    t = _table(key)
    fields = _fields(key, info)
    fmt = t["cot_format"] if cot else t["action_only_format"]
    try:
        parts = [string.Template(t["task"]).substitute(fields)]
        if history:
            parts.append(_history_block(t, history))
        parts.append(string.Template(fmt).substitute(fields))
        return "\n\n".join(parts)
    except KeyError as e:  # a template placeholder this module does not fill
        raise PromptError(f"{key}: template uses ${e.args[0]}, which is not a field of this env"
                          + (f" (its info has {sorted(fields)})" if key in _USER else "")) from None


PLAN_VARIANTS = ("plan", "sorted_plan", "pattern_plan")


def plan_thoughts(env_id: str, info: Mapping[str, Any], action_name: str, plan: str | None,
                  variant: str = "plan") -> str | None:
    """Thoughts that state the expert's reasoning and the action as its next step: the template's
    ``plan_thoughts`` (``no_plan_thoughts`` for ``plan == ""``). The formula games' line names `plan`, the
    expert's whole solution ("" when the deal has none); Blackjack's works the total out card by card (its
    expert has no plan: `plan` None). `variant` "sorted_plan" takes the template's ``sorted_plan_thoughts``
    / ``sorted_no_plan_thoughts`` where it has them (the formula games: the card values in ascending order
    before the solution, so that every order of the same values leads to the same text; the solver's
    solution depends on the values only), its plan lines elsewhere; "pattern_plan" takes the same lines (its
    `plan` comes from `vlmrl_fast.patterns` instead of the env's solver). None where the template has no such
    line, or its line needs a plan and `plan` is None (the caller falls back to the default thoughts)."""
    if variant not in PLAN_VARIANTS:
        raise PromptError(f"plan thoughts variant must be one of {', '.join(PLAN_VARIANTS)}, got {variant!r}")
    key = _env_key(env_id)
    t = _table(key)
    name = "no_plan_thoughts" if plan == "" else "plan_thoughts"
    line = t.get(f"sorted_{name}") if variant in ("sorted_plan", "pattern_plan") else None
    line = line if line is not None else t.get(name)
    if line is None or (plan is None and "$plan" in line):
        return None
    fields = dict(_fields(key, info), action=action_name, plan=plan)
    try:
        return string.Template(line).substitute(fields)
    except KeyError as e:
        raise PromptError(f"{key}: plan thoughts use ${e.args[0]}, which is not a field of this env") from None


def answer(env_id: str, info: Mapping[str, Any], action_name: str, cot: bool = True, thoughts: str | None = None) -> str:
    """A JSON answer in the template's format (for SFT data): the state fields
    are filled truthfully from ``info``, ``"action"`` is ``action_name`` (which
    must be one of the env's action names) and ``"thoughts"`` is ``thoughts``
    or the template's neutral default. ``parse_actions`` maps it back to
    ``action_name``."""
    key = _env_key(env_id)
    t = _table(key)
    names = action_names(key, info)
    if action_name not in names:
        raise PromptError(f"{key}: action {action_name!r} is not among the action names {names}")
    fields = _fields(key, info)
    fields["action"] = action_name
    try:
        fields["thoughts"] = (
            string.Template(t["default_thoughts"]).substitute(fields) if thoughts is None else str(thoughts)
        )
    except KeyError as e:
        raise PromptError(f"{key}: default_thoughts uses ${e.args[0]}, which is not a field of this env"
                          + (f" (its info has {sorted(fields)})" if key in _USER else "")) from None
    out = {}
    for k, v in t["cot_answer" if cot else "action_only_answer"].items():
        name = v[1:] if v.startswith("$") else None
        try:
            out[k] = fields[name] if name in fields else string.Template(v).substitute(fields)
        except KeyError as e:
            raise PromptError(f"{key}: answer field {k!r} uses ${e.args[0]}, which is not a field of this env"
                              + (f" (its info has {sorted(fields)})" if key in _USER else "")) from None
    return json.dumps(out, ensure_ascii=False)
