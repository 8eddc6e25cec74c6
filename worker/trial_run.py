"""Train one claimed trial and record what happened to it."""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
import traceback
from typing import Any

import optuna
from optuna.trial import TrialState

from search_spaces import StudySpec, resolve_trial, trial_attrs
from worker.checkpoints import Checkpoint, CheckpointStore
from worker.claims import Claim, fail_and_maybe_retry, finish_trial, next_attempt
from worker.db_retry import with_db_retry
from worker.reports import report_point
from worker.settings import WorkerSettings
from worker.study_failures import counts_as_failure
from worker.tasks import load_trainer
from worker.tasks.base import noise_keyword
from worker.trial_checkpoint import open_checkpoint, settle_checkpoint, takes_checkpoint
from worker.trial_log import TrialOutput
from worker.trial_runs import Report, TrialRuns, run_seeds
from worker.trial_stop import Deadline, TrialTimeout

log = logging.getLogger("noisetune.worker")


class WorkerInterrupted(Exception):
    """Raised from the report callback when the worker was asked to stop."""


def _limit_torch_threads() -> None:
    # Tiny networks gain nothing from many threads, and local workers share the cores.
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(WorkerSettings().torch_threads)


def run_claimed_trial(
    claim: Claim, device: str, stop: threading.Event, store: CheckpointStore | None = None
) -> None:
    """Train, then record; a trial already failed by a reaper (we were presumed lost) is left.

    With a checkpoint `store`, a trainer that takes checkpoints saves them there, and a
    retry resumes from its first attempt's (studies with one repeat per trial).
    """
    try:
        _train_and_record(claim, device, stop, store)
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning(
            "trial %s was given up as lost meanwhile; its result is dropped", claim.trial.number
        )


def _record(fn: Any, *args: Any, **kwargs: Any) -> None:
    with_db_retry(lambda: fn(*args, **kwargs), what="recording a result")


def _train_and_record(
    claim: Claim, device: str, stop: threading.Event, store: CheckpointStore | None
) -> None:
    trial, spec = claim.trial, claim.spec
    output = TrialOutput([claim])
    if claim.error is not None:  # its sampler or pruner failed: nothing to train
        output.add_traceback(claim.error)
        output.flush(force=True)
        record_outcome(claim, claim.error, [], 0.0)
        return
    started = time.monotonic()
    deadline = Deadline(spec.trial_timeout_s, started)
    epoch_started = [started]
    curve: list[dict[str, Any]] = []
    outcome: dict[str, Any] | Exception
    checkpoint: Checkpoint | None = None
    stopping = [False]  # the worker is stopping: the trainer saves, then stops
    try:
        with output.capturing(), deadline.watched():
            setup = resolve_trial(spec, trial.params)
            trainer = load_trainer(spec.definition)
            _limit_torch_threads()
            extra = noise_keyword(trainer, spec.task, setup.noise)
            if store is not None and spec.repeats == 1 and takes_checkpoint(trainer):
                checkpoint = open_checkpoint(claim, store, curve, stop, output, WorkerInterrupted)
                extra["checkpoint"] = checkpoint

            def report_trial(epoch: int, point: dict[str, Any]) -> None:
                point[trial_attrs.EPOCH_SECONDS] = epoch_seconds(epoch_started)
                report_point(claim, epoch, point, curve)

            # The runs train one after another; the trial reports an epoch once all have
            # (see TrialRuns), so pruning acts during the last run.
            seeds = run_seeds(setup.config, spec.repeats)
            runs = TrialRuns(seeds, report_trial)
            for r, seed in enumerate(seeds):
                run_report = runs.report_for(r)

                def report(
                    epoch: int, metrics: dict[str, Any], _run_report: Report = run_report
                ) -> None:
                    _run_report(epoch, metrics)
                    output.flush()
                    deadline.check()
                    if stop.is_set():
                        # A checkpointing trainer stops from its save, this epoch's written;
                        # one that reports again without saving is stopped here.
                        if checkpoint is None or stopping[0]:
                            raise WorkerInterrupted
                        stopping[0] = True

                result = trainer(
                    {**setup.config, "seed": seed}, eta=setup.eta, gamma=setup.gamma,
                    device=device, report=report, **extra,
                )  # fmt: skip
                runs.done(r, result)
            combined = runs.outcome()
            if isinstance(combined, BaseException):
                raise combined
            outcome = combined
    except Exception as exc:
        outcome = exc
        if isinstance(exc, TrialTimeout):
            output.write(f"\nstopped: {timeout_reason(spec)}\n")
        elif not isinstance(exc, WorkerInterrupted | optuna.TrialPruned):
            output.add_traceback(exc)
    output.flush(force=True)
    record_outcome(claim, outcome, curve, time.monotonic() - started)
    if checkpoint is not None and store is not None and ended_for_good(claim, outcome):
        settle_checkpoint(claim, store, complete=isinstance(outcome, dict))


