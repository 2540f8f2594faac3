"""Run artifacts: metrics.jsonl (+ TensorBoard / wandb when enabled), summary.json, the learning-curve PNG
and the HTML episode report."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmrl_fast.checkpoint import INJECT_KILL_ENV, maybe_kill, write_file_atomic


def _jsonable(v: Any) -> Any:
    """Floats that JSON cannot hold (nan, inf) become null; numpy scalars become Python numbers."""
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsLogger:
    """Appends one JSON record per update to metrics.jsonl; mirrors scalars to TensorBoard and wandb
    when those are enabled (and installed: a missing package is a warning, not a failure)."""

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = False, wandb: bool = False,
                 config: dict[str, Any] | None = None, resume_from_step: int | None = None) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_from_step is not None and self.path.exists():
            # a resumed run drops the records written after its checkpoint, so the file has no duplicates,
            # and a last line cut short by a kill
            kept = [json.dumps(r) for r in _records(self.path.read_text(), partial_last=True)
                    if r.get("update", 0) <= resume_from_step]
            write_file_atomic(self.path, "".join(k + "\n" for k in kept))
        elif resume_from_step is None and self.path.exists():
            self.path.unlink()
        self._tb = None
        self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:
                warnings.warn("tensorboard = true but tensorboard is not installed; logging to metrics.jsonl only")
        if wandb:
            try:
                import wandb as wandb_mod

                self._wandb = wandb_mod.init(project="vlmrl_fast", name=Path(run_dir).name, config=config,
                                             dir=str(run_dir))
            except ImportError:
                warnings.warn("wandb = true but wandb is not installed; logging to metrics.jsonl only")

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (must hold 'update'); numbers go to the enabled trackers too."""
        clean = {k: _jsonable(v) for k, v in record.items()}
        line = json.dumps(clean) + "\n"
        with self.path.open("a") as fh:
            if os.environ.get(INJECT_KILL_ENV, "").startswith("metrics_write"):  # test switch: half a line
                fh.write(line[: len(line) // 2])
                fh.flush()
                maybe_kill("metrics_write", int(record.get("update", 0)))
            fh.write(line)
        step = int(record.get("update", 0))
        scalars = {k: float(v) for k, v in clean.items() if isinstance(v, (int, float)) and k != "update"}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        """Flush and close the trackers."""
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _records(text: str, *, partial_last: bool = False) -> list[dict[str, Any]]:
    """The JSON records of metrics.jsonl text; with partial_last, a last line that does not parse (a write
    cut short by a kill) is left out. Any other bad line is a ValueError naming its line number."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    out = []
    for i, ln in enumerate(lines):
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError as e:
            if partial_last and i == len(lines) - 1 and not text.endswith("\n"):
                break
            raise ValueError(f"metrics.jsonl line {i + 1} is not JSON: {e}") from None
    return out


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of metrics.jsonl, in order."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return _records(path.read_text())


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write summary.json atomically."""
    path = Path(run_dir) / "summary.json"
    write_file_atomic(path, json.dumps({k: _jsonable(v) for k, v in summary.items()}, indent=1) + "\n")
    return path


def plot_learning_curve(run_dir: str | Path, *, before: float | None = None, after: float | None = None,
                        eval_episodes: tuple[int, int] | None = None) -> Path | None:
    """learning_curve.png: rollout success rate and episode return per update, the held-out evaluation's
    success rate (before RL at update 0, the periodic `eval/success_rate` records, after RL at the last update)
    as a separate line, and the evaluations before and after RL as dashed lines. `eval_episodes` (periodic,
    before/after) only labels the legend. Returns the path, or None when there is nothing to plot."""
    records = read_metrics(run_dir)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["update"] for r in records]

    def series(key: str) -> list[float]:
        return [np.nan if r.get(key) is None else r[key] for r in records]

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(x, series("charts/success_rate"), marker="o", alpha=0.6,
                 label="rollout success (episodes ending in the rollout)")
    ex = [r["update"] for r in records if r.get("eval/success_rate") is not None]
    ey = [r["eval/success_rate"] for r in records if r.get("eval/success_rate") is not None]
    if before is not None and before == before:
        ex, ey = [0, *ex], [before, *ey]
    if after is not None and after == after:
        ex, ey = [*ex, x[-1]], [*ey, after]
    if ex:
        sizes = f" ({eval_episodes[0]} ep.; {eval_episodes[1]} before/after RL)" if eval_episodes else ""
        axes[0].plot(ex, ey, marker="s", c="black", lw=2, label="held-out eval success" + sizes)
    if before is not None:
        axes[0].axhline(before, ls="--", c="gray", label=f"eval before RL ({before:.2f})")
    if after is not None:
        axes[0].axhline(after, ls="--", c="green", label=f"eval after RL ({after:.2f})")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8)
    axes[1].plot(x, series("charts/episodic_return"), marker="o", c="tab:orange")
    axes[1].set_title("episode return", fontsize=9)
    axes[2].plot(x, series("charts/invalid_rate"), marker="o", c="tab:red", label="invalid answers")
    axes[2].plot(x, series("losses/clipfrac"), marker=".", c="tab:purple", label="clip fraction")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    axes[0].set_title("success rate", fontsize=9)
    fig.suptitle(Path(run_dir).name, fontsize=10)
    fig.tight_layout()
    path = Path(run_dir) / "learning_curve.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


@dataclass
class EpisodeStep:
    """One step of an evaluation episode as shown in the HTML report."""

    frame: np.ndarray
    prompt: str
    answer: str
    action: str
    valid: bool
    reward: float


@dataclass
class Episode:
    """A recorded evaluation episode."""

    steps: list[EpisodeStep] = field(default_factory=list)

    @property
    def total_reward(self) -> float:
        """Sum of the step rewards."""
        return float(sum(s.reward for s in self.steps))


def _png_data_uri(frame: np.ndarray, width: int = 180) -> str:
    from PIL import Image

    img = Image.fromarray(np.asarray(frame, dtype=np.uint8))
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def write_episode_report(run_dir: str | Path, episodes: list[Episode], *, title: str = "evaluation episodes"
                         ) -> Path:
    """report.html: for each episode, every step's frame, prompt, answer, parsed action and reward."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
             "body{font-family:sans-serif;margin:1em} table{border-collapse:collapse;margin-bottom:2em}"
             "td,th{border:1px solid #ccc;padding:4px;vertical-align:top;font-size:12px}"
             "pre{white-space:pre-wrap;max-width:46em;margin:0} .bad{color:#b00}</style></head><body>",
             f"<h1>{esc(title)}</h1>"]
    for i, ep in enumerate(episodes):
        outcome = "success" if ep.total_reward > 0 else "failure"
        parts.append(f"<h2>episode {i}: {outcome}, total reward {ep.total_reward:g}</h2>")
        parts.append("<table><tr><th>step</th><th>frame</th><th>prompt</th><th>answer</th>"
                     "<th>action</th><th>reward</th></tr>")
        for t, s in enumerate(ep.steps):
            action = esc(s.action) if s.valid else f"<span class='bad'>invalid &rarr; {esc(s.action)}</span>"
            parts.append(f"<tr><td>{t}</td><td><img src='{_png_data_uri(s.frame)}'></td>"
                         f"<td><pre>{esc(s.prompt)}</pre></td><td><pre>{esc(s.answer)}</pre></td>"
                         f"<td>{action}</td><td>{s.reward:g}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    path = Path(run_dir) / "report.html"
    write_file_atomic(path, "\n".join(parts))
    return path
