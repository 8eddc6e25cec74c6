"""The analysis as a table of text: the rows `noisetune analyze` prints and the report shows.

One layout for both (the study page builds the same columns in study.js): a row per group
with its runs, mean and interval, median, best, success rates and comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.schemas import AnalysisPublic, ComparisonPublic, GroupEffectPublic, SuccessRatePublic

MISSING = "—"


@dataclass(frozen=True)
class EffectTable:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str]


def number(value: float | None) -> str:
    return MISSING if value is None or not math.isfinite(value) else f"{value:.4g}"


def interval(bounds: tuple[float, float] | None, fmt: str = ".4g") -> str:
    return MISSING if bounds is None else f"[{bounds[0]:{fmt}}, {bounds[1]:{fmt}}]"


def success_cell(rate: SuccessRatePublic) -> str:
    if rate.rate is None:
        return MISSING
    return f"{rate.successes}/{rate.runs} {rate.rate:.0%} {interval(rate.interval, '.0%')}"


def comparison_cell(group: GroupEffectPublic, c: ComparisonPublic | None) -> str:
    if group.baseline:
        return "baseline"
    if c is None or c.mean_difference is None:
        return MISSING
    p = "" if c.p_value is None else f" p={c.p_value:.2g}"
    pairs = f"{c.pairs} pair{'' if c.pairs == 1 else 's'}"
    return f"{c.mean_difference:+.4g} {interval(c.interval)}{p} ({pairs})"


def threshold_header(info: AnalysisPublic, threshold: float) -> str:
    op = "<" if info.success_direction == "minimize" else "≥"
    return f"{info.success_metric} {op} {threshold:g}"


def effect_table(info: AnalysisPublic) -> EffectTable:
    pct = f"{info.confidence:.0%}"
    headers = [
        "group",
        "trials",
        "runs",
        "diverged",
        f"mean {info.metric}",
        f"{pct} interval",
        "median",
        "best",
        *(threshold_header(info, t) for t in info.thresholds),
    ]
    if info.baseline is not None:
        headers.append(f"vs {info.baseline}")
    rows = []
    for g in info.groups:
        row = [
            g.label,
            str(g.trials),
            str(g.runs),
            str(g.diverged),
            number(g.mean),
            interval(g.interval),
            number(g.median),
            number(g.best),
            *(success_cell(s) for s in g.success),
        ]
        if info.baseline is not None:
            row.append(comparison_cell(g, g.comparison))
        rows.append(row)
    title = f"{info.metric} ({info.direction}) by {', '.join(info.by)}: {info.runs} runs"
    return EffectTable(title, headers, rows, list(info.notes))
