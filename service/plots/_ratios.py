"""The noise-to-gradient ratio of trials over training: per layer for one trial, and for
the best trials of a study (the ``noise_grad_ratio`` entries of their curves)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import plotly.graph_objects as go
from optuna.trial import FrozenTrial

from search_spaces import trial_attrs
from service.plots._figures import add_note, figure
from service.plots._snapshot import StudySnapshot, TooFew, too_few

RATIO_KEY, RATIO_LAYERS_KEY = "noise_grad_ratio", "noise_grad_ratio_layers"
BEST_RATIOS = 5
_PALETTE = ["#2563eb", "#0891b2", "#10b981", "#84cc16", "#f59e0b", "#dc2626", "#7c3aed"]


class RatioSeries(NamedTuple):
    number: int
    value: float | None
    epochs: list[int]
    whole: list[float | None]
    layers: list[list[float | None]]  # layer -> its ratio per epoch, input layer first


class NoiseRatioInfo(NamedTuple):
    metric: str
    series: list[RatioSeries]


def _positive(v: Any) -> float | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    return float(v) if ok else None  # a log axis shows neither 0 nor infinity


def ratio_series(trial: FrozenTrial) -> RatioSeries | None:
    """The trial's ratios per epoch; None when its curve has none (not a torch task)."""
    curve = trial.user_attrs.get(trial_attrs.CURVE)
    points = [p for p in curve if isinstance(p, dict)] if isinstance(curve, list) else []
    points = [p for p in points if RATIO_KEY in p]
    if not points:
        return None
    n_layers = max(len(p.get(RATIO_LAYERS_KEY) or []) for p in points)
    layers = [[_positive(_at(p.get(RATIO_LAYERS_KEY), i)) for p in points] for i in range(n_layers)]
    return RatioSeries(
        trial.number,
        trial.value if trial.values else None,
        [int(p.get(trial_attrs.EPOCH, i + 1)) for i, p in enumerate(points)],
        [_positive(p.get(RATIO_KEY)) for p in points],
        layers,
    )


def _at(values: Any, i: int) -> Any:
    return values[i] if isinstance(values, list) and i < len(values) else None


def empty_ratio_series(number: int) -> RatioSeries:
    return RatioSeries(number, None, [], [], [])


def trial_ratio_figure(series: RatioSeries) -> go.Figure:
    """One trial: each layer's ratio over epochs, and the whole model's (dashed)."""
    fig = figure(f"Noise-to-gradient ratio of trial {series.number}, per layer", height=340)
    if not series.epochs:
        return add_note(fig, "no noise-to-gradient ratio recorded")
    n = len(series.layers)
    for i, values in enumerate(series.layers):
        fig.add_trace(go.Scatter(
            x=series.epochs, y=values, mode="lines", name=f"layer {i + 1}",
            line={"color": _PALETTE[i * len(_PALETTE) // max(n, 1)], "width": 1.5},
        ))  # fmt: skip
    fig.add_trace(go.Scatter(
        x=series.epochs, y=series.whole, mode="lines", name="whole model",
        line={"color": "#111827", "width": 2.5, "dash": "dash"},
    ))  # fmt: skip
    _axes(fig)
    return fig


def noise_ratio_info(snap: StudySnapshot, best: int = BEST_RATIOS) -> NoiseRatioInfo | TooFew:
    """The whole-model ratio over training of the best complete trials that recorded it."""
    series = [s for t in snap.ranked() if (s := ratio_series(t)) is not None][:best]
    if not series:
        return too_few("noise_ratio", 1, 0, "complete trials with noise-to-gradient ratios")
    return NoiseRatioInfo(snap.metric, series)


def noise_ratio_figure(info: NoiseRatioInfo) -> go.Figure:
    n = len(info.series)
    fig = figure(f"Noise-to-gradient ratio of the best {n} trials (whole model)", height=380)
    for s in info.series:
        value = "" if s.value is None else f" → {s.value:.4g}"
        fig.add_trace(go.Scatter(
            x=s.epochs, y=s.whole, mode="lines", name=f"#{s.number}{value}",
            hovertemplate="epoch %{x}: %{y:.3g}<extra>#" + str(s.number) + "</extra>",
        ))  # fmt: skip
    _axes(fig)
    return fig


def _axes(fig: go.Figure) -> None:
    fig.update_xaxes(title="epoch")
    fig.update_yaxes(title="‖noise‖ / ‖gradient‖", type="log")
    fig.update_layout(legend={"orientation": "h", "y": -0.2})
