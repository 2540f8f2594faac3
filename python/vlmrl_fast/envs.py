"""The gymnasium front of the Rust engine.

``import vlmrl_fast`` registers ``vlmrl_fast/<Game>-v0`` for every game, so
``gymnasium.make("vlmrl_fast/Points24-v0")`` gives a single :class:`VlmrlEnv`;
:func:`make_vec` gives a :class:`VlmrlVectorEnv` whose N envs step in Rust
threads with the GIL released, writing observations into one preallocated
buffer.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from vlmrl_fast import _core
from vlmrl_fast._core import ActionTypeError, EnvArgumentError

NAMESPACE = "vlmrl_fast"
OBS_SHAPE = (300, 300, 3)

_MODES = {
    AutoresetMode.NEXT_STEP: "next_step",
    AutoresetMode.SAME_STEP: "same_step",
    AutoresetMode.DISABLED: "disabled",
}


ALFWORLD_TASK_TYPES: tuple[str, ...] = _core.ALFWORLD_TASK_TYPES
"""ALFWorld's six task types (the engine's list), by their ALFWorld names: the values of
`info["task_type"]`, the `task_types` kwarg of ALFWorld-v0 and the `task_type` key of its reset
state."""


def list_envs() -> list[str]:
    """The registered gymnasium ids, e.g. ``"vlmrl_fast/Points24-v0"``."""
    return [f"{NAMESPACE}/{env_id}" for env_id in _core.list_envs()]


def _bare_id(env_id: str) -> str:
    return env_id.removeprefix(f"{NAMESPACE}/")


def _seed(seed: int | None) -> int:
    """A u64 seed: the given one, or fresh OS entropy when None."""
    if seed is None:
        entropy = np.random.SeedSequence().entropy
        assert isinstance(entropy, int)
        return entropy & (2**64 - 1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
        raise EnvArgumentError(f"seed must be an integer in 0..2**64-1, got {seed!r}")
    return int(seed)


def _mode_name(mode: AutoresetMode | str) -> str:
    if isinstance(mode, AutoresetMode):
        return _MODES[mode]
    for enum, name in _MODES.items():
        if str(mode).lower() in (name, enum.value.lower(), enum.name.lower()):
            return name
    raise EnvArgumentError(f"autoreset_mode must be one of {[m.name for m in _MODES]}, got {mode!r}")


class VlmrlEnv(gymnasium.Env):
    """One game as a ``gymnasium.Env`` (300x300x3 uint8 RGB observations).

    ``reset(options={"state": S})`` starts from an explicit state;
    ``expert_action()`` is the built-in expert's next action.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, env_id: str, render_mode: str | None = None, **kwargs: Any) -> None:
        if render_mode not in (None, "rgb_array"):
            raise EnvArgumentError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.env_id = _bare_id(env_id)
        self._core = _core.VecEnv(self.env_id, 1, _seed(None), 1, "disabled", kwargs)
        self._frame = self._core.obs[0]
        self._action = np.zeros(1, dtype=np.int64)
        self.observation_space = spaces.Box(0, 255, OBS_SHAPE, np.uint8)
        self.action_space = spaces.Discrete(len(self._core.action_names(0)))

    @property
    def action_names(self) -> list[str]:
        """The action strings in action-index order."""
        return self._core.action_names(0)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        state = (options or {}).get("state")
        self._core.reset(
            seed=None if seed is None else _seed(seed),
            states=None if state is None else [state],
            with_info=False,
        )
        return self._frame.copy(), self._core.env_info(0)

    def step(self, action: Any):
        if isinstance(action, np.ndarray) and action.shape == ():
            action = action.item()
        if isinstance(action, bool) or not isinstance(action, (int, np.integer)):
            raise ActionTypeError(f"env 0: action must be an integer, got {action!r} ({type(action).__name__})")
        self._action[0] = int(action)
        self._core.step(self._action, with_info=False)
        reward = float(self._core.rewards[0])
        terminated = bool(self._core.terminated[0])
        truncated = bool(self._core.truncated[0])
        return self._frame.copy(), reward, terminated, truncated, self._core.env_info(0)

    def expert_action(self) -> int:
        """The built-in expert's action for the current state."""
        return int(self._core.expert_actions()[0])

    def expert_plan(self) -> str | None:
        """The expert's whole plan from the current state where the game has one: EZPoints/Points24's full
        solution extending the current formula ("" when the deal has none); None for the other games."""
        return self._core.expert_plans()[0]

    def render(self):
        """The current frame (render_mode "rgb_array")."""
        return self._frame.copy()


