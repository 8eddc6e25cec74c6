"""Claims of a study whose space has a conditional parameter, on real databases.

The quadratic task's gamma only matters with noise: ``gamma`` is drawn only when ``eta`` is
not 0. Samplers must see a define-by-run space, and a trial without noise lacks gamma.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from search_spaces import StudySpec, resolve_trial
from search_spaces.study_rows import register_study
from tests.worker.test_claims import register
from worker.claims import claim_trial, fail_and_maybe_retry, finish_trial

SPACE = {
    "eta": {"type": "categorical", "choices": [0.0, 0.3, 1.0]},
    "gamma": {"type": "float", "low": 0.3, "high": 1.0, "when": {"eta": [0.3, 1.0]}},
}
N_TRIALS = 12


@pytest.fixture
def storage(worker_storage: optuna.storages.RDBStorage) -> optuna.storages.RDBStorage:
    return worker_storage


def make_study(storage: optuna.storages.RDBStorage, sampler: dict[str, object]) -> StudySpec:
    spec = StudySpec.model_validate(
        {"name": "s", "task": "quadratic", "search_space": SPACE, "n_trials": N_TRIALS,
         "sampler": sampler, "pruner": {"type": "none"}, "max_retries": 1}
    )  # fmt: skip
    register_study(storage, spec)
    register(storage, "w", heartbeat_age=0.0)
    return spec


def run_study(storage: optuna.storages.RDBStorage) -> list[optuna.trial.FrozenTrial]:
    """Claim every trial of the budget and complete it, as a worker would."""
    while (claim := claim_trial(storage, "w", "h", "cpu", "s")) is not None:
        assert claim.error is None
        params = claim.trial.params
        value = (params["eta"] - 0.3) ** 2 + (params.get("gamma", 0.55) - 0.55) ** 2
        finish_trial(claim, TrialState.COMPLETE, value)
    return optuna.load_study(study_name="s", storage=storage).get_trials()


@pytest.mark.parametrize(
    "sampler",
    [
        {"type": "random", "seed": 0},
        # Past its two startup trials TPE models the space, conditional parameter included.
        {"type": "tpe", "seed": 0, "options": {"n_startup_trials": 2}},
    ],
    ids=["random", "tpe"],
)
def test_only_active_parameters_are_suggested(
    storage: optuna.storages.RDBStorage, sampler: dict[str, object]
) -> None:
    spec = make_study(storage, sampler)
    trials = run_study(storage)
    assert len(trials) == N_TRIALS and all(t.state == TrialState.COMPLETE for t in trials)
    without = [t for t in trials if t.params["eta"] == 0.0]
    with_noise = [t for t in trials if t.params["eta"] != 0.0]
    assert without and with_noise  # both branches were drawn (seeded: always the case)
    for t in without:
        assert set(t.params) == set(t.distributions) == {"eta"}
        # The trial trains with gamma's default, though it never drew one.
        assert resolve_trial(spec, t.params).gamma == 0.55
    for t in with_noise:
        assert set(t.params) == set(t.distributions) == {"eta", "gamma"}
        assert 0.3 <= t.params["gamma"] <= 1.0
        assert resolve_trial(spec, t.params).gamma == t.params["gamma"]


def test_a_retried_trial_keeps_its_branch(storage: optuna.storages.RDBStorage) -> None:
    make_study(storage, {"type": "random", "seed": 0})
    # The first trial whose branch has no gamma fails and is queued again.
    while True:
        claim = claim_trial(storage, "w", "h", "cpu", "s")
        assert claim is not None
        if claim.trial.params["eta"] == 0.0:
            break
        finish_trial(claim, TrialState.COMPLETE, 1.0)
    assert fail_and_maybe_retry(claim, "lost", retry_counts=True)
    retry = claim_trial(storage, "w", "h", "cpu", "s")
    assert retry is not None and retry.attempt == 1
    assert retry.trial.params == {"eta": 0.0}


def test_the_grid_sampler_runs_each_distinct_point_once(
    storage: optuna.storages.RDBStorage,
) -> None:
    space = {**SPACE, "gamma": {**SPACE["gamma"], "step": 0.35}}  # gamma in {0.3, 0.65, 1.0}
    spec = StudySpec.model_validate(
        {"name": "s", "task": "quadratic", "search_space": space, "n_trials": 7,
         "sampler": {"type": "grid", "seed": 1}, "pruner": {"type": "none"}}
    )  # fmt: skip
    register_study(storage, spec)
    register(storage, "w", heartbeat_age=0.0)
    trials = run_study(storage)
    points = sorted(tuple(sorted(t.params.items())) for t in trials)
    # eta 0 once (gamma inactive), eta 0.3 and 1.0 with each of 3 gammas: 7 points, once each.
    expected = [(("eta", 0.0),)] + [
        (("eta", e), ("gamma", g)) for e in (0.3, 1.0) for g in (0.3, 0.65, 1.0)
    ]
    assert len(trials) == 7 and points == sorted(expected)
