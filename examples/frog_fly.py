"""FrogFly-v0: a small visual game written as an ordinary gymnasium env, to train with
``vlmrl train --env examples.frog_fly:FrogFly-v0 --prompt-template examples/frog_fly.toml``.

A frog sits on one of five lily pads in a row, a fly hovers over another. Each step the frog hops
"left" or "right" one pad, or tries to "eat". Eating when the fly is right above the frog wins the
episode (+1); eating anywhere else costs 0.2 and the fly stays; hopping off the row costs 0.2 and the
frog stays. Episodes end after 8 steps. The observation is a 64x160 RGB picture (pads, frog, fly);
info carries the positions and a sentence saying the same ("text"). The env names its actions
(`action_names`) and has an expert (`expert_action`), which the SFT warm start uses when asked to.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

PADS = 5
CELL = 32
HEIGHT = 64
MAX_STEPS = 8


class FrogFlyEnv(gymnasium.Env):
    """The frog-and-fly game (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"]}
    action_names = ["left", "right", "eat"]

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0, 255, (HEIGHT, PADS * CELL, 3), np.uint8)
        self.action_space = spaces.Discrete(len(self.action_names))
        self.frog = self.fly = self.steps = 0

    def _picture(self) -> np.ndarray:
        img = np.zeros((HEIGHT, PADS * CELL, 3), np.uint8)
        img[:] = (40, 90, 170)  # water
        for p in range(PADS):  # lily pads along the bottom
            img[44:58, p * CELL + 3:(p + 1) * CELL - 3] = (60, 160, 60)
        x = self.frog * CELL
        img[34:50, x + 8:x + 24] = (20, 220, 20)  # the frog
        img[34:38, x + 10:x + 14] = img[34:38, x + 18:x + 22] = (255, 255, 255)  # its eyes
        x = self.fly * CELL
        img[8:18, x + 11:x + 21] = (230, 40, 40)  # the fly
        return img

    def _info(self) -> dict:
        return {"frog": self.frog + 1, "fly": self.fly + 1, "steps_left": MAX_STEPS - self.steps,
                "text": f"The frog is on pad {self.frog + 1} and the fly is above pad {self.fly + 1}."}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.frog, self.fly = (int(v) for v in self.np_random.choice(PADS, size=2, replace=False))
        self.steps = 0
        return self._picture(), self._info()

    def step(self, action):
        name = self.action_names[int(action)]
        self.steps += 1
        reward, terminated = 0.0, False
        if name == "eat":
            if self.frog == self.fly:
                reward, terminated = 1.0, True
            else:
                reward = -0.2
        else:
            target = self.frog + (1 if name == "right" else -1)
            if 0 <= target < PADS:
                self.frog = target
            else:
                reward = -0.2
        truncated = not terminated and self.steps >= MAX_STEPS
        return self._picture(), reward, terminated, truncated, self._info()

    def expert_action(self) -> int:
        """Hop toward the fly, eat under it."""
        if self.frog == self.fly:
            return 2
        return 1 if self.fly > self.frog else 0

    def render(self) -> np.ndarray:
        return self._picture()


gymnasium.register(id="FrogFly-v0", entry_point=FrogFlyEnv)
