"""The "Effect of noise" plot: each eta group's mean with its interval, and its success rates.

`effect_info` is the analysis of the study's runs grouped by eta (service.analysis);
`effect_figure` draws it with error bars: the metric's mean with its t interval per group,
and, when the spec sets success thresholds, each threshold's success rate with its Wilson
interval beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from service.analysis import analyze, parameters
from service.plots._figures import add_note, figure
from service.plots._snapshot import StudySnapshot, TooFew, too_few
from service.schemas import AnalysisPublic, GroupEffectPublic
from service.studies import InvalidInput

BY = "eta"
MEAN_COLOR = "#2563eb"
BASELINE_COLOR = "#6b7280"
# One color per success threshold, in order.
RATE_COLORS = ("#059669", "#d97706", "#7c3aed", "#dc2626", "#0891b2", "#65a30d")


def effect_info(
    snap: StudySnapshot,
    analyzed: Callable[[StudySnapshot, Sequence[str]], AnalysisPublic] = analyze,
) -> AnalysisPublic | TooFew:
    """The analysis grouped by eta (by `analyzed`: a cached `analyze`), or why there is none
    to draw."""
    if BY not in parameters(snap):
        return TooFew("effect", 1, 0, f"{BY} is not a parameter of this study")
    try:
        info = analyzed(snap, [BY])
    except InvalidInput as exc:  # too many groups: eta drawn from a continuous range
        return TooFew("effect", 1, 0, exc.msg.removeprefix("by: "))
    if not info.groups:
        return too_few("effect", 1, 0, "finished runs")
    return info


def _errors(value: float | None, interval: tuple[float, float] | None) -> tuple[float, float]:
    """(above, below) the value: error bar lengths, 0 without an interval."""
    if value is None or interval is None:
        return 0.0, 0.0
    return interval[1] - value, value - interval[0]


def _bars(values: list[float | None], intervals: list[Any]) -> dict[str, Any]:
    bars = [_errors(v, i) for v, i in zip(values, intervals, strict=True)]
    above, below = [b[0] for b in bars], [b[1] for b in bars]
    return {"type": "data", "array": above, "arrayminus": below, "visible": True}


def _threshold_name(direction: str | None, threshold: float) -> str:
    return f"{'<' if direction == 'minimize' else '≥'} {threshold:g}"


def effect_figure(info: AnalysisPublic) -> go.Figure:
    pct = f"{info.confidence:.0%}"
    labels = [g.label for g in info.groups]
    rates = bool(info.thresholds)
    subtitles = [f"mean {info.metric}, {pct} t interval"]
    if rates:
        subtitles.append(f"success rate ({info.success_metric}), {pct} Wilson interval")
    fig = make_subplots(rows=1, cols=len(subtitles), subplot_titles=subtitles)
    fig = figure("Effect of noise", height=400, fig=fig)
    means = [g.mean for g in info.groups]
    hover = [_hover(g) for g in info.groups]
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=means,
            mode="markers",
            name=f"mean {info.metric}",
            marker={
                "size": 10,
                "color": [BASELINE_COLOR if g.baseline else MEAN_COLOR for g in info.groups],
            },
            error_y=_bars(means, [g.interval for g in info.groups]),
            text=hover,
            hovertemplate="%{text}<br>mean %{y:.4g}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    for i, threshold in enumerate(info.thresholds):
        rows = [g.success[i] for g in info.groups]
        values = [r.rate for r in rows]
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=values,
                mode="markers",
                name=_threshold_name(info.success_direction, threshold),
                marker={"size": 9, "color": RATE_COLORS[i % len(RATE_COLORS)]},
                error_y=_bars(values, [r.interval for r in rows]),
                text=[f"{r.successes} of {r.runs} runs" for r in rows],
                hovertemplate="%{x}: %{y:.0%} (%{text})<extra></extra>",
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels)
    # Thresholds' rates side by side at each group rather than on top of each other.
    fig.update_layout(scattermode="group", scattergap=0.6)
    fig.update_yaxes(title_text=info.metric, row=1, col=1)
    if rates:
        fig.update_yaxes(range=[-0.05, 1.05], tickformat=".0%", row=1, col=2)
    if all(m is None for m in means):
        add_note(fig, "no run has a value of the metric")
    return fig


def _hover(group: GroupEffectPublic) -> str:
    text = f"{group.label}<br>{group.runs} runs ({group.diverged} diverged), {group.seeds} seeds"
    c = group.comparison
    if c is not None and c.mean_difference is not None:
        text += f"<br>vs baseline: {c.mean_difference:+.4g} over {c.pairs} seeds"
    return text
