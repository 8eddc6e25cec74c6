from __future__ import annotations

import optuna.distributions as od
import pytest

from search_spaces import (
    BUILTIN_SPACES,
    SearchSpaceError,
    parse_search_space,
    resolve_search_space,
)


def test_parse_mixes_fixed_and_sampled_parameters() -> None:
    space = parse_search_space(
        {
            "eta": {"type": "categorical", "choices": [0.01, 0.3, 1.0]},
            "gamma": 0.55,
            "lr": {"type": "float", "low": 0.001, "high": 0.3, "log": True},
            "depth": {"type": "int", "low": 4, "high": 20, "step": 4},
        }
    )
    assert space.fixed == {"gamma": 0.55}
    dists = space.distributions()
    assert dists["eta"] == od.CategoricalDistribution([0.01, 0.3, 1.0])
    assert dists["lr"] == od.FloatDistribution(0.001, 0.3, log=True)
    assert dists["depth"] == od.IntDistribution(4, 20, step=4)
    assert parse_search_space(space.to_json()) == space


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"eta": {"type": "uniform", "low": 0, "high": 1}}, "'eta': type must be one of"),
        ({"eta": {"type": "float", "low": 1, "high": 0}}, "'eta': low must be <= high"),
        ({"lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "'lr': a log-scale"),
        ({"lr": {"type": "float", "low": 0}}, "'lr': high: Field required"),
        ({"eta": {"type": "categorical", "choices": []}}, "'eta'"),
        ({"eta": {"type": "float", "low": 0, "high": 1, "foo": 2}}, "'eta': foo"),
        ({"eta": [0.1, 0.3]}, "'eta': a list is ambiguous"),
        ({"bad name": 1}, "'bad name' must be an identifier"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_errors_name_the_parameter_and_the_problem(raw: object, message: str) -> None:
    with pytest.raises(SearchSpaceError, match=message):
        parse_search_space(raw)


def test_builtin_spaces() -> None:
    paper = resolve_search_space("paper")
    assert paper.sampled["eta"].choices == [0.01, 0.3, 1.0]  # type: ignore[union-attr]
    assert paper.fixed == {"gamma": 0.55}
    baseline = resolve_search_space("paper-baseline")
    assert 0.0 in baseline.sampled["eta"].choices  # type: ignore[union-attr]
    assert set(resolve_search_space("paper-gamma").sampled) == {"eta", "gamma"}
    assert set(resolve_search_space("wide").sampled) == {"eta", "gamma", "lr"}
    assert set(BUILTIN_SPACES) == {"paper", "paper-gamma", "paper-baseline", "schedules", "wide"}
    with pytest.raises(SearchSpaceError, match="built-in spaces are paper, paper-gamma"):
        resolve_search_space("nope")
