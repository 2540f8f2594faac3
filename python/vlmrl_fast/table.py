"""`vlmrl table`: the paper's Table 1 for this framework's recipes.

For each env and seed it runs the env's recipe (``configs/tiny/<env id>.toml``) through the real trainer
(`trainer.train`: warm start, evaluation before RL, PPO, evaluation after RL) into its own run folder,
``DIR/<env id>-seed<seed>/`` with the usual artifacts, then writes

- ``DIR/table.json``: ``{"action_only", "envs", "seeds", "rows", "summary", "paper"}``; ``rows`` has one
  object per env and seed (:data:`ROW_KEYS`), ``summary`` one per env with the mean and min over seeds
  (:data:`SUMMARY_KEYS`), ``paper`` the published rows cited in :data:`PAPER_ROWS`;
- ``DIR/table.md``: our rows (success after RL, mean and min over seeds, and before RL) beside the
  paper's, which are marked as cited from the paper, a different model class;
- ``DIR/table.png``: success before and after RL per env (mean over seeds, a dot per seed).

``--action-only`` sets ``cot = false`` in every recipe (the paper's no-CoT ablation).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from pathlib import Path
from typing import Any

TABLE_ENVS = ("NumberLine-v0", "EZPoints-v0", "Points24-v0", "Blackjack-v0", "ALFWorld-v0")
"""The envs of the paper's Table 1, in its order (the default of ``--envs``)."""

RECIPES = Path(__file__).resolve().parents[2] / "configs" / "tiny"
"""Where the recipes live in a checkout (``--recipes`` points elsewhere)."""

ROW_KEYS = ("env", "seed", "success_before_rl", "success_after_rl", "mean_return_after_rl",
            "invalid_rate_after_rl", "perception_after_rl", "solvable_share", "eval_episodes", "updates",
            "env_steps", "wall_seconds", "run_dir")
"""`perception_after_rl`: share of the evaluation answers after RL whose state fields equal the truth;
`solvable_share`: share of the evaluation episodes whose deal the expert can solve (the formula games' ceiling
of the success rate). Both null where an env has no such figure."""
SUMMARY_KEYS = ("env", "seeds", "success_after_rl_mean", "success_after_rl_min", "success_before_rl_mean",
                "invalid_rate_after_rl_mean", "perception_after_rl_mean", "solvable_share", "wall_seconds_mean")

PAPER_SOURCE = ("Zhai et al. 2024 (RL4VLM), Table 1, success rate %, as cited in the project's METHOD.md, "
                "which notes them as not yet re-checked against the paper (LLaVA-1.6-Mistral-7B and API "
                "models: a different model class)")
PAPER_ROWS: dict[str, dict[str, float]] = {
    "GPT-4V": {"NumberLine-v0": 65.5, "EZPoints-v0": 10.5, "Points24-v0": 0.0, "Blackjack-v0": 25.5,
               "ALFWorld-v0": 19.4},
    "Gemini": {"NumberLine-v0": 82.5, "EZPoints-v0": 2.0, "Points24-v0": 0.0, "Blackjack-v0": 30.0,
               "ALFWorld-v0": 13.5},
    "LLaVA-7B after SFT": {"NumberLine-v0": 24.8, "EZPoints-v0": 23.0, "Points24-v0": 2.6, "Blackjack-v0": 23.1,
                           "ALFWorld-v0": 17.0},
    "LLaVA-7B SFT + RL (the paper)": {"NumberLine-v0": 89.4, "EZPoints-v0": 50.0, "Points24-v0": 2.3,
                                      "Blackjack-v0": 40.2, "ALFWorld-v0": 21.7},
}
"""The paper's rows with chain of thought (its ALFWorld figure is the average over task types)."""


