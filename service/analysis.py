"""The effect of parameters on results, with the uncertainty of runs: groups and their intervals.

A study's counted runs (search_spaces.runs) are grouped by the values of some parameters;
each group gets its metric's mean with a t interval, median and best, its success rate at
each of the spec's thresholds with a Wilson interval, and a paired comparison with a
baseline group on the seeds both ran. This is the compute half; `service.plots._effect`
draws it, the CLI and the templates tabulate it. Free of FastAPI: bad queries raise
`InvalidInput`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from search_spaces import StudySpec, resolve_search_space
from search_spaces.runs import Run, counted_runs
from search_spaces.statistics import (
    CONFIDENCE,
    mean,
    paired_comparison,
    summarize_values,
    wilson_interval,
)
from service.schemas import (
    AnalysisPublic,
    ComparisonPublic,
    GroupEffectPublic,
    SuccessRatePublic,
)
from service.studies import InvalidInput

if TYPE_CHECKING:  # the snapshot's package draws this module's answers
    from service.plots._snapshot import StudySnapshot

# Below this many runs a group's interval is wide, and a note says so.
FEW_RUNS = 5
# Past this many groups, a note stands for the groups with few runs instead of one each.
MAX_FEW_NOTES = 8
# Grouping by a continuous parameter gives one group per trial: no effect to read.
MAX_GROUPS = 100
NO_BASELINE_PARAM = "eta"  # the default baseline: the group without noise


@dataclass(frozen=True)
class _Study:
    """What the analysis reads of a study's spec."""

    spec: StudySpec | None  # None: the spec does not load here (its task is not installed)
    metric: str
    direction: str
    metrics: dict[str, str]  # metric -> direction, the task's


def _study(snap: StudySnapshot) -> _Study:
    try:
        spec: StudySpec | None = StudySpec.from_stored(snap.spec)
    except (ValueError, TypeError):
        spec = None
    if spec is None:
        return _Study(None, snap.metric, snap.direction, {snap.metric: snap.direction})
    return _Study(spec, str(spec.metric), str(spec.direction), dict(spec.definition.metrics))


def parameters(snap: StudySnapshot) -> list[str]:
    """The parameters a study's runs may be grouped by: its space's, and its trials'."""
    try:
        names = resolve_search_space(snap.spec.get("search_space", "paper")).names
    except (ValueError, TypeError):
        names = []
    seen = dict.fromkeys(names)
    for trial in snap.trials:
        seen.update(dict.fromkeys(trial.params))
    return list(seen)


def _label(value: Any) -> str:
    return "null" if value is None else str(value)


def _order(value: Any) -> tuple[int, float, str]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1 if value is not None else 2, 0.0, _label(value))


def _matches(text: str, value: Any) -> bool:
    """Whether a query's text names a group's value (numbers compare as numbers)."""
    if value is None or isinstance(value, bool):
        return text.lower() == _label(value).lower()
    if isinstance(value, int | float):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return text == str(value)


def _check_by(snap: StudySnapshot, by: Sequence[str]) -> None:
    allowed = parameters(snap)
    if not by:
        raise InvalidInput(["query", "by"], f"by: name a parameter (allowed: {', '.join(allowed)})")
    for name in by:
        if name not in allowed:
            raise InvalidInput(
                ["query", "by"],
                f"by: {name!r} is not a parameter of study {snap.name!r} "
                f"(allowed: {', '.join(allowed) or 'none'})",
            )
    if len(set(by)) < len(by):
        raise InvalidInput(["query", "by"], f"by: names a parameter twice ({', '.join(by)})")


def _metric_of(study: _Study, metric: str | None) -> tuple[str, str]:
    """The metric to summarize and its direction: `metric`, else the success metric's."""
    chosen = metric or _success_of(study).metric or study.metric
    if chosen not in study.metrics:
        raise InvalidInput(
            ["query", "metric"],
            f"metric: {chosen!r} is not reported by the study's task "
            f"(allowed: {', '.join(study.metrics)})",
        )
    # The study's own metric keeps the study's direction; the others have the task's.
    return chosen, study.direction if chosen == study.metric else study.metrics[chosen]


