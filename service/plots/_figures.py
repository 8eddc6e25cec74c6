"""Drawing: each plot's info to a Plotly figure, plus the style all figures share.

The plots of training runs (curves, timeline, schedules) are drawn in `_figures_runs`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from service.plots._data import (
    INACTIVE,
    ContourInfo,
    Dimension,
    HistoryInfo,
    ParallelInfo,
    SliceInfo,
    _natural,
)
from service.plots._importance import ImportanceInfo
from service.plots._snapshot import TooFew

FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'
STATE_COLORS = {
    "COMPLETE": "#2563eb",
    "PRUNED": "#f59e0b",
    "FAIL": "#dc2626",
    "RUNNING": "#10b981",
    "WAITING": "#9ca3af",
}
BEST_COLOR = "#dc2626"
# Past this many points, scattergl (WebGL) keeps the browser responsive.
GL_POINTS = 2000
EVALUATOR_NAMES = {"anova": "ANOVA", "ped_anova": "PED-ANOVA", "fanova": "fANOVA"}


def figure(title: str, height: int = 380, fig: go.Figure | None = None, **layout: Any) -> go.Figure:
    fig = go.Figure() if fig is None else fig
    fig.update_layout(
        template="plotly_white",
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        font={"family": FONT, "size": 12, "color": "#1f2937"},
        margin={"l": 64, "r": 24, "t": 48, "b": 52},
        height=height,
        hovermode="closest",
        legend={"orientation": "h", "y": -0.18},
        **layout,
    )
    return fig


def scatter(n: int) -> type[go.Scatter] | type[go.Scattergl]:
    return go.Scattergl if n > GL_POINTS else go.Scatter


def too_few_figure(info: TooFew, title: str) -> go.Figure:
    fig = figure(title, height=240)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return add_note(fig, info.message)


def add_note(fig: go.Figure, text: str) -> go.Figure:
    """A grey message in the middle of the figure, where the data would be."""
    fig.add_annotation(
        text=text,
        showarrow=False,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        font={"size": 14, "color": "#6b7280"},
    )
    return fig


def importance_figure(info: ImportanceInfo) -> go.Figure:
    name = EVALUATOR_NAMES.get(info.evaluator, info.evaluator)
    title = f"Hyperparameter importance ({name}, {info.n_trials} trials)"
    fig = figure(title, height=max(380, 90 + 36 * len(info.params)))
    shares, params = info.importances[::-1], info.params[::-1]
    bar: dict[str, Any] = {
        "text": [f"{v:.0%}" for v in shares],
        "textposition": "outside",
        "hovertemplate": "%{y}: %{x:.3f}<extra></extra>",
    }
    if info.intervals:
        # Asymmetric error bars: each share's bootstrap interval, which need not be centred.
        # The shares move to the axis labels, where the bars' ends cannot cover them.
        lows, highs = zip(*info.intervals[::-1], strict=True)
        bar = {
            "error_x": {
                "type": "data",
                "symmetric": False,
                "array": [hi - v for v, hi in zip(shares, highs, strict=True)],
                "arrayminus": [v - lo for v, lo in zip(shares, lows, strict=True)],
                "color": "#1f2937",
                "thickness": 1.5,
                "width": 6,
            },
            "customdata": [[lo, hi] for lo, hi in zip(lows, highs, strict=True)],
            "hovertemplate": f"%{{y}}: %{{x:.3f}}<br>{info.confidence:.0%} interval "
            "%{customdata[0]:.3f} to %{customdata[1]:.3f}<extra></extra>",
        }
        fig.update_yaxes(
            tickvals=params, ticktext=[f"{p} {v:.0%}" for p, v in zip(params, shares, strict=True)]
        )
    fig.add_trace(
        go.Bar(
            x=shares,
            y=params,
            orientation="h",
            width=0.6,
            marker_color="#2563eb",
            cliponaxis=False,
            **bar,
        )
    )
    fig.update_xaxes(title=_importance_axis(info), range=[0, 1.1], tickformat=".0%")
    fig.update_yaxes(ticksuffix="  ")
    if info.not_ranked:
        fig.add_annotation(
            text=f"not ranked (conditional, not in every trial): {', '.join(info.not_ranked)}",
            showarrow=False,
            x=1,
            y=-0.12,
            xref="paper",
            yref="paper",
            xanchor="right",
            font={"size": 12, "color": "#6b7280"},
        )
    return fig


def _importance_axis(info: ImportanceInfo) -> str:
    if not info.intervals:
        return "share of importance"
    return (
        f"share of importance (bars: {info.confidence:.0%} intervals over "
        f"{info.resamples} resamples of the trials)"
    )


def history_figure(info: HistoryInfo) -> go.Figure:
    fig = figure(f"Optimization history ({info.metric}, {info.direction})")
    trace = scatter(len(info.numbers))
    numbers = np.asarray(info.numbers)
    fig.add_trace(
        trace(
            x=numbers,
            y=np.asarray(info.values),
            mode="markers",
            name=info.metric,
            marker={"color": STATE_COLORS["COMPLETE"], "size": 6, "opacity": 0.7},
            hovertemplate="trial %{x}: %{y:.4g}<extra></extra>",
        )
    )
    fig.add_trace(
        trace(
            x=numbers,
            y=np.asarray(info.best_values),
            mode="lines",
            name="best so far",
            line={"color": BEST_COLOR, "width": 2, "shape": "hv"},
            hoverinfo="skip",
        )
    )
    fig.update_xaxes(title="trial", **integer_ticks(max(info.numbers)))
    fig.update_yaxes(title=info.metric)
    return fig


def integer_ticks(largest: int) -> dict[str, Any]:
    """Whole-number ticks: trial numbers and epochs have no halves."""
    return {"dtick": 1} if largest <= 12 else {"tickformat": "d"}


def _log_ticks(values: list[float]) -> dict[str, Any]:
    lo, hi = math.floor(min(values)), math.ceil(max(values))
    ticks = list(range(lo, hi + 1))
    return {"tickvals": ticks, "ticktext": [f"{10.0**k:g}" for k in ticks]}


def _inactive_ticks(d: Dimension) -> dict[str, Any]:
    """Ticks of a numeric axis whose trials that lack the parameter sit below its range."""
    present = [v for v in d.values if v != d.inactive_at]
    if d.log:
        ticks = _log_ticks(present)
    else:
        vals = np.linspace(min(present), max(present), 5 if max(present) > min(present) else 1)
        ticks = {"tickvals": vals.tolist(), "ticktext": [f"{v:.3g}" for v in vals]}
    return {
        "tickvals": [d.inactive_at, *ticks["tickvals"]],
        "ticktext": [INACTIVE, *ticks["ticktext"]],
    }


def parallel_figure(info: ParallelInfo) -> go.Figure:
    shown = len(info.objective)
    count = f"{shown} of {info.n_total} trials shown" if shown < info.n_total else f"{shown} trials"
    fig = figure(f"Parallel coordinates ({count})", height=420)
    objective = np.asarray(info.objective)
    dims: list[dict[str, Any]] = [{"label": info.metric, "values": objective}]
    for d in info.dimensions:
        dim: dict[str, Any] = {"label": d.label, "values": np.asarray(d.values)}
        if d.categories is not None:
            dim.update(tickvals=list(range(len(d.categories))), ticktext=d.categories)
        elif d.inactive_at is not None:
            dim.update(_inactive_ticks(d))
        elif d.log:
            dim.update(_log_ticks(d.values))
        dims.append(dim)
    fig.add_trace(
        go.Parcoords(
            dimensions=dims,
            line={
                "color": objective,
                "colorscale": "Blues",
                "showscale": True,
                "colorbar": {"title": {"text": info.metric}},
            },
        )
    )
    fig.update_layout(margin={"l": 72, "r": 72, "t": 110, "b": 32})
    return fig


def slice_figure(info: SliceInfo) -> go.Figure:
    n = len(info.params)
    fig = make_subplots(rows=1, cols=n, shared_yaxes=True, horizontal_spacing=0.04)
    figure(f"Slice ({info.metric})", fig=fig)
    for i, p in enumerate(info.params, start=1):
        trace = scatter(len(p.values))
        x = np.array([str(v) for v in p.values] if p.categorical else p.values)
        numbers = np.asarray(p.numbers)
        fig.add_trace(
            trace(
                x=x,
                y=np.asarray(p.objective),
                mode="markers",
                showlegend=False,
                customdata=numbers,
                marker={
                    "color": numbers,
                    "colorscale": "Blues",
                    "size": 6,
                    "showscale": i == n,
                    "colorbar": {"title": {"text": "trial"}},
                    "line": {"width": 0.5, "color": "#94a3b8"},
                },
                hovertemplate=f"{p.name}=%{{x}}<br>%{{y:.4g}} (trial %{{customdata}})"
                "<extra></extra>",
            ),
            row=1,
            col=i,
        )
        axis: dict[str, Any] = {"title": p.name}
        if p.categorical:
            order = sorted({str(v) for v in p.values}, key=_natural)
            axis.update(type="category", categoryorder="array", categoryarray=order)
        elif p.log:
            axis.update(type="log", dtick="D2")  # decades with 2 and 5 between, not every digit
        fig.update_xaxes(axis, row=1, col=i)
    fig.update_yaxes(title=info.metric, row=1, col=1)
    return fig


def contour_figure(info: ContourInfo) -> go.Figure:
    fig = figure(f"{info.x.name} x {info.y.name} ({info.metric}, mean per cell)", height=440)
    fig.add_trace(
        go.Contour(
            x=info.x.cells,
            y=info.y.cells,
            z=info.z,
            connectgaps=True,
            colorscale="Blues",
            contours={"coloring": "heatmap"},
            colorbar={"title": {"text": info.metric}},
            hovertemplate=f"{info.x.name}=%{{x}}<br>{info.y.name}=%{{y}}<br>"
            "mean %{z:.4g}<extra></extra>",
        )
    )
    trace = scatter(len(info.points_x))
    fig.add_trace(
        trace(
            x=info.points_x,
            y=info.points_y,
            mode="markers",
            showlegend=False,
            customdata=info.points_number,
            marker={"color": "#111827", "size": 4, "opacity": 0.6},
            hovertemplate="trial %{customdata}<extra></extra>",
        )
    )
    for axis, update in ((info.x, fig.update_xaxes), (info.y, fig.update_yaxes)):
        kind = "category" if axis.categorical else ("log" if axis.log else "linear")
        update(title=axis.name, type=kind)
    return fig
