"""A trial's runs, one per seed: their epochs combined into the trial's, their results into its.

A study with ``repeats: N`` trains every trial on the same N seeds (``run_seeds``), so seed i
of one configuration is compared with seed i of every other (common random numbers). The
runs may train one after another or side by side in a stack; either way the trial reports
an epoch once every run still going has reported it, with the mean over the runs that did
not diverge (so pruning judges the mean curve), and ends once every run has ended.

A run that diverges ends alone: it is kept in the trial's ``runs`` and the others go on.
The trial's value is the mean over the runs that did not diverge; it is ``diverged`` only
when every run diverged. Whatever the trial's report raises (pruning, shutdown, a timeout)
stops the run that reported, and every other run at its next report: the trial then ends
with that exception, as a lone run's would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from search_spaces import trial_attrs

__all__ = ["TrialRuns", "aggregate", "run_seeds"]

Report = Callable[[int, dict[str, Any]], None]
# Curve keys a run keeps of each epoch (the per-layer ratios stay in the trial's curve).
_RUN_CURVE_SKIPS = ("noise_grad_ratio_layers",)


def run_seeds(config: dict[str, Any], repeats: int) -> list[int]:
    """The seeds of a trial's runs: the config's seed, then the next ``repeats - 1``."""
    base = int(config.get("seed", 0))
    return [base + i for i in range(repeats)]


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def _std(values: list[float]) -> float:
    m = _mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / len(values))


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over runs of every numeric value, with its spread as ``<key>_std``, and
    ``repeats``; one run is returned as it is."""
    if len(runs) == 1:
        return dict(runs[0])
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, bool):
            out[key] = any(bool(r.get(key)) for r in runs)
        elif isinstance(value, int | float):
            values = [float(r[key]) for r in runs if isinstance(r.get(key), int | float)]
            out[key] = _mean(values)
            out[f"{key}_std"] = _std(values)
        else:
            out[key] = value
    out["repeats"] = len(runs)
    return out


def _diverged_point(point: dict[str, Any]) -> bool:
    """A run's epoch with a non-finite value is the epoch it diverged (its losses are NaN)."""
    return any(isinstance(v, float) and not math.isfinite(v) for v in point.values())


@dataclass
class _Run:
    seed: int
    points: dict[int, dict[str, Any]] = field(default_factory=dict)
    result: dict[str, Any] | BaseException | None = None

    @property
    def ended(self) -> bool:
        return self.result is not None

    @property
    def last_epoch(self) -> int:
        return max(self.points, default=0)


class TrialRuns:
    """Combine the runs of one trial; ``report`` is the trial's own (it may raise)."""

    def __init__(self, seeds: list[int], report: Report | None) -> None:
        if not seeds:
            raise ValueError("a trial has at least one run")
        self.runs = [_Run(seed) for seed in seeds]
        self.report = report
        self.stopped: BaseException | None = None
        self.next_epoch = 1

    def __len__(self) -> int:
        return len(self.runs)

    def report_for(self, r: int) -> Report:
        """The report of run ``r``; raises what stopped the trial."""

        def report(epoch: int, metrics: dict[str, Any]) -> None:
            if self.stopped is not None:
                raise self.stopped
            self.runs[r].points[epoch] = dict(metrics)
            self._report_ready()

        return report

    def done(self, r: int, result: dict[str, Any] | BaseException) -> bool:
        """Run ``r`` ended with ``result``; whether every run of the trial has now ended."""
        self.runs[r].result = result
        if not isinstance(result, BaseException):
            try:
                self._report_ready()
            except Exception as exc:  # the trial's report stopped it: the trial's outcome
                self.stopped = self.stopped or exc
        return self.finished

    @property
    def finished(self) -> bool:
        return all(run.ended for run in self.runs)

    def _ready(self, epoch: int) -> list[dict[str, Any]] | None:
        """The points of `epoch` once every run still going has reported it, else None."""
        points = []
        for run in self.runs:
            if epoch in run.points:
                points.append(run.points[epoch])
            elif not (run.ended and run.last_epoch < epoch):
                return None
        return points or None

    def _report_ready(self) -> None:
        # A run resumed from a checkpoint reports from its epoch on, not from 1.
        lowest = min((min(run.points) for run in self.runs if run.points), default=1)
        self.next_epoch = max(self.next_epoch, lowest)
        while (points := self._ready(self.next_epoch)) is not None:
            epoch = self.next_epoch
            self.next_epoch += 1
            kept = [p for p in points if not _diverged_point(p)] or points
            if self.report is not None:
                try:
                    self.report(epoch, aggregate(kept))
                except BaseException as exc:
                    self.stopped = exc
                    raise

    def outcome(self) -> dict[str, Any] | BaseException:
        """The trial's result once every run ended: the first exception that stopped a run,
        else the mean over the runs that did not diverge, with every run under ``runs``
        (their curves under ``run_curves``)."""
        if self.stopped is not None:
            return self.stopped
        for run in self.runs:
            if isinstance(run.result, BaseException):
                return run.result
        results = [run.result for run in self.runs]
        assert all(isinstance(r, dict) for r in results), "outcome() before every run ended"
        finals: list[dict[str, Any]] = [r for r in results if isinstance(r, dict)]
        kept = [r for r in finals if not r.get("diverged")] or finals
        out = aggregate(kept)
        if len(self.runs) > 1:
            out["diverged_runs"] = sum(bool(r.get("diverged")) for r in finals)
            out["diverged"] = len(kept) == len(finals) and bool(kept[0].get("diverged"))
        out[trial_attrs.RUNS] = [
            {"seed": run.seed, "diverged": bool(final.get("diverged")), "metrics": final}
            for run, final in zip(self.runs, finals, strict=True)
        ]
        if len(self.runs) > 1:  # a lone run's curve is the trial's own: not stored twice
            out[trial_attrs.RUN_CURVES] = [_run_curve(run) for run in self.runs]
        return out


def _run_curve(run: _Run) -> list[dict[str, Any]]:
    return [
        {"epoch": e, **{k: v for k, v in p.items() if k not in _RUN_CURVE_SKIPS}}
        for e, p in sorted(run.points.items())
    ]
