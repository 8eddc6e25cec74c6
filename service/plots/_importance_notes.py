"""What a reader of an importance ranking must be told: too few trials, or an open ranking.

The page shows these notes beside the importance plot and the API answers them, so the
rule for each lives here only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# About ten trials per parameter ranked: the usual rule of thumb for estimating one effect
# per parameter, and what the ANOVA evaluator's bins hold. Never fewer than 20: below that a
# bootstrap resample repeats so many trials that its percentiles say little.
TRIALS_PER_PARAMETER = 10
MIN_TRIALS_TO_RANK = 20
# PED-ANOVA compares the best 10% of the trials with all of them; Optuna's documentation
# asks for at least 5 trials in that top 10%.
PED_ANOVA_TOP_QUANTILE = 0.1
PED_ANOVA_MIN_TOP_TRIALS = 5


def trials_to_rank(evaluator: str, n_params: int) -> int:
    """The complete trials an evaluator needs before its ranking of `n_params` means much."""
    need = max(MIN_TRIALS_TO_RANK, TRIALS_PER_PARAMETER * n_params)
    if evaluator == "ped_anova":
        need = max(need, math.ceil(PED_ANOVA_MIN_TOP_TRIALS / PED_ANOVA_TOP_QUANTILE))
    return need


def _pct(interval: tuple[float, float]) -> str:
    return f"{interval[0]:.0%}–{interval[1]:.0%}"


def importance_notes(
    evaluator: str,
    params: Sequence[str],
    intervals: Sequence[tuple[float, float]],
    n_trials: int,
    confidence: float,
) -> tuple[str, ...]:
    """Notes on a ranking of `params` (most important first) with their intervals."""
    if len(params) < 2:
        return ()  # one parameter takes the whole share: nothing to rank
    notes = []
    need = trials_to_rank(evaluator, len(params))
    if n_trials < need:
        notes.append(
            f"Too few trials to rank {len(params)} parameters: {n_trials} complete, about "
            f"{need} needed. Read the shares as a first look, not a ranking."
        )
    if len(intervals) >= 2 and intervals[0][0] <= intervals[1][1]:
        first, second = params[0], params[1]
        notes.append(
            f"The ranking of {first} over {second} is not settled: their {confidence:.0%} "
            f"intervals overlap ({first} {_pct(intervals[0])}, {second} {_pct(intervals[1])})."
        )
    return tuple(notes)
