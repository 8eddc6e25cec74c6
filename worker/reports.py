"""Reporting epochs: each trial's curve, Optuna's intermediate values and the pruner.

A report adds the epoch's point to the trial's curve, stores the primary metric as the
trial's intermediate value for that epoch, and asks the study's pruner whether to stop.
``report_points`` does that for many trials (a stack's members after one epoch) at the cost
of about one: their values go in one transaction (``Trial.report`` costs one per value),
and the pruner judges them all against one read of the study (``Trial.should_prune``
reads every running trial of the study again, each time). On a stack of many small models
those per-member costs were larger than the training.

Judged together, members of one stack see each other's new values but not each other's
pruning decisions of that epoch (a successive-halving rung one of them just reached): as
if each had reported at the same instant from a worker of its own. A group of one is
judged by ``Trial.should_prune`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from search_spaces.optuna_adapter import (
    frozen_trial,
    latest_trial,
    note_reported,
    read_once,
    trial_db_id,
    write_intermediate_values,
)
from worker.claims import Claim
from worker.db_retry import with_db_retry

__all__ = ["Report", "report_point", "report_points"]


@dataclass
class Report:
    """One epoch of one claimed trial; ``curve`` is the trial's curve so far."""

    claim: Claim
    epoch: int
    point: dict[str, Any]
    curve: list[dict[str, Any]]


def report_point(
    claim: Claim, epoch: int, point: dict[str, Any], curve: list[dict[str, Any]]
) -> None:
    """Report one epoch; raises TrialPruned when the pruner stops the trial."""
    outcome = report_points([Report(claim, epoch, point, curve)])[0]
    if outcome is not None:
        raise outcome


def report_points(reports: Sequence[Report]) -> list[BaseException | None]:
    """Report epochs of trials of one study; what each report stops its trial with, or None.

    An outcome is ``TrialPruned``, ``UpdateFinishedTrialError`` (the trial was finished
    meanwhile, e.g. given up as lost) or an error of the database; None lets it go on. A
    step already reported keeps its value, as with ``Trial.report``.
    """
    if not reports:
        return []
    engine = reports[0].claim.engine
    if any(r.claim.engine is not engine for r in reports):
        raise ValueError("report_points takes reports of one database")
    values: dict[int, tuple[int, float]] = {}
    for r in reports:
        r.curve.append({"epoch": r.epoch, **r.point})
        value = r.point.get(str(r.claim.spec.metric))
        trial = r.claim.trial
        reported = frozen_trial(trial).intermediate_values
        if isinstance(value, int | float) and math.isfinite(value) and r.epoch not in reported:
            values[trial_db_id(trial)] = (r.epoch, float(value))
    if not values:
        return [None] * len(reports)

    def write() -> set[int]:
        with engine.begin() as conn:
            return write_intermediate_values(conn, values)

    written = [n for n, r in enumerate(reports) if trial_db_id(r.claim.trial) in values]
    try:
        running = with_db_retry(write, what="reporting")
    except Exception as exc:
        return [exc if n in written else None for n in range(len(reports))]
    outcomes: list[BaseException | None] = [None] * len(reports)
    judged = []
    for n in written:
        trial = reports[n].claim.trial
        if trial_db_id(trial) in running:
            step, value = values[trial_db_id(trial)]
            note_reported(trial, step, value)
            judged.append(n)
        else:
            outcomes[n] = optuna.exceptions.UpdateFinishedTrialError(
                f"trial {trial.number} has already finished and cannot be updated"
            )
    study = read_once(reports[0].claim.study) if len(judged) > 1 else None
    for n in judged:
        outcomes[n] = _judge(reports[n], study)
    return outcomes


def _judge(r: Report, study: optuna.Study | None) -> BaseException | None:
    """Ask the pruner about the report's trial (against ``study`` if given); what stops it."""
    trial = r.claim.trial
    try:
        if study is None:
            prune = with_db_retry(trial.should_prune, what="reporting")
        else:
            latest = latest_trial(trial)
            pruner = r.claim.study.pruner
            prune = with_db_retry(lambda: pruner.prune(study, latest), what="reporting")
    except Exception as exc:
        return exc
    return optuna.TrialPruned(f"pruned at epoch {r.epoch}") if prune else None