@dataclass
class _Group:
    key: tuple[Any, ...]
    runs: list[Run]

    def values(self, metric: str) -> list[float]:
        return [v for r in self.runs if not r.diverged and (v := r.value(metric)) is not None]

    def per_seed(self, metric: str) -> dict[int, float]:
        """Each seed's mean over the group's runs of it that did not diverge."""
        by_seed: dict[int, list[float]] = {}
        for r in self.runs:
            if not r.diverged and (v := r.value(metric)) is not None:
                by_seed.setdefault(r.seed, []).append(v)
        return {s: mean(vs) for s, vs in by_seed.items()}


def _groups(snap: StudySnapshot, by: Sequence[str], runs: dict[int, list[Run]]) -> list[_Group]:
    groups: dict[tuple[Any, ...], _Group] = {}
    for trial in snap.trials:
        if trial.number in runs:
            key = tuple(snap.param(trial, name) for name in by)
            groups.setdefault(key, _Group(key, [])).runs.extend(runs[trial.number])
    if len(groups) > MAX_GROUPS:
        raise InvalidInput(
            ["query", "by"],
            f"by: {', '.join(by)} makes {len(groups)} groups, more than {MAX_GROUPS}; "
            "group by parameters that take fewer values",
        )
    return sorted(groups.values(), key=lambda g: [_order(v) for v in g.key])


def _group_label(by: Sequence[str], key: tuple[Any, ...]) -> str:
    return ", ".join(f"{n}={_label(v)}" for n, v in zip(by, key, strict=True))


def _baseline(
    by: Sequence[str], groups: list[_Group], baseline: Sequence[str] | None, notes: list[str]
) -> _Group | None:
    if baseline is not None:
        if len(baseline) != len(by):
            raise InvalidInput(
                ["query", "baseline"],
                f"baseline: give {len(by)} value(s), one per `by` parameter in order "
                f"({', '.join(by)}), got {len(baseline)}",
            )
        for group in groups:
            if all(_matches(t, v) for t, v in zip(baseline, group.key, strict=True)):
                return group
        shown = "; ".join(_group_label(by, g.key) for g in groups[:20])
        raise InvalidInput(
            ["query", "baseline"],
            f"baseline: {', '.join(baseline)} matches no group (groups: {shown or 'none'})",
        )
    if NO_BASELINE_PARAM not in by:
        notes.append("no baseline: name one (values in `by` order) to compare groups")
        return None
    at = by.index(NO_BASELINE_PARAM)
    quiet = [g for g in groups if _matches("0", g.key[at])]
    if len(quiet) == 1:
        return quiet[0]
    notes.append(
        f"no baseline: no group has {NO_BASELINE_PARAM}=0; name one to compare groups"
        if not quiet
        else f"no baseline: {len(quiet)} groups have {NO_BASELINE_PARAM}=0; name one"
    )
    return None


@dataclass(frozen=True)
class _Success:
    """The spec's success thresholds, on their metric in its direction (none: no `success`)."""

    metric: str | None = None
    direction: str | None = None
    thresholds: tuple[float, ...] = ()

    def passes(self, value: float | None, threshold: float) -> bool:
        if value is None:
            return False
        return value >= threshold if self.direction == "maximize" else value < threshold

    def rates(self, group: _Group) -> list[SuccessRatePublic]:
        """Each threshold's success rate over all runs; a diverged run is a failure."""
        if self.metric is None:
            return []
        values = [None if r.diverged else r.value(self.metric) for r in group.runs]
        n, out = len(values), []
        for threshold in self.thresholds:
            wins = sum(self.passes(v, threshold) for v in values)
            rate = wins / n if n else None
            interval = wilson_interval(wins, n)
            out.append(
                SuccessRatePublic(
                    threshold=threshold, successes=wins, runs=n, rate=rate, interval=interval
                )
            )
        return out


