"""Drawing the plots of training runs: learning curves, timeline, noise schedules and
noise-to-gradient ratios (drawn in ``_ratios``, re-exported here)."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from service.plots._data import TimelineInfo
from service.plots._figures import STATE_COLORS, figure, integer_ticks, scatter
from service.plots._ratios import noise_ratio_figure  # noqa: F401 (build_figure finds it here)
from service.plots._training import Curve, IntermediateInfo, NoiseScheduleInfo, Schedule

BAR_TIMELINE_MAX = 1000


def _joined(curves: list[Curve]) -> tuple[list[Any], list[Any], list[int]]:
    """Many curves as one trace, separated by gaps: far lighter than a trace each."""
    xs: list[Any] = []
    ys: list[Any] = []
    ids: list[int] = []
    for c in curves:
        xs += [*c.steps, None]
        ys += [*c.values, None]
        ids += [c.number] * (len(c.steps) + 1)
    return xs, ys, ids


def intermediate_figure(info: IntermediateInfo) -> go.Figure:
    shown = (
        f"{len(info.curves)} of {info.n_total} trials"
        if len(info.curves) < info.n_total
        else f"{info.n_total} trials"
    )  # noqa: E501
    fig = figure(f"Learning curves ({info.metric}, {shown})")
    for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING"):
        curves = [c for c in info.curves if c.state == state]
        if not curves:
            continue
        xs, ys, ids = _joined(curves)
        trace = scatter(len(xs))
        fig.add_trace(
            trace(
                x=xs,
                y=ys,
                customdata=ids,
                mode="lines",
                name=state.lower(),
                line={"color": STATE_COLORS[state], "width": 1.2},
                opacity=0.55,
                connectgaps=False,
                hovertemplate="trial %{customdata}, epoch %{x}: %{y:.4g}<extra></extra>",
            )
        )
        if state in ("PRUNED", "FAIL"):
            # Where a trial stopped is the point of marking it.
            verb = "pruned" if state == "PRUNED" else "failed"
            ends = [(c.steps[-1], c.values[-1], c.number) for c in curves]
            fig.add_trace(
                go.Scatter(
                    x=[e[0] for e in ends],
                    y=[e[1] for e in ends],
                    customdata=[e[2] for e in ends],
                    mode="markers",
                    name=f"{verb} here",
                    marker={"symbol": "x", "size": 8, "color": STATE_COLORS[state]},
                    hovertemplate=f"trial %{{customdata}} {verb} at epoch %{{x}}<extra></extra>",
                )
            )
    last = max((c.steps[-1] for c in info.curves if c.steps), default=1)
    fig.update_xaxes(title="epoch", **integer_ticks(last))
    fig.update_yaxes(title=info.metric)
    return fig


def timeline_figure(info: TimelineInfo) -> go.Figure:
    fig = figure("Timeline", height=max(300, min(600, 120 + 6 * len(info.bars))))
    for state, color in STATE_COLORS.items():
        bars = [b for b in info.bars if b.state == state]
        if not bars:
            continue
        if len(info.bars) <= BAR_TIMELINE_MAX:
            fig.add_trace(
                go.Bar(
                    base=[b.start.isoformat() for b in bars],
                    x=[(b.end - b.start).total_seconds() * 1000 for b in bars],
                    y=[b.number for b in bars],
                    orientation="h",
                    name=state.lower(),
                    marker_color=color,
                    width=0.8,
                    hovertemplate="trial %{y}<br>%{base} + %{x:,.0f} ms<extra></extra>",
                )
            )
            continue
        # Thousands of bars are slow to draw; one WebGL line with gaps is not.
        xs, ys = [], []
        for b in bars:
            xs += [b.start.isoformat(), b.end.isoformat(), None]
            ys += [b.number, b.number, None]
        fig.add_trace(
            go.Scattergl(
                x=np.array(xs, dtype=object),
                y=np.array(ys, dtype=float),
                mode="lines",
                name=state.lower(),
                line={"color": color, "width": 2},
            )
        )
    fig.update_xaxes(type="date", title="time")
    numbers = [b.number for b in info.bars]
    fig.update_yaxes(title="trial", range=[min(numbers) - 1, max(numbers) + 1])
    fig.update_layout(barmode="overlay", bargap=0.1)
    return fig


def schedule_label(s: Schedule) -> str:
    """The schedule in a legend: the paper's as η and γ, any other by its own parameters."""
    setup = s.setup or {"schedule": "polynomial"}
    text = [f"η={s.eta:.3g}"]
    if setup.get("schedule", "polynomial") == "polynomial":
        text.append(f"γ={s.gamma:.3g}")
    for name, value in setup.items():
        if name not in ("eta", "gamma"):
            text.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
    return ", ".join(text)


def noise_schedule_figure(info: NoiseScheduleInfo) -> go.Figure:
    n = len(info.schedules)
    fig = figure(
        f"Noise schedules of the best {n} trials: σ_t, the std of each trial's schedule",
        height=380 + 20 * n,
    )
    for s in info.schedules:
        label = f"#{s.number}: {schedule_label(s)} → {s.value:.4g}"
        fig.add_trace(
            go.Scatter(
                x=np.asarray(s.steps),
                y=np.asarray(s.sigma),
                mode="lines",
                name=label,
                hovertemplate="step %{x}: σ=%{y:.4g}<extra>#" + str(s.number) + "</extra>",
            )
        )
    fig.update_xaxes(title="optimizer step t")
    fig.update_yaxes(title="noise std σ_t", rangemode="tozero")
    fig.update_layout(
        legend={"orientation": "v", "y": -0.2, "x": 0, "yanchor": "top"}, margin={"b": 70 + 20 * n}
    )
    return fig
