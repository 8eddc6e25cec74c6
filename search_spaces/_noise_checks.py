"""Checks of a search space's noise parameters at submission, beside the task's own."""

from __future__ import annotations

import math
from typing import Any

from search_spaces._params import CategoricalParam, SearchSpace, SearchSpaceError
from search_spaces.noise_setup import PLACEMENTS, SCALES
from search_spaces.schedules import FAMILY_PARAMETERS, SCHEDULE_KINDS

_CHOICES = {"schedule": SCHEDULE_KINDS, "placement": PLACEMENTS, "scale": SCALES}


def check_noise_values(values: dict[str, Any]) -> None:
    """Each noise value the space can give (eta and gamma are checked by the caller)."""
    for name, allowed in _CHOICES.items():
        if name in values and values[name] not in allowed:
            raise SearchSpaceError(
                f"{name} must be one of {', '.join(allowed)}, got {values[name]!r}"
            )
    half_life = values.get("half_life")
    if half_life is not None and not (_is_number(half_life) and half_life > 0):
        raise SearchSpaceError(f"half_life must be a number of steps > 0, got {half_life!r}")
    for name in ("horizon", "noise_window"):
        value = values.get(name)
        if value is not None and not (_is_whole(value) and value >= 1):
            raise SearchSpaceError(f"{name} must be a whole number of steps >= 1, got {value!r}")


def check_families(space: SearchSpace) -> None:
    """Every family the space can choose needs its own parameter in the space."""
    schedule = space.sampled.get("schedule")
    if isinstance(schedule, CategoricalParam):
        families = [str(c) for c in schedule.choices]
    else:
        families = [str(space.fixed.get("schedule", "polynomial"))]
    names = set(space.names)
    for family in families:
        missing = [n for n in FAMILY_PARAMETERS.get(family, ()) if n != "gamma" and n not in names]
        if missing:
            raise SearchSpaceError(
                f"schedule {family!r} needs {', '.join(missing)} in the search space "
                f"(fixed, or searched when schedule is {family!r})"
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value: Any) -> bool:
    return _is_number(value) and float(value).is_integer()
