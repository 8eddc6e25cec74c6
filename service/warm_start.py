"""Warm starts: the trials of another study that a new study begins with.

A spec's ``warm_start: {from: OTHER}`` copies OTHER's complete trials whose parameters lie
in the new study's space (search_spaces.points.point_in_space) into the new study as
complete trials, before any worker can sample it, so its sampler starts informed. Each
copy keeps its value and final metrics, is marked ``warm_start`` with where it came from,
and does not count in n_trials (search_spaces.study_rows.Progress). Its curve is not
copied: pruners judge a study's own trials only.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from search_spaces import StudySpec, trial_attrs
from search_spaces.points import point_in_space
from search_spaces.study_rows import get_study_row
from service.studies import InvalidInput

_LOC: list[str | int] = ["body", "warm_start", "from"]


def warm_start_trials(storage: RDBStorage, spec: StudySpec) -> list[FrozenTrial]:
    """The copies a new study with `spec` begins with (none without a warm start).

    `InvalidInput` (422) when the study to copy from does not exist, or has another task,
    metric or direction.
    """
    if spec.warm_start is None:
        return []
    source_name = spec.warm_start.from_
    row = get_study_row(storage.engine, source_name)
    if row is None:
        raise InvalidInput(_LOC, f"warm_start.from: no study named {source_name!r}")
    try:
        source = StudySpec.from_stored(row.spec)
    except ValueError as exc:
        raise InvalidInput(
            _LOC, f"warm_start.from: {source_name!r} cannot be read: {exc}"
        ) from None
    for field in ("task", "metric", "direction"):
        theirs, ours = getattr(source, field), getattr(spec, field)
        if theirs != ours:
            raise InvalidInput(
                _LOC,
                f"warm_start.from: study {source_name!r} has {field} {theirs!r} and this "
                f"study {ours!r}; a warm start needs the same task, metric and direction",
            )
    space = spec.space
    distributions = space.distributions()
    settings = source.space.fixed
    copies = []
    for trial in storage.get_all_trials(
        row.study_id, deepcopy=False, states=(TrialState.COMPLETE,)
    ):
        point = point_in_space(space, trial.params, settings)
        if point is None or trial.value is None:
            continue
        attrs: dict[str, Any] = {
            trial_attrs.WARM_START: {"study": source_name, "number": trial.number}
        }
        metrics = trial.user_attrs.get(trial_attrs.METRICS)
        if isinstance(metrics, dict):
            attrs[trial_attrs.METRICS] = metrics
        copies.append(
            optuna.trial.create_trial(
                params=point,
                distributions={name: distributions[name] for name in point},
                value=trial.value,
                user_attrs=attrs,
            )
        )
    return copies
