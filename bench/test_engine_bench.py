"""Engine throughput: steps/s of each game at num_envs in {1, 16, 64} and
num_threads in {1, 2}, observations and infos included, next to the floor
measured in the same test: numpy copying the same observation bytes.

Run: ``make bench`` or
``PYTHONPATH=python python -m pytest bench/test_engine_bench.py --benchmark-only``.
Each benchmark stores steps_per_s, floor_steps_per_s and ratio_vs_numpy_copy
(floor time / step time: above 1 the engine steps faster than numpy copies the
same observation bytes) in its extra_info; ``make bench`` saves them.
"""

import resource
import time

import numpy as np
import pytest

from vlmrl_fast import make_vec

GAMES = ["NumberLine-v0", "EZPoints-v0", "Points24-v0", "Blackjack-v0"]
OBS_BYTES = 300 * 300 * 3


def numpy_floor_seconds(num_envs: int, steps: int, repeats: int = 5) -> float:
    """Best time for numpy to copy `steps` batches of `num_envs` observations."""
    src = np.random.default_rng(0).integers(0, 255, size=(num_envs, 300, 300, 3), dtype=np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return best


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("num_envs", [1, 16, 64])
@pytest.mark.parametrize("game", GAMES)
def test_engine_step_throughput(benchmark, game, num_envs, num_threads):
    if num_threads > num_envs:
        pytest.skip("more threads than envs")
    steps = max(20, 2000 // num_envs)
    env = make_vec(game, num_envs, seed=0, num_threads=num_threads)
    env.reset()
    actions = np.random.default_rng(0).integers(0, env.single_action_space.n, size=(steps, num_envs))

    def run():
        for a in actions:
            env.step(a)

    run()  # warm-up: glyph and card caches
    benchmark.pedantic(run, rounds=5, iterations=1)
    step_s = benchmark.stats.stats.min
    floor_s = numpy_floor_seconds(num_envs, steps)
    benchmark.extra_info["steps_per_s"] = round(steps * num_envs / step_s)
    benchmark.extra_info["floor_steps_per_s"] = round(steps * num_envs / floor_s)
    benchmark.extra_info["ratio_vs_numpy_copy"] = round(floor_s / step_s, 3)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


@pytest.mark.parametrize("game", GAMES)
def test_engine_memory_is_flat_over_a_million_steps(game):
    env = make_vec(game, 64, seed=0, num_threads=2)
    env.reset()
    rng = np.random.default_rng(0)
    n = env.single_action_space.n
    for _ in range(200):  # warm-up: caches, allocator pools
        env.step(rng.integers(0, n, size=64))
    before = _rss_mb()
    for _ in range(1_000_000 // 64):
        env.step(rng.integers(0, n, size=64))
    growth = _rss_mb() - before
    print(f"{game}: RSS growth over 1M steps {growth:.1f} MiB")
    assert growth < 8.0, f"{game}: memory grew by {growth:.1f} MiB over one million steps"
