"""The periodic held-out evaluation (eval_every): when it runs, how the progress bar labels its figures,
how the learning curve draws it beside the rollout success rate, and its config checks."""

import json

import pytest

from vlmrl_fast.config import ConfigError, load_config
from vlmrl_fast.report import plot_learning_curve
from vlmrl_fast.trainer import live_figures, periodic_eval_due


def test_periodic_evaluation_runs_every_n_updates_but_not_after_the_last():
    cfg = load_config(None, {"updates": 5, "eval_every": 2})
    assert [u for u in range(1, 6) if periodic_eval_due(cfg, u)] == [2, 4]
    cfg = load_config(None, {"updates": 4, "eval_every": 2})
    assert [u for u in range(1, 5) if periodic_eval_due(cfg, u)] == [2]  # 4: the evaluation after RL
    cfg = load_config(None, {"updates": 4, "eval_every": 0})
    assert not any(periodic_eval_due(cfg, u) for u in range(1, 5))


def test_progress_bar_labels_rollout_and_eval_figures():
    record = {"charts/success_rate": 0.96, "charts/episodic_return": 0.5, "charts/invalid_rate": 0.0}
    state = {"eval_before_rl": {"success_rate": 0.3}}
    assert live_figures(record, state) == "rollout_succ=0.96 ret=0.50 invalid=0.00 eval_succ@0=0.30"
    state["eval_last"] = {"update": 10, "success_rate": 0.79}
    assert live_figures(record, state).endswith("eval_succ@10=0.79")


def test_learning_curve_draws_the_held_out_evaluation_apart(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    records = [{"update": u, "charts/success_rate": 0.9, "charts/episodic_return": 1.0, "charts/invalid_rate": 0.0,
                "losses/clipfrac": 0.1} for u in range(1, 5)]
    records[1]["eval/success_rate"] = 0.5
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: drawn.append(fig))
    plot_learning_curve(tmp_path, before=0.25, after=0.75, eval_episodes=(50, 200))
    ax = drawn[0].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "rollout success (episodes ending in the rollout)"
    assert "held-out eval success (50 ep.; 200 before/after RL)" in labels
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("held-out")]
    assert list(line.get_xdata()) == [0, 2, 4] and list(line.get_ydata()) == [0.25, 0.5, 0.75]


@pytest.mark.parametrize("field,value", [("eval_every", -1), ("eval_every_episodes", 0)])
def test_eval_every_fields_are_checked(field, value):
    with pytest.raises(ConfigError, match=field):
        load_config(None, {field: value})
