"""The embedded tiny VLM's build over seeds: how well each built model reads every game, and how long the build
takes (issue 18's "default model reads every env": >= 0.99 on NumberLine and EZPoints, >= 0.95 on Points24 and
Blackjack, build <= 5 min on 2 cores).

    .venv/bin/python bench/perception.py --seeds 0,1,2 --out runs/bench_reader

For each seed: the default-size tiny llava built from the seed into OUT/seed<S> and taught to read
(`vlmrl_fast.perception.teach_reading` with the shipped recipe `perception.READER`, which is exactly what the
first use of `--model tiny` runs), timed from the empty folder to the saved model. Writes OUT/reader.json: one
row per seed (held-out answer accuracy and probe accuracy per env, seconds) and the mean and min over seeds,
and prints a Markdown table. `--set FIELD=VALUE` overrides a recipe field (e.g. `--set steps=1800`), for
trying recipes (other `envs` need `env_weights` and `vision_weights` of their length); the rows record the
recipe they ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path


def _value(text: str):
    if "," in text:
        return tuple(_value(t) for t in text.split(","))
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def run(seeds: list[int], out: Path, overrides: dict) -> dict:
    from vlmrl_fast import perception
    from vlmrl_fast.models.tiny import build_tiny_vlm

    recipe = dataclasses.replace(perception.READER, **overrides)
    rows = []
    for seed in seeds:
        folder = out / f"seed{seed}"
        t0 = time.perf_counter()
        build_tiny_vlm("llava", folder, seed=seed, size="default")
        report = perception.teach_reading(folder, seed=seed, recipe=recipe, progress=False)
        rows.append({"seed": seed, "build_seconds": time.perf_counter() - t0, "accuracy": report["accuracy"],
                     "rebalances": report["rebalances"]})
    envs = list(recipe.envs)
    summary = {kind: {e: {"mean": sum(r["accuracy"][e][kind] for r in rows) / len(rows),
                          "min": min(r["accuracy"][e][kind] for r in rows)} for e in envs}
               for kind in ("answer", "probe")}
    seconds = [r["build_seconds"] for r in rows]
    result = {"seeds": seeds, "recipe": dataclasses.asdict(recipe), "rows": rows, "summary": summary,
              "build_seconds": {"mean": sum(seconds) / len(seconds), "max": max(seconds)}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "reader.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def table(result: dict) -> str:
    envs = list(result["recipe"]["envs"])
    lines = ["| seed | " + " | ".join(envs) + " | build s |", "|---" * (len(envs) + 2) + "|"]
    for r in result["rows"]:
        cells = [f"{r['accuracy'][e]['answer']:.3f}" for e in envs]
        lines.append(f"| {r['seed']} | " + " | ".join(cells) + f" | {r['build_seconds']:.0f} |")
    for agg in ("mean", "min"):
        cells = [f"{result['summary']['answer'][e][agg]:.3f}" for e in envs]
        secs = result["build_seconds"]["mean" if agg == "mean" else "max"]
        lines.append(f"| {agg} | " + " | ".join(cells) + f" | {secs:.0f}{'' if agg == 'mean' else ' (max)'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a field of the reader recipe (perception.ReaderRecipe)")
    p.add_argument("--out", default="runs/bench_reader")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds:
        p.error("--seeds: no seed named")
    from vlmrl_fast.perception import ReaderRecipe

    known = {f.name for f in dataclasses.fields(ReaderRecipe)}
    overrides = {}
    for item in args.set:
        key, sep, val = item.partition("=")
        if not sep or key not in known:
            p.error(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(known))}")
        overrides[key] = _value(val)
    result = run(seeds, Path(args.out), overrides)
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
