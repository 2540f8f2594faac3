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


def _env_key(env_id: str) -> str:
    """Accept "NumberLine-v0" as well as "vlmrl_fast/NumberLine-v0"."""
    key = env_id.rsplit("/", 1)[-1]
    if key not in _templates():
        raise PromptError(f"no prompt template for env {env_id!r}; known: {', '.join(ENV_IDS)}")
    return key


def template(env_id: str) -> dict[str, Any]:
    """The parsed TOML template of ``env_id`` (a fresh copy)."""
    return json.loads(json.dumps(_templates()[_env_key(env_id)]))


def action_names(env_id: str, info: Mapping[str, Any] | None = None) -> list[str]:
    """The action names of ``env_id``: the template's list, or for ALFWorld
    the admissible commands of ``info``."""
    key = _env_key(env_id)
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


def _blackjack_total(ranks: Sequence[str]) -> int:
    values = [1 if r.upper() == "A" else 10 if r.upper() in ("J", "Q", "K") else int(r) for r in ranks]
    total = sum(values)
    return total + 10 if 1 in values and total + 10 <= 21 else total


_TASK_RE = re.compile(r"Your task is to:\s*([^\n]*)")


def _fields(key: str, info: Mapping[str, Any]) -> dict[str, Any]:
    """The template fields of one env, computed from its info dict."""
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
        f["formula"] = "".join(str(t) for t in _need(info, "Formula", key))
        f["target"] = _templates()[key]["target"]
    elif key == "Blackjack-v0":
        player = _cards(_need(info, "Player Card", key))
        dealer = _cards(_need(info, "Dealer Card", key))
        f["player_cards_text"] = ", ".join(player)
        f["dealer_card"] = dealer[0] if dealer else "nothing"
        try:
            f["player_total"] = _blackjack_total(player)
        except ValueError:
            f["player_total"] = "unknown"
    elif key == "ALFWorld-v0":
        text = str(info.get("text", ""))
        task = info.get("task")
        if task is None:
            m = _TASK_RE.search(text)
            task = m.group(1) if m else "see the observation."
        f["task"] = str(task).strip()
        f["observation"] = " ".join(text.split()) or "nothing yet."
    return f


def render(env_id: str, info: Mapping[str, Any], cot: bool = True) -> str:
    """The user message for one step of ``env_id``: task description, the
    state from ``info`` where the template uses it, and the JSON answer format
    (with chain-of-thought fields when ``cot``, else action only). The model's
    chat template is applied later by the trainer."""
    key = _env_key(env_id)
    t = _templates()[key]
    fields = _fields(key, info)
    fmt = t["cot_format"] if cot else t["action_only_format"]
    try:
        return string.Template(t["task"]).substitute(fields) + "\n\n" + string.Template(fmt).substitute(fields)
    except KeyError as e:  # a template placeholder this module does not fill
        raise PromptError(f"{key}: template uses ${e.args[0]}, which is not a field of this env") from None


def answer(env_id: str, info: Mapping[str, Any], action_name: str, cot: bool = True, thoughts: str | None = None) -> str:
    """A JSON answer in the template's format (for SFT data): the state fields
    are filled truthfully from ``info``, ``"action"`` is ``action_name`` (which
    must be one of the env's action names) and ``"thoughts"`` is ``thoughts``
    or the template's neutral default. ``parse_actions`` maps it back to
    ``action_name``."""
    key = _env_key(env_id)
    t = _templates()[key]
    names = action_names(key, info)
    if action_name not in names:
        raise PromptError(f"{key}: action {action_name!r} is not among the action names {names}")
    fields = _fields(key, info)
    fields["action"] = action_name
    fields["thoughts"] = (
        string.Template(t["default_thoughts"]).substitute(fields) if thoughts is None else str(thoughts)
    )
    out = {}
    for k, v in t["cot_answer" if cot else "action_only_answer"].items():
        name = v[1:] if v.startswith("$") else None
        out[k] = fields[name] if name in fields else string.Template(v).substitute(fields)
    return json.dumps(out, ensure_ascii=False)
