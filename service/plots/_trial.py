"""One trial in detail: what a worker recorded, and its learning curve as a figure."""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

import optuna
import plotly.graph_objects as go
from optuna.trial import FrozenTrial
from plotly.subplots import make_subplots

from search_spaces import trial_attrs
from service.plots._figures import FONT, STATE_COLORS, add_note
from service.plots._ratios import RATIO_KEY, RATIO_LAYERS_KEY, ratio_series, trial_ratio_figure
from service.trials import find_trial

# Curve keys that are bookkeeping, not metrics to draw.
_NOT_METRICS = {
    trial_attrs.EPOCH,
    trial_attrs.STEPS,
    trial_attrs.EPOCH_SECONDS,
    "epochs",
    "diverged",
    "repeats",
    RATIO_KEY,  # drawn on their own figure (_ratios)
    RATIO_LAYERS_KEY,
}


class TrialCurveInfo(NamedTuple):
    number: int
    state: str
    epochs: list[int]
    # metric name -> value per epoch (None where missing or not finite)
    series: dict[str, list[float | None]]


def _finite(v: Any) -> float | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def trial_curve_info(trial: FrozenTrial, metric: str) -> TrialCurveInfo:
    """Every per-epoch metric the worker recorded; the study metric alone when no curve."""
    curve = trial.user_attrs.get(trial_attrs.CURVE)
    if isinstance(curve, list) and curve and all(isinstance(c, dict) for c in curve):
        epochs = [int(c.get("epoch", i + 1)) for i, c in enumerate(curve)]
        names = [
            k
            for k in dict.fromkeys(k for c in curve for k in c)
            if k not in _NOT_METRICS and not k.endswith("_std")
        ]
        series = {k: [_finite(c.get(k)) for c in curve] for k in names}
        series = {k: v for k, v in series.items() if any(x is not None for x in v)}
    else:
        epochs = sorted(trial.intermediate_values)
        series = {metric: [_finite(trial.intermediate_values[e]) for e in epochs]}
    return TrialCurveInfo(trial.number, trial.state.name, epochs, series)


def trial_curve_figure(info: TrialCurveInfo) -> go.Figure:
    losses = [k for k in info.series if "loss" in k]
    others = [k for k in info.series if k not in losses]
    groups = [g for g in (others, losses) if g]
    fig = make_subplots(rows=1, cols=max(len(groups), 1), horizontal_spacing=0.1)
    fig.update_layout(
        template="plotly_white",
        title={"text": f"Learning curve of trial {info.number}", "x": 0.01, "font": {"size": 15}},
        font={"family": FONT, "size": 12, "color": "#1f2937"},
        margin={"l": 64, "r": 24, "t": 48, "b": 52},
        height=340,
        legend={"orientation": "h", "y": -0.2},
    )
    if not info.epochs:
        return add_note(fig, "no epoch reported yet")
    palette = ["#2563eb", "#dc2626", "#10b981", "#f59e0b", "#7c3aed", "#0891b2"]
    for col, group in enumerate(groups, start=1):
        for i, name in enumerate(group):
            fig.add_trace(
                go.Scatter(
                    x=info.epochs,
                    y=info.series[name],
                    mode="lines+markers",
                    name=name,
                    line={"color": palette[(i + 3 * (col - 1)) % len(palette)]},
                    marker={"size": 4},
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(
            title="epoch",
            row=1,
            col=col,
            **({"dtick": 1} if len(info.epochs) <= 12 else {"tickformat": "d"}),
        )
    if info.state == "PRUNED":
        fig.add_annotation(
            text="pruned",
            showarrow=False,
            x=1,
            y=1.08,
            xref="paper",
            yref="paper",
            font={"color": STATE_COLORS["PRUNED"]},
        )
    return fig


def load_trial(
    storage: optuna.storages.RDBStorage, name: str, number: int
) -> tuple[FrozenTrial, str]:
    """The trial, and the study metric its value is."""
    row, trial_id = find_trial(storage, name, number)
    return storage.get_trial(trial_id), str(row.spec.get("metric") or "value")


def _epoch_time(curve: Any) -> str | None:
    """The curve's epoch wall times in a few words, as the trial page shows them."""
    points = curve if isinstance(curve, list) else []
    found = [p.get(trial_attrs.EPOCH_SECONDS) for p in points if isinstance(p, dict)]
    seconds: list[float] = [float(s) for s in found if isinstance(s, int | float)]
    if not seconds:
        return None
    mean = sum(seconds) / len(seconds)
    return f"{mean:.2f} s mean over {len(seconds)} epochs, last {seconds[-1]:.2f} s"


def trial_detail(storage: optuna.storages.RDBStorage, name: str, number: int) -> dict[str, Any]:
    """What the trial page shows, as plain data (JSON-safe)."""
    trial, metric = load_trial(storage, name, number)
    attrs = trial.user_attrs
    start, end = trial.datetime_start, trial.datetime_complete
    recorded = attrs.get(trial_attrs.METRICS)
    metrics: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": _finite(trial.value) if trial.values else None,
        "metric": metric,
        "params": dict(trial.params),
        "metrics": {k: v for k, v in metrics.items() if k not in ("epoch",)},
        "worker": attrs.get(trial_attrs.WORKER),
        "host": attrs.get(trial_attrs.HOST),
        "device": attrs.get(trial_attrs.DEVICE),
        "attempt": attrs.get(trial_attrs.ATTEMPT),
        "retry_of": attrs.get(trial_attrs.RETRY_OF),
        "resumed_from_epoch": attrs.get(trial_attrs.RESUMED_FROM_EPOCH),
        "wall_time_s": attrs.get(trial_attrs.WALL_TIME_S),
        "fail_reason": attrs.get(trial_attrs.FAIL_REASON),
        "queued": attrs.get(trial_attrs.QUEUED) is True,
        "warm_start": attrs.get(trial_attrs.WARM_START),
        # Optuna stores naive UTC times (as the trials API reads them too).
        "datetime_start": start.isoformat() + "Z" if start else None,
        "datetime_complete": end.isoformat() + "Z" if end else None,
        "duration_s": (end - start).total_seconds() if start and end else None,
        "epoch_time": _epoch_time(attrs.get(trial_attrs.CURVE)),
        "curve_figure": json.loads(trial_curve_figure(trial_curve_info(trial, metric)).to_json()),
        "ratio_figure": _ratio_figure(trial),
    }


def _ratio_figure(trial: FrozenTrial) -> dict[str, Any] | None:
    series = ratio_series(trial)
    if series is None:
        return None
    parsed: dict[str, Any] = json.loads(trial_ratio_figure(series).to_json())
    return parsed
