"""Bring your own environment: any gymnasium env of Python code, named ``MODULE:ENV_ID``.

Importing MODULE registers ENV_ID (gymnasium's own convention). :class:`PythonVectorEnv` puts N copies
of it in a gymnasium ``SyncVectorEnv`` or ``AsyncVectorEnv`` and shows the rollout what the engine's
vector env shows it: uint8 frames [N, H, W, 3] (a blank frame for text-only envs), gymnasium vector
infos with ``info["text"]`` (a text observation lands there), ``action_names`` (one list, or one per
env), ``expert_actions()`` (``env.unwrapped.expert_action()`` of every env) and SAME_STEP final
observations. :func:`register` ties a spec to its prompt template file (``--prompt-template``);
:func:`check_env` builds one env and fails with one line naming the bad input, before any model loads.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import numpy as np
from gymnasium import spaces

from vlmrl_fast.config import ConfigError

TEXT_FRAME = (32, 32, 3)
"""The blank frame a text-only env shows a vision model."""

_SETTINGS: dict[str, dict[str, Any]] = {}


def is_python_env(env: str) -> bool:
    """Whether `env` names a Python env (``MODULE:ENV_ID``) rather than an engine game."""
    return ":" in env


def split_spec(spec: str) -> tuple[str, str]:
    """``"pkg.mod:Env-v0"`` -> (``"pkg.mod"``, ``"Env-v0"``), the module imported (so it registers the id)."""
    module, _, env_id = spec.partition(":")
    if not module or not env_id:
        raise ConfigError(f"--env {spec!r}: expected MODULE:ENV_ID")
    if os.getcwd() not in sys.path and "" not in sys.path:  # `vlmrl` run from a project folder finds its modules
        sys.path.append(os.getcwd())
    try:
        importlib.import_module(module)
    except Exception as exc:  # any failure of the user's module is reported as one line
        raise ConfigError(f"--env {spec!r}: module {module!r} does not import ({type(exc).__name__}: {exc})") from None
    import gymnasium

    if env_id not in gymnasium.registry:
        raise ConfigError(f"--env {spec!r}: importing {module!r} does not register {env_id!r} with gymnasium")
    return module, env_id


def register(spec: str, prompt_template: str, *, vectorization: str = "sync") -> None:
    """Use `prompt_template` (a TOML file) for `spec`, and a sync or async gymnasium vector env."""
    from vlmrl_fast import prompts

    if vectorization not in ("sync", "async"):
        raise ConfigError(f"env vectorization must be 'sync' or 'async', got {vectorization!r}")
    if not prompt_template:
        raise ConfigError(f"--env {spec!r}: a Python env needs --prompt-template FILE.toml")
    prompts.load_template_file(spec, prompt_template)
    _SETTINGS[spec] = {"vectorization": vectorization}


def _obs_kind(space: spaces.Space) -> str:
    """'image', 'text' or 'image+text'; anything else is an error."""
    def is_image(s: spaces.Space) -> bool:
        return isinstance(s, spaces.Box) and s.dtype == np.uint8 and len(s.shape) == 3 and s.shape[-1] == 3

    if is_image(space):
        return "image"
    if isinstance(space, spaces.Text):
        return "text"
    if isinstance(space, spaces.Dict) and set(space.spaces) and set(space.spaces) <= {"image", "text"}:
        ok_img = "image" not in space.spaces or is_image(space.spaces["image"])
        ok_txt = "text" not in space.spaces or isinstance(space.spaces["text"], spaces.Text)
        if ok_img and ok_txt:
            return "+".join(k for k in ("image", "text") if k in space.spaces)
    raise ConfigError(f"observation space {space} is neither an RGB image (uint8 Box [H, W, 3]) nor text "
                      "(gymnasium.spaces.Text), nor a Dict of 'image' and 'text'")


class PythonVectorEnv:
    """N copies of a Python gymnasium env, looking to the rollout like the engine's vector env."""

    def __init__(self, spec: str, num_envs: int, seed: int | None = None, num_threads: int | None = None,
                 autoreset_mode: Any = None, **kwargs: Any) -> None:
        import gymnasium
        from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

        from vlmrl_fast import prompts

        _, env_id = split_spec(spec)
        self.env_id = spec
        self.num_envs = int(num_envs)
        self._seed = seed
        mode = AutoresetMode.NEXT_STEP if autoreset_mode is None else AutoresetMode(autoreset_mode)
        vec_cls = AsyncVectorEnv if _SETTINGS.get(spec, {}).get("vectorization") == "async" else SyncVectorEnv
        fns = [lambda: gymnasium.make(env_id, **kwargs) for _ in range(self.num_envs)]
        self._vec = vec_cls(fns, autoreset_mode=mode)
        self.metadata = {"autoreset_mode": mode}
        try:
            self._kind = _obs_kind(self._vec.single_observation_space)
            space = self._vec.single_action_space
            if not isinstance(space, spaces.Discrete):
                raise ConfigError(f"action space {space} is not Discrete")
            try:
                names = list(self._vec.get_attr("action_names"))
                self._names_from_env = True
            except AttributeError:
                names = [prompts.template_actions(spec)] * self.num_envs
                self._names_from_env = False
            if not names[0]:
                raise ConfigError("no action names: give the env an action_names attribute or the template an "
                                  "`actions` list")
            for n in names:
                if len(n) != space.n or not all(isinstance(a, str) for a in n):
                    raise ConfigError(f"action names {list(n)} must be {space.n} strings (the Discrete space's n)")
            self._static = [list(n) for n in names]
            prompts.set_template_actions(spec, self._static[0])
        except ConfigError as e:
            self._vec.close()
            raise ConfigError(f"--env {spec!r}: {e}") from None
        probe = gymnasium.make(env_id, **kwargs)  # in this process: async envs' methods do not pickle
        self.has_expert = callable(getattr(probe.unwrapped, "expert_action", None))
        probe.close()

    @property
    def action_names(self) -> list[str] | list[list[str]]:
        """One shared list, or one list per env when the envs' names differ."""
        names = [list(n) for n in self._vec.get_attr("action_names")] if self._names_from_env else self._static
        return names[0] if all(n == names[0] for n in names) else names

    # -- observations -----------------------------------------------------------------------------------
    def _frames_and_texts(self, obs: Any) -> tuple[np.ndarray, list[str] | None]:
        if self._kind == "image":
            return np.asarray(obs, np.uint8), None
        if self._kind == "text":
            return np.zeros((self.num_envs, *TEXT_FRAME), np.uint8), [str(t) for t in obs]
        frames = (np.asarray(obs["image"], np.uint8) if "image" in obs
                  else np.zeros((self.num_envs, *TEXT_FRAME), np.uint8))
        return frames, ([str(t) for t in obs["text"]] if "text" in obs else None)

    def _one(self, obs: Any) -> tuple[np.ndarray, str | None]:
        frames, texts = self._frames_and_texts(
            {k: [v] for k, v in obs.items()} if isinstance(obs, dict) else [obs])
        return frames[0], None if texts is None else texts[0]

    @staticmethod
    def _put_text(infos: dict[str, Any], texts: list[str | None], n: int) -> None:
        arr = np.empty(n, dtype=object)
        mask = np.zeros(n, bool)
        old = infos.get("text")
        old_mask = infos.get("_text")
        for i, t in enumerate(texts):
            if t is not None:
                arr[i], mask[i] = t, True
            elif old is not None and (old_mask is None or old_mask[i]):
                arr[i], mask[i] = old[i], True
        infos["text"], infos["_text"] = arr, mask

    def _convert(self, obs: Any, infos: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        frames, texts = self._frames_and_texts(obs)
        infos = dict(infos)
        if texts is not None:
            self._put_text(infos, list(texts), self.num_envs)
        final = infos.get("final_obs")
        if final is not None:
            out = np.empty(self.num_envs, dtype=object)
            final_texts: list[str | None] = [None] * self.num_envs
            for i, o in enumerate(final):
                if o is not None and ("_final_obs" not in infos or infos["_final_obs"][i]):
                    out[i], final_texts[i] = self._one(o)
            infos["final_obs"] = out
            if self._kind != "image" and isinstance(infos.get("final_info"), dict):
                fin = dict(infos["final_info"])
                self._put_text(fin, final_texts, self.num_envs)
                infos["final_info"] = fin
        return frames, infos

    # -- the vector env -----------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None:
            seed, self._seed = self._seed, None  # the constructor's seed seeds the first reset
        obs, infos = self._vec.reset(seed=seed, options=options)
        return self._convert(obs, infos)

    def step(self, actions: Any):
        obs, rewards, terminated, truncated, infos = self._vec.step(np.asarray(actions, np.int64))
        frames, infos = self._convert(obs, infos)
        return (frames, np.asarray(rewards, np.float32), np.asarray(terminated, bool),
                np.asarray(truncated, bool), infos)

    def expert_actions(self) -> np.ndarray:
        """``env.unwrapped.expert_action()`` of every env (int64)."""
        if not self.has_expert:
            raise ConfigError(f"--env {self.env_id!r}: the env has no expert_action()")
        return np.asarray(self._vec.call("expert_action"), np.int64)

    def close(self) -> None:
        self._vec.close()


def check_env(spec: str, prompt_template: str, *, vectorization: str = "sync", cot: bool = True) -> None:
    """Import, build and reset one env of `spec` and render its template once: a one-line ConfigError
    naming the module, env id, observation, action names or template field that is wrong."""
    from vlmrl_fast import prompts
    from vlmrl_fast.rollout import split_infos

    register(spec, prompt_template, vectorization=vectorization)
    envs = PythonVectorEnv(spec, 1, seed=0)
    try:
        _, infos = envs.reset(seed=0)
        info = split_infos(infos, 1)[0]
        try:
            for c in (True, False):
                prompts.render(spec, info, cot=c)
                prompts.answer(spec, info, envs._static[0][0], cot=c)
        except prompts.PromptError as e:
            raise ConfigError(f"--prompt-template {prompt_template}: {e}") from None
    finally:
        envs.close()