class VlmrlVectorEnv(VectorEnv):
    """N envs of one game stepped together in Rust threads.

    The observation array returned by ``reset`` and ``step`` is a read-only
    view of the engine's buffer, overwritten in place by the next call: copy
    it to keep it. Rewards and flags are fresh arrays each step.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        seed: int | None = None,
        num_threads: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        **kwargs: Any,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise EnvArgumentError(f"num_envs must be a positive integer, got {num_envs!r}")
        if num_threads is None:
            num_threads = max(1, min(int(num_envs), os.cpu_count() or 1))
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
            raise EnvArgumentError(f"num_threads must be a positive integer, got {num_threads!r}")
        mode = _mode_name(autoreset_mode)
        self.env_id = _bare_id(env_id)
        self._core = _core.VecEnv(self.env_id, int(num_envs), _seed(seed), int(num_threads), mode, kwargs)
        self.num_envs = int(num_envs)
        self.num_threads = int(num_threads)
        self.metadata = {
            "autoreset_mode": next(m for m, n in _MODES.items() if n == mode),
            "render_modes": ["rgb_array"],
        }
        self.render_mode = "rgb_array"
        self.single_observation_space = spaces.Box(0, 255, OBS_SHAPE, np.uint8)
        self.observation_space = spaces.Box(0, 255, (self.num_envs, *OBS_SHAPE), np.uint8)
        self.single_action_space = spaces.Discrete(len(self._core.action_names(0)))
        self.action_space = spaces.MultiDiscrete(np.full(self.num_envs, self.single_action_space.n))
        self._obs = self._core.obs
        self._obs.flags.writeable = False
        self._rewards, self._terminated, self._truncated = (
            self._core.rewards,
            self._core.terminated,
            self._core.truncated,
        )

    @property
    def action_names(self) -> list[str] | list[list[str]]:
        """Action strings in action-index order; per env (a list of lists)
        for envs whose actions change each step (then also in
        info["admissible_commands"])."""
        if self._core.dynamic_actions:
            return [self._core.action_names(i) for i in range(self.num_envs)]
        return self._core.action_names(0)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Resets every env (or those in ``options["reset_mask"]``), from
        ``options["states"]`` (one state or None per env) where given.
        ``options["group_size"]`` = G (with ``seed``): each group of G
        consecutive envs shares one random stream, so it starts from one state."""
        options = options or {}
        unknown = set(options) - {"states", "reset_mask", "group_size"}
        if unknown:
            raise EnvArgumentError(f"unknown reset options {sorted(unknown)}; accepted: 'states', 'reset_mask', 'group_size'")
        group_size = options.get("group_size", 1)
        if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
            raise EnvArgumentError(f"group_size must be a positive integer, got {group_size!r}")
        states = options.get("states")
        if states is not None:
            states = list(states)
        mask = options.get("reset_mask")
        if mask is not None:
            mask = [bool(m) for m in np.asarray(mask, dtype=bool).reshape(-1)]
        info = self._core.reset(seed=None if seed is None else _seed(seed), states=states, mask=mask,
                                group_size=int(group_size))
        return self._obs, info

    def state_keys(self) -> np.ndarray:
        """A key (uint64) of every env's current state, from the engine: equal exactly when two envs are
        in the same state (GiGPO's step groups)."""
        return self._core.state_keys()

    def step(self, actions: Any):
        """Steps all envs; ``actions`` holds one integer per env."""
        a = np.asarray(actions)
        if a.dtype.kind not in "iu":
            raise ActionTypeError(f"actions must be integers, got dtype {a.dtype}")
        if a.shape != (self.num_envs,):
            raise EnvArgumentError(f"actions must have shape ({self.num_envs},), got {a.shape}")
        if a.dtype != np.int64 or not a.flags.c_contiguous:
            a = np.ascontiguousarray(a, dtype=np.int64)
        info = self._core.step(a)
        return self._obs, self._rewards.copy(), self._terminated.copy(), self._truncated.copy(), info

    def expert_actions(self) -> np.ndarray:
        """The built-in expert's action for every env (int64)."""
        return self._core.expert_actions()

    def expert_plans(self) -> list[str | None]:
        """The expert's plan of every env (see `VlmrlEnv.expert_plan`)."""
        return self._core.expert_plans()

    def render(self):
        """A copy of the current frames [num_envs, 300, 300, 3]."""
        return self._obs.copy()


def make_vec(
    env_id: str,
    num_envs: int,
    seed: int | None = None,
    num_threads: int | None = None,
    autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    **kwargs: Any,
) -> VlmrlVectorEnv:
    """A vector env of ``num_envs`` copies of ``env_id`` (with or without the
    ``vlmrl_fast/`` namespace), seeded with ``seed`` (env i gets its own
    stream), stepping in ``num_threads`` threads (default: one per core). A Python env ``MODULE:ENV_ID``
    gives a :class:`vlmrl_fast.byo.PythonVectorEnv` (a gymnasium sync/async vector env of it)."""
    if ":" in env_id:
        from vlmrl_fast.byo import PythonVectorEnv

        return PythonVectorEnv(env_id, num_envs, seed=seed, autoreset_mode=autoreset_mode, **kwargs)  # type: ignore[return-value]
    return VlmrlVectorEnv(env_id, num_envs, seed=seed, num_threads=num_threads, autoreset_mode=autoreset_mode, **kwargs)


def register_envs() -> None:
    """Registers every game with gymnasium (idempotent)."""
    for env_id in _core.list_envs():
        full = f"{NAMESPACE}/{env_id}"
        if full in gymnasium.registry:
            continue
        gymnasium.register(
            id=full,
            entry_point="vlmrl_fast.envs:VlmrlEnv",
            vector_entry_point="vlmrl_fast.envs:VlmrlVectorEnv",
            kwargs={"env_id": env_id},
        )
