"""A trial's gradient noise as a whole: schedule family, window, placement and scale.

The study spec's noise parameters (each fixed or searched like any other) are ``eta`` and
``gamma`` (the paper's two numbers) and, since schedules became searchable, ``schedule``
(a family of ``search_spaces.schedules``), that family's own parameter (``half_life`` for
``exponential``, ``horizon`` for ``cosine`` and ``linear``), ``noise_window`` (noise only
during the first N optimizer steps), ``placement`` (``after_clip``, the paper's, or
``before_clip``) and ``scale`` (``absolute``, the paper's, or ``relative`` to each
tensor's gradient RMS). Their defaults (``NOISE_DEFAULTS``) are the paper's, so a spec
that names none of them means what it always meant.

A trainer that takes the keyword ``noise`` receives a ``NoiseSetup``; ``eta`` and
``gamma`` are passed as before, so trainers written for the paper's schedule keep working
(and are refused only a study whose noise they could not apply: ``is_paper``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from search_spaces.schedules import (
    DEFAULT_GAMMA,
    FAMILY_PARAMETERS,
    SCHEDULE_KINDS,
    NoiseSchedule,
    make_schedule,
)

__all__ = ["NOISE_DEFAULTS", "PLACEMENTS", "SCALES", "NoiseSetup"]

PLACEMENTS = ("after_clip", "before_clip")
SCALES = ("absolute", "relative")

# Every noise parameter and its default, in the order the docs list them.
NOISE_DEFAULTS: dict[str, Any] = {
    "eta": 0.0,
    "gamma": DEFAULT_GAMMA,
    "schedule": "polynomial",
    "half_life": None,
    "horizon": None,
    "noise_window": None,
    "placement": "after_clip",
    "scale": "absolute",
}


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class NoiseSetup:
    """How one trial's gradient noise is made; ``make_schedule()`` gives sigma_t^2 of t."""

    eta: float
    gamma: float = DEFAULT_GAMMA
    schedule: str = "polynomial"
    half_life: float | None = None
    horizon: int | None = None
    window: int | None = None
    placement: str = "after_clip"
    scale: str = "absolute"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULE_KINDS:
            raise ValueError(
                f"schedule must be one of {', '.join(SCHEDULE_KINDS)}, got {self.schedule!r}"
            )
        if self.placement not in PLACEMENTS:
            raise ValueError(
                f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}"
            )
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        object.__setattr__(self, "eta", _number("eta", self.eta))
        object.__setattr__(self, "gamma", _number("gamma", self.gamma))
        for name in ("horizon", "window"):
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():
                object.__setattr__(self, name, int(value))
        self.make_schedule()  # validates the family's own parameters

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> NoiseSetup:
        """From a trial's resolved values (``NOISE_DEFAULTS``' names; others are ignored)."""
        merged = {**NOISE_DEFAULTS, **{k: v for k, v in values.items() if k in NOISE_DEFAULTS}}
        window = merged.pop("noise_window")
        return cls(**merged, window=window)

    def make_schedule(self) -> NoiseSchedule:
        """The schedule this setup draws with (limited to its window)."""
        return make_schedule(
            self.schedule,
            self.eta,
            self.gamma,
            half_life=self.half_life,
            horizon=self.horizon,
            window=self.window,
        )

    @property
    def is_paper(self) -> bool:
        """The paper's noise: polynomial, every step, after clipping, absolute scale."""
        return (
            self.schedule == "polynomial"
            and self.window is None
            and self.placement == "after_clip"
            and self.scale == "absolute"
        )

    def as_params(self) -> dict[str, Any]:
        """The setup under the spec's parameter names, with only what applies: the family's
        own parameter, and the window, placement and scale when they are not the default."""
        out: dict[str, Any] = {"schedule": self.schedule, "eta": self.eta}
        values = asdict(self)
        for name in FAMILY_PARAMETERS[self.schedule]:
            out[name] = values[name]
        if self.window is not None:
            out["noise_window"] = self.window
        for name in ("placement", "scale"):
            if values[name] != NOISE_DEFAULTS[name]:
                out[name] = values[name]
        return out
