"""Conditional parameters in the search-space schema: what `when` accepts and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from search_spaces import SearchSpaceError, StudySpec, parse_search_space, resolve_trial
from search_spaces._params import grid_of

OPTIMIZER = {"type": "categorical", "choices": ["sgd", "momentum", "adam"]}
MOMENTUM = {"type": "float", "low": 0.5, "high": 0.99, "when": {"optimizer": ["momentum"]}}


def momentum(**when: list[Any]) -> dict[str, Any]:
    return {"type": "float", "low": 0.5, "high": 0.99, "when": when}


def test_a_conditional_parameter_comes_after_its_parent() -> None:
    # Declared before its parent: the space still draws the parent first.
    space = parse_search_space({"momentum": MOMENTUM, "optimizer": OPTIMIZER, "lr": 0.03})
    assert list(space.sampled) == ["optimizer", "momentum"]
    assert space.conditional == ["momentum"]
    assert space.sampled["momentum"].when == {"optimizer": ["momentum"]}
    assert space.to_json()["momentum"]["when"] == {"optimizer": ["momentum"]}
    assert parse_search_space(space.to_json()) == space


def test_chained_conditions_are_drawn_parents_first() -> None:
    space = parse_search_space(
        {
            "half_life": {"type": "int", "low": 10, "high": 10000, "log": True,
                          "when": {"schedule": ["exponential"]}},
            "schedule": {"type": "categorical", "choices": ["constant", "exponential"],
                         "when": {"noise": ["on"]}},
            "noise": {"type": "categorical", "choices": ["off", "on"]},
        }
    )  # fmt: skip
    assert list(space.sampled) == ["noise", "schedule", "half_life"]
    assert space.conditional == ["schedule", "half_life"]
    assert space.sampled["half_life"].active({"noise": "on", "schedule": "exponential"})
    assert not space.sampled["half_life"].active({"noise": "on", "schedule": "constant"})
    # A parent that is itself inactive leaves its children inactive.
    assert not space.sampled["half_life"].active({"noise": "off"})


def test_all_conditions_must_hold() -> None:
    space = parse_search_space(
        {
            "optimizer": OPTIMIZER,
            "eta": {"type": "categorical", "choices": [0.0, 0.3]},
            "momentum": momentum(optimizer=["momentum"], eta=[0.3]),
        }
    )
    p = space.sampled["momentum"]
    assert p.active({"optimizer": "momentum", "eta": 0.3})
    assert not p.active({"optimizer": "momentum", "eta": 0.0})
    assert not p.active({"optimizer": "sgd", "eta": 0.3})


def test_a_fixed_parent_is_a_categorical_of_one_choice() -> None:
    # A condition that always holds: the parameter is in every trial, so not conditional.
    space = parse_search_space({"optimizer": "momentum", "momentum": MOMENTUM})
    assert space.conditional == []
    assert space.sampled["momentum"].active(dict(space.fixed))
    grid_of(parse_search_space({"optimizer": "momentum", "momentum": {**MOMENTUM, "step": 0.1}}))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"optimizer": OPTIMIZER, "momentum": momentum(optimiser=["momentum"])},
            r"parameter 'momentum': when names 'optimiser', which is not a parameter of the "
            r"space \(it has: momentum, optimizer\)",
        ),
        (
            {"lr": {"type": "float", "low": 0.01, "high": 0.1}, "momentum": momentum(lr=[0.05])},
            r"parameter 'momentum': when names 'lr', a float or int range; a condition needs a "
            r"categorical parameter or a fixed value",
        ),
        (
            {"optimizer": OPTIMIZER, "momentum": momentum(optimizer=["momentum", "nesterov"])},
            r"parameter 'momentum': when.optimizer lists 'nesterov', which 'optimizer' can never "
            r"take \(its choices are 'sgd', 'momentum', 'adam'\)",
        ),
        (
            {"optimizer": "sgd", "momentum": MOMENTUM},
            r"parameter 'momentum': when.optimizer lists 'momentum', which 'optimizer' can never "
            r"take \(it is fixed at 'sgd'\)",
        ),
        (
            {
                "optimizer": OPTIMIZER,
                "schedule": {
                    "type": "categorical",
                    "choices": ["constant", "exponential"],
                    "when": {"optimizer": ["sgd"]},
                },
                "momentum": momentum(optimizer=["momentum"], schedule=["exponential"]),
            },  # fmt: skip
            r"parameter 'momentum' can never be active: its conditions and those of the "
            r"parameters they name need 'optimizer' in \['momentum'\] and in \['sgd'\] at once",
        ),
        (
            {
                "a": {"type": "categorical", "choices": [1, 2], "when": {"b": [1]}},
                "b": {"type": "categorical", "choices": [1, 2], "when": {"a": [1]}},
            },
            r"parameter 'a': its conditions form a cycle, a -> b -> a",
        ),
        (
            {"a": {"type": "categorical", "choices": [1, 2], "when": {"a": [1]}}},
            r"parameter 'a': its conditions form a cycle, a -> a",
        ),
        (
            {"optimizer": OPTIMIZER, "momentum": momentum()},
            r"parameter 'momentum': when: must name at least one parent parameter",
        ),
        (
            {"optimizer": OPTIMIZER, "momentum": momentum(optimizer=[])},
            r"parameter 'momentum': when: optimizer: must list at least one value of 'optimizer'",
        ),
        (
            {"optimizer": OPTIMIZER, "momentum": {**MOMENTUM, "when": {"optimizer": "momentum"}}},
            r"parameter 'momentum': when.optimizer: Input should be a valid list",
        ),
        (
            # True is not 1: a condition value must be one of the choices, type and all.
            {
                "flag": {"type": "categorical", "choices": [True, False]},
                "momentum": momentum(flag=[1]),
            },
            r"when.flag lists 1, which 'flag' can never take",
        ),
    ],
)
def test_bad_conditions_are_refused_naming_the_parameter(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(SearchSpaceError, match=message):
        parse_search_space(raw)


def deep_mlp(space: dict[str, Any], **fields: Any) -> StudySpec:
    return StudySpec.model_validate(
        {"name": "s", "task": "deep_mlp", "task_config": {"epochs": 2}, "search_space": space,
         **fields}
    )  # fmt: skip


def test_a_conditional_grid_holds_each_distinct_point_once() -> None:
    from search_spaces._grid import grid_points

    momentum = {"type": "float", "low": 0.5, "high": 0.9, "step": 0.2,
                "when": {"optimizer": ["momentum"]}}  # fmt: skip
    spec = deep_mlp({"optimizer": OPTIMIZER, "momentum": momentum}, sampler={"type": "grid"})
    points = grid_points(spec.space)
    # Not the product's 3 x 3: sgd and adam once each, momentum with each of its 3 values.
    assert sorted(points, key=str) == sorted(
        [{"optimizer": "sgd"}, {"optimizer": "adam"}]
        + [{"optimizer": "momentum", "momentum": m} for m in (0.5, 0.7, 0.9)],
        key=str,
    )
    with pytest.raises(ValueError, match="needs categorical choices or a stepped range"):
        deep_mlp({"optimizer": OPTIMIZER, "momentum": MOMENTUM}, sampler={"type": "grid"})


def test_an_inactive_parameter_falls_back_to_the_config() -> None:
    spec = deep_mlp({"optimizer": OPTIMIZER, "momentum": MOMENTUM})
    assert resolve_trial(spec, {"optimizer": "momentum", "momentum": 0.6}).config["momentum"] == 0.6
    # Not drawn: the task's default, or task_config's value when it sets one.
    assert resolve_trial(spec, {"optimizer": "sgd"}).config["momentum"] == 0.9
    fixed = deep_mlp(
        {"optimizer": OPTIMIZER, "momentum": MOMENTUM}, task_config={"epochs": 2, "momentum": 0.7}
    )
    assert resolve_trial(fixed, {"optimizer": "adam"}).config["momentum"] == 0.7


def test_cmaes_needs_no_start_value_for_a_conditional_parameter() -> None:
    space = {"optimizer": OPTIMIZER, "momentum": MOMENTUM,
             "lr": {"type": "float", "low": 0.01, "high": 0.1}}  # fmt: skip
    deep_mlp(space, sampler={"type": "cmaes", "options": {"x0": {"lr": 0.05}}})
    with pytest.raises(ValueError, match=r"x0: needs a start value for 'lr'"):
        deep_mlp(space, sampler={"type": "cmaes", "options": {"x0": {"momentum": 0.6}}})
