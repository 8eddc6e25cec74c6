"""Percentile bootstrap intervals of a statistic that maps rows (trials) to named values.

Rows are drawn with replacement from a generator seeded with `seed`, so the same rows and
statistic give the same intervals every time. A resample on which the statistic is not
defined (it answers None, e.g. every value equal) is left out of the percentiles; the
answer says how many resamples were used.

Given the point estimate, an interval is stretched to reach it. Percentile intervals can
miss it where the estimate sits at a bound that resamples rarely reach: a share of 1 when
every other parameter's effect is clipped at 0, while the repeats in a resample give the
others a little chance effect. Stretching keeps the interval honest there (wider, never
narrower) rather than drawing a bar that does not touch its own estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from search_spaces.statistics import CONFIDENCE

# The statistic of the rows at these indices (repeats allowed), or None where undefined.
Statistic = Callable[[np.ndarray], dict[str, float] | None]


class Bootstrap(NamedTuple):
    intervals: dict[str, tuple[float, float]]  # name -> (low, high) at `confidence`
    resamples: int  # the resamples the percentiles rest on
    confidence: float


def percentile_intervals(
    statistic: Statistic,
    n_rows: int,
    resamples: int,
    *,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    point: dict[str, float] | None = None,
) -> Bootstrap:
    """The `confidence` percentile interval of each value of `statistic` over `resamples`
    resamples of `n_rows` rows (no intervals when no resample is defined), stretched to
    reach `point` where given."""
    if n_rows < 1 or resamples < 1:
        raise ValueError(f"need n_rows >= 1 and resamples >= 1, got {n_rows} and {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    used = 0
    for _ in range(resamples):
        values = statistic(rng.integers(0, n_rows, size=n_rows))
        if values is None:
            continue
        used += 1
        for name, value in values.items():
            draws.setdefault(name, []).append(value)
    tail = 50.0 * (1.0 - confidence)
    intervals = {}
    for name, values_of_name in draws.items():
        low, high = np.percentile(values_of_name, [tail, 100.0 - tail])
        if point is not None and name in point:
            low, high = min(low, point[name]), max(high, point[name])
        intervals[name] = (float(low), float(high))
    return Bootstrap(intervals, used, confidence)