def ended_for_good(claim: Claim, outcome: dict[str, Any] | BaseException) -> bool:
    """Whether no retry of the trial will run (so its checkpoint is of no more use)."""
    if isinstance(outcome, WorkerInterrupted):
        return False
    if isinstance(outcome, dict | optuna.TrialPruned | TrialTimeout):
        return True
    return next_attempt(claim.attempt, claim.spec.max_retries, retry_counts=True) is None


def epoch_seconds(last: list[float]) -> float:
    """Seconds from the end of the last epoch (or the trial's start) to this report."""
    now = time.monotonic()
    seconds, last[0] = now - last[0], now
    return round(seconds, 3)


MAX_REASON_CHARS = 1000


def timeout_reason(spec: StudySpec) -> str:
    return f"timeout after {spec.trial_timeout_s:g} s"


def failure_reason(claim: Claim, exc: BaseException) -> str:
    """One line naming the exception's type and message (a trial's ``fail_reason``)."""
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())
    if exc is claim.error:
        reason = f"sampler or pruner failed: {reason}"
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    return reason


def record_outcome(
    claim: Claim,
    outcome: dict[str, Any] | BaseException,
    curve: list[dict[str, Any]],
    wall: float,
) -> None:
    """Record how a trial ended: its final metrics, or the exception that stopped it."""
    trial, spec = claim.trial, claim.spec
    metric = str(spec.metric)
    if isinstance(outcome, optuna.TrialPruned):
        _record(
            finish_trial,
            claim,
            TrialState.PRUNED,
            None,
            metrics=curve[-1] if curve else None,
            curve=curve,
            wall_time_s=wall,
            streak="result",
        )
        log.info("trial %s of %s pruned", trial.number, spec.name)
        return
    if isinstance(outcome, TrialTimeout):
        # Like divergence, the trial's own result: it counts, and a retry would time out too.
        last = curve[-1] if curve else None
        reason = timeout_reason(spec)
        _record(finish_trial, claim, TrialState.FAIL, None, metrics=last, curve=curve,
                wall_time_s=wall, fail_reason=reason, counted=True)  # fmt: skip
        log.info("trial %s of %s: %s", trial.number, spec.name, reason)
        return
    if isinstance(outcome, WorkerInterrupted):
        _record(fail_and_maybe_retry, claim, "interrupted: worker stopped", retry_counts=False,
                curve=curve, wall_time_s=wall)  # fmt: skip
        log.info("trial %s of %s interrupted and queued again", trial.number, spec.name)
        return
    if isinstance(outcome, BaseException):
        reason = failure_reason(claim, outcome)
        log.error(
            "trial %s of %s failed: %s\n%s",
            trial.number,
            spec.name,
            reason,
            "".join(traceback.format_exception(outcome)),
        )
        streak = "exception" if counts_as_failure(outcome) else None
        _record(fail_and_maybe_retry, claim, reason, retry_counts=True, streak=streak,
                curve=curve, wall_time_s=wall)  # fmt: skip
        return
    per_run = (trial_attrs.RUNS, trial_attrs.RUN_CURVES)
    final = {k: v for k, v in outcome.items() if k not in per_run}
    runs = {k: outcome[k] for k in per_run if k in outcome}
    value = final.get(metric)
    if final.get("diverged") or not isinstance(value, int | float) or not math.isfinite(value):
        # Divergence is the schedule's result, not an accident: it counts, and is not retried.
        _record(
            finish_trial,
            claim,
            TrialState.FAIL,
            None,
            metrics=final,
            curve=curve,
            wall_time_s=wall,
            fail_reason="diverged",
            counted=True,
            streak="result",
            runs=runs,
        )
        log.info("trial %s of %s diverged", trial.number, spec.name)
        return
    _record(
        finish_trial,
        claim,
        TrialState.COMPLETE,
        float(value),
        metrics=final,
        curve=curve,
        wall_time_s=wall,
        streak="result",
        runs=runs,
    )
    log.info("trial %s of %s: %s = %.4g (%.1fs)", trial.number, spec.name, metric, value, wall)
