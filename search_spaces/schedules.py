"""Noise-variance schedules for annealed gradient noise (Neelakantan et al., 2015).

Part of the shared vocabulary, and pure Python on purpose: the dashboard draws schedules
with it and must never import torch, so this module imports neither torch nor numpy
(numpy arrays are accepted when the caller already has numpy loaded).

A schedule maps an optimizer step ``t`` (0 for the first step) to the variance
``sigma_t^2`` of the Gaussian noise added to every gradient entry at that step.
"""

from __future__ import annotations

import math
import numbers
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, overload

__all__ = [
    "DEFAULT_GAMMA",
    "SCHEDULE_KINDS",
    "ConstantSchedule",
    "NoiseSchedule",
    "PolynomialSchedule",
    "make_schedule",
]

#: The paper's decay exponent.
DEFAULT_GAMMA = 0.55


def _check_hyperparameter(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {name}={value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {name}={value!r}")
    return value


def _check_step(t: Any) -> int:
    if isinstance(t, bool) or not isinstance(t, numbers.Integral):
        raise TypeError(f"step t must be an int, got {t!r}")
    if t < 0:
        raise ValueError(f"step t must be >= 0, got t={t!r}")
    return int(t)


def _numpy_array(ts: Any) -> Any:
    """Return numpy's ndarray type if ``ts`` is one, without importing numpy ourselves."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(ts, np.ndarray):
        if not np.issubdtype(ts.dtype, np.integer):
            raise TypeError(f"steps must be integers, got an array of dtype {ts.dtype}")
        if ts.size and ts.min() < 0:
            raise ValueError(f"steps must be >= 0, got a minimum of {ts.min()}")
        return np
    return None


class NoiseSchedule(ABC):
    """Variance of the gradient noise as a function of the optimizer step.

    Contract:

    - ``variance_at(t)`` returns ``sigma_t^2 >= 0`` (a variance, not a standard
      deviation) for an int step ``t >= 0``; ``t = 0`` is the first optimizer step.
    - ``variance(t)`` / ``std(t)`` accept an int (returning a float), a numpy
      integer array (returning a float64 array of the same shape) or any other
      sequence of ints (returning a list of floats). ``std`` is ``sqrt(variance)``.
    - Schedules are immutable and compare by value; ``kind`` is the name that
      :func:`make_schedule` accepts for the class.
    """

    kind: ClassVar[str]

    @abstractmethod
    def variance_at(self, t: int) -> float:
        """sigma_t^2 for one validated step ``t >= 0``."""

    @abstractmethod
    def _variance_array(self, np: Any, ts: Any) -> Any:
        """Vectorised ``variance_at`` over a validated numpy integer array."""

    @overload
    def variance(self, t: int) -> float: ...
    @overload
    def variance(self, t: Sequence[int]) -> list[float]: ...
    @overload
    def variance(self, t: Any) -> Any: ...
    def variance(self, t: Any) -> Any:
        """sigma_t^2 at step ``t`` (an int, a sequence of ints or a numpy int array)."""
        if isinstance(t, numbers.Integral) and not isinstance(t, bool):
            return self.variance_at(_check_step(t))
        np = _numpy_array(t)
        if np is not None:
            return self._variance_array(np, t)
        return [self.variance_at(_check_step(step)) for step in t]

    @overload
    def std(self, t: int) -> float: ...
    @overload
    def std(self, t: Sequence[int]) -> list[float]: ...
    @overload
    def std(self, t: Any) -> Any: ...
    def std(self, t: Any) -> Any:
        """sigma_t = sqrt(sigma_t^2), the standard deviation of the noise at step ``t``."""
        if isinstance(t, numbers.Integral) and not isinstance(t, bool):
            return math.sqrt(self.variance_at(_check_step(t)))
        np = _numpy_array(t)
        if np is not None:
            return np.sqrt(self._variance_array(np, t))
        return [math.sqrt(self.variance_at(_check_step(step))) for step in t]


@dataclass(frozen=True)
class PolynomialSchedule(NoiseSchedule):
    """The paper's annealing: ``sigma_t^2 = eta / (1 + t)^gamma``.

    ``eta`` is the variance at the first step (t = 0); the paper uses gamma = 0.55
    and eta in {0.01, 0.3, 1.0}.
    """

    eta: float
    gamma: float = DEFAULT_GAMMA
    kind: ClassVar[str] = "polynomial"

    def __post_init__(self) -> None:
        object.__setattr__(self, "eta", _check_hyperparameter("eta", self.eta))
        object.__setattr__(self, "gamma", _check_hyperparameter("gamma", self.gamma))

    def variance_at(self, t: int) -> float:
        return self.eta / (1.0 + t) ** self.gamma

    def _variance_array(self, np: Any, ts: Any) -> Any:
        return self.eta / np.power(1.0 + ts.astype(np.float64), self.gamma)


@dataclass(frozen=True)
class ConstantSchedule(NoiseSchedule):
    """No annealing: ``sigma_t^2 = eta`` at every step (an ablation baseline)."""

    eta: float
    kind: ClassVar[str] = "constant"

    def __post_init__(self) -> None:
        object.__setattr__(self, "eta", _check_hyperparameter("eta", self.eta))

    def variance_at(self, t: int) -> float:
        return self.eta

    def _variance_array(self, np: Any, ts: Any) -> Any:
        return np.full(ts.shape, self.eta, dtype=np.float64)


SCHEDULE_KINDS: tuple[str, ...] = (PolynomialSchedule.kind, ConstantSchedule.kind)


def make_schedule(kind: str, eta: float, gamma: float = DEFAULT_GAMMA) -> NoiseSchedule:
    """Build a schedule by name; ``gamma`` is ignored by kinds that do not decay."""
    if kind == PolynomialSchedule.kind:
        return PolynomialSchedule(eta, gamma)
    if kind == ConstantSchedule.kind:
        return ConstantSchedule(eta)
    raise ValueError(f"unknown schedule kind {kind!r}; allowed kinds: {', '.join(SCHEDULE_KINDS)}")
