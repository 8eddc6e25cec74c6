"""The extreme configs a study's search space can produce, and what the worst of them needs.

The space is checked at its extremes: every categorical choice and both ends of every range.
One probe per extreme proves each value makes a valid config; the worst case for a cost
(memory, time) combines the extremes of several parameters, found by coordinate ascent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from search_spaces._params import CategoricalParam, SearchSpace
from search_spaces._resources import ResourceEstimate, human_bytes
from search_spaces._tasks import TaskConfig, TaskConfigError, TaskDefinition

if TYPE_CHECKING:
    from search_spaces._study_spec import StudySpec

# Rounds of coordinate ascent; a cost that grows with each parameter settles in two.
MAX_ROUNDS = 4
MEMORY_SETTING = "NOISETUNE_MAX_TRIAL_MEMORY"


class ResourceLimitError(ValueError):
    """A study whose trials would need more than this server allows; says how much."""


def extreme_values(space: SearchSpace) -> dict[str, list[Any]]:
    """Each sampled parameter's choices, or the two ends of its range."""
    return {
        name: list(p.choices) if isinstance(p, CategoricalParam) else [p.low, p.high]
        for name, p in space.sampled.items()
    }


def worst_config(
    space: SearchSpace,
    definition: TaskDefinition,
    task_config: dict[str, Any],
    cost: Callable[[TaskConfig], float],
) -> TaskConfig:
    """The config of the highest `cost` among the space's extremes, taken together.

    Starts from task_config with the space's fixed values, then sets each sampled config key
    to its costliest extreme given the others, round after round until nothing changes: for a
    cost that grows or shrinks with each parameter on its own, that is the costliest corner.
    Extremes that do not make a valid config are passed over (the spec check reports them).
    """
    keys = set(definition.config_keys)
    current = {**task_config, **{k: v for k, v in space.fixed.items() if k in keys}}
    best = definition.validate_config(current)
    best_cost = cost(best)
    extremes = {k: v for k, v in extreme_values(space).items() if k in keys}
    for _ in range(MAX_ROUNDS):
        changed = False
        for name, values in extremes.items():
            for value in values:
                if name in current and current[name] == value:
                    continue
                try:
                    config = definition.validate_config({**current, name: value})
                except TaskConfigError:
                    continue
                value_cost = cost(config)
                if value_cost > best_cost:
                    current[name], best, best_cost, changed = value, config, value_cost, True
        if not changed:
            break
    return best


def estimate_resources(spec: StudySpec) -> ResourceEstimate | None:
    """The most any one trial of `spec` needs, or None when its task gives no estimate.

    Memory is the maximum over the extremes of the search space; seconds are those of the
    same config.
    """
    found = _worst(spec)
    return None if found is None else found[1]


def check_resources(spec: StudySpec, max_memory_bytes: int) -> None:
    """Raise `ResourceLimitError` when a trial of `spec` may need over `max_memory_bytes`."""
    found = _worst(spec)
    if found is None:
        return
    config, estimate = found
    # A stackable task trains a trial's runs (one per seed) side by side: all at once.
    runs = spec.repeats if spec.definition.stackable else 1
    memory = estimate.memory_bytes * runs
    if memory <= max_memory_bytes:
        return
    # The config keys that differ from the task's defaults are what made it this big.
    defaults = spec.definition.default_config()
    values = ", ".join(f"{k}={v!r}" for k, v in config.model_dump().items() if defaults.get(k) != v)
    side_by_side = f", its {runs} runs (repeats) side by side" if runs > 1 else ""
    raise ResourceLimitError(
        f"{spec.task} needs about {human_bytes(memory)} per trial{side_by_side}"
        + (f" ({values})" if values else "")
        + f"; this server allows {human_bytes(max_memory_bytes)} ({MEMORY_SETTING})"
    )


def _worst(spec: StudySpec) -> tuple[TaskConfig, ResourceEstimate] | None:
    resources = spec.definition.resources
    if resources is None:
        return None
    config = worst_config(
        spec.space, spec.definition, spec.task_config, lambda c: resources(c).memory_bytes
    )
    return config, resources(config)
