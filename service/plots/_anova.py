"""Importance as one-way ANOVA effect sizes: each parameter's omega squared, as shares.

For each parameter the complete trials are grouped (a categorical by its choice, a number
into quantile bins of about ten trials each, 2 to 10 bins) and the share of the metric's
variance that the groups explain is estimated by omega squared,

    omega^2 = (SS_between - (k - 1) * MS_within) / (SS_total + MS_within),

which, unlike eta squared (SS_between / SS_total), takes off what k groups would explain by
chance alone, so a parameter that does not matter scores about 0 rather than (k - 1) / n.
Negative estimates are 0. The shares are the omega squares scaled to sum to 1 (equal shares
when none explains anything, as Optuna's evaluators do).

What it measures is each parameter's main effect over the trials the sampler chose: a
parameter sampled together with another (TPE narrowing both at once) shares in that one's
effect, and interactions are not split out.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

TRIALS_PER_BIN = 10
MAX_BINS = 10


def category_codes(values: list[object]) -> np.ndarray:
    """Integer group codes of categorical values (choices compared by their repr)."""
    _, codes = np.unique(np.array([repr(v) for v in values]), return_inverse=True)
    return codes.astype(np.intp)


def quantile_bins(x: np.ndarray) -> np.ndarray:
    """Group codes of numbers: quantile bins of about `TRIALS_PER_BIN` each (2 to 10).

    Bins split at quantiles, so a log-scaled parameter bins the same as on a linear axis,
    and equal values always share a bin.
    """
    n_bins = int(np.clip(x.size // TRIALS_PER_BIN, 2, MAX_BINS))
    edges = np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    return np.searchsorted(edges, x, side="right").astype(np.intp)


def omega_squared(groups: np.ndarray, y: np.ndarray) -> float:
    """Omega squared of a one-way ANOVA of `y` over integer `groups` (0 when undefined)."""
    n = y.size
    counts = np.bincount(groups)
    used = counts > 0
    k = int(used.sum())
    centred = y - y.mean()
    ss_total = float(centred @ centred)
    if k < 2 or n <= k or ss_total <= 0.0:
        return 0.0
    sums = np.bincount(groups, weights=centred)
    ss_between = float((sums[used] ** 2 / counts[used]).sum())
    ms_within = max(ss_total - ss_between, 0.0) / (n - k)
    return max(0.0, (ss_between - (k - 1) * ms_within) / (ss_total + ms_within))


def anova_shares(columns: Mapping[str, tuple[np.ndarray, bool]], y: np.ndarray) -> dict[str, float]:
    """Each parameter's share of the explained variance; `columns` maps a parameter to its
    values (numbers, or group codes when the flag says categorical) in the order of `y`."""
    effects = {
        name: omega_squared(values if categorical else quantile_bins(values), y)
        for name, (values, categorical) in columns.items()
    }
    total = sum(effects.values())
    if total <= 0.0:
        return {name: 1.0 / len(effects) for name in effects}
    return {name: effect / total for name, effect in effects.items()}
