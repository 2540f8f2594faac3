"""Benchmark: 64 observations of 300x300x3 -> pixel_values, native pipeline vs
Hugging Face's processors (Pillow backend and torchvision backend), per family.

    PYTHONPATH=python python -m pytest bench/test_preprocess_bench.py --benchmark-only

Targets (issue 8): native >= 30x the Pillow backend and >= 5x the torchvision
backend. The ratios of medians, all measured in this one run, are printed at
the end (run with -s to see them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # shared cases live with the tests
from preprocess_cases import PROCESSORS, hf_outputs, synthetic_obs  # noqa: E402

from vlmrl_fast.preprocess import ImagePipeline  # noqa: E402

N, H, W = 64, 300, 300
FAMILIES = ["clip336", "qwen2vl", "siglip224", "siglip384"]
TARGETS = {"pil": 30.0, "tv": 5.0}
_medians: dict[tuple[str, str], float] = {}


@pytest.fixture(scope="module")
def obs():
    return synthetic_obs(N, H, W, seed=1)


def _record(benchmark, family: str, impl: str) -> None:
    _medians[(family, impl)] = benchmark.stats.stats.median


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("impl", ["native_pil", "native_tv", "hf_pil", "hf_tv"])
def test_preprocess(benchmark, obs, family, impl):
    """One batch of 64 observations through one implementation."""
    kind, backend = impl.split("_")
    ip = PROCESSORS[f"{family}_{backend}"]()
    benchmark.group = f"preprocess {family} (64 x 300x300)"
    if kind == "native":
        pipeline = ImagePipeline.from_processor(ip)
        assert pipeline.native
        fn = lambda: pipeline(obs)  # noqa: E731
        rounds = 10
    else:
        fn = lambda: hf_outputs(ip, obs)  # noqa: E731
        rounds = 3
    with torch.inference_mode():
        benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1, iterations=1)
    _record(benchmark, family, impl)


def test_report_ratios(request):
    """Speed-ups of the medians above (needs the benchmarks of this run)."""
    if request.config.getoption("benchmark_disable", False) or not _medians:
        pytest.skip("benchmarks did not run")
    rows = {}
    for family in FAMILIES:
        for backend in ("pil", "tv"):
            native, hf = _medians.get((family, f"native_{backend}")), _medians.get((family, f"hf_{backend}"))
            if native and hf:
                rows[f"{family}_{backend}"] = {
                    "hf_s": hf,
                    "native_s": native,
                    "speedup": hf / native,
                    "target": TARGETS[backend],
                }
    lines = [f"{k:16s} hf {v['hf_s'] * 1e3:8.1f} ms  native {v['native_s'] * 1e3:6.1f} ms  "
             f"x{v['speedup']:6.1f} (target x{v['target']:.0f})" for k, v in rows.items()]
    print("\n" + "\n".join(lines))
