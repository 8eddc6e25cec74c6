"""Points of a search space: what may be queued by hand, and which trials a warm start takes."""

from __future__ import annotations

from typing import Any

import pytest

from search_spaces import parse_search_space
from search_spaces.points import PointError, point_in_space, queued_params

SPACE = parse_search_space(
    {
        "optimizer": {"type": "categorical", "choices": ["sgd", "momentum"]},
        "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": ["momentum"]}},
        "eta": {"type": "categorical", "choices": [0.0, 0.3, 1.0]},
        "gamma": {"type": "float", "low": 0.3, "high": 1.0, "step": 0.05},
        "depth": {"type": "int", "low": 2, "high": 20, "step": 2},
        "batch_size": 128,
    }
)


def test_given_values_are_kept_as_the_space_stores_them_and_fixed_ones_dropped() -> None:
    given = {"eta": 1, "gamma": 0.55, "depth": 4.0, "batch_size": 128}
    queued = queued_params(SPACE, given)
    assert queued == {"eta": 1.0, "gamma": 0.55, "depth": 4}
    assert type(queued["depth"]) is int and type(queued["eta"]) is float
    assert queued_params(SPACE, {"optimizer": "momentum", "momentum": 0.7}) == {
        "optimizer": "momentum",
        "momentum": 0.7,
    }
    assert queued_params(SPACE, {}) == {}


@pytest.mark.parametrize(
    ("given", "param", "says"),
    [
        ({"lr": 0.1}, "lr", "the search space has no parameter 'lr'"),
        ({"eta": 0.5}, "eta", "0.5 is not one of its choices"),
        ({"eta": True}, "eta", "not one of its choices"),
        ({"gamma": 1.5}, "gamma", "1.5 is outside [0.3, 1] in steps of 0.05"),
        ({"gamma": 0.33}, "gamma", "outside"),
        ({"gamma": "x"}, "gamma", "must be a number"),
        ({"gamma": float("nan")}, "gamma", "must be a number"),
        ({"depth": 3}, "depth", "3 is outside [2, 20] in steps of 2"),
        ({"depth": 2.5}, "depth", "must be an integer"),
        ({"batch_size": 64}, "batch_size", "is fixed at 128 in this study's space, got 64"),
        ({"momentum": 0.7}, "momentum", "give optimizer too"),
        ({"optimizer": "sgd", "momentum": 0.7}, "momentum", "is not drawn when optimizer is 'sgd'"),
    ],
)
def test_a_value_the_space_cannot_take_is_refused_by_name(
    given: dict[str, Any], param: str, says: str
) -> None:
    with pytest.raises(PointError) as refused:
        queued_params(SPACE, given)
    assert refused.value.param == param
    assert says in str(refused.value) and str(refused.value).startswith(f"{param}: ")


def test_a_trial_lies_in_a_space_only_as_a_whole_point() -> None:
    whole = {"optimizer": "sgd", "eta": 0.3, "gamma": 0.5, "depth": 4}
    assert point_in_space(SPACE, whole, {"batch_size": 128}) == whole
    # Its own fixed values count where this space samples them, and are settings elsewhere.
    fixed_gamma = {k: v for k, v in whole.items() if k != "gamma"}
    assert point_in_space(SPACE, fixed_gamma, {"gamma": 0.5, "seed": 3}) == whole
    outside = [
        ({**whole, "gamma": 0.2}, {}),  # out of range
        ({**whole, "lr": 0.1}, {}),  # a parameter this space does not have
        (fixed_gamma, {}),  # a parameter this space draws is missing
        (whole, {"batch_size": 64}),  # a fixed value contradicted
        ({**whole, "momentum": 0.7}, {}),  # drawn where this space would not draw it
        ({**whole, "optimizer": "momentum"}, {}),  # ... and missing where it would
    ]
    for params, settings in outside:
        assert point_in_space(SPACE, params, settings) is None, params
