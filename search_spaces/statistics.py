"""The statistics behind every answer that rests on a few runs: intervals and paired tests.

Plain functions over floats (scipy.stats does the distributions), shared by the service's
analysis and the worker's ``reproduce``. Every interval is two-sided at ``confidence``
(0.95 unless told); an interval that cannot be computed (too few values) is ``None``
rather than a made-up width.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

__all__ = [
    "MeanSummary",
    "PairedComparison",
    "mean",
    "mean_interval",
    "paired_comparison",
    "summarize_values",
    "wilson_interval",
]

CONFIDENCE = 0.95
# Values that differ by less than this many units in the last place of their magnitude (or
# of the numbers they were computed from) differ by rounding only: 0.3 - 0.2 and 0.4 - 0.3
# are the same difference. Treating that as spread would give a zero-width interval a
# p-value of 1e-30.
_ROUNDING = 16 * sys.float_info.epsilon


def _stats() -> ModuleType:
    # scipy.stats takes about a second to import: the server and the CLI pay it when they
    # first compute a statistic, not at start-up.
    from scipy import stats

    return stats


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


def wilson_interval(
    successes: int, n: int, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """The Wilson score interval of a success rate ``successes / n`` (None when n is 0).

    Unlike the normal ("Wald") interval it stays inside [0, 1] and is honest at 0 of n and
    n of n, which is where success counts of many restarts tend to be.
    """
    _check_confidence(confidence)
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return None
    z = float(_stats().norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # The exact bounds are 0 at 0 of n and 1 at n of n; elsewhere clamp rounding only.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def mean(values: Sequence[float]) -> float:
    """The mean of finite values (at least one), exactly rounded, even near the float limit."""
    try:
        return math.fsum(values) / len(values)
    except OverflowError:  # values near the largest float: their sum is not a float
        return math.fsum(v / len(values) for v in values)


def mean_interval(
    values: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """Student's t interval of the mean (None for fewer than two values).

    Values equal but for rounding have no spread: their interval is the mean alone.
    """
    _check_confidence(confidence)
    return _t_interval(values, confidence, max((abs(v) for v in values), default=0.0))


def _no_spread(values: Sequence[float], scale: float) -> bool:
    return max(values) - min(values) <= _ROUNDING * scale


def _t_interval(
    values: Sequence[float], confidence: float, scale: float
) -> tuple[float, float] | None:
    n = len(values)
    if n < 2:
        return None
    centre = mean(values)
    if _no_spread(values, scale):
        return centre, centre
    stats = _stats()
    sem = float(stats.sem(values))
    low, high = stats.t.interval(confidence, n - 1, loc=centre, scale=sem)
    # Values near the float limit: their spread overflows, and no interval is better than
    # (-inf, inf).
    return (float(low), float(high)) if math.isfinite(low) and math.isfinite(high) else None


@dataclass(frozen=True)
class MeanSummary:
    """Count, mean with its interval, median, best and worst of some values."""

    n: int
    mean: float | None
    interval: tuple[float, float] | None
    median: float | None
    best: float | None
    worst: float | None


def summarize_values(
    values: Sequence[float], *, higher_is_better: bool = True, confidence: float = CONFIDENCE
) -> MeanSummary:
    """The summary of finite values (non-finite ones are left out by the caller)."""
    if not values:
        return MeanSummary(0, None, None, None, None, None)
    ordered = sorted(values)
    best, worst = (ordered[-1], ordered[0]) if higher_is_better else (ordered[0], ordered[-1])
    return MeanSummary(
        n=len(values),
        mean=mean(values),
        interval=mean_interval(values, confidence),
        median=float(_stats().scoreatpercentile(ordered, 50)) if len(ordered) > 1 else ordered[0],
        best=best,
        worst=worst,
    )


@dataclass(frozen=True)
class PairedComparison:
    """A group against a baseline on the seeds both ran: ``group - baseline`` per seed."""

    pairs: int
    mean_difference: float | None
    interval: tuple[float, float] | None
    p_value: float | None  # two-sided paired t-test; None below two pairs or with no spread


def paired_comparison(
    group: dict[int, float], baseline: dict[int, float], confidence: float = CONFIDENCE
) -> PairedComparison:
    """Compare two arms on common random numbers: values keyed by seed, paired by seed.

    Seeds only one arm has are left out. The interval is the t interval of the mean
    difference, the p-value that of ``scipy.stats.ttest_rel`` (equal to a one-sample t-test
    of the differences).
    """
    _check_confidence(confidence)
    seeds = sorted(set(group) & set(baseline))
    diffs = [group[s] - baseline[s] for s in seeds]
    if not diffs or not all(math.isfinite(d) for d in diffs):  # none, or past the float limit
        return PairedComparison(len(diffs), None, None, None)
    centre = mean(diffs)
    # A difference carries the rounding of the values it was taken from.
    scale = max(abs(v) for s in seeds for v in (group[s], baseline[s]))
    interval = _t_interval(diffs, confidence, scale)
    p_value: float | None = None
    if interval is not None and interval[0] != interval[1]:
        result = _stats().ttest_rel([group[s] for s in seeds], [baseline[s] for s in seeds])
        p_value = float(result.pvalue)
    return PairedComparison(len(diffs), centre, interval, p_value)
