"""Saved benchmark runs: save, compare, report (`make bench`, `make bench-compare`, `make bench-report`).

    python bench/track.py save RAW.json           # compact a pytest-benchmark JSON into bench/results/
    python bench/track.py compare [--new RUN] [--old RUN] [--threshold 0.2] [--common]
    python bench/track.py report [--run RUN] [--readme bench/README.md] [--gpu bench/gpu/results]

A saved run is one small JSON file, `bench/results/<UTC time>_<commit>.json`: the commit, the machine
(pytest-benchmark's description, without the CPU flag list), the load average when it was saved, and per
benchmark its min / median / mean time, its rounds and its `extra_info` (no raw timing arrays).

Tracked figures are the `ratio_vs_<baseline>` keys of `extra_info`: each is a speed-up against a baseline
timed in the same run (higher is better), so it stays meaningful when the machine's speed moves between
runs. `compare` flags a ratio that fell by more than the threshold (a fraction of the old value) and exits 1.
`report` rewrites the blocks of bench/README.md between `<!-- bench-report:NAME -->` and
`<!-- /bench-report:NAME -->`, NAME being a benchmark file's short name (`engine` for
bench/test_engine_bench.py) or `gpu`; the text outside the blocks is left as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
README = ROOT / "bench" / "README.md"
GPU_RESULTS = ROOT / "bench" / "gpu" / "results"
RATIO_PREFIX = "ratio_vs_"


# --- saving -------------------------------------------------------------------------------------------

def module_of(fullname: str) -> str:
    """'bench/test_engine_bench.py::test_x[a]' -> 'engine'."""
    file = fullname.split("::", 1)[0].rsplit("/", 1)[-1]
    m = re.fullmatch(r"test_(\w+?)_bench\.py", file)
    return m.group(1) if m else file.removesuffix(".py")


def compact(raw: dict) -> dict:
    """A pytest-benchmark JSON (`--benchmark-json`) reduced to what is tracked and reported."""
    if "benchmarks" not in raw or "machine_info" not in raw:
        raise ValueError("not a pytest-benchmark JSON: no 'benchmarks' / 'machine_info' key")
    mi = raw["machine_info"]
    cpu = mi.get("cpu") or {}
    commit = raw.get("commit_info") or {}
    stamp = datetime.fromisoformat(raw["datetime"].replace("Z", "+00:00")).astimezone(timezone.utc)
    benchmarks = []
    for b in raw["benchmarks"]:
        s = b["stats"]
        benchmarks.append({
            "name": b["fullname"],
            "module": module_of(b["fullname"]),
            "group": b.get("group"),
            "params": b.get("params"),
            **{f"{k}_s": float(f"{s[k]:.4g}") for k in ("min", "median", "mean")}, "rounds": s["rounds"],
            "extra_info": b.get("extra_info") or {},
        })
    commit_id = (commit.get("id") or "nocommit")[:7]
    return {
        "run": f"{stamp:%Y%m%dT%H%M%SZ}_{commit_id}" + ("-dirty" if commit.get("dirty") else ""),
        "datetime": stamp.isoformat(timespec="seconds"),
        "commit": {k: commit.get(k) for k in ("id", "time", "dirty", "branch")},
        "machine": {
            "node": mi.get("node"), "system": mi.get("system"), "release": mi.get("release"),
            "arch": mi.get("machine"), "python": mi.get("python_version"),
            "cpu": cpu.get("brand_raw"), "cores": cpu.get("count"),
            "cpu_model": cpu.get("model"), "hz": cpu.get("hz_advertised_friendly"),
        },
        "benchmarks": benchmarks,
    }


def save(raw_path: Path, results: Path = RESULTS, load: str | None = None, load_before: str | None = None) -> Path:
    """Compact `raw_path` into `results`; `load`: the load average now (1, 5, 15 min; default: read it),
    `load_before`: the one when the run started (`make bench` passes it)."""
    run = compact(json.loads(Path(raw_path).read_text()))
    if load_before:
        run["load_avg_before"] = load_before
    run["load_avg_1_5_15"] = load if load is not None else " ".join(f"{x:.2f}" for x in os.getloadavg())
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"{run['run']}.json"
    out.write_text(dumps(run))
    return out


def dumps(run: dict) -> str:
    """JSON with one benchmark per line: small, and a diff between two runs stays readable."""
    head = {k: v for k, v in run.items() if k != "benchmarks"}
    lines = [json.dumps(head)[:-1] + ', "benchmarks": [']
    lines += [json.dumps(b) + ("," if i < len(run["benchmarks"]) - 1 else "") for i, b in enumerate(run["benchmarks"])]
    return "\n".join(lines) + "\n]}\n"


def load_run(path: Path) -> dict:
    """A saved run, or a raw pytest-benchmark JSON (compacted on the fly)."""
    data = json.loads(Path(path).read_text())
    return compact(data) if "machine_info" in data else data


def saved_runs(results: Path = RESULTS) -> list[Path]:
    """Saved runs, oldest first (the file names start with the UTC time)."""
    return sorted(results.glob("*.json")) if results.is_dir() else []


def machine_key(run: dict) -> tuple:
    m = run["machine"]
    return (m.get("system"), m.get("arch"), m.get("cpu"), m.get("cores"), m.get("cpu_model"))


def resolve(name: str | None, results: Path) -> Path:
    """A run given as a path or as a saved run's name (with or without .json)."""
    if name is None:
        raise ValueError("no run named")
    for cand in (Path(name), results / name, results / f"{name}.json"):
        if cand.is_file():
            return cand
    raise ValueError(f"no saved run {name!r} (neither a file nor in {results})")


