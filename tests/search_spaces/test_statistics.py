"""search_spaces.statistics against closed forms worked by hand and against scipy."""

from __future__ import annotations

import math
import random
import warnings

import pytest
from scipy import stats

from search_spaces.statistics import (
    PairedComparison,
    mean,
    mean_interval,
    paired_comparison,
    summarize_values,
    wilson_interval,
)

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def _t2_quantile(p: float) -> float:
    """Student's t quantile with 2 degrees of freedom, in closed form."""
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def _t2_two_sided_p(t: float) -> float:
    """The two-sided p-value of t with 2 degrees of freedom, in closed form."""
    return 1 - abs(t) / math.sqrt(t * t + 2)


def test_wilson_at_none_all_and_half_of_ten() -> None:
    # At 0 of n the interval is [0, z^2 / (n + z^2)], at n of n [n / (n + z^2), 1].
    z2 = Z95 * Z95
    low, high = wilson_interval(0, 10)  # type: ignore[misc]
    assert low == 0.0 and high == pytest.approx(z2 / (10 + z2), abs=1e-12)
    assert high == pytest.approx(0.2775328, abs=1e-7)
    low, high = wilson_interval(10, 10)  # type: ignore[misc]
    assert high == 1.0 and low == pytest.approx(10 / (10 + z2), abs=1e-12)
    # 5 of 10: centred on 1/2, half-width z sqrt(1/40 + z^2/400) / (1 + z^2/10).
    low, high = wilson_interval(5, 10)  # type: ignore[misc]
    half = Z95 * math.sqrt(1 / 40 + z2 / 400) / (1 + z2 / 10)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    assert (low, high) == pytest.approx((0.2365931, 0.7634069), abs=1e-7)


@pytest.mark.parametrize(("successes", "n"), [(0, 1), (1, 1), (1, 3), (4, 6), (7, 50), (99, 100)])
def test_wilson_matches_scipy(successes: int, n: int) -> None:
    expected = stats.binomtest(successes, n).proportion_ci(method="wilson")
    assert wilson_interval(successes, n) == pytest.approx((expected.low, expected.high), abs=1e-9)
    ci90 = stats.binomtest(successes, n).proportion_ci(confidence_level=0.9, method="wilson")
    assert wilson_interval(successes, n, 0.9) == pytest.approx((ci90.low, ci90.high), abs=1e-9)


def test_wilson_edges() -> None:
    assert wilson_interval(0, 0) is None
    for bad in [(-1, 3), (4, 3), (1, -1)]:
        with pytest.raises(ValueError, match="successes"):
            wilson_interval(*bad)
    for confidence in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="confidence"):
            wilson_interval(1, 2, confidence)


def test_t_interval_by_hand_and_against_scipy() -> None:
    # 0.5, 0.6, 0.7: mean 0.6, sd 0.1, two degrees of freedom.
    low, high = mean_interval([0.5, 0.6, 0.7])  # type: ignore[misc]
    half = _t2_quantile(0.975) * 0.1 / math.sqrt(3)
    assert (low, high) == pytest.approx((0.6 - half, 0.6 + half), abs=1e-12)
    assert half == pytest.approx(0.2484138, abs=1e-7)
    rng = random.Random(3)
    for n in (2, 5, 30):
        values = [rng.gauss(1.0, 0.3) for _ in range(n)]
        for confidence in (0.9, 0.95, 0.99):
            expected = stats.t.interval(
                confidence, n - 1, loc=sum(values) / n, scale=stats.sem(values)
            )
            assert mean_interval(values, confidence) == pytest.approx(expected, rel=1e-12)


def test_t_interval_edges() -> None:
    assert mean_interval([]) is None and mean_interval([0.7]) is None
    assert mean_interval([0.3, 0.3, 0.3]) == (0.3, 0.3)
    # Equal but for rounding is no spread either: not a sliver of an interval.
    assert mean_interval([0.1, 0.1, 0.1, 0.30000000000000004 - 0.2]) == pytest.approx((0.1, 0.1))
    low, high = mean_interval([0.1, 0.1, 0.1, 0.30000000000000004 - 0.2])  # type: ignore[misc]
    assert low == high
    # A real spread at a tiny scale is kept.
    low, high = mean_interval([1e-20, 2e-20, 3e-20])  # type: ignore[misc]
    assert low < 2e-20 < high


