"""search_spaces.runs: which trials count, and the runs each one recorded or stands for."""

from __future__ import annotations

from typing import Any

from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from search_spaces import StudySpec
from search_spaces.runs import Run, counted_runs, trial_runs

SPEC = StudySpec.model_validate(
    {
        "name": "s",
        "task": "quadratic",
        "task_config": {"seed": 7},
        "search_space": {"eta": {"type": "categorical", "choices": [0.0, 0.3]}},
    }
)
ETA = {"eta": CategoricalDistribution([0.0, 0.3])}


def trial(
    number: int,
    state: TrialState = TrialState.COMPLETE,
    value: float | None = 0.5,
    params: dict[str, Any] | None = None,
    dists: dict[str, Any] | None = None,
    **attrs: Any,
) -> FrozenTrial:
    made = create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params=params or {"eta": 0.3},
        distributions=dists or ETA,
        user_attrs=attrs,
    )
    made.number = number
    return made


def test_recorded_runs_are_taken_as_recorded() -> None:
    runs = [
        {"seed": 11, "diverged": False, "metrics": {"loss": 0.25}, "curve": [{"epoch": 1}]},
        {"seed": 12, "diverged": True, "metrics": {"loss": None}},
    ]
    got = trial_runs(SPEC, trial(3, runs=runs, metrics={"loss": 0.9}), "loss")
    assert got == [
        Run(trial=3, seed=11, diverged=False, metrics={"loss": 0.25}),
        Run(trial=3, seed=12, diverged=True, metrics={"loss": None}),
    ]
    assert [r.value("loss") for r in got] == [0.25, None]


def test_a_trial_without_runs_is_one_run_on_its_config_seed() -> None:
    (run,) = trial_runs(SPEC, trial(0, metrics={"loss": 0.4}), "loss")
    assert run == Run(trial=0, seed=7, diverged=False, metrics={"loss": 0.4})
    # A seed the space samples wins over task_config's.
    seeded = StudySpec.model_validate(
        {**SPEC.model_dump(), "search_space": {"seed": {"type": "int", "low": 0, "high": 9}}}
    )
    dists = {"seed": IntDistribution(0, 9)}
    (run,) = trial_runs(seeded, trial(1, params={"seed": 4}, dists=dists), "loss")
    assert run.seed == 4
    # No metrics recorded: the study metric is the trial's value.
    (run,) = trial_runs(SPEC, trial(2, value=0.125), "loss")
    assert run.metrics == {"loss": 0.125} and run.value("loss") == 0.125
    # No spec that loads (a task not installed here): the trial's own seed, else 0.
    assert trial_runs(None, trial(5), "loss")[0].seed == 0


def test_malformed_runs_fall_back_to_one_run() -> None:
    for bad in ([], "runs", [{"seed": "0"}], [{"seed": True, "metrics": {}}], [3]):
        (run,) = trial_runs(SPEC, trial(0, runs=bad, metrics={"loss": 0.4}), "loss")
        assert run.seed == 7 and run.metrics == {"loss": 0.4}
    # Entries that make sense are kept, the rest dropped.
    mixed = [{"seed": 1, "metrics": {"loss": 0.2}}, {"seed": None}]
    assert [r.seed for r in trial_runs(SPEC, trial(0, runs=mixed), "loss")] == [1]


def test_counted_trials_are_complete_or_diverged() -> None:
    trials = [
        trial(0),
        trial(1, TrialState.FAIL, fail_reason="diverged", metrics={"loss": None}),
        trial(2, TrialState.FAIL, fail_reason="RuntimeError: boom"),
        trial(3, TrialState.FAIL),
        trial(4, TrialState.PRUNED),
        trial(5, TrialState.RUNNING),
        trial(6, TrialState.WAITING),
    ]
    counted = counted_runs(SPEC, trials, "loss")
    assert sorted(counted.runs) == [0, 1]
    (diverged,) = counted.runs[1]
    assert diverged.diverged and diverged.seed == 7 and diverged.value("loss") is None
    assert counted.left_out == {"failed": 2, "pruned": 1, "running": 1, "waiting": 1}


def test_values_that_are_not_finite_numbers_are_missing() -> None:
    run = Run(0, 0, False, {"a": float("nan"), "b": float("inf"), "c": True, "d": "1", "e": 2})
    assert [run.value(k) for k in "abcdef"] == [None, None, None, None, 2.0, None]
