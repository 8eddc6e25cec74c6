"""A claimed trial, and the study spec it is trained under."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import sqlalchemy as sa

from search_spaces import StudySpec
from search_spaces.study_rows import StudyRow
from worker.claims._cache import caches


@dataclass
class Claim:
    row: StudyRow
    spec: StudySpec
    study: optuna.Study
    trial: optuna.Trial
    attempt: int
    engine: sa.Engine
    # Why the trial cannot train (its study's sampler or pruner failed): it is failed with
    # this reason instead.
    error: BaseException | None = None


def study_spec(row: StudyRow) -> StudySpec:
    """The study's spec, validated once per study and process."""
    return caches.spec(row)


def can_stack(spec: StudySpec) -> bool:
    """Whether trials of this study can train as one stack (each run of a trial of many
    seeds is a member of its own)."""
    definition = spec.definition
    return bool(definition.stackable and definition.stacked_trainer)


def trials_per_stack(spec: StudySpec, k: int) -> int:
    """How many trials to claim for a stack of up to `k` models: a trial with ``repeats``
    trains that many, and is never split (so one trial may exceed `k`)."""
    return max(1, k // spec.repeats) if can_stack(spec) else 1