def pick_runs(results: Path, new: str | None, old: str | None) -> tuple[Path, Path]:
    """Default new: the newest saved run; default old: the newest earlier one from the same machine."""
    runs = saved_runs(results)
    new_path = resolve(new, results) if new else (runs[-1] if runs else None)
    if new_path is None:
        raise ValueError(f"no saved run in {results}: run `make bench` first")
    if old:
        return new_path, resolve(old, results)
    key = machine_key(load_run(new_path))
    saved = new_path.resolve().parent == results.resolve()  # else a run outside (`make bench-quick`'s)
    earlier = [p for p in runs if p.resolve() != new_path.resolve() and (not saved or p.name < new_path.name)]
    same = [p for p in earlier if machine_key(load_run(p)) == key]
    if not same:
        raise ValueError(f"no earlier saved run from this machine ({key[2]}, {key[3]} cores) in {results}")
    return new_path, same[-1]


# --- comparing ----------------------------------------------------------------------------------------

def tracked(run: dict) -> dict[str, dict[str, float]]:
    """{benchmark name: {ratio key: value}} for the benchmarks that record a ratio."""
    out = {}
    for b in run["benchmarks"]:
        ratios = {k: v for k, v in b["extra_info"].items() if k.startswith(RATIO_PREFIX) and v is not None}
        out[b["name"]] = ratios
    return out


@dataclass
class Comparison:
    new: str
    old: str
    threshold: float
    rows: list[tuple[str, str, float, float, float, str]] = field(default_factory=list)  # name, key, old, new, change, flag
    only_new: list[str] = field(default_factory=list)
    only_old: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[tuple]:
        return [r for r in self.rows if r[5] == "REGRESSION"]


def compare(new: dict, old: dict, threshold: float = 0.2) -> Comparison:
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be a fraction in (0, 1), got {threshold}")
    a, b = tracked(old), tracked(new)
    cmp = Comparison(new=new["run"], old=old["run"], threshold=threshold)
    cmp.only_new = [n for n in b if n not in a]
    cmp.only_old = [n for n in a if n not in b]
    for name in (n for n in b if n in a):
        for key in sorted(set(a[name]) | set(b[name])):
            if key not in a[name] or key not in b[name]:
                side = "new" if key in b[name] else "old"
                cmp.rows.append((name, key, a[name].get(key), b[name].get(key), None, f"only in {side}"))
                continue
            o, n = float(a[name][key]), float(b[name][key])
            change = n / o - 1 if o else float("inf")
            flag = "REGRESSION" if n < o * (1 - threshold) else ("improved" if n > o * (1 + threshold) else "")
            cmp.rows.append((name, key, o, n, change, flag))
    return cmp


def _short(name: str) -> str:
    return name.removeprefix("bench/")


