"""The schedule families: each one's formula at known steps, arrays equal to scalars, windows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from search_spaces.schedules import (
    FAMILY_PARAMETERS,
    SCHEDULE_KINDS,
    CosineSchedule,
    ExponentialSchedule,
    LinearSchedule,
    WindowedSchedule,
    make_schedule,
)


def test_exponential_halves_every_half_life() -> None:
    s = ExponentialSchedule(0.8, half_life=100)
    assert s.variance(0) == 0.8 and s.variance(100) == 0.4 and s.variance(300) == 0.1
    assert s.std(200) == math.sqrt(0.2)


def test_cosine_and_linear_reach_zero_at_the_horizon_and_stay_there() -> None:
    cosine, linear = CosineSchedule(1.0, horizon=1000), LinearSchedule(1.0, horizon=1000)
    assert cosine.variance(0) == 1.0 and cosine.variance(500) == pytest.approx(0.5, abs=1e-15)
    assert linear.variance(0) == 1.0 and linear.variance(250) == 0.75
    for s in (cosine, linear):
        assert s.variance(999) > 0 and s.variance(1000) == 0.0 and s.variance(10**9) == 0.0


def test_a_window_cuts_any_family_after_n_steps() -> None:
    for kind in SCHEDULE_KINDS:
        s = make_schedule(kind, 0.3, half_life=50, horizon=400, window=200)
        assert isinstance(s, WindowedSchedule) and s.kind == kind
        assert s.variance(199) == make_schedule(kind, 0.3, half_life=50, horizon=400).variance(199)
        assert s.variance(200) == 0.0


@pytest.mark.parametrize("kind", SCHEDULE_KINDS)
def test_arrays_equal_the_scalar_formula(kind: str) -> None:
    s = make_schedule(kind, 0.7, 0.55, half_life=30, horizon=250, window=400)
    ts = np.arange(600)
    np.testing.assert_allclose(s.variance(ts), [s.variance(int(t)) for t in ts], rtol=1e-14)
    assert s.variance([0, 10]) == [s.variance(0), s.variance(10)]


def test_each_family_asks_for_its_own_parameter() -> None:
    assert FAMILY_PARAMETERS["exponential"] == ("half_life",)
    with pytest.raises(ValueError, match="needs half_life"):
        make_schedule("exponential", 1.0)
    with pytest.raises(ValueError, match="needs horizon"):
        make_schedule("linear", 1.0)
    with pytest.raises(ValueError, match="half_life must be > 0"):
        ExponentialSchedule(1.0, 0)
    with pytest.raises(TypeError, match="whole number of steps"):
        CosineSchedule(1.0, 10.5)
    with pytest.raises(ValueError, match="noise_window must be >= 1"):
        make_schedule("constant", 1.0, window=0)


def _spec(space: dict | str) -> dict:
    return {"name": "s", "task": "quadratic", "search_space": space, "n_trials": 4}


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"schedule": "sawtooth"}, "schedule must be one of polynomial, constant"),
        ({"placement": "sideways"}, "placement must be one of after_clip, before_clip"),
        ({"scale": {"type": "categorical", "choices": ["absolute", "percent"]}},
         "scale must be one of absolute, relative, got 'percent'"),
        ({"schedule": "linear"}, "schedule 'linear' needs horizon"),
        ({"schedule": {"type": "categorical", "choices": ["polynomial", "exponential"]}},
         "schedule 'exponential' needs half_life"),
        ({"schedule": "cosine", "horizon": 10.5}, "horizon must be a whole number"),
        ({"noise_window": 0}, "noise_window must be a whole number of steps >= 1"),
        ({"schedule": "exponential", "half_life": -3}, "half_life must be a number of steps > 0"),
    ],
)  # fmt: skip
def test_noise_parameters_are_checked_at_submission(space: dict, message: str) -> None:
    from search_spaces import StudySpec

    with pytest.raises(ValueError, match=message):
        StudySpec.model_validate(_spec(space))


def test_the_builtin_schedules_space_searches_each_familys_own_parameter() -> None:
    from search_spaces import StudySpec

    space = StudySpec.model_validate(_spec("schedules")).space
    assert space.names == ["schedule", "eta", "gamma", "half_life", "horizon"]
    assert space.sampled["eta"].choices == [0.0, 0.01, 0.3, 1.0]  # type: ignore[union-attr]
