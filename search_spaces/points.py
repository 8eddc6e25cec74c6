"""Points of a search space: whether given parameter values lie in it.

Two callers, two questions. Parameters queued by hand (`queued_params`) may leave any
sampled parameter out (the sampler draws it), and each value given must be one the space
can take: a 422 names the first that is not. A trial of another study (`point_in_space`)
must be a whole point of the space, every active parameter present and in range, or it is
left out of a warm start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from search_spaces._conditions import contains, same_value
from search_spaces._params import CategoricalParam, FloatParam, IntParam, SearchSpace

# Optuna's own tolerance for a float on a stepped range's grid.
_STEP_TOLERANCE = 1e-8


class PointError(ValueError):
    """A value the space cannot take; `param` names the parameter."""

    def __init__(self, param: str, msg: str) -> None:
        super().__init__(f"{param}: {msg}")
        self.param = param
        self.msg = msg


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _range(p: FloatParam | IntParam) -> str:
    step = f" in steps of {p.step:g}" if p.step not in (None, 1) else ""
    return f"[{p.low:g}, {p.high:g}]{step}{' (log scale)' if p.log else ''}"


def param_value(name: str, p: FloatParam | IntParam | CategoricalParam, value: Any) -> Any:
    """`value` as parameter `p` stores it (a choice as listed, an int as int), or PointError."""
    if isinstance(p, CategoricalParam):
        for choice in p.choices:
            if same_value(choice, value):
                return choice
        return _refuse(name, f"{value!r} is not one of its choices {p.choices!r}")
    if isinstance(p, IntParam):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            return _refuse(name, f"must be an integer in {_range(p)}, got {value!r}")
        if not p.low <= value <= p.high or (value - p.low) % p.step:
            return _refuse(name, f"{value} is outside {_range(p)}")
        return value
    if not _number(value):
        return _refuse(name, f"must be a number in {_range(p)}, got {value!r}")
    value = float(value)
    on_grid = True
    if p.step is not None:
        k = (value - p.low) / p.step
        on_grid = abs(k - round(k)) < _STEP_TOLERANCE
    if not p.low <= value <= p.high or not on_grid:
        return _refuse(name, f"{value:g} is outside {_range(p)}")
    return value


def _refuse(name: str, msg: str) -> Any:
    raise PointError(name, msg)


def queued_params(space: SearchSpace, given: Mapping[str, Any]) -> dict[str, Any]:
    """The values to queue for `given` (sampled parameters only, as stored); PointError
    names the first parameter the space does not have, a value out of its range, a fixed
    parameter given another value, or a conditional one given where it would not be drawn.

    A conditional parameter can be given only with the parents its `when` names (or where
    they are fixed): otherwise the sampler might draw a parent that leaves it out.
    """
    for name in given:
        if name not in space.sampled and name not in space.fixed:
            have = ", ".join(space.names) or "none"
            raise PointError(name, f"the search space has no parameter {name!r} (it has: {have})")
    for name, fixed in space.fixed.items():
        if name in given and not same_value(given[name], fixed):
            raise PointError(
                name, f"is fixed at {fixed!r} in this study's space, got {given[name]!r}"
            )
    known: dict[str, Any] = dict(space.fixed)
    out: dict[str, Any] = {}
    for name, p in space.sampled.items():
        if name not in given:
            continue
        for parent, allowed in (p.when or {}).items():
            if parent not in known:
                raise PointError(
                    name,
                    f"is drawn only when {parent} is one of {list(allowed)!r}: give {parent} too",
                )
            if not contains(allowed, known[parent]):
                raise PointError(
                    name,
                    f"is not drawn when {parent} is {known[parent]!r} (only when it is one of "
                    f"{list(allowed)!r})",
                )
        known[name] = out[name] = param_value(name, p, given[name])
    return out


def point_in_space(
    space: SearchSpace, params: Mapping[str, Any], settings: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The parameters of a trial of another study as a whole point of `space`, or None when
    the trial does not lie in it.

    `params` are what the trial sampled, `settings` the values its own space fixed. The
    trial lies in `space` when every parameter it sampled is one `space` draws for it
    (sampled, active, in range), every parameter `space` draws is among its values, and no
    value of it contradicts one that `space` fixes. Its fixed values that `space` does not
    name are its study's settings, not parameters, and are not compared.
    """
    values = {**settings, **params}
    for name, fixed in space.fixed.items():
        if name in values and not same_value(values[name], fixed):
            return None
    point: dict[str, Any] = dict(space.fixed)
    out: dict[str, Any] = {}
    for name, p in space.sampled.items():
        if not p.active(point):
            if name in params:
                return None  # a value this space would not draw here: another point
            continue
        if name not in values:
            return None
        try:
            point[name] = out[name] = param_value(name, p, values[name])
        except PointError:
            return None
    if any(name not in out for name in params):
        return None
    return out