def _success_of(study: _Study) -> _Success:
    success = study.spec.success if study.spec is not None else None
    if success is None or success.metric is None:
        return _Success()
    metric = str(success.metric)
    return _Success(metric, study.metrics[metric], tuple(success.thresholds))


def _few_runs_notes(public: list[GroupEffectPublic]) -> list[str]:
    few = [g for g in public if min(g.runs, g.values) < FEW_RUNS]
    if len(few) > MAX_FEW_NOTES:
        return [f"{len(few)} groups have fewer than {FEW_RUNS} runs: their intervals are wide"]
    notes = []
    for g in few:
        runs = f"{g.runs} run{'s' if g.runs != 1 else ''}"
        if g.values != g.runs:
            runs += f", {g.values} with a value of the metric"
        tail = "no interval" if g.values < 2 else "its interval is wide"
        notes.append(f"group {g.label} has {runs}: {tail}")
    return notes


def analyze(
    snap: StudySnapshot,
    by: Sequence[str],
    *,
    baseline: Sequence[str] | None = None,
    metric: str | None = None,
) -> AnalysisPublic:
    """The study's counted runs grouped by the values of the `by` parameters.

    `baseline` names a group by its values in `by` order (default: the group with eta 0
    when grouping by eta); `metric` defaults to the success metric, else the study's.
    Raises `InvalidInput` naming the query field at fault.
    """
    study = _study(snap)
    _check_by(snap, by)
    metric, direction = _metric_of(study, metric)
    success = _success_of(study)
    counted = counted_runs(study.spec, snap.trials, study.metric)
    groups = _groups(snap, by, counted.runs)
    baseline_notes: list[str] = []
    base = _baseline(by, groups, baseline, baseline_notes)
    base_seeds = base.per_seed(metric) if base is not None else {}
    public = []
    for group in groups:
        comparison = None
        if base is not None and group is not base:
            paired = paired_comparison(group.per_seed(metric), base_seeds)
            comparison = ComparisonPublic(**vars(paired))
        summary = summarize_values(group.values(metric), higher_is_better=direction == "maximize")
        public.append(
            GroupEffectPublic(
                label=_group_label(by, group.key),
                params=dict(zip(by, group.key, strict=True)),
                trials=len({r.trial for r in group.runs}),
                runs=len(group.runs),
                seeds=len({r.seed for r in group.runs}),
                diverged=sum(r.diverged for r in group.runs),
                values=summary.n,
                mean=summary.mean,
                interval=summary.interval,
                median=summary.median,
                best=summary.best,
                success=success.rates(group),
                baseline=group is base,
                comparison=comparison,
            )
        )
    return AnalysisPublic(
        metric=metric,
        direction=direction,
        by=list(by),
        confidence=CONFIDENCE,
        baseline=_group_label(by, base.key) if base is not None else None,
        success_metric=success.metric,
        success_direction=success.direction,
        thresholds=list(success.thresholds),
        runs=sum(len(r) for r in counted.runs.values()),
        groups=public,
        left_out=counted.left_out,
        notes=_notes(public, counted.left_out) + baseline_notes,
    )


def _notes(public: list[GroupEffectPublic], left_out: dict[str, int]) -> list[str]:
    notes = []
    if not public:
        notes.append("no finished runs yet")
    if left_out:
        notes.append("left out: " + ", ".join(f"{n} {k}" for k, n in sorted(left_out.items())))
    notes.extend(_few_runs_notes(public))
    if any(g.diverged for g in public):
        notes.append("means leave diverged runs out; success rates count them as failures")
    for g in public:
        if g.comparison is not None and g.comparison.pairs < 2:
            pairs = g.comparison.pairs
            notes.append(
                f"group {g.label} shares {pairs} seed{'s' if pairs != 1 else ''} with the "
                "baseline: no paired interval"
            )
    return notes
