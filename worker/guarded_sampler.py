"""A study's sampler and pruner, rebuilt so that no failure of theirs stops a worker.

A spec is validated when it is submitted, but a sampler can still fail later: an option
that only breaks while sampling, a numerical failure on this study's data, a spec stored
before today's checks. Such a failure must fail the trial being asked for, with its reason,
and leave the worker serving: ``GuardedSampler`` wraps the real sampler, keeps the first
exception it raised, and answers in its place as a random sampler would, so Optuna still
hands out a trial; the claim then fails that trial with the kept exception (see
worker.claims).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from search_spaces import StudySpec, build_pruner, build_sampler

log = logging.getLogger("noisetune.worker")


class GuardedSampler(optuna.samplers.BaseSampler):
    """Delegates to `inner`; the first exception it raises is kept in `error` instead.

    With no `inner` (building it failed) or after an error, parameters come from a random
    sampler: the trial they go to is failed without training.
    """

    def __init__(
        self, inner: optuna.samplers.BaseSampler | None, error: BaseException | None = None
    ) -> None:
        self.inner = inner
        self.error = error
        self._fallback = optuna.samplers.RandomSampler()

    def _failed(self, where: str, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        log.warning("sampler failed in %s: %s: %s", where, type(exc).__name__, exc)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self.inner is None or self.error is not None:
            return {}
        try:
            return self.inner.infer_relative_search_space(study, trial)
        except Exception as exc:
            self._failed("infer_relative_search_space", exc)
            return {}

    def sample_relative(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        if self.inner is None or self.error is not None or not search_space:
            return {}
        try:
            return self.inner.sample_relative(study, trial, search_space)
        except Exception as exc:
            self._failed("sample_relative", exc)
            return {}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if self.inner is not None and self.error is None:
            try:
                return self.inner.sample_independent(study, trial, param_name, param_distribution)
            except Exception as exc:
                self._failed("sample_independent", exc)
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.inner is None:
            return
        try:
            self.inner.before_trial(study, trial)
        except Exception as exc:
            self._failed("before_trial", exc)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        if self.inner is None:
            return
        try:
            self.inner.after_trial(study, trial, state, values)
        except RuntimeError:
            raise  # GridSampler's study.stop(): handled by worker.optuna_tell
        except Exception as exc:
            # The trial's state is stored regardless; a sampler that cannot learn from it
            # fails the next trial it is asked for.
            log.warning("sampler failed in after_trial: %s: %s", type(exc).__name__, exc)

    def reseed_rng(self) -> None:
        if self.inner is not None:
            self.inner.reseed_rng()


def guarded_optimizers(
    spec: StudySpec, trial_number: int
) -> tuple[GuardedSampler, optuna.pruners.BasePruner, BaseException | None]:
    """The spec's sampler (guarded) and pruner; a pruner that cannot be built is the error."""
    try:
        sampler = GuardedSampler(build_sampler(spec, trial_number=trial_number))
    except Exception as exc:
        sampler = GuardedSampler(None, exc)
    try:
        return sampler, build_pruner(spec), None
    except Exception as exc:
        return sampler, optuna.pruners.NopPruner(), exc
