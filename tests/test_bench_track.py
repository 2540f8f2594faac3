"""bench/track.py: saving, comparing and reporting benchmark runs (hand-made runs, no timing)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_track", Path(__file__).resolve().parents[1] / "bench" / "track.py")
track = sys.modules["bench_track"] = importlib.util.module_from_spec(_spec)  # bench/ is not a package
_spec.loader.exec_module(track)

MACHINE = {"node": "vm", "system": "Linux", "release": "6", "arch": "x86_64", "python": "3.11.7",
           "cpu": "Intel(R) Xeon(R) Processor", "cores": 2, "cpu_model": 207, "hz": "2.3 GHz"}


def bench(name, median, extra, params=None):
    return {"name": name, "module": track.module_of(name), "group": None, "params": params,
            "min_s": median * 0.9, "median_s": median, "mean_s": median * 1.1, "rounds": 5, "extra_info": extra}


def run(name, benchmarks, machine=MACHINE):
    return {"run": name, "datetime": "2026-12-04T01:00:00+00:00",
            "commit": {"id": "abcdef0123", "time": None, "dirty": False, "branch": "main"},
            "machine": dict(machine), "load_avg_1_5_15": "1.00 1.00 1.00", "benchmarks": benchmarks}


ENGINE = "bench/test_engine_bench.py::test_engine_step_throughput[Points24-v0-64-2]"
PARSER = "bench/test_parser_bench.py::test_rust_parse_actions"
AGENT = "bench/test_agent_bench.py::test_rollout_step_generation[batched]"
TRAINER = "bench/test_trainer_bench.py::test_rollout_batched"


@pytest.fixture
def old_new():
    old = run("20261203T100000Z_aaaaaaa", [
        bench(ENGINE, 0.01, {"steps_per_s": 140000, "ratio_vs_numpy_copy": 4.0}, {"game": "Points24-v0"}),
        bench(PARSER, 0.002, {"answers_per_s": 11e6, "ratio_vs_python_parser": 15.0}),
        bench(AGENT, 0.5, {"steps_per_s": 30.0, "ratio_vs_one_at_a_time": 11.0}),
    ])
    new = run("20261204T100000Z_bbbbbbb", [
        bench(ENGINE, 0.02, {"steps_per_s": 70000, "ratio_vs_numpy_copy": 2.0},  # -50 %
              {"game": "Points24-v0", "num_envs": 64, "num_threads": 2}),
        bench(PARSER, 0.001, {"answers_per_s": 22e6, "ratio_vs_python_parser": 30.0}),  # +100 %
        bench(TRAINER, 1.0, {"steps_per_s": 20.0, "ratio_vs_one_at_a_time": 9.0}),  # new benchmark
    ])
    return old, new


def test_compare_flags_a_regression_not_an_improvement_and_reports_one_sided(old_new):
    old, new = old_new
    cmp = track.compare(new, old, threshold=0.2)
    rows = {(r[0], r[1]): r for r in cmp.rows}
    assert rows[(ENGINE, "ratio_vs_numpy_copy")][5] == "REGRESSION"
    assert rows[(ENGINE, "ratio_vs_numpy_copy")][4] == pytest.approx(-0.5)
    assert rows[(PARSER, "ratio_vs_python_parser")][5] == "improved"
    assert [r[0] for r in cmp.regressions] == [ENGINE]
    assert cmp.only_new == [TRAINER] and cmp.only_old == [AGENT]
    text = track.format_comparison(cmp)
    assert "REGRESSION" in text and "only in the new run (1): test_trainer_bench.py::test_rollout_batched" in text
    assert "only in the old run (1): test_agent_bench.py" in text and "1 regression(s) beyond 20%" in text


def test_compare_within_threshold_is_quiet(old_new):
    old, _ = old_new
    new = json.loads(json.dumps(old))
    new["run"] = "20261204T100000Z_ccccccc"
    new["benchmarks"][0]["extra_info"]["ratio_vs_numpy_copy"] = 3.3  # -17.5 %: inside a 20 % threshold
    cmp = track.compare(new, old)
    assert not cmp.regressions and not cmp.only_new and not cmp.only_old
    assert track.compare(new, old, threshold=0.1).regressions  # but not inside 10 %
    with pytest.raises(ValueError, match="threshold must be a fraction in \\(0, 1\\), got 20"):
        track.compare(new, old, threshold=20)


def test_a_ratio_recorded_in_one_run_only_is_reported(old_new):
    old, new = old_new
    new["benchmarks"][1]["extra_info"]["ratio_vs_paper_parser"] = 3.0
    rows = [r for r in track.compare(new, old).rows if r[1] == "ratio_vs_paper_parser"]
    assert rows == [(PARSER, "ratio_vs_paper_parser", None, 3.0, None, "only in new")]


def test_cli_compare_picks_the_previous_run_of_the_same_machine_and_exits_nonzero(tmp_path, old_new, capsys):
    old, new = old_new
    other = run("20261203T120000Z_ddddddd", old["benchmarks"], machine=dict(MACHINE, cores=64, cpu="EPYC"))
    for r in (old, other, new):
        (tmp_path / f"{r['run']}.json").write_text(json.dumps(r))
    assert track.main(["--results", str(tmp_path), "compare"]) == 1
    out = capsys.readouterr().out
    assert "new: 20261204T100000Z_bbbbbbb" in out and "old: 20261203T100000Z_aaaaaaa" in out  # not the EPYC run
    # named runs; a loose threshold: the -50 % is still flagged, a -60 % threshold lets it pass
    assert track.main(["--results", str(tmp_path), "compare", "--old", old["run"], "--threshold", "0.6"]) == 0
    assert track.main(["--results", str(tmp_path), "compare", "--old", "nope"]) == 2
    assert "no saved run 'nope'" in capsys.readouterr().err


def raw_pytest_benchmark():
    """The shape of pytest-benchmark's --benchmark-json output (the fields track.py reads)."""
    stats = {"min": 0.001, "max": 0.003, "mean": 0.0015, "median": 0.0014, "rounds": 200, "data": [0.001] * 200,
             "stddev": 0.0001, "iterations": 1}
    return {
        "machine_info": {"node": "vm", "machine": "x86_64", "python_version": "3.11.7", "release": "6",
                         "system": "Linux", "cpu": {"brand_raw": "Intel(R) Xeon(R) Processor", "count": 2,
                                                    "model": 207, "flags": ["avx512f"] * 50}},
        "commit_info": {"id": "4f51c2a0123456", "time": "2026-12-04T00:50:00Z", "dirty": True, "branch": "main"},
        "datetime": "2026-12-04T01:02:03.456789+00:00",
        "version": "5.3.1",
        "benchmarks": [{"group": "parser", "name": "test_rust_parse_actions", "fullname": PARSER,
                        "params": None, "stats": stats,
                        "extra_info": {"answers_per_s": 14000000, "ratio_vs_python_parser": 14.2}}],
    }


