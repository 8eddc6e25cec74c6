"""Grids of conditional spaces: only the points a define-by-run trial can take, each once.

Optuna's ``GridSampler`` walks the full product of every parameter's values. In a space
with conditional parameters most of that product repeats itself: points that differ only in
a parameter that is inactive there are the same trial. ``grid_points`` lists the distinct
points instead (each holding its active parameters only, drawn in suggestion order), and
``PointGridSampler`` walks them the way ``GridSampler`` walks its product: trial n of a
fresh study takes point n (of a seeded shuffle), later trials a point no trial has taken
yet, and a trial queued with fixed parameters (a retry) takes none. Like the product grid,
racing workers may rarely take one point twice, and once every point is taken more trials
repeat points.
"""

from __future__ import annotations

import random
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from search_spaces._params import CategoricalParam, SearchSpace, SearchSpaceError
from search_spaces.optuna_adapter import set_trial_system_attr

MAX_GRID_POINTS = 100_000
POINT_ATTR = "noisetune_grid_point"


def grid_values(name: str, p: Any) -> list[Any]:
    """One parameter's values on a grid: categorical choices or a stepped range."""
    if isinstance(p, CategoricalParam):
        return list(p.choices)
    if p.step is not None and not p.log:
        n = int(round((p.high - p.low) / p.step)) + 1
        if n > 10_000:
            raise SearchSpaceError(f"parameter {name!r}: grid of {n} points is too large")
        values = [p.low + i * p.step for i in range(n)]
        # 0.3 + 0.35 is 0.6499999999999999 in floats: the grid holds the 0.65 that was meant.
        return values if isinstance(p.step, int) else [round(v, 12) for v in values]
    raise SearchSpaceError(
        f"parameter {name!r}: the grid sampler needs categorical choices or a stepped "
        "range (step set, log false)"
    )


def grid_points(space: SearchSpace) -> list[dict[str, Any]]:
    """Every distinct point of the space's grid, each with its active parameters only."""
    values = {name: grid_values(name, p) for name, p in space.sampled.items()}
    points: list[dict[str, Any]] = [{}]
    for name, p in space.sampled.items():  # suggestion order: parents first
        grown: list[dict[str, Any]] = []
        for point in points:
            if p.active({**space.fixed, **point}):
                grown.extend({**point, name: v} for v in values[name])
            else:
                grown.append(point)
            if len(grown) > MAX_GRID_POINTS:
                raise SearchSpaceError(
                    f"the grid has more than {MAX_GRID_POINTS} points; narrow the space"
                )
        points = grown
    return points


class PointGridSampler(optuna.samplers.BaseSampler):
    """Walks a list of points (``grid_points``), each once while some are left."""

    def __init__(self, points: list[dict[str, Any]], seed: int | None = None) -> None:
        self._points = list(points)
        if seed is not None:
            random.Random(seed).shuffle(self._points)
        self._rng = random.Random(seed)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if POINT_ATTR in trial.system_attrs or "fixed_params" in trial.system_attrs:
            return  # a point already, or queued with its parameters (a retry)
        if 0 <= trial.number < len(self._points):
            index = trial.number
        else:
            taken = {t.system_attrs.get(POINT_ATTR) for t in study.get_trials(deepcopy=False)}
            left = [i for i in range(len(self._points)) if i not in taken]
            index = self._rng.choice(left or list(range(len(self._points))))
        set_trial_system_attr(study, trial, POINT_ATTR, index)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        index = trial.system_attrs.get(POINT_ATTR)
        point = self._points[index] if isinstance(index, int) else {}
        if param_name not in point:
            raise ValueError(f"grid point {index} has no parameter {param_name!r}")
        return point[param_name]
