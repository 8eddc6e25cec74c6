"""A study read once: its spec and trials, with the lookups every plot shares.

Plots compute from a snapshot rather than from an Optuna Study so that one read of a
10,000-trial study serves every plot until the study changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

from optuna.trial import FrozenTrial, TrialState

from search_spaces import NOISE_PARAMS, get_task_definition, layered, resolve_search_space

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class TooFew(NamedTuple):
    """A plot the study cannot support yet; `message` is what the figure says instead."""

    kind: str
    needed: int
    have: int
    message: str


def too_few(kind: str, needed: int, have: int, what: str = "finished trials") -> TooFew:
    noun = what.replace("trials", "trial", 1) if needed == 1 else what
    return TooFew(kind, needed, have, f"needs at least {needed} {noun} (has {have})")


@dataclass(frozen=True)
class StudySnapshot:
    """One consistent read of a study: its spec and its trials ordered by number."""

    name: str
    study_id: int
    spec: dict[str, Any]
    trials: tuple[FrozenTrial, ...]
    # Changes whenever anything a plot shows may have changed; part of every cache key.
    signature: tuple[Any, ...] = ()

    @property
    def metric(self) -> str:
        return str(self.spec.get("metric") or "value")

    @property
    def direction(self) -> str:
        return str(self.spec.get("direction") or "minimize")

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @cached_property
    def complete(self) -> list[FrozenTrial]:
        """Complete trials with a finite value: the ones every value plot draws."""
        return [
            t
            for t in self.trials
            if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
        ]

    @property
    def n_finished(self) -> int:
        return sum(t.state in FINISHED for t in self.trials)

    def ranked(self, trials: list[FrozenTrial] | None = None) -> list[FrozenTrial]:
        """Complete trials (or `trials`), best first."""
        pool = self.complete if trials is None else trials
        sign = -1.0 if self.maximize else 1.0
        return sorted(pool, key=lambda t: sign * float(t.value or 0.0))

    @cached_property
    def noise_defaults(self) -> dict[str, Any]:
        """Values a trial uses when it does not sample them, in `resolve_trial`'s order."""
        try:
            fixed = resolve_search_space(self.spec.get("search_space", "paper")).fixed
        except ValueError:
            fixed = {}
        return layered(self.spec.get("task_config", {}), fixed, {})

    @cached_property
    def task_defaults(self) -> dict[str, Any]:
        """The task's default config (e.g. deep_mlp's epochs and batch size)."""
        try:
            return get_task_definition(str(self.spec.get("task"))).default_config()
        except ValueError:  # a task whose plugin is not installed here
            return {}

    def config(self, trial: FrozenTrial) -> dict[str, Any]:
        """Everything the trial trained with, in `layered`'s order."""
        return {**self.task_defaults, **self.noise_defaults, **trial.params}

    def param(self, trial: FrozenTrial, name: str) -> Any:
        """A trial's value of `name`, falling back to fixed and default values (eta, gamma).

        A conditional parameter the trial lacks (see `partial`) has no value: None.
        """
        if name in trial.params:
            return trial.params[name]
        if name in self.partial:
            return None
        return self.noise_defaults.get(name)

    @cached_property
    def partial(self) -> frozenset[str]:
        """Sampled parameters some complete trials lack: conditional ones (a `when` in the
        space) that were inactive there. Plots draw each over the trials that have it."""
        have: dict[str, int] = {}
        for t in self.complete:
            for name in t.params:
                have[name] = have.get(name, 0) + 1
        return frozenset(n for n, count in have.items() if count < len(self.complete))

    def having(self, *names: str) -> list[FrozenTrial]:
        """The complete trials with a value of every one of `names`."""
        needed = [n for n in names if n in self.partial]
        return [t for t in self.complete if all(n in t.params for n in needed)]

    @cached_property
    def param_names(self) -> list[str]:
        """Sampled parameters in first-seen order, then eta/gamma when fixed."""
        names: dict[str, None] = {}
        for t in self.trials:
            names.update(dict.fromkeys(t.params))
        names.update(dict.fromkeys(n for n in NOISE_PARAMS if n not in names))
        return list(names)

    def varying(self, names: list[str] | None = None) -> list[str]:
        """Parameters that take at least two values over the complete trials that have them."""
        out = []
        for name in names or self.param_names:
            seen = {repr(self.param(t, name)) for t in self.having(name)}
            if len(seen) >= 2:
                out.append(name)
        return out

    def is_log(self, name: str) -> bool:
        for t in self.complete:
            dist = t.distributions.get(name)
            if dist is not None:
                return bool(getattr(dist, "log", False))
        return False

    def is_categorical(self, name: str) -> bool:
        for t in self.complete:
            dist = t.distributions.get(name)
            if dist is not None:
                return type(dist).__name__ == "CategoricalDistribution"
        return False