def parse_list(text: str, what: str, cast: type = str) -> list[Any]:
    """'A,B' -> ['A', 'B'] (cast each); a one-line ValueError naming the bad item."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"--{what}: empty list {text!r}")
    out = []
    for t in items:
        try:
            out.append(cast(t))
        except ValueError:
            raise ValueError(f"--{what}: {t!r} is not a {cast.__name__}") from None
    return out


def recipe_path(env_id: str, recipes: Path = RECIPES) -> Path:
    path = Path(recipes) / f"{env_id}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(recipes).glob("*.toml"))
        raise ValueError(f"no recipe for env {env_id!r}: {path} does not exist (recipes: {', '.join(known)})")
    return path


def run_config(env_id: str, seed: int, out: Path, *, action_only: bool = False, updates: int | None = None,
               recipes: Path = RECIPES, overrides: dict[str, Any] | None = None) -> Any:
    """The recipe's TrainConfig for one cell of the table (validated)."""
    from vlmrl_fast.config import load_config

    ov: dict[str, Any] = dict(overrides or {})
    ov.update(seed=seed, run_dir=str(Path(out) / f"{env_id}-seed{seed}"), progress=False)
    if action_only:
        ov["cot"] = False
    if updates is not None:
        ov["updates"] = updates
    cfg = load_config(recipe_path(env_id, recipes), ov)
    if cfg.env != env_id:
        raise ValueError(f"recipe {recipe_path(env_id, recipes)} trains env {cfg.env!r}, not {env_id!r}")
    return cfg


def _finite(x: Any) -> float | None:
    """None for a missing or NaN figure (JSON has no NaN)."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@functools.lru_cache(maxsize=None)
def _solvable_share(env_id: str, episodes: int, eval_seed: int, batch: int) -> float:
    """`rollout.solvable_share` of one evaluation set, once per table (every seed of an env shares it)."""
    from vlmrl_fast.rollout import solvable_share

    return solvable_share(env_id, episodes=episodes, seed=eval_seed, batch=batch)


def row_of(env_id: str, seed: int, summary: dict[str, Any], cfg: Any) -> dict[str, Any]:
    solvable = _solvable_share(env_id, cfg.eval_episodes, cfg.eval_seed, cfg.eval_batch)
    return {"env": env_id, "seed": seed,
            "success_before_rl": summary["success_rate_before_rl"],
            "success_after_rl": summary["success_rate_after_rl"],
            "mean_return_after_rl": summary["mean_return_after_rl"],
            "invalid_rate_after_rl": summary["invalid_rate_after_rl"],
            "perception_after_rl": _finite(summary.get("perception_accuracy_after_rl")),
            "solvable_share": _finite(solvable),
            "eval_episodes": summary["eval_episodes"], "updates": summary["updates_done"],
            "env_steps": summary["env_steps"], "wall_seconds": summary["wall_seconds"],
            "run_dir": str(cfg.resolved_run_dir())}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and min over seeds, per env, in the order the envs first appear."""
    out = []
    for env_id in dict.fromkeys(r["env"] for r in rows):
        rs = [r for r in rows if r["env"] == env_id]

        def mean(k: str) -> float | None:
            vals = [r[k] for r in rs if r.get(k) is not None]
            return sum(vals) / len(vals) if vals else None

        out.append({"env": env_id, "seeds": [r["seed"] for r in rs],
                    "success_after_rl_mean": mean("success_after_rl"),
                    "success_after_rl_min": min(r["success_after_rl"] for r in rs),
                    "success_before_rl_mean": mean("success_before_rl"),
                    "invalid_rate_after_rl_mean": mean("invalid_rate_after_rl"),
                    "perception_after_rl_mean": mean("perception_after_rl"),
                    "solvable_share": mean("solvable_share"),
                    "wall_seconds_mean": mean("wall_seconds")})
    return out


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def table_markdown(table: dict[str, Any]) -> str:
    envs = [s["env"] for s in table["summary"]]
    mode = "action only (no CoT)" if table["action_only"] else "chain of thought"
    head = "| | " + " | ".join(envs) + " |\n|---|" + "---|" * len(envs) + "\n"
    by_env = {s["env"]: s for s in table["summary"]}
    lines = [f"# Success rate % ({mode}), seeds {','.join(map(str, table['seeds']))}", "",
             "Ours: each env's recipe (configs/tiny/<env id>.toml), success on the "
             "fixed evaluation episodes after RL; mean and min over seeds, and before RL (after the warm "
             "start).", "", head.rstrip("\n")]
    lines.append("| ours, after RL (mean) | " + " | ".join(_pct(by_env[e]["success_after_rl_mean"]) for e in envs)
                 + " |")
    lines.append("| ours, after RL (min) | " + " | ".join(_pct(by_env[e]["success_after_rl_min"]) for e in envs)
                 + " |")
    lines.append("| ours, before RL (mean) | "
                 + " | ".join(_pct(by_env[e]["success_before_rl_mean"]) for e in envs) + " |")
    lines.append("| ours, perception after RL (mean) | "
                 + " | ".join(_pct(by_env[e]["perception_after_rl_mean"]) for e in envs) + " |")
    lines.append("| solvable deals of the evaluation set | "
                 + " | ".join(_pct(by_env[e]["solvable_share"]) for e in envs) + " |")
    lines += ["", f"Cited from the paper, different model class: {PAPER_SOURCE}; with chain of thought"
              + (" (the paper gives lower figures without it, not restated here)" if table["action_only"] else "")
              + ".", "", head.rstrip("\n")]
    for name, vals in table["paper"].items():
        lines.append(f"| {name} (cited from the paper) | " + " | ".join(
            f"{vals[e]:.1f}" if e in vals else "-" for e in envs) + " |")
    lines += ["", "Perception: the share of answers whose state fields (numbers, cards, ALFWorld's location and held "
              "object) equal the truth; solvable deals: the share of evaluation episodes the built-in expert can "
              "win (\"-\": no such figure).",
              "", "Per seed:", "",
              "| env | seed | before RL | after RL | invalid after RL | perception after RL | updates | wall s | run |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        lines.append(f"| {r['env']} | {r['seed']} | {_pct(r['success_before_rl'])} | {_pct(r['success_after_rl'])} "
                     f"| {_pct(r['invalid_rate_after_rl'])} | {_pct(r.get('perception_after_rl'))} | {r['updates']} "
                     f"| {r['wall_seconds']:.0f} | {r['run_dir']} |")
    return "\n".join(lines) + "\n"


