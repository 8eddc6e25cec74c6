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
    "FAMILY_PARAMETERS",
    "SCHEDULE_KINDS",
    "ConstantSchedule",
    "CosineSchedule",
    "ExponentialSchedule",
    "LinearSchedule",
    "NoiseSchedule",
    "PolynomialSchedule",
    "WindowedSchedule",
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


def _check_positive(name: str, value: float) -> float:
    value = _check_hyperparameter(name, value)
    if value == 0:
        raise ValueError(f"{name} must be > 0, got {name}={value!r}")
    return value


def _check_steps(name: str, value: Any) -> int:
    whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise TypeError(f"{name} must be a whole number of steps, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1 step, got {name}={value!r}")
    return int(value)


@dataclass(frozen=True)
class ExponentialSchedule(NoiseSchedule):
    """Exponential decay: ``sigma_t^2 = eta * 2^(-t / half_life)``, halving every
    ``half_life`` steps."""

    eta: float
    half_life: float
    kind: ClassVar[str] = "exponential"

    def __post_init__(self) -> None:
        object.__setattr__(self, "eta", _check_hyperparameter("eta", self.eta))
        object.__setattr__(self, "half_life", _check_positive("half_life", self.half_life))

    def variance_at(self, t: int) -> float:
        return self.eta * 2.0 ** (-t / self.half_life)

    def _variance_array(self, np: Any, ts: Any) -> Any:
        return self.eta * np.exp2(-ts.astype(np.float64) / self.half_life)


@dataclass(frozen=True)
class CosineSchedule(NoiseSchedule):
    """Cosine decay to 0 at ``horizon``: ``sigma_t^2 = eta * (1 + cos(pi * t / horizon)) / 2``
    for ``t < horizon``, 0 from step ``horizon`` on."""

    eta: float
    horizon: int
    kind: ClassVar[str] = "cosine"

    def __post_init__(self) -> None:
        object.__setattr__(self, "eta", _check_hyperparameter("eta", self.eta))
        object.__setattr__(self, "horizon", _check_steps("horizon", self.horizon))

    def variance_at(self, t: int) -> float:
        if t >= self.horizon:
            return 0.0
        return self.eta * (1.0 + math.cos(math.pi * t / self.horizon)) / 2.0

    def _variance_array(self, np: Any, ts: Any) -> Any:
        t = ts.astype(np.float64)
        inside = self.eta * (1.0 + np.cos(np.pi * t / self.horizon)) / 2.0
        return np.where(ts < self.horizon, inside, 0.0)


@dataclass(frozen=True)
class LinearSchedule(NoiseSchedule):
    """Linear decay to 0 at ``horizon``: ``sigma_t^2 = eta * (1 - t / horizon)`` for
    ``t < horizon``, 0 from step ``horizon`` on."""

    eta: float
    horizon: int
    kind: ClassVar[str] = "linear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "eta", _check_hyperparameter("eta", self.eta))
        object.__setattr__(self, "horizon", _check_steps("horizon", self.horizon))

    def variance_at(self, t: int) -> float:
        return self.eta * (1.0 - t / self.horizon) if t < self.horizon else 0.0

    def _variance_array(self, np: Any, ts: Any) -> Any:
        t = ts.astype(np.float64)
        return np.where(ts < self.horizon, self.eta * (1.0 - t / self.horizon), 0.0)


@dataclass(frozen=True)
class WindowedSchedule(NoiseSchedule):
    """Any schedule limited to the first ``window`` steps: ``base`` for ``t < window``,
    0 from step ``window`` on."""

    base: NoiseSchedule
    window: int

    def __post_init__(self) -> None:
        if not isinstance(self.base, NoiseSchedule):
            raise TypeError(f"base must be a NoiseSchedule, got {self.base!r}")
        object.__setattr__(self, "window", _check_steps("noise_window", self.window))

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.base.kind

    def variance_at(self, t: int) -> float:
        return self.base.variance_at(t) if t < self.window else 0.0

    def _variance_array(self, np: Any, ts: Any) -> Any:
        return np.where(ts < self.window, self.base._variance_array(np, ts), 0.0)


SCHEDULE_KINDS: tuple[str, ...] = (
    PolynomialSchedule.kind,
    ConstantSchedule.kind,
    ExponentialSchedule.kind,
    CosineSchedule.kind,
    LinearSchedule.kind,
)
# The parameter each family needs beside eta.
FAMILY_PARAMETERS: dict[str, tuple[str, ...]] = {
    "polynomial": ("gamma",),
    "constant": (),
    "exponential": ("half_life",),
    "cosine": ("horizon",),
    "linear": ("horizon",),
}


def make_schedule(
    kind: str,
    eta: float,
    gamma: float = DEFAULT_GAMMA,
    *,
    half_life: float | None = None,
    horizon: int | None = None,
    window: int | None = None,
) -> NoiseSchedule:
    """Build a schedule by name, limited to the first `window` steps when given; a family
    ignores the parameters of the others, and needs its own (``FAMILY_PARAMETERS``)."""
    schedule: NoiseSchedule
    if kind == PolynomialSchedule.kind:
        schedule = PolynomialSchedule(eta, gamma)
    elif kind == ConstantSchedule.kind:
        schedule = ConstantSchedule(eta)
    elif kind == ExponentialSchedule.kind:
        if half_life is None:
            raise ValueError("the exponential schedule needs half_life (steps)")
        schedule = ExponentialSchedule(eta, half_life)
    elif kind in (CosineSchedule.kind, LinearSchedule.kind):
        if horizon is None:
            raise ValueError(f"the {kind} schedule needs horizon (steps)")
        family = CosineSchedule if kind == CosineSchedule.kind else LinearSchedule
        schedule = family(eta, horizon)
    else:
        raise ValueError(
            f"unknown schedule kind {kind!r}; allowed kinds: {', '.join(SCHEDULE_KINDS)}"
        )
    return schedule if window is None else WindowedSchedule(schedule, window)
