from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from pydantic import ValidationError

from search_spaces import StudySpec, build_pruner, build_sampler, resolve_trial


def spec(**overrides: object) -> StudySpec:
    return StudySpec.model_validate({"name": "s", "task": "deep_mlp", **overrides})


def test_defaults_come_from_the_task() -> None:
    s = spec()
    assert (s.metric, s.direction) == ("val_accuracy", "maximize")
    assert spec(metric="val_loss").direction == "minimize"
    assert spec(task="quadratic").metric == "loss"
    assert (s.sampler.type, s.pruner.type, s.repeats, s.max_retries) == ("tpe", "median", 1, 2)


def test_trial_resolution_layers_defaults_config_space_and_params() -> None:
    s = spec(
        task_config={"epochs": 3, "lr": 0.1},
        search_space={"eta": {"type": "categorical", "choices": [0.3]}, "lr": 0.05},
    )
    setup = resolve_trial(s, {"eta": 0.3})
    assert (setup.eta, setup.gamma) == (0.3, 0.55)
    assert setup.config["lr"] == 0.05  # the space overrides the task config
    assert setup.config["epochs"] == 3 and setup.config["depth"] == 20
    assert resolve_trial(spec(search_space={"lr": 0.01}), {}).eta == 0.0  # no noise by default


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "has space"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"task": "os.system"}, "unknown task 'os.system'; registered tasks are"),
        ({"task_config": {"foo": 1}}, "unknown key 'foo'"),
        ({"task_config": {"epochs": 0}}, "epochs"),
        ({"search_space": {"bogus": 1.0}}, "'bogus' is neither a noise parameter nor a config"),
        ({"search_space": {"eta": -1.0}}, "eta must be finite and >= 0"),
        ({"search_space": {"lr": {"type": "float", "low": -1, "high": 1}}}, "lr"),
        ({"metric": "accuracy"}, "metric 'accuracy' is not reported"),
        ({"sampler": {"type": "bayes"}}, "sampler.type"),
        ({"sampler": {"type": "grid"}, "search_space": "wide"}, "grid sampler needs"),
        ({"sampler": {"type": "tpe", "options": {"bogus": 1}}}, "unknown option for sampler 'tpe'"),
        ({"pruner": {"type": "median", "options": {"n_startup_trials": -1}}}, "pruner"),
        ({"n_trials": 0}, "n_trials"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_invalid_specs_name_the_field(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**overrides)


def test_seeded_sampler_differs_per_trial_number_and_repeats_per_number() -> None:
    s = spec(search_space="wide", sampler={"type": "random", "seed": 3})

    def draw(number: int) -> float:
        study = optuna.create_study(sampler=build_sampler(s, number), pruner=build_pruner(s))
        trial = study.ask()
        return trial.suggest_float("eta", 1e-3, 3.0, log=True)

    assert draw(0) == draw(0)
    assert draw(0) != draw(1)


def test_grid_sampler_walks_the_declared_grid() -> None:
    s = spec(sampler={"type": "grid"}, search_space="paper-baseline")
    sampler = build_sampler(s, 0)
    assert isinstance(sampler, optuna.samplers.GridSampler)


def test_vocabulary_never_imports_torch() -> None:
    code = (
        "import sys, search_spaces; "
        "search_spaces.StudySpec(name='a', task='deep_mlp'); "
        "assert 'torch' not in sys.modules and 'worker' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_success_metric_defaults_to_the_study_metric_and_keeps_its_direction() -> None:
    s = spec(success={"thresholds": [0.9, 0.95]})
    assert s.success is not None
    assert (s.success.metric, s.success.thresholds) == ("val_accuracy", [0.9, 0.95])
    other = spec(metric="val_loss", success={"metric": "train_accuracy", "thresholds": [1]})
    assert other.success is not None and other.success.metric == "train_accuracy"
    by_loss = spec(metric="val_loss", success={"thresholds": [0.1]}).success
    assert by_loss is not None and by_loss.metric == "val_loss"
    assert spec().success is None


@pytest.mark.parametrize(
    ("success", "message"),
    [
        ({"metric": "accuracy", "thresholds": [0.9]}, "success.metric: 'accuracy' is not reported"),
        ({"thresholds": []}, "at least 1 item"),
        ({"thresholds": [i / 20 for i in range(17)]}, "at most 16 items"),
        ({"thresholds": [0.9, 0.9]}, "must be distinct"),
        ({"thresholds": [float("nan")]}, "finite number"),
        ({"thresholds": [float("inf")]}, "finite number"),
        ({"thresholds": ["0.9"]}, "valid number"),
        ({"thresholds": [True]}, "valid number"),
        ({"metric": "val_loss"}, "thresholds"),
        ({"thresholds": [0.9], "direction": "maximize"}, "direction"),
        ([0.9], "success"),
    ],
)
def test_invalid_success_names_the_field(success: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(success=success)


def test_stored_specs_without_success_still_load() -> None:
    stored = spec().model_dump(mode="json")
    del stored["success"]  # written before the field existed
    assert StudySpec.from_stored(stored).success is None
    with_success = spec(success={"thresholds": [0.9]}).model_dump(mode="json")
    assert with_success["success"] == {"metric": "val_accuracy", "thresholds": [0.9]}
    assert StudySpec.from_stored(with_success) == spec(success={"thresholds": [0.9]})