def format_comparison(cmp: Comparison, common_only: bool = False) -> str:
    lines = [f"new: {cmp.new}", f"old: {cmp.old}",
             f"tracked: ratio_vs_* (higher is better); flagged below -{cmp.threshold:.0%}", ""]
    width = max([len(_short(r[0])) + len(r[1]) + 1 for r in cmp.rows] + [20])
    lines.append(f"{'benchmark / ratio':<{width}}  {'old':>9}  {'new':>9}  {'change':>7}  flag")
    for name, key, o, n, change, flag in cmp.rows:
        fmt = lambda x: "-" if x is None else f"{x:9.3f}"  # noqa: E731
        ch = "" if change is None else f"{change:+7.1%}"
        lines.append(f"{_short(name) + ' ' + key:<{width}}  {fmt(o)}  {fmt(n)}  {ch:>7}  {flag}")
    for label, names in (("only in the new run", cmp.only_new), ("only in the old run", cmp.only_old)):
        if not names:
            continue
        if common_only:
            lines.append(f"{len(names)} benchmarks {label} (not compared)")
        else:
            lines.append(f"{label} ({len(names)}): " + ", ".join(_short(n) for n in names))
    regs = cmp.regressions
    lines.append(f"{len(regs)} regression(s) beyond {cmp.threshold:.0%}" if regs else
                 f"no ratio fell by more than {cmp.threshold:.0%}")
    return "\n".join(lines)


# --- report -------------------------------------------------------------------------------------------

def fmt_num(x) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    ax = abs(x)
    if ax >= 1e6:
        return f"{x / 1e6:.2f} M"
    if ax >= 1e4:
        return f"{x / 1e3:.0f} k"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 1:
        return f"{x:.2f}"  # two decimals: one would print a ratio of 29.95 as 30.0
    return f"{x:.3g}"


def fmt_mib(nbytes: float | None) -> str:
    if nbytes is None:
        return "n/a"
    mib = nbytes / 2**20
    return f"{mib:,.0f} MiB" if mib >= 100 else f"{mib:.3g} MiB"


def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def _test(b: dict) -> str:
    return b["name"].split("::", 1)[-1].split("[", 1)[0].removeprefix("test_")


def _label(b: dict, with_test: bool = True) -> str:
    params = ", ".join(f"{k}={v}" for k, v in (b.get("params") or {}).items())
    return " ".join(x for x in (_test(b) if with_test or not params else "", params) if x)


def _figures(extra: dict) -> str:
    keys = [k for k in extra if not k.startswith(RATIO_PREFIX) and k != "device"]
    return "; ".join(f"{k} {fmt_num(extra[k])}" for k in keys) or "-"


def _ratios(extra: dict) -> str:
    r = [f"{fmt_num(v)}x {k.removeprefix(RATIO_PREFIX)}" for k, v in extra.items() if k.startswith(RATIO_PREFIX)]
    return "; ".join(r) or "-"


def module_table(benchmarks: list[dict]) -> list[str]:
    """One row per benchmark: what, median time, figures, ratios to the baseline of the same run."""
    with_test = len({_test(b) for b in benchmarks}) > 1
    rows = ["| benchmark | median | figures | vs baseline (same run) |", "|---|---|---|---|"]
    for b in benchmarks:
        rows.append(f"| {_label(b, with_test)} | {fmt_time(b['median_s'])} | {_figures(b['extra_info'])} | "
                    f"{_ratios(b['extra_info'])} |")
    return rows


def engine_table(benchmarks: list[dict]) -> list[str]:
    """One row per game and env count, the thread counts side by side."""
    cells: dict[tuple, dict[int, dict]] = {}
    for b in benchmarks:
        p = b.get("params") or {}
        cells.setdefault((p.get("game"), p.get("num_envs")), {})[p.get("num_threads")] = b["extra_info"]
    rows = ["| game | envs | 1 thread: steps/s (vs numpy copy) | 2 threads: steps/s (vs numpy copy) |",
            "|---|---|---|---|"]
    for (game, envs), by_threads in cells.items():
        cell = lambda e: f"{fmt_num(e.get('steps_per_s'))} ({fmt_num(e.get('ratio_vs_numpy_copy'))}x)" if e else "-"  # noqa: E731
        rows.append(f"| {game} | {envs} | {cell(by_threads.get(1))} | {cell(by_threads.get(2))} |")
    return rows