def plot_table(table: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = table["summary"]
    x = list(range(len(summary)))
    fig, ax = plt.subplots(figsize=(1.6 * len(summary) + 3, 3.6))
    ax.bar([i - 0.2 for i in x], [s["success_before_rl_mean"] for s in summary], 0.4, label="before RL (mean)",
           color="lightgray")
    ax.bar([i + 0.2 for i in x], [s["success_after_rl_mean"] for s in summary], 0.4, label="after RL (mean)",
           color="tab:green")
    for i, s in enumerate(summary):
        seeds = [r["success_after_rl"] for r in table["rows"] if r["env"] == s["env"]]
        ax.scatter([i + 0.2] * len(seeds), seeds, c="black", s=12, zorder=3)
    paper = table["paper"].get("LLaVA-7B SFT + RL (the paper)", {})
    px = [i for i, s in enumerate(summary) if s["env"] in paper]
    if px:
        ax.scatter([i + 0.2 for i in px], [paper[summary[i]["env"]] / 100 for i in px], marker="_", s=400,
                   c="tab:red", zorder=4, label="paper SFT+RL (cited, LLaVA-7B)")
    ax.set_xticks(x, [s["env"] for s in summary], fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("success rate")
    ax.set_title("action only" if table["action_only"] else "chain of thought", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_table(out: Path, rows: list[dict[str, Any]], *, seeds: list[int], action_only: bool) -> dict[str, Any]:
    """table.json, table.md and table.png in `out` from the rows; returns the table."""
    summary = summarize(rows)
    table = {"action_only": action_only, "envs": [s["env"] for s in summary], "seeds": seeds,
             "rows": rows, "summary": summary, "paper_source": PAPER_SOURCE, "paper": PAPER_ROWS}
    out = Path(out)
    (out / "table.json").write_text(json.dumps(table, indent=1) + "\n")
    (out / "table.md").write_text(table_markdown(table))
    plot_table(table, out / "table.png")
    return table


def run_table(envs: list[str], seeds: list[int], out: str | Path, *, action_only: bool = False,
              updates: int | None = None, recipes: Path = RECIPES,
              overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every (env, seed) through `trainer.train`; the table is rewritten after each run, so an interrupted
    table keeps the runs done so far."""
    from vlmrl_fast.trainer import train

    out = Path(out)
    cfgs = [(e, s, run_config(e, s, out, action_only=action_only, updates=updates, recipes=recipes,
                              overrides=overrides)) for e in envs for s in seeds]  # all errors before any run
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    table: dict[str, Any] = {}
    for env_id, seed, cfg in cfgs:
        print(f"vlmrl table: {env_id} seed {seed} -> {cfg.resolved_run_dir()}", flush=True)
        summary = train(cfg)
        rows.append(row_of(env_id, seed, summary, cfg))
        table = write_table(out, rows, seeds=seeds, action_only=action_only)
        print(f"vlmrl table: {env_id} seed {seed}: success {summary['success_rate_before_rl']:.3f} -> "
              f"{summary['success_rate_after_rl']:.3f} ({summary['wall_seconds']:.0f} s)", flush=True)
    return table


def collect_table(envs: list[str], seeds: list[int], out: str | Path) -> dict[str, Any]:
    """The table from finished run folders OUT/<env>-seed<S>/ (summary.json and config.toml), e.g. runs of
    one recipe started side by side with `vlmrl train --config configs/tiny/<env>.toml --run-dir ...`."""
    from vlmrl_fast.config import load_config

    out = Path(out)
    rows: list[dict[str, Any]] = []
    cot: set[bool] = set()
    for env_id in envs:
        for seed in seeds:
            run = out / f"{env_id}-seed{seed}"
            for name in ("summary.json", "config.toml"):
                if not (run / name).is_file():
                    raise ValueError(f"--collect: {run / name} does not exist (run {env_id} seed {seed} first)")
            cfg = load_config(run / "config.toml")
            if cfg.env != env_id or cfg.seed != seed:
                raise ValueError(f"--collect: {run} holds a run of {cfg.env} seed {cfg.seed}, not {env_id} seed {seed}")
            cot.add(cfg.cot)
            rows.append({**row_of(env_id, seed, json.loads((run / "summary.json").read_text()), cfg),
                         "run_dir": str(run)})
    if len(cot) > 1:
        raise ValueError(f"--collect: the runs in {out} mix chain-of-thought and action-only recipes")
    return write_table(out, rows, seeds=seeds, action_only=cot == {False})


def cmd_table(args: argparse.Namespace) -> int:
    from vlmrl_fast.train_cli import _errors, _fail

    try:
        envs = parse_list(args.envs, "envs")
        seeds = parse_list(args.seeds, "seeds", int)
        if any(s < 0 for s in seeds):
            raise ValueError(f"--seeds: seeds must be >= 0, got {args.seeds!r}")
        if args.updates is not None and args.updates < 0:
            raise ValueError(f"--updates must be >= 0, got {args.updates}")
        overrides: dict[str, Any] = {}
        if args.model:
            overrides["model"] = args.model
        if args.device:
            overrides["device"] = args.device
        if args.collect:
            table = collect_table(envs, seeds, args.out)
        else:
            table = run_table(envs, seeds, args.out, action_only=args.action_only, updates=args.updates,
                              recipes=Path(args.recipes), overrides=overrides)
    except _errors() as e:
        return _fail("table", e)
    print(table_markdown(table), end="")
    print(f"table: {Path(args.out) / 'table.md'}, {Path(args.out) / 'table.json'}, {Path(args.out) / 'table.png'}")
    return 0


def add_subcommand(sub: Any) -> None:
    p = sub.add_parser("table", help="train each env's recipe for each seed and write the paper's Table 1 "
                       "beside ours (table.md, table.json, table.png)")
    p.add_argument("--envs", default=",".join(TABLE_ENVS), help="comma-separated env ids (default: all five)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    p.add_argument("--out", default="runs/table", help="folder of the run folders and the table files")
    p.add_argument("--action-only", action="store_true", help="cot = false in every recipe (no-CoT ablation)")
    p.add_argument("--updates", type=int, default=None, help="PPO updates per run (default: the recipe's)")
    p.add_argument("--model", default="", help="model of every run (default: the recipe's, the tiny VLM)")
    p.add_argument("--device", default="", help="device of every run (default: the recipe's)")
    p.add_argument("--recipes", default=str(RECIPES), help="folder of the <env id>.toml recipes")
    p.add_argument("--collect", action="store_true", help="train nothing: rebuild the table files from the "
                   "finished run folders OUT/<env>-seed<S>/ (runs made separately, e.g. side by side)")
    p.set_defaults(func=cmd_table)


if __name__ == "__main__":  # pragma: no cover
    from vlmrl_fast.cli import main

    sys.exit(main(["table", *sys.argv[1:]]))
