"""ALFWorldTW-v0: the real ALFWorld text engine (the ``alfworld`` package's
TextWorld/PDDL games, as in AlfredTWEnv) behind the same interface as
ALFWorld-v0: observation text, admissible commands, info keys, reward and a
300x300 image drawn by our engine from the text state.

Optional: ``pip install "vlmrl-fast[alfworld]"`` (alfworld, textworld[pddl]).
Games are ``game.tw-pddl`` files: the official ones under ``$ALFWORLD_DATA``
(``alfworld-download``), or any list of paths. Each game folder holds the
``traj_data.json`` that alfworld's handcoded expert reads.

Differences from ALFWorld-v0, by the nature of the engine: the TextWorld
games report only ``won``, so ``goal_condition_success_rate`` is 1.0 when won
and 0.0 otherwise; the admissible commands include ALFWorld's "help".
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from vlmrl_fast import _core
from vlmrl_fast._core import EnvArgumentError, InvalidActionError

NOTHING_HAPPENS = "Nothing happens."
_LIST_SPLIT = re.compile(r", and |, ")


def _require_alfworld():
    try:
        import textworld
        from alfworld.agents.environment.alfred_tw_env import (
            AlfredDemangler,
            AlfredExpert,
            AlfredExpertType,
            AlfredInfos,
        )
        from textworld.envs.pddl import PddlEnv
    except ImportError as e:  # pragma: no cover - depends on the optional extra
        raise ImportError(
            f"ALFWorldTW-v0 needs the optional extra: pip install 'vlmrl-fast[alfworld]' ({e})"
        ) from e
    return textworld, PddlEnv, AlfredDemangler, AlfredInfos, AlfredExpert, AlfredExpertType


def find_games(data_path: str | None = None, split: str = "train") -> list[str]:
    """The solvable ``game.tw-pddl`` files under ``data_path`` (default
    ``$ALFWORLD_DATA/json_2.1.1/<split>``), sorted."""
    root = data_path or os.path.join(os.environ.get("ALFWORLD_DATA", ""), "json_2.1.1", split)
    games = []
    for path in sorted(glob.glob(os.path.join(root, "**", "game.tw-pddl"), recursive=True)):
        if "movable" in path or "Sliced" in path:
            continue  # not supported by ALFWorld's text engine either
        with open(path) as f:
            if json.load(f).get("solvable", False):
                games.append(path)
    return games


def _things(text: str) -> list[str]:
    """"a apple 1, and a knife 2" -> ["apple 1", "knife 2"]; "nothing" -> []."""
    if text == "nothing":
        return []
    return [t.strip().removeprefix("a ") for t in _LIST_SPLIT.split(text) if t.strip()]


class _View:
    """What the image shows, followed from the feedback text alone."""

    def __init__(self, intro: str) -> None:
        m = re.search(r"you see (.*?)\.\s*(?:\n|$)", intro)
        self.place = "the middle of the room"  # info["location"]; the image's line is self.location
        self.location = f"At: {self.place}"
        self.items = _things(m.group(1)) if m else []
        self.held: str | None = None
        m = re.search(r"Your task is to: (.*)", intro)
        self.task = m.group(1).strip() if m else ""

    def see(self, feedback: str) -> None:
        if m := re.match(r"You (?:arrive at|open the) (.+?)\. (.*)", feedback, re.S):
            place, rest = m.groups()
            state = " (closed)" if "is closed" in rest else " (open)" if "is open" in rest else ""
            self.place, self.location = place, f"At: {place}{state}"
            seen = re.search(r"you see (.*)\.$", rest)
            self.items = _things(seen.group(1)) if seen else []
        elif m := re.match(r"You close the (.+)\.$", feedback):
            self.place, self.location, self.items = m.group(1), f"At: {m.group(1)} (closed)", []
        elif m := re.match(r"You pick up the (.+?) from the", feedback):
            self.held = m.group(1)
            self.items = [i for i in self.items if i != self.held]
        elif m := re.match(r"You (?:move|put) the (.+?) (?:to|in|on) the", feedback):
            self.items.append(m.group(1))
            self.held = None


class ALFWorldTWEnv(gymnasium.Env):
    """One ALFWorld TextWorld game at a time (a random one of ``game_files``
    per reset, or ``options={"game": path}``). Actions: the index of an
    admissible command, or -1 for an answer that named none ("Nothing
    happens.", state unchanged, reward - 1)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, game_files: list[str] | None = None, data_path: str | None = None,
                 max_steps: int = 50, render_mode: str | None = None) -> None:
        self._tw = _require_alfworld()
        self.game_files = list(game_files) if game_files is not None else find_games(data_path)
        if not self.game_files:
            raise EnvArgumentError(
                "ALFWorldTW-v0 found no games: pass game_files=[...] or set ALFWORLD_DATA "
                "(alfworld-download) or data_path"
            )
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise EnvArgumentError(f"ALFWorldTW-v0: max_steps must be a positive integer, got {max_steps!r}")
        self.max_steps = max_steps
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, (300, 300, 3), np.uint8)
        self.action_space = spaces.Discrete(64, start=-1)
        self._env = None
        self._state: Any = None
        self._frame = np.zeros((300, 300, 3), np.uint8)

    def _load(self, game: str) -> None:
        textworld, PddlEnv, Demangler, Infos, Expert, ExpertType = self._tw
        infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=True, extras=["gamefile"])
        env = Expert(Infos(Demangler(PddlEnv(infos))), ExpertType.HANDCODED)
        env.load(game)
        self._env = env
        traj = os.path.join(os.path.dirname(game), "traj_data.json")
        self._task_type = json.load(open(traj)).get("task_type", "") if os.path.exists(traj) else ""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        game = (options or {}).get("game")
        if game is None:
            game = self.game_files[int(self.np_random.integers(len(self.game_files)))]
        self._load(game)
        self._state = self._env.reset()
        self._feedback = self._state["feedback"]
        self._view = _View(self._feedback)
        self._steps = 0
        return self._observe(), self._info()

    @property
    def admissible_commands(self) -> list[str]:
        return list(self._state["admissible_commands"])

    def _won(self) -> bool:
        return bool(self._state["won"])

    def _info(self) -> dict[str, Any]:
        won = self._won()
        return {
            "text": self._feedback,
            "admissible_commands": self.admissible_commands,
            "won": won,
            "goal_condition_success_rate": float(won),
            "task": self._view.task,
            "task_type": self._task_type,
            "location": self._view.place,
            "holding": self._view.held or "nothing",
            "gamefile": self._state.get("extra.gamefile"),
        }

    def _observe(self) -> np.ndarray:
        v = self._view
        self._frame = _core.alfworld_text_image(v.task, v.location, v.items, v.held, self._feedback)
        return self._frame

    def step(self, action: Any):
        if self._state is None:
            raise EnvArgumentError("ALFWorldTW-v0: call reset() before step()")
        a = int(action)
        cmds = self.admissible_commands
        if not -1 <= a < len(cmds):
            raise InvalidActionError(f"env 0: action {a} is out of range: this env accepts -1..{len(cmds) - 1}")
        self._steps += 1
        if a == -1:
            self._feedback = NOTHING_HAPPENS
        else:
            self._state, _, _ = self._env.step(cmds[a])
            self._feedback = self._state["feedback"]
            self._view.see(self._feedback)
        won = self._won()
        reward = 50.0 * won + float(won) - (1.0 if a == -1 else 0.0)
        truncated = not won and self._steps >= self.max_steps
        return self._observe(), reward, won, truncated, self._info()

    def expert_action(self) -> int:
        """alfworld's handcoded expert's next command, as an index ("look" if
        it has none)."""
        cmds = self.admissible_commands
        plan = self._state.get("extra.expert_plan") or ["look"]
        return cmds.index(plan[0]) if plan[0] in cmds else cmds.index("look")

    def render(self):
        return self._frame.copy()


def register() -> None:
    """Registers ``vlmrl_fast/ALFWorldTW-v0`` with gymnasium (alfworld is
    imported only when the env is made)."""
    env_id = "vlmrl_fast/ALFWorldTW-v0"
    if env_id not in gymnasium.registry:
        gymnasium.register(id=env_id, entry_point="vlmrl_fast.alfworld_tw:ALFWorldTWEnv")