def test_summary_is_direction_aware() -> None:
    values = [0.3, 0.9, 0.5, 0.7]
    high = summarize_values(values)
    assert (high.n, high.mean, high.median, high.best, high.worst) == (4, 0.6, 0.6, 0.9, 0.3)
    assert high.interval == mean_interval(values)
    low = summarize_values(values, higher_is_better=False)
    assert (low.best, low.worst) == (0.3, 0.9)
    one = summarize_values([2.0])
    assert (one.n, one.mean, one.median, one.best, one.interval) == (1, 2.0, 2.0, 2.0, None)
    empty = summarize_values([])
    assert empty.n == 0 and empty.mean is None and empty.interval is None


def test_paired_comparison_by_hand() -> None:
    group = {0: 0.45, 1: 0.4, 2: 0.3, 9: 0.1}  # seed 9: the baseline never ran it
    baseline = {0: 0.6, 1: 0.5, 2: 0.7, 5: 0.2}
    result = paired_comparison(group, baseline)
    # Differences -0.15, -0.1, -0.4: mean -0.65/3, sd sqrt(0.0516667/2).
    diffs = [-0.15, -0.1, -0.4]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    t = mean / (sd / math.sqrt(3))
    half = _t2_quantile(0.975) * sd / math.sqrt(3)
    assert result.pairs == 3
    assert result.mean_difference == pytest.approx(-0.2166667, abs=1e-7)
    assert result.interval == pytest.approx((mean - half, mean + half), abs=1e-12)
    assert result.p_value == pytest.approx(_t2_two_sided_p(t), abs=1e-12)
    assert result.p_value == pytest.approx(0.1446628, abs=1e-7)


def test_paired_comparison_matches_ttest_rel() -> None:
    rng = random.Random(7)
    seeds = range(12)
    baseline = {s: rng.gauss(0.8, 0.05) for s in seeds}
    group = {s: baseline[s] + rng.gauss(0.02, 0.03) for s in seeds}
    result = paired_comparison(group, baseline)
    expected = stats.ttest_rel([group[s] for s in seeds], [baseline[s] for s in seeds])
    assert result.pairs == 12
    assert result.p_value == pytest.approx(float(expected.pvalue), rel=1e-10)
    ci = expected.confidence_interval(0.95)
    assert result.interval == pytest.approx((ci.low, ci.high), rel=1e-10)


def test_paired_comparison_edges() -> None:
    assert paired_comparison({}, {0: 1.0}) == paired_comparison({1: 1.0}, {0: 1.0})
    assert paired_comparison({1: 1.0}, {0: 1.0}).pairs == 0
    one = paired_comparison({0: 0.9}, {0: 0.7})
    assert one.pairs == 1 and one.mean_difference == pytest.approx(0.2)
    assert one.interval is None and one.p_value is None
    # The same difference on every seed: no spread, so no test, even when float subtraction
    # makes the differences differ in their last bits (0.4-0.3 vs 0.5-0.4).
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor scipy's "catastrophic cancellation" warning
        same = paired_comparison({0: 0.4, 1: 0.5, 2: 0.6}, {0: 0.3, 1: 0.4, 2: 0.5})
    assert same.pairs == 3 and same.p_value is None
    assert same.interval is not None and same.interval[0] == same.interval[1]
    assert same.mean_difference == pytest.approx(0.1)


def test_means_near_the_largest_float_do_not_overflow() -> None:
    huge = [1.5e308, 1.7e308, 1.6e308]
    assert mean(huge) == pytest.approx(1.6e308)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's overflow in the spread
        summary = summarize_values(huge)
        opposite = paired_comparison({0: 1.7e308, 1: -1.7e308}, {0: -1.7e308, 1: 1.7e308})
    assert summary.mean == pytest.approx(1.6e308) and summary.interval is None
    assert opposite == PairedComparison(2, None, None, None)  # differences past the limit
