"""The data behind each plot, computed from a study snapshot with no renderer involved.

Every ``*_info`` function takes a `StudySnapshot` and returns a NamedTuple (or `TooFew`
when the study cannot support the plot yet), so tests check the numbers directly and
`_figures` only draws. Large studies are thinned here, where the choice is testable.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
from optuna.trial import FrozenTrial

from service.plots._snapshot import StudySnapshot, TooFew, too_few

MAX_PARALLEL_LINES = 5000
MAX_CONTOUR_POINTS = 2000
CONTOUR_BINS = 24
# Where a trial lacks a conditional parameter, the parallel plot draws it at this tick.
INACTIVE = "(inactive)"


class HistoryInfo(NamedTuple):
    metric: str
    direction: str
    numbers: list[int]
    values: list[float]
    best_values: list[float]  # best so far at each complete trial
    best_number: int


def history_info(snap: StudySnapshot) -> HistoryInfo | TooFew:
    done = snap.complete
    if not done:
        return too_few("history", 1, 0)
    values = np.array([t.value for t in done], dtype=float)
    running = np.maximum.accumulate(values) if snap.maximize else np.minimum.accumulate(values)
    best = snap.ranked()[0]
    return HistoryInfo(
        snap.metric,
        snap.direction,
        [t.number for t in done],
        values.tolist(),
        running.tolist(),
        best.number,
    )


class ParamSlice(NamedTuple):
    name: str
    values: list[Any]
    objective: list[float]
    numbers: list[int]
    log: bool
    categorical: bool


class SliceInfo(NamedTuple):
    metric: str
    params: list[ParamSlice]


def slice_info(snap: StudySnapshot) -> SliceInfo | TooFew:
    """One slice per parameter, each over the complete trials that have it (all of them but
    for a conditional parameter, as Optuna's own slice plot does)."""
    if not snap.complete:
        return too_few("slice", 1, 0)
    params = []
    for name in snap.varying() or snap.param_names:
        trials = snap.having(name)
        params.append(
            ParamSlice(
                name,
                [snap.param(t, name) for t in trials],
                [float(t.value) for t in trials],  # type: ignore[arg-type]
                [t.number for t in trials],
                snap.is_log(name),
                snap.is_categorical(name),
            )
        )
    return SliceInfo(snap.metric, params)


class Dimension(NamedTuple):
    label: str
    values: list[float]
    log: bool
    # Categorical parameters are drawn at their index; these label the ticks.
    categories: list[str] | None
    # A numeric conditional parameter: where the trials that lack it are drawn (below the
    # range, labelled INACTIVE); None when every trial has it.
    inactive_at: float | None = None


class ParallelInfo(NamedTuple):
    metric: str
    objective: list[float]
    dimensions: list[Dimension]
    n_total: int  # complete trials before thinning


def thin(ranked: list[FrozenTrial], limit: int, n_best: int) -> list[FrozenTrial]:
    """The `n_best` first of `ranked` plus an even spread of the rest, at most `limit`."""
    if len(ranked) <= limit:
        return ranked
    rest = ranked[n_best:]
    picks = np.linspace(0, len(rest) - 1, limit - n_best).round().astype(int)
    return ranked[:n_best] + [rest[i] for i in np.unique(picks)]


def parallel_info(snap: StudySnapshot) -> ParallelInfo | TooFew:
    done = snap.complete
    if len(done) < 2:
        return too_few("parallel", 2, len(done))
    rows = thin(snap.ranked(), MAX_PARALLEL_LINES, MAX_PARALLEL_LINES // 5)
    rows.sort(key=lambda t: t.number)
    dims = [_dimension(snap, name, rows) for name in snap.varying() or snap.param_names]
    objective = [float(t.value) for t in rows]  # type: ignore[arg-type]
    return ParallelInfo(snap.metric, objective, dims, len(done))


def _dimension(snap: StudySnapshot, name: str, rows: list[FrozenTrial]) -> Dimension:
    """One axis of the parallel plot; trials that lack a conditional parameter get a tick of
    their own (Optuna's plot leaves such trials out, which would hide every other branch)."""
    has = [name in t.params or name not in snap.partial for t in rows]
    raw = [snap.param(t, name) for t in rows]
    present = [v for v, h in zip(raw, has, strict=True) if h]
    if (
        snap.is_categorical(name)
        or not present
        or any(isinstance(v, str | bool) or v is None for v in present)
    ):
        cats = sorted({_label(v) for v in present}, key=_natural)
        cats += [] if all(has) else [INACTIVE]
        index = {c: i for i, c in enumerate(cats)}
        labels = [_label(v) if h else INACTIVE for v, h in zip(raw, has, strict=True)]
        return Dimension(name, [float(index[c]) for c in labels], False, cats)
    log = snap.is_log(name) and min(present) > 0
    scaled = [math.log10(v) if log else float(v) for v in present]
    if all(has):
        return Dimension(name, scaled, log, None)
    lo, hi = min(scaled), max(scaled)
    inactive_at = lo - (0.15 * (hi - lo) if hi > lo else 1.0)
    values = iter(scaled)
    vals = [next(values) if h else inactive_at for h in has]
    return Dimension(name, vals, log, None, inactive_at)


def _natural(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


class TimelineBar(NamedTuple):
    number: int
    state: str
    start: datetime
    end: datetime  # now, for trials still running


class TimelineInfo(NamedTuple):
    bars: list[TimelineBar]


def timeline_info(snap: StudySnapshot, now: datetime | None = None) -> TimelineInfo | TooFew:
    now = now or datetime.now()
    bars = [
        TimelineBar(t.number, t.state.name, t.datetime_start, t.datetime_complete or now)
        for t in snap.trials
        if t.datetime_start is not None
    ]
    if not bars:
        return too_few("timeline", 1, 0, "started trials")
    return TimelineInfo(bars)


class PlotQueryError(ValueError):
    """A plot option that names something the study does not have."""


class ContourAxis(NamedTuple):
    name: str
    log: bool
    # Cell positions: category labels on a categorical axis, else numbers.
    cells: list[Any]
    categorical: bool


class ContourInfo(NamedTuple):
    metric: str
    x: ContourAxis
    y: ContourAxis
    z: list[list[float | None]]  # z[j][i]: mean objective of the trials in cell (x_i, y_j)
    points_x: list[Any]
    points_y: list[Any]
    points_value: list[float]
    points_number: list[int]
    n_trials: int


def _bin_axis(snap: StudySnapshot, name: str, raw: list[Any]) -> tuple[ContourAxis, list[int]]:
    """Cells for one axis, and each trial's cell index."""
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)
    if snap.is_categorical(name) or not numeric:
        labels = sorted({_label(v) for v in raw}, key=_natural)
        index = {c: i for i, c in enumerate(labels)}
        return ContourAxis(name, False, labels, True), [index[_label(v)] for v in raw]
    distinct = sorted(set(raw))
    log = snap.is_log(name) and distinct[0] > 0
    if len(distinct) <= CONTOUR_BINS:
        index = {v: i for i, v in enumerate(distinct)}
        return ContourAxis(name, log, distinct, False), [index[v] for v in raw]
    arr = np.log10(raw) if log else np.asarray(raw, dtype=float)
    edges = np.linspace(arr.min(), arr.max(), CONTOUR_BINS + 1)
    cells = np.clip(np.searchsorted(edges, arr, side="right") - 1, 0, CONTOUR_BINS - 1)
    mids = (edges[:-1] + edges[1:]) / 2
    centers = (10**mids if log else mids).tolist()
    return ContourAxis(name, log, centers, False), cells.tolist()


def _label(value: Any) -> str:
    return str(value)


def _flat_message(snap: StudySnapshot, varying: list[str], flat: list[str]) -> str:
    fixed = ", ".join(f"{p} = {snap.param(snap.having(p)[0], p)}" for p in flat)
    return (
        f"contour needs two parameters that vary; this study varies "
        f"{', '.join(varying) or 'none'} (fixed: {fixed})"
    )


def contour_info(snap: StudySnapshot, params: list[str] | None = None) -> ContourInfo | TooFew:
    if params is not None:
        unknown = [p for p in params if p not in snap.param_names]
        if len(params) != 2 or unknown or params[0] == params[1]:
            raise PlotQueryError(
                f"contour needs two different parameters of the study, got {','.join(params)!r}; "
                f"the study's parameters are {', '.join(snap.param_names)}"
            )
    if len(snap.complete) < 3:
        return too_few("contour", 3, len(snap.complete))
    varying = snap.varying()
    if params is None:
        # eta and gamma first, then parameters every trial has, then conditional ones.
        noise = [p for p in ("eta", "gamma") if p in varying]
        rest = sorted((p for p in varying if p not in noise), key=lambda p: p in snap.partial)
        params = (noise + rest)[:2]
        if len(params) < 2:
            flat = [p for p in ("eta", "gamma") if p not in varying]
            return TooFew("contour", 2, len(varying), _flat_message(snap, varying, flat))
    flat = [p for p in params if p not in varying]
    if flat:
        return TooFew("contour", 2, len(varying), _flat_message(snap, varying, flat))
    # Conditional parameters: the trials that have both, as in Optuna's contour plot.
    done = snap.having(*params)
    if len(done) < 3:
        return too_few("contour", 3, len(done), f"complete trials with both {' and '.join(params)}")
    xs = [snap.param(t, params[0]) for t in done]
    ys = [snap.param(t, params[1]) for t in done]
    x_axis, xi = _bin_axis(snap, params[0], xs)
    y_axis, yi = _bin_axis(snap, params[1], ys)
    sums = np.zeros((len(y_axis.cells), len(x_axis.cells)))
    counts = np.zeros_like(sums)
    values = np.array([t.value for t in done], dtype=float)
    np.add.at(sums, (yi, xi), values)
    np.add.at(counts, (yi, xi), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    z = [
        [None if c == 0 else float(m) for m, c in zip(row, crow, strict=True)]
        for row, crow in zip(means, counts, strict=True)
    ]
    shown = thin(snap.ranked(done), MAX_CONTOUR_POINTS, MAX_CONTOUR_POINTS // 10)
    pick = [snap.param(t, params[0]) for t in shown], [snap.param(t, params[1]) for t in shown]
    if x_axis.categorical:
        pick = ([_label(v) for v in pick[0]], pick[1])
    if y_axis.categorical:
        pick = (pick[0], [_label(v) for v in pick[1]])
    return ContourInfo(
        snap.metric,
        x_axis,
        y_axis,
        z,
        pick[0],
        pick[1],
        [float(t.value) for t in shown],  # type: ignore[arg-type]
        [t.number for t in shown],
        len(done),
    )