def preprocess_table(benchmarks: list[dict]) -> list[str]:
    """One row per processor family: the native pipelines against the HF processor of the same run."""
    cells: dict[str, dict[str, dict]] = {}
    for b in benchmarks:
        p = b.get("params") or {}
        if "family" in p:
            kind = p.get("impl") or f"paired_{p.get('backend')}"
            cells.setdefault(p["family"], {})[kind] = b
    rows = ["| processor | HF Pillow median | native median | vs HF Pillow (float32 / out= / bf16) | "
            "vs HF torchvision | paired: vs Pillow / vs torchvision |", "|---|---|---|---|---|---|"]

    def ratio(fam: dict, impl: str, key: str) -> str:
        b = fam.get(impl)
        return fmt_num(b["extra_info"].get(key)) + "x" if b and key in b["extra_info"] else "-"

    for family, fam in cells.items():
        med = lambda impl: fmt_time(fam[impl]["median_s"]) if impl in fam else "-"  # noqa: E731
        pil = " / ".join(ratio(fam, i, "ratio_vs_hf_pil") for i in ("native_pil", "native_pil_out", "native_pil_bf16"))
        rows.append(f"| {family} | {med('hf_pil')} | {med('native_pil')} | {pil} | "
                    f"{ratio(fam, 'native_tv', 'ratio_vs_hf_tv')} | "
                    f"{ratio(fam, 'paired_pil', 'ratio_vs_hf_pil')} / {ratio(fam, 'paired_tv', 'ratio_vs_hf_tv')} |")
    return rows


TABLES = {"engine": engine_table, "preprocess": preprocess_table}


def run_header(run: dict) -> str:
    m = run["machine"]
    load = run.get("load_avg_1_5_15")
    if load and run.get("load_avg_before"):
        load = f"{run['load_avg_before']} at the start, {load} at the end"
    return (f"Saved run `bench/results/{run['run']}.json` ({run['datetime']}, commit "
            f"{(run['commit'].get('id') or '?')[:7]}{' + uncommitted changes' if run['commit'].get('dirty') else ''}; "
            f"{m.get('cpu')}, {m.get('cores')} cores, Python {m.get('python')}"
            + (f"; load average {load}" if load else "") + ").")


def module_tables(run: dict) -> dict[str, str]:
    by_module: dict[str, list[dict]] = {}
    for b in run["benchmarks"]:
        by_module.setdefault(b["module"], []).append(b)
    out = {}
    for module, benchmarks in by_module.items():
        rows = TABLES.get(module, module_table)(benchmarks)
        out[module] = "\n".join([run_header(run), ""] + rows)
    return out


def gpu_table(results_dir: Path, commit: str | None = None) -> str | None:
    """The newest GPU run (bench/gpu/run.py's kernels_gpu.json, dist_check.py's dist_gpu.json)."""
    dirs = sorted(d for d in results_dir.glob("*") if (d / "kernels_gpu.json").is_file()) if results_dir.is_dir() else []
    if not dirs:
        return None
    d = dirs[-1]
    k = json.loads((d / "kernels_gpu.json").read_text())
    if commit is None:
        commit = _git_commit_of(d)
    rel = d.relative_to(ROOT) if d.is_relative_to(ROOT) else d
    lines = [f"GPU run `{rel}` ({k.get('device')}, torch {k.get('torch')}, triton {k.get('triton')}; "
             f"started {k.get('started_utc')}, committed in {commit or 'unknown commit'}). Not re-measured since: "
             "the code it measured may have changed.", ""]
    tl = k.get("token_logprobs") or {}
    t = tl.get("timings_s") or {}
    peak = tl.get("peak_extra_bytes") or {}
    if t:
        lines += [f"token_logprobs, {tl.get('rows')} x {tl.get('vocab')} bf16 (baseline: `naive`, the full float32 "
                  "log-softmax + gather, same run):", "",
                  "| implementation | forward | vs naive | forward+backward | vs naive | extra peak beyond the gradient |",
                  "|---|---|---|---|---|---|"]
        for impl in ("naive", "reference", "compiled_reference", "triton"):
            f, fb = t.get(f"{impl}/forward"), t.get(f"{impl}/forward_backward")
            if f is None or fb is None:
                continue
            pk = peak.get(f"{impl}/forward_backward_beyond_grad")
            lines.append(f"| {impl} | {fmt_time(f)} | {fmt_num(t['naive/forward'] / f)}x | {fmt_time(fb)} | "
                         f"{fmt_num(t['naive/forward_backward'] / fb)}x | "
                         f"{fmt_mib(pk)} |")
        lines.append("")
    g = k.get("gae") or {}
    gt = g.get("timings_s") or {}
    if gt:
        lines += [f"GAE, T={g.get('num_steps')} N={g.get('num_envs')} (baselines: the Python loop and one empty "
                  "Triton launch, same run):", "",
                  "| implementation | time | vs Python loop | time / empty launch |", "|---|---|---|---|"]
        empty = gt.get("empty_triton_launch")
        for impl in ("python_loop", "reference", "triton", "ops.gae"):
            if impl in gt:
                lines.append(f"| {impl} | {fmt_time(gt[impl])} | {fmt_num(gt['python_loop'] / gt[impl])}x | "
                             f"{fmt_num(gt[impl] / empty) if empty and impl in ('triton', 'ops.gae') else '-'} |")
        lines.append("")
    dist = d / "dist_gpu.json"
    if dist.is_file():
        dj = json.loads(dist.read_text())
        lines += ["One PPO update of the tiny VLM under each accelerate config (`bench/gpu/dist_check.py`):", "",
                  "| config | processes | status | wall |", "|---|---|---|---|"]
        for r in dj.get("results", []):
            lines.append(f"| {r.get('config')} | {r.get('processes')} | {r.get('status')} | "
                         f"{fmt_num(r.get('wall_s'))} s |")
        lines.append("")
    return "\n".join(lines).rstrip()


