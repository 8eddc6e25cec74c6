"""The dashboard's plots: compute each plot's data from a study snapshot, then draw it.

`plot_json` is what the API answers: a Plotly figure as JSON text, cached per study, plot
kind, options and the study's state, so a warm request costs a dictionary lookup.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import optuna
import pandas  # noqa: F401 - see below
import plotly.graph_objects as go

from service import analysis
from service.plots import _effect, _figures, _figures_runs
from service.plots._cache import analyses, figures, importances, snapshots
from service.plots._data import (
    PlotQueryError,
    contour_info,
    history_info,
    parallel_info,
    slice_info,
    timeline_info,
)
from service.plots._importance import EVALUATORS, ImportanceInfo, importance_info
from service.plots._ratios import noise_ratio_info
from service.plots._snapshot import FINISHED, StudySnapshot, TooFew
from service.plots._training import intermediate_info, noise_schedule_info
from service.schemas import DEFAULT_EVALUATOR, AnalysisPublic
from service.studies import StudyNotFound

# pandas is imported above, once, at start-up: plotly imports it lazily while it builds a
# figure, and two request threads doing that at once met a partially imported module (a
# 500 on the study page's first load).

__all__ = [
    "EVALUATORS",
    "PLOT_KINDS",
    "PlotQueryError",
    "StudyNotFound",
    "StudySnapshot",
    "UnknownPlotKindError",
    "build_figure",
    "cached_analysis",
    "cached_importance",
    "compute_info",
    "draw_figure",
    "plot_json",
    "storage_key",
    "study_analysis",
    "study_snapshot",
]

# Every plot kind with its title, in the order the study page and the report show them
# (importance first): the one list of plot kinds.
TITLES = {
    "importance": "Hyperparameter importance",
    "history": "Optimization history",
    "parallel": "Parallel coordinates",
    "contour": "Contour",
    "intermediate": "Learning curves",
    "noise_schedule": "Noise schedules",
    "noise_ratio": "Noise-to-gradient ratio",
    "timeline": "Timeline",
    "slice": "Slice",
    "effect": "Effect of noise",
}
PLOT_KINDS: tuple[str, ...] = tuple(TITLES)
RUN_KINDS = frozenset({"intermediate", "timeline", "noise_schedule", "noise_ratio"})
# Plots of running trials change between finishes; the rest only when a trial finishes.
LIVE_KINDS = frozenset({"intermediate", "timeline"})


class UnknownPlotKindError(LookupError):
    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown plot kind {kind!r}; kinds are {', '.join(PLOT_KINDS)}")
        self.kind = kind


def study_snapshot(storage: optuna.storages.RDBStorage, name: str) -> StudySnapshot:
    """The study's current snapshot (read again only when the study changed)."""
    return snapshots.get(storage, name)


def storage_key(storage: optuna.storages.RDBStorage) -> str:
    """The cache key of a database: the plots and the importance API share cached results."""
    return str(storage.engine.url)


def _finished_key(snap: StudySnapshot) -> tuple[Any, ...]:
    states = snap.signature[1][0] if len(snap.signature) > 1 else ()
    return tuple(s for s in states if s[0] in {f.name for f in FINISHED})


def cached_importance(
    snap: StudySnapshot, evaluator: str = DEFAULT_EVALUATOR, storage_key: str = ""
) -> ImportanceInfo | TooFew:
    """Importance with its intervals and notes, computed once per study, evaluator and set
    of finished trials."""
    key = (storage_key, snap.study_id, evaluator, snap.n_finished, len(snap.complete))
    return importances.get_or_compute(key, lambda: importance_info(snap, evaluator))  # type: ignore[no-any-return]


def compute_info(
    snap: StudySnapshot,
    kind: str,
    *,
    evaluator: str = DEFAULT_EVALUATOR,
    params: list[str] | None = None,
    storage_key: str = "",
) -> Any:
    """The data of one plot kind (a NamedTuple, or `TooFew`)."""
    compute: dict[str, Callable[[], Any]] = {
        "importance": lambda: cached_importance(snap, evaluator, storage_key),
        "history": lambda: history_info(snap),
        "parallel": lambda: parallel_info(snap),
        "slice": lambda: slice_info(snap),
        "contour": lambda: contour_info(snap, params),
        "intermediate": lambda: intermediate_info(snap),
        "timeline": lambda: timeline_info(snap),
        "noise_schedule": lambda: noise_schedule_info(snap),
        "noise_ratio": lambda: noise_ratio_info(snap),
        "effect": lambda: _effect.effect_info(
            snap, functools.partial(cached_analysis, storage_key=storage_key)
        ),
    }
    if kind not in compute:
        raise UnknownPlotKindError(kind)
    return compute[kind]()


def build_figure(snap: StudySnapshot, kind: str, **options: Any) -> go.Figure:
    return draw_figure(kind, compute_info(snap, kind, **options))


def draw_figure(kind: str, info: Any) -> go.Figure:
    """The figure of one plot kind from its data (`compute_info`'s answer)."""
    if isinstance(info, TooFew):
        return _figures.too_few_figure(info, TITLES[kind])
    module = _effect if kind == "effect" else _figures_runs if kind in RUN_KINDS else _figures
    drawer: Callable[[Any], go.Figure] = getattr(module, f"{kind}_figure")
    return drawer(info)


def plot_json(
    storage: optuna.storages.RDBStorage,
    name: str,
    kind: str,
    *,
    evaluator: str = DEFAULT_EVALUATOR,
    params: list[str] | None = None,
) -> tuple[str, str]:
    """(figure JSON, ETag) for one plot of a study; raises the errors in `__all__`."""
    if kind not in PLOT_KINDS:
        raise UnknownPlotKindError(kind)
    if evaluator not in EVALUATORS:
        raise PlotQueryError(f"unknown evaluator {evaluator!r}; allowed: {', '.join(EVALUATORS)}")
    snap = snapshots.get(storage, name)
    key_of_storage = storage_key(storage)
    state = snap.signature if kind in LIVE_KINDS else _finished_key(snap)
    options = (evaluator if kind == "importance" else None, tuple(params or ()))
    key = (key_of_storage, snap.study_id, kind, options, state)

    def render() -> tuple[str, str]:
        fig = build_figure(
            snap, kind, evaluator=evaluator, params=params, storage_key=key_of_storage
        )
        text = fig.to_json()
        return text, hashlib.blake2b(text.encode(), digest_size=12).hexdigest()

    return figures.get_or_compute(key, render)  # type: ignore[no-any-return]


def cached_analysis(
    snap: StudySnapshot,
    by: Sequence[str],
    *,
    baseline: Sequence[str] | None = None,
    metric: str | None = None,
    storage_key: str = "",
) -> AnalysisPublic:
    """`service.analysis.analyze`, computed once per query and set of finished trials (the
    only trials whose runs count)."""
    query = (tuple(by), tuple(baseline) if baseline is not None else None, metric)
    key = (storage_key, snap.study_id, query, _finished_key(snap))
    return analyses.get_or_compute(  # type: ignore[no-any-return]
        key, lambda: analysis.analyze(snap, by, baseline=baseline, metric=metric)
    )


def study_analysis(
    storage: optuna.storages.RDBStorage,
    name: str,
    by: Sequence[str],
    *,
    baseline: Sequence[str] | None = None,
    metric: str | None = None,
) -> AnalysisPublic:
    """The analysis of the study's current snapshot (`cached_analysis`)."""
    snap = snapshots.get(storage, name)
    key = storage_key(storage)
    return cached_analysis(snap, by, baseline=baseline, metric=metric, storage_key=key)
