"""A trial's runs, one per seed it trained: which trials count, and what each run reached.

The one reader of the ``runs`` trial attribute (search_spaces.trial_attrs.RUNS), for every
answer that rests on runs rather than on trials: a trial records one entry per seed, and
seed i is the same seed in every trial of a study, so runs pair across arms by seed.
Trials recorded before that attribute existed count as one run, on their config's seed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from search_spaces import trial_attrs
from search_spaces._study_spec import StudySpec, layered, resolve_trial

__all__ = ["DIVERGED", "Run", "StudyRuns", "counted_runs", "trial_runs"]

# The fail_reason of a trial whose training diverged: a result, unlike other failures.
DIVERGED = "diverged"


@dataclass(frozen=True)
class Run:
    """One seed's training run of a trial."""

    trial: int  # the trial's number
    seed: int
    diverged: bool
    metrics: dict[str, Any] = field(default_factory=dict)

    def value(self, metric: str) -> float | None:
        """The run's final `metric`, None when missing or not finite (a NaN loss)."""
        value = self.metrics.get(metric)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class StudyRuns:
    """The runs of a study's counted trials, by trial, and the trials left out by state."""

    runs: dict[int, list[Run]]  # trial number -> its runs
    left_out: dict[str, int]  # "pruned", "failed", "running", "waiting" -> trials


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial's runs count: it completed, or it failed because training diverged."""
    if trial.state == TrialState.COMPLETE:
        return True
    return (
        trial.state == TrialState.FAIL and trial.user_attrs.get(trial_attrs.FAIL_REASON) == DIVERGED
    )


def _legacy_seed(spec: StudySpec | None, trial: FrozenTrial) -> int:
    """The seed a trial recorded before ``runs`` trained with: its resolved config's."""
    seed: Any = trial.params.get("seed", 0)
    if spec is not None:
        try:
            seed = resolve_trial(spec, trial.params).config.get("seed", 0)
        except (ValueError, TypeError):  # values that no longer validate: the layers' seed
            seed = layered(spec.task_config, spec.space.fixed, trial.params).get("seed", 0)
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


class _LegacySeeds:
    """`_legacy_seed`, resolved once per value of the trial's own ``seed`` parameter (or its
    absence): the config's seed depends on no other parameter, and resolving a trial's
    config costs a search-space parse."""

    def __init__(self, spec: StudySpec | None) -> None:
        self.spec = spec
        self.seen: dict[str, int] = {}

    def __call__(self, trial: FrozenTrial) -> int:
        key = repr(trial.params.get("seed", _ABSENT))
        if key not in self.seen:
            self.seen[key] = _legacy_seed(self.spec, trial)
        return self.seen[key]


_ABSENT = object()


def _recorded(trial: FrozenTrial, entry: Any) -> Run | None:
    if not isinstance(entry, dict):
        return None
    seed, metrics = entry.get("seed"), entry.get("metrics")
    if isinstance(seed, bool) or not isinstance(seed, int):
        return None
    return Run(
        trial=trial.number,
        seed=seed,
        diverged=entry.get("diverged") is True,
        metrics=metrics if isinstance(metrics, dict) else {},
    )


def trial_runs(
    spec: StudySpec | None,
    trial: FrozenTrial,
    metric: str | None = None,
    *,
    seeds: Callable[[FrozenTrial], int] | None = None,
) -> list[Run]:
    """A counted trial's runs: those it recorded, else one run on its config's seed.

    `spec` resolves an older trial's seed (None: the trial's own ``seed`` parameter, else 0);
    `metric` names the study's metric, which an older complete trial without recorded
    metrics still has as its value. `seeds` resolves older trials' seeds instead (a cache).
    """
    recorded = trial.user_attrs.get(trial_attrs.RUNS)
    if isinstance(recorded, list):
        runs = [r for r in (_recorded(trial, e) for e in recorded) if r is not None]
        if runs:
            return runs
    metrics = trial.user_attrs.get(trial_attrs.METRICS)
    metrics = dict(metrics) if isinstance(metrics, dict) else {}
    if metric is not None and metric not in metrics and trial.state == TrialState.COMPLETE:
        metrics[metric] = trial.value
    return [
        Run(
            trial=trial.number,
            seed=(seeds or _LegacySeeds(spec))(trial),
            diverged=trial.user_attrs.get(trial_attrs.FAIL_REASON) == DIVERGED,
            metrics=metrics,
        )
    ]


def _left_out_kind(trial: FrozenTrial) -> str:
    if trial.state == TrialState.FAIL:
        return "failed"
    return trial.state.name.lower()


def counted_runs(
    spec: StudySpec | None, trials: Iterable[FrozenTrial], metric: str | None = None
) -> StudyRuns:
    """The runs of the trials that count (see `counts`), and how many were left out."""
    runs: dict[int, list[Run]] = {}
    left_out: Counter[str] = Counter()
    seeds = _LegacySeeds(spec)
    for trial in trials:
        if counts(trial):
            runs[trial.number] = trial_runs(spec, trial, metric, seeds=seeds)
        else:
            left_out[_left_out_kind(trial)] += 1
    return StudyRuns(runs, dict(left_out))