def _git_commit_of(path: Path) -> str | None:
    """The commit (short hash, date) that last changed `path`."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%h (%cs)", "--", str(path)], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out or None


BLOCK = re.compile(r"(<!-- bench-report:([\w-]+) -->\n)(.*?)(<!-- /bench-report:\2 -->)", re.S)


def fill_blocks(text: str, tables: dict[str, str]) -> tuple[str, list[str]]:
    """Replace each block's content by its table; returns the text and the names of blocks filled."""
    filled = []

    def sub(m: re.Match) -> str:
        name = m.group(2)
        if name not in tables:
            return m.group(0)
        filled.append(name)
        return f"{m.group(1)}{tables[name]}\n{m.group(4)}"

    return BLOCK.sub(sub, text), filled


def report(run: dict, readme: Path = README, gpu_dir: Path = GPU_RESULTS) -> list[str]:
    tables = module_tables(run)
    gpu = gpu_table(gpu_dir)
    if gpu:
        tables["gpu"] = gpu
    text, filled = fill_blocks(readme.read_text(), tables)
    readme.write_text(text)
    missing = [n for n in tables if n not in filled]
    if missing:
        print(f"{readme}: no block for {', '.join(missing)} (add <!-- bench-report:NAME --> ... "
              "<!-- /bench-report:NAME -->)", file=sys.stderr)
    return filled


# --- command line -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of saved runs")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save", help="compact a pytest-benchmark JSON into the results folder")
    s.add_argument("raw", type=Path)
    s.add_argument("--load-before", help="the load average (1, 5, 15 min) when the run started")
    c = sub.add_parser("compare", help="tracked ratios of two runs side by side")
    c.add_argument("--new", help="saved run name or path (a raw pytest-benchmark JSON too); default: the newest")
    c.add_argument("--old", help="default: the newest earlier saved run from the new run's machine")
    c.add_argument("--threshold", type=float, default=0.2, help="flag a ratio that fell by more (fraction)")
    c.add_argument("--common", action="store_true", help="count, not list, benchmarks of one run only")
    r = sub.add_parser("report", help="write bench/README.md's tables from a saved run")
    r.add_argument("--run", help="saved run name or path; default: the newest")
    r.add_argument("--readme", type=Path, default=README)
    r.add_argument("--gpu", type=Path, default=GPU_RESULTS)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "save":
            print(f"saved {save(args.raw, args.results, load_before=args.load_before)}")
            return 0
        if args.cmd == "compare":
            new_path, old_path = pick_runs(args.results, args.new, args.old)
            cmp = compare(load_run(new_path), load_run(old_path), args.threshold)
            print(format_comparison(cmp, common_only=args.common))
            return 1 if cmp.regressions else 0
        runs = saved_runs(args.results)
        path = resolve(args.run, args.results) if args.run else (runs[-1] if runs else None)
        if path is None:
            raise ValueError(f"no saved run in {args.results}: run `make bench` first")
        filled = report(load_run(path), args.readme, args.gpu)
        print(f"{args.readme}: tables from {path.name} in blocks {', '.join(filled) or '(none)'}")
        return 0
    except (ValueError, OSError) as e:
        print(f"bench/track.py {args.cmd}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
