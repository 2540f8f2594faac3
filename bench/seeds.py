"""The main job over several seeds: success before/after RL, perception accuracy, wall time; mean and min.

    .venv/bin/python bench/seeds.py                       # seeds 0,1,2 of `vlmrl train` (TrainConfig defaults)
    .venv/bin/python bench/seeds.py --seeds 0,1 --set updates=10 --out runs/seeds

Each seed runs `vlmrl_fast.trainer.train` in its own run folder (DIR/seed<S>) one after the other, with the
same wall clock the user sees (first-use build of the default model included in the first seed's time when
the cache is cold). Writes DIR/seeds.json (rows, mean, min) and prints a Markdown table. `--collect`
rebuilds both from the run folders DIR/seed<S>/ of earlier invocations (seeds run separately).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

FIGURES = ("success_rate_before_rl", "success_rate_after_rl", "gain", "perception_accuracy_before_rl",
           "perception_accuracy_after_rl", "thought_consistency_after_rl", "wall_seconds")


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def row(seed: int, summary: dict) -> dict:
    """One seed's figures from its run's summary."""
    r = {"seed": seed, **{k: summary.get(k) for k in FIGURES if k in summary}}
    r["gain"] = summary["success_rate_after_rl"] - summary["success_rate_before_rl"]
    return r


def aggregate(seeds: list[int], rows: list[dict], overrides: dict) -> dict:
    """The rows with their mean, min and max over seeds (NaN and missing figures left out)."""
    def agg(fn):
        out_ = {}
        for k in (*FIGURES, "wall_seconds_measured"):
            vals = [r[k] for r in rows if isinstance(r.get(k), (int, float)) and not math.isnan(r[k])]
            out_[k] = fn(vals) if vals else None
        return out_

    return {"seeds": seeds, "overrides": overrides, "rows": rows,
            "mean": agg(lambda v: sum(v) / len(v)), "min": agg(min), "max": agg(max)}


def run(seeds: list[int], out: Path, overrides: dict) -> dict:
    from vlmrl_fast.config import load_config
    from vlmrl_fast.trainer import train

    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        cfg = load_config(None, {**overrides, "seed": seed, "run_dir": str(out / f"seed{seed}"), "progress": False})
        r = row(seed, train(cfg))
        r["wall_seconds_measured"] = time.perf_counter() - t0
        rows.append(r)
        print(json.dumps(r), flush=True)
    return write(out, aggregate(seeds, rows, overrides))


def collect(seeds: list[int], out: Path) -> dict:
    """Rebuild seeds.json from finished runs OUT/seed<S>/summary.json (runs made by separate invocations)."""
    rows = []
    for seed in seeds:
        path = out / f"seed{seed}" / "summary.json"
        if not path.is_file():
            raise SystemExit(f"bench/seeds.py --collect: {path} does not exist (run that seed first)")
        rows.append(row(seed, json.loads(path.read_text())))
    return write(out, aggregate(seeds, rows, {}))


def write(out: Path, result: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def table(result: dict) -> str:
    cols = ("success_rate_before_rl", "success_rate_after_rl", "gain", "perception_accuracy_after_rl",
            "thought_consistency_after_rl", "wall_seconds")
    fmt = (lambda v: "-" if v is None else (f"{v:.0f}" if abs(v) >= 10 else f"{v:.3f}"))
    lines = ["| seed | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for r in result["rows"]:
        lines.append(f"| {r['seed']} | " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    for name in ("mean", "min"):
        lines.append(f"| {name} | " + " | ".join(fmt(result[name].get(c)) for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--out", default="runs/bench_seeds", help="folder of the runs and seeds.json")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="TrainConfig override")
    p.add_argument("--collect", action="store_true",
                   help="run nothing: rebuild seeds.json and the table from OUT/seed<S>/summary.json")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    overrides = {}
    for item in args.set:
        if "=" not in item:
            p.error(f"--set: expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        overrides[k.strip()] = _value(v.strip())
    if args.collect:
        print(table(collect(seeds, Path(args.out))))
    else:
        print(table(run(seeds, Path(args.out), overrides)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
