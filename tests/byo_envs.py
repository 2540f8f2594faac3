"""Python gymnasium envs for tests/test_byo_env.py: a text-only game, and envs that are wrong in one way
each (no action names, an observation that is neither an image nor text). Importing registers them."""

import string

import gymnasium
import numpy as np
from gymnasium import spaces


class CountTo(gymnasium.Env):
    """Text only: reach the goal number from the start number with "up"/"down" (+1 on arrival, 6 steps)."""

    action_names = ["down", "up"]

    def __init__(self):
        self.observation_space = spaces.Text(max_length=200, charset=string.printable)
        self.action_space = spaces.Discrete(2)
        self.n = self.goal = self.t = 0

    def _text(self):
        return f"You are at {self.n}; the goal is {self.goal}."

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.n, self.goal = (int(v) for v in self.np_random.choice(5, 2, replace=False))
        self.t = 0
        return self._text(), {"goal": self.goal}

    def step(self, action):
        self.n += 1 if int(action) == 1 else -1
        self.t += 1
        done = self.n == self.goal
        return self._text(), float(done), done, not done and self.t >= 6, {"goal": self.goal}


class Nameless(CountTo):
    """Discrete actions without names."""

    action_names = None

    def __getattribute__(self, name):
        if name == "action_names":
            raise AttributeError(name)
        return super().__getattribute__(name)


class VectorObs(CountTo):
    """A float vector observation: neither image nor text."""

    def __init__(self):
        super().__init__()
        self.observation_space = spaces.Box(-1, 1, (4,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}


gymnasium.register(id="CountTo-v0", entry_point=CountTo)
gymnasium.register(id="Nameless-v0", entry_point=Nameless)
gymnasium.register(id="VectorObs-v0", entry_point=VectorObs)