def test_save_compacts_a_pytest_benchmark_json(tmp_path):
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps(raw_pytest_benchmark()))
    out = track.save(raw, tmp_path / "results", load="0.50 0.40 0.30", load_before="2.00 1.00 0.50")
    assert out.name == "20261204T010203Z_4f51c2a-dirty.json"
    saved = json.loads(out.read_text())
    assert "data" not in json.dumps(saved) and "flags" not in json.dumps(saved)  # no raw timings, no CPU flags
    (b,) = saved["benchmarks"]
    assert b["module"] == "parser" and b["median_s"] == 0.0014 and b["rounds"] == 200
    assert b["extra_info"]["ratio_vs_python_parser"] == 14.2
    assert saved["machine"]["cores"] == 2 and saved["load_avg_1_5_15"] == "0.50 0.40 0.30"
    assert "load average 2.00 1.00 0.50 at the start, 0.50 0.40 0.30 at the end)." in track.run_header(saved)
    assert track.load_run(raw)["run"] == saved["run"]  # a raw file compares like a saved one
    with pytest.raises(ValueError, match="not a pytest-benchmark JSON"):
        track.compact({"benchmarks": []})


def write_gpu_run(root: Path) -> Path:
    d = root / "h200_run1"
    d.mkdir(parents=True)
    t = {"naive/forward": 0.010, "naive/forward_backward": 0.020,
         "triton/forward": 0.001, "triton/forward_backward": 0.0025}
    (d / "kernels_gpu.json").write_text(json.dumps({
        "device": "NVIDIA H200", "torch": "2.11", "triton": "3.6", "started_utc": "2026-11-26T21:00:17Z",
        "token_logprobs": {"rows": 8192, "vocab": 152064, "timings_s": t,
                           "peak_extra_bytes": {"triton/forward_backward_beyond_grad": 2**20}},
        "gae": {"num_steps": 512, "num_envs": 64,
                "timings_s": {"python_loop": 0.09, "triton": 3e-5, "empty_triton_launch": 1.5e-5}}}))
    (d / "dist_gpu.json").write_text(json.dumps({"results": [
        {"config": "ddp", "processes": 1, "status": "ok", "wall_s": 45.1},
        {"config": "fsdp", "processes": 1, "status": "failed", "wall_s": 47.0}]}))
    return d


