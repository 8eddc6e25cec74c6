"""Plot data that follows training itself: learning curves and the noise each trial added."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from search_spaces import trial_attrs
from search_spaces.noise_setup import NoiseSetup
from search_spaces.schedules import PolynomialSchedule
from service.plots._data import thin
from service.plots._snapshot import StudySnapshot, TooFew, too_few

MAX_CURVES = 200
BEST_SCHEDULES = 5
SCHEDULE_POINTS = 300


class Curve(NamedTuple):
    number: int
    state: str
    steps: list[int]
    values: list[float | None]


class IntermediateInfo(NamedTuple):
    metric: str
    curves: list[Curve]
    n_total: int  # trials with at least one intermediate value, before thinning


def intermediate_info(snap: StudySnapshot) -> IntermediateInfo | TooFew:
    """Per-epoch values of the study metric; at most `MAX_CURVES` lines.

    Past the limit: the best complete trials, every running trial (what a user watches),
    then an even spread of the rest, so pruned trials still show where they stopped.
    """
    with_values = [t for t in snap.trials if t.intermediate_values]
    if not with_values:
        return too_few("intermediate", 1, 0, "trials with learning curves")
    if len(with_values) > MAX_CURVES:
        running = [t for t in with_values if t.state == TrialState.RUNNING][: MAX_CURVES // 4]
        best = snap.ranked([t for t in snap.complete if t.intermediate_values])
        best = best[: MAX_CURVES // 2]
        chosen = {t.number for t in running + best}
        rest = [t for t in with_values if t.number not in chosen]
        spread = thin(rest, MAX_CURVES - len(chosen), 0)
        with_values = sorted(running + best + spread, key=lambda t: t.number)
    curves = [_curve(t) for t in with_values]
    return IntermediateInfo(
        snap.metric, curves, len([t for t in snap.trials if t.intermediate_values])
    )


def _curve(trial: FrozenTrial) -> Curve:
    steps = sorted(trial.intermediate_values)
    values = [trial.intermediate_values[s] for s in steps]
    return Curve(
        trial.number,
        trial.state.name,
        steps,
        [v if v is not None and math.isfinite(v) else None for v in values],
    )


class Schedule(NamedTuple):
    number: int
    value: float
    eta: float
    gamma: float
    steps: list[int]
    sigma: list[float]  # standard deviation of the noise at each step
    setup: dict[str, Any] | None = (
        None  # the noise setup as the spec names it (NoiseSetup.as_params)
    )


class NoiseScheduleInfo(NamedTuple):
    metric: str
    schedules: list[Schedule]


def sigma(eta: float, gamma: float, steps: np.ndarray) -> np.ndarray:
    """sigma_t of the paper's schedule at each step (GradientNoise's own formula)."""
    return np.asarray(PolynomialSchedule(eta, gamma).std(steps), dtype=float)


def total_steps(trial: FrozenTrial) -> int:
    """Optimizer steps the trial took, as its worker recorded them.

    A finished trial's metrics carry ``steps``; each point of its curve carries the steps
    reached by that epoch. A trainer that reports neither is drawn one step per epoch.
    """
    metrics = trial.user_attrs.get(trial_attrs.METRICS) or {}
    curve = trial.user_attrs.get(trial_attrs.CURVE) or []
    last = curve[-1] if curve and isinstance(curve[-1], dict) else {}
    for steps in (metrics.get("steps"), last.get("steps")):
        if isinstance(steps, int | float) and not isinstance(steps, bool) and steps >= 1:
            return int(steps)
    return max(int(metrics.get("epochs") or len(curve) or 1), 1)


def schedule_steps(
    n_steps: int, points: int = SCHEDULE_POINTS, breaks: tuple[int, ...] = ()
) -> np.ndarray:
    """Steps 0..n_steps-1, dense early where sigma falls fastest, at most about `points`,
    with each step of `breaks` and the one before it (where a schedule jumps to 0)."""
    if n_steps <= points:
        return np.arange(n_steps)
    early = np.arange(min(points // 6, n_steps))
    later = np.geomspace(1, n_steps, points).round().astype(np.int64) - 1
    edges = [s for b in breaks for s in (b - 1, b) if 0 <= s < n_steps]
    return np.unique(np.concatenate([early, later, [n_steps - 1], edges]).astype(np.int64))


def _breaks(setup: NoiseSetup) -> tuple[int, ...]:
    """The steps where the setup's sigma drops to 0: its horizon and its window."""
    return tuple(int(b) for b in (setup.horizon, setup.window) if b is not None)


def noise_schedule_info(
    snap: StudySnapshot, best: int = BEST_SCHEDULES
) -> NoiseScheduleInfo | TooFew:
    done = snap.complete
    if not done:
        return too_few("noise_schedule", 1, 0, "complete trials")
    schedules = []
    for trial in snap.ranked()[:best]:
        # What the trial trained with: a conditional gamma it lacks took its default.
        try:
            setup = NoiseSetup.from_values(snap.config(trial))
        except (TypeError, ValueError):
            continue  # values no schedule can be made of: nothing exact to draw
        steps = schedule_steps(total_steps(trial), breaks=_breaks(setup))
        std = np.asarray(setup.make_schedule().std(steps), dtype=float)
        schedules.append(
            Schedule(
                trial.number,
                float(trial.value),  # type: ignore[arg-type]
                setup.eta,
                setup.gamma,
                steps.tolist(),
                std.tolist(),
                setup.as_params(),
            )
        )
    return NoiseScheduleInfo(snap.metric, schedules)
