"""Epoch reports on real databases: one group stores and judges what lone reports would."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from search_spaces import StudySpec
from search_spaces.study_rows import register_study
from worker.claims import Claim, claim_trial, finish_trial
from worker.reports import Report, report_point, report_points


@pytest.fixture
def storage(worker_storage: optuna.storages.RDBStorage) -> optuna.storages.RDBStorage:
    return worker_storage


def make_study(storage: optuna.storages.RDBStorage, pruner: dict[str, object]) -> None:
    spec = {
        "name": "reports",
        "task": "quadratic",  # metric: loss, minimized
        "search_space": "paper-gamma",
        "n_trials": 40,
        "sampler": {"type": "random", "seed": 0},
        "pruner": pruner,
    }
    register_study(storage, StudySpec.model_validate(spec))


def claim(storage: optuna.storages.RDBStorage, n: int) -> list[Claim]:
    claims = [claim_trial(storage, "w", "h", "cpu", "reports") for _ in range(n)]
    assert all(c is not None for c in claims)
    return claims  # type: ignore[return-value]


def report_epoch(
    claims: list[Claim], epoch: int, losses: list[float]
) -> list[BaseException | None]:
    curves: list[list[dict[str, Any]]] = [[] for _ in claims]
    reports = [
        Report(c, epoch, {"loss": loss, "other": 1.0}, curve)
        for c, loss, curve in zip(claims, losses, curves, strict=True)
    ]
    return report_points(reports)


def stored(storage: optuna.storages.RDBStorage, c: Claim) -> dict[int, float]:
    return optuna.storages.RDBStorage(storage.url).get_trial(c.trial._trial_id).intermediate_values


def test_a_group_stores_what_trial_report_stores(storage: optuna.storages.RDBStorage) -> None:
    make_study(storage, {"type": "none"})
    group, alone = claim(storage, 3), claim(storage, 1)[0]
    for epoch, losses in ((1, [3.0, 2.5, -1e-300]), (2, [2.0, 1.5, 7e300])):
        assert report_epoch(group, epoch, losses) == [None, None, None]
        alone.trial.report(losses[0], epoch)
    assert stored(storage, alone) == {1: 3.0, 2: 2.0}
    assert [stored(storage, c) for c in group] == [
        {1: 3.0, 2: 2.0}, {1: 2.5, 2: 1.5}, {1: -1e-300, 2: 7e300}
    ]  # fmt: skip
    # The trial objects know their values, as after Trial.report: tell() relies on them.
    assert [c.trial._cached_frozen_trial.intermediate_values for c in group] == [
        stored(storage, c) for c in group
    ]


def test_points_without_a_finite_metric_reach_the_curve_only(
    storage: optuna.storages.RDBStorage,
) -> None:
    make_study(storage, {"type": "none"})
    c = claim(storage, 1)[0]
    curve: list[dict[str, Any]] = []
    report_point(c, 1, {"loss": math.nan, "other": 2.0}, curve)
    report_point(c, 2, {"other": 3.0}, curve)
    report_point(c, 3, {"loss": 4.0}, curve)
    assert math.isnan(curve[0].pop("loss"))
    assert curve == [
        {"epoch": 1, "other": 2.0}, {"epoch": 2, "other": 3.0}, {"epoch": 3, "loss": 4.0}
    ]  # fmt: skip
    assert stored(storage, c) == {3: 4.0}


def finished_trials(storage: optuna.storages.RDBStorage, curves: list[list[float]]) -> None:
    for c, losses in zip(claim(storage, len(curves)), curves, strict=True):
        for epoch, loss in enumerate(losses):
            report_points([Report(c, epoch, {"loss": loss}, [])])  # never pruned: it finishes
        finish_trial(c, TrialState.COMPLETE, losses[-1])


def test_a_group_is_judged_as_each_trial_would_be_alone(
    storage: optuna.storages.RDBStorage,
) -> None:
    make_study(storage, {"type": "median", "options": {"n_startup_trials": 3, "n_warmup_steps": 0}})
    finished_trials(storage, [[1.0, 0.5], [2.0, 1.0], [3.0, 1.5]])  # medians: 2.0, then 1.0
    group = claim(storage, 6)
    outcomes = report_epoch(group, 0, [0.5, 2.5, 1.9, 2.1, 2.0, 9.0])
    assert [type(o).__name__ for o in outcomes] == [
        "NoneType", "TrialPruned", "NoneType", "TrialPruned", "NoneType", "TrialPruned"
    ]  # fmt: skip
    # Each trial's own should_prune, now that every value is stored, agrees.
    assert [c.trial.should_prune() for c in group] == [o is not None for o in outcomes]
    survivors = [c for c, o in zip(group, outcomes, strict=True) if o is None]
    outcomes = report_epoch(survivors, 1, [0.9, 1.1, 1.0])
    assert [o is not None for o in outcomes] == [False, True, False]


def test_a_trial_finished_meanwhile_stops_alone(storage: optuna.storages.RDBStorage) -> None:
    make_study(storage, {"type": "none"})
    group = claim(storage, 3)
    # A reaper gave the second trial up as lost while its stack trained on.
    storage.set_trial_state_values(group[1].trial._trial_id, TrialState.FAIL)
    outcomes = report_epoch(group, 1, [1.0, 2.0, 3.0])
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], optuna.exceptions.UpdateFinishedTrialError)
    assert [stored(storage, c) for c in group] == [{1: 1.0}, {}, {1: 3.0}]


@pytest.mark.parametrize("pruner", ["none", "median"])
def test_a_group_costs_as_many_statements_for_more_trials(
    storage: optuna.storages.RDBStorage, pruner: str
) -> None:
    """Per-trial reports cost a transaction and a read of every running trial each: a stack
    of K members paid K of both, every epoch. A group pays one of each, whatever K.

    (Successive halving and Hyperband also read and write each judged trial's rung, through
    Optuna: a few single-trial statements per trial.)"""
    make_study(storage, {"type": pruner})
    finished_trials(storage, [[1.0, 0.5], [2.0, 1.0], [3.0, 1.5]])
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    counts = []
    for k in (2, 8):
        group = claim(storage, k)
        statements.clear()
        sa.event.listen(storage.engine, "before_cursor_execute", count)
        try:
            report_epoch(group, 0, [1.0] * k)
        finally:
            sa.event.remove(storage.engine, "before_cursor_execute", count)
        counts.append(len(statements))
    assert counts[0] == counts[1], counts