def test_report_fills_the_readme_blocks_from_a_saved_run(tmp_path, old_new):
    _, new = old_new
    new["benchmarks"] += [
        bench("bench/test_preprocess_bench.py::test_preprocess[qwen2vl-hf_pil]", 0.40, {"median_ms": 400.0},
              {"family": "qwen2vl", "impl": "hf_pil"}),
        bench("bench/test_preprocess_bench.py::test_preprocess[qwen2vl-native_pil]", 0.010,
              {"median_ms": 10.0, "ratio_vs_hf_pil": 40.0, "ratio_vs_torch_fill": 0.5},
              {"family": "qwen2vl", "impl": "native_pil"}),
        bench("bench/test_preprocess_bench.py::test_paired[pil-qwen2vl]", 3.0, {"ratio_vs_hf_pil": 38.5},
              {"family": "qwen2vl", "backend": "pil"}),
    ]
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nprose kept\n\n<!-- bench-report:engine -->\nold table\n"
                      "<!-- /bench-report:engine -->\n\n## Learning\n\nsomeone's section\n\n"
                      "<!-- bench-report:preprocess -->\n<!-- /bench-report:preprocess -->\n"
                      "<!-- bench-report:gpu -->\n<!-- /bench-report:gpu -->\n")
    write_gpu_run(tmp_path / "gpu")
    filled = track.report(new, readme, tmp_path / "gpu")
    assert sorted(filled) == ["engine", "gpu", "preprocess"]
    text = readme.read_text()
    assert "old table" not in text and "prose kept" in text and "## Learning\n\nsomeone's section" in text
    assert "Saved run `bench/results/20261204T100000Z_bbbbbbb.json` (2026-12-04T01:00:00+00:00, commit abcdef0" in text
    assert "| Points24-v0 | 64 | - | 70 k (2.00x) |" in text
    assert "| qwen2vl | 400 ms | 10 ms | 40.00x / - / - | - | 38.50x / - |" in text
    assert "| triton | 1 ms | 10.00x | 2.5 ms | 8.00x | 1 MiB |" in text
    assert "| triton | 30 us | 3000x | 2.00 |" in text and "| fsdp | 1 | failed | 47.00 s |" in text
    assert "GPU run" in text and "started 2026-11-26T21:00:17Z" in text
    # a second report replaces the tables again, leaving one copy of each
    track.report(new, readme, tmp_path / "gpu")
    assert readme.read_text() == text


def test_cli_report_uses_the_newest_saved_run(tmp_path, old_new, capsys):
    old, new = old_new
    for r in (old, new):
        (tmp_path / f"{r['run']}.json").write_text(json.dumps(r))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- bench-report:parser -->\n<!-- /bench-report:parser -->\n")
    assert track.main(["--results", str(tmp_path), "report", "--readme", str(readme), "--gpu", str(tmp_path / "x")]) == 0
    text = readme.read_text()
    assert "| rust_parse_actions | 1 ms | answers_per_s 22.00 M | 30.00x python_parser |" in text and "bbbbbbb" in text
    assert "no block for engine, trainer" in capsys.readouterr().err


def test_bench_readme_tables_are_those_of_the_newest_saved_run(tmp_path):
    """bench/README.md's generated tables are what `make bench-report` writes from the newest saved run
    (run it after `make bench`; never edit the tables by hand)."""
    runs = track.saved_runs()
    if not runs:
        pytest.skip("no saved run in bench/results/")
    if track._git_commit_of(track.GPU_RESULTS) is None:
        pytest.skip("no git history: the GPU table names the commit of its results")
    readme = tmp_path / "README.md"
    readme.write_text(track.README.read_text())
    track.report(track.load_run(runs[-1]), readme, track.GPU_RESULTS)
    assert readme.read_text() == track.README.read_text(), "bench/README.md is stale: run `make bench-report`"
