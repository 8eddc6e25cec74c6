"""Telling Optuna a trial's end, without re-reading the trial first.

`Study.tell(trial, ...)` reads the whole trial back from the database (a dozen statements:
the trial and each of its attribute tables) only to hand it to the sampler's `after_trial`
hook, then stores the state. The `optuna.Trial` a worker holds already knows that trial:
Optuna keeps it current with every suggest and report made through it. `tell` below does
what `Study.tell` does for the states a worker records, from that copy (reached through
search_spaces.optuna_adapter; tests/worker/test_claims.py checks the results match
Study.tell's).
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState

from search_spaces.optuna_adapter import filter_study, frozen_trial, trial_db_id, trial_storage

__all__ = ["tell"]


def tell(study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None) -> None:
    """Finish a RUNNING trial as COMPLETE (with `value`), PRUNED or FAIL.

    Raises UpdateFinishedTrialError when the trial is finished already. A PRUNED trial gets
    its last reported value, as `Study.tell` gives it.
    """
    frozen = frozen_trial(trial)
    values: list[float] | None = None
    if state == TrialState.COMPLETE:
        if value is None or math.isnan(value):
            raise ValueError(f"a COMPLETE trial needs a value, got {value!r}")
        values = [float(value)]
    elif state == TrialState.PRUNED and frozen.last_step is not None:
        last = frozen.intermediate_values[frozen.last_step]
        values = None if math.isnan(last) else [float(last)]
    elif state not in (TrialState.PRUNED, TrialState.FAIL):
        raise ValueError(f"cannot tell a trial {state.name}")
    try:
        # Study.tell shows the sampler the study as the pruner partitions it (Hyperband).
        filtered = filter_study(study, frozen)
        study.sampler.after_trial(filtered, frozen, state, values)
    except RuntimeError:
        # GridSampler's after_trial calls study.stop() once every point was tried, which
        # Optuna allows only inside optimize(). A pull worker has no loop to stop: the
        # study's n_trials ends it. The state is stored all the same, below.
        pass
    finally:
        trial_storage(trial).set_trial_state_values(trial_db_id(trial), state, values)
