"""Train claimed trials of one study as stacks; record each as a lone trial.

Claims whose configs share the task's ``stack_key`` train as one stacked model (see
``worker.stacked``); the rest, and every claim of a task that cannot be stacked, run one by
one through ``run_claimed_trial``. Each member keeps a single trial's behaviour: its own
curve and ``trial.report``/``should_prune`` after every epoch, pruning and shutdown through
its report, and its result recorded (complete, pruned, diverged, failed and retried) by
the same code as a lone trial's, when it leaves the stack. The database work runs beside the
training (see ``_Recorder``), so a pruned member trains one epoch past its pruning point.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import optuna

from search_spaces import StudySpec, resolve_trial, trial_attrs
from worker.checkpoints import Checkpoint, CheckpointStore, SaveCadence
from worker.claims import Claim, can_stack
from worker.reports import Report, report_points
from worker.stacked import StackMember
from worker.tasks.base import check_noise
from worker.trial_checkpoint import checkpoint_key, open_checkpoint, settle_checkpoint
from worker.trial_log import TrialOutput
from worker.trial_run import (
    WorkerInterrupted,
    _limit_torch_threads,
    ended_for_good,
    epoch_seconds,
    record_outcome,
    run_claimed_trial,
)
from worker.trial_runs import TrialRuns, run_seeds
from worker.trial_stop import Deadline

log = logging.getLogger("noisetune.worker")

StackedTrainer = Callable[..., list[Any]]
StackKey = Callable[[dict[str, Any]], tuple[Any, ...]]


def load_stacked_trainer(spec: StudySpec) -> tuple[StackedTrainer, StackKey] | None:
    """The task's stacked trainer and its module's ``stack_key``; None if it has none."""
    if not can_stack(spec):
        return None
    name = str(spec.definition.stacked_trainer)
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr), module.stack_key
    except Exception as exc:  # a module that raises on import too: its trials still run
        log.error("task %s: cannot load stacked trainer %r (%s: %s); training singly",
                  spec.task, name, type(exc).__name__, exc)  # fmt: skip
        return None


def plan_stacks(
    claims: list[Claim], stack_key: StackKey, saved: dict[int, dict[str, Any] | None] | None = None
) -> list[list[Claim]]:
    """Claims grouped by stack key and noise placement, in claim order; a claim whose setup
    is bad runs alone.

    With `saved` (each claim's checkpoint state by trial number, see ``saved_states``),
    retries of stack members are grouped by where they resume (``resume_mark``), apart
    from fresh claims; a claim whose checkpoint a lone run wrote resumes alone.
    """
    saved = saved or {}
    groups: dict[tuple[Any, ...], list[Claim]] = {}
    alone: list[list[Claim]] = []
    for claim in claims:
        if claim.error is not None:
            alone.append([claim])  # failed with its sampler's error, untrained
            continue
        state = saved.get(claim.trial.number)
        if state is not None and resume_mark(state) is None:
            alone.append([claim])  # a lone run's checkpoint: it resumes as it ran
            continue
        try:
            setup = resolve_trial(claim.spec, claim.trial.params)
            check_noise(setup.eta, setup.gamma)
            mark = resume_mark(state) if state is not None else None
            key = (stack_key(setup.config), setup.noise.placement, mark)
        except Exception:
            alone.append([claim])  # the single path reports the error as it always has
            continue
        groups.setdefault(key, []).append(claim)
    return [*groups.values(), *alone]


def resume_mark(state: dict[str, Any]) -> tuple[Any, ...] | None:
    """What members must share to resume in one stack (a stacked trainer saves it as its
    state's ``stack`` entry); None for a lone run's checkpoint."""
    mark = state.get("stack")
    return tuple(sorted(mark.items())) if isinstance(mark, dict) else None


def saved_states(claims: list[Claim], store: CheckpointStore) -> dict[int, dict[str, Any] | None]:
    """Each claim's checkpoint state (None: none, or unreadable: the trial logs why)."""
    states: dict[int, dict[str, Any] | None] = {}
    for claim in claims:
        try:
            saved = store.load(checkpoint_key(claim))
        except Exception:
            saved = None
        trainer_state = saved.get("trainer") if saved is not None else None
        states[claim.trial.number] = trainer_state if isinstance(trainer_state, dict) else None
    return states


def run_claimed_stacks(
    claims: list[Claim],
    device: str,
    stop: threading.Event,
    store: CheckpointStore | None = None,
) -> None:
    """Train the claims (all of one study) group by group; record every one of them.

    With a checkpoint `store`, lone trials and stack members checkpoint there, and retries
    resume: a member's retry in a stack with the retries that saved at its epoch from the
    same data (see plan_stacks), or alone as a stack of one.
    """
    if not claims:
        return
    spec = claims[0].spec
    saved = saved_states(claims, store) if store is not None and can_stack(spec) else {}
    in_stack = {n for n, state in saved.items() if state is not None and resume_mark(state)}
    stacked = load_stacked_trainer(spec) if len(claims) > 1 or in_stack else None
    groups = [[c] for c in claims] if stacked is None else plan_stacks(claims, stacked[1], saved)
    for group in groups:
        if stop.is_set():
            # Not started: queued again at once, as a lone trial stopped at its first epoch is.
            for claim in group:
                _record_safely(claim, WorkerInterrupted(), [], 0.0)
        elif stacked is None or (len(group) == 1 and group[0].trial.number not in in_stack):
            for claim in group:
                run_claimed_trial(claim, device, stop, store)
        else:
            _train_stack(group, device, stop, stacked[0], store)


def _record_safely(
    claim: Claim, outcome: dict[str, Any] | BaseException, curve: list[dict[str, Any]], wall: float
) -> None:
    try:
        record_outcome(claim, outcome, curve, wall)
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning(
            "trial %s was given up as lost meanwhile; its result is dropped", claim.trial.number
        )


class _Recorder:
    """Reports and results of a stack's members, written by one background thread.

    The stack trains on while the database takes an epoch's reports: with many members,
    waiting for them would cost more than the training. The reports waiting when the thread
    gets to them (usually a whole epoch of the stack) go in one transaction
    (``report_points``). Jobs run in order, so a member's points, pruning checks and result
    are written exactly as a lone trial's. What a report decides (pruned, or a database
    error) reaches the member at its next report, which first waits for it: a pruned member
    trains exactly one epoch more than a lone trial would before it leaves the stack; that
    epoch is dropped, and its curve and result are the lone trial's. The database never
    falls more than an epoch behind.
    """

    def __init__(
        self,
        group: list[Claim],
        stop: threading.Event,
        output: TrialOutput,
        store: CheckpointStore | None,
    ) -> None:
        self.group, self.stop, self.output, self.store = group, stop, output, store
        # What a member's checkpoint saves: its curve as reported, while `curves` (the
        # record's) is written in the background.
        self.saving_curves: list[list[dict[str, Any]]] = [[] for _ in group]
        self.checkpoints: list[Checkpoint | None] = [None] * len(group)
        self.stopping = [False] * len(group)
        self.stop_epochs: dict[int, bool] = {}
        self.started = time.monotonic()
        self.epoch_started = [[self.started] for _ in group]
        self.deadline = Deadline(group[0].spec.trial_timeout_s, self.started)
        self.curves: list[list[dict[str, Any]]] = [[] for _ in group]
        self.stopped: list[BaseException | None] = [None] * len(group)
        self.recorded = [False] * len(group)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stack-recorder")
        self.jobs: list[Future[None]] = []
        self.last: list[Future[None] | None] = [None] * len(group)
        self.lock = threading.Lock()
        self.waiting: list[tuple[int, int, dict[str, float], Future[None]]] = []

    def report_for(self, i: int) -> Callable[[int, dict[str, float]], None]:
        def report(epoch: int, metrics: dict[str, float]) -> None:
            previous = self.last[i]
            if previous is not None:
                previous.result()  # the last epoch's report, and what it decided
            stopped = self.stopped[i]
            if stopped is not None:
                raise stopped
            written: Future[None] = Future()
            point = {**metrics, trial_attrs.EPOCH_SECONDS: epoch_seconds(self.epoch_started[i])}
            self.saving_curves[i].append({"epoch": epoch, **point})
            with self.lock:
                if not self.waiting:  # else a job is queued that will take this one too
                    self.jobs.append(self.pool.submit(self._report_waiting))
                self.waiting.append((i, epoch, point, written))
            self.last[i] = written
            self.output.flush()
            self.deadline.check()
            if self._stops_at(epoch):
                # A checkpointing member stops from its save, this epoch's written; one
                # that reports again without saving is stopped here.
                if self.checkpoints[i] is None or self.stopping[i]:
                    raise WorkerInterrupted
                self.stopping[i] = True

        return report

    def _stops_at(self, epoch: int) -> bool:
        """Whether the worker stops the stack at this epoch's end: decided once per epoch,
        at its first report, so that every member saves and stops at the same epoch (and
        their retries resume together) however late in the epoch's reports SIGTERM comes."""
        with self.lock:
            if epoch not in self.stop_epochs:
                self.stop_epochs[epoch] = self.stop.is_set()
            return self.stop_epochs[epoch]

    def _report_waiting(self) -> None:
        with self.lock:
            taken, self.waiting = self.waiting, []
        # A member stopped by an earlier report: later epochs are not its own.
        live = [(i, epoch, metrics) for i, epoch, metrics, _ in taken if self.stopped[i] is None]
        try:
            reports = [Report(self.group[i], e, metrics, self.curves[i]) for i, e, metrics in live]
            outcomes: list[BaseException | None] = report_points(reports)
        except Exception as exc:  # what each lone trial's report would have raised
            outcomes = [exc] * len(live)
        for (i, _, _), outcome in zip(live, outcomes, strict=True):
            if outcome is not None:
                self.stopped[i] = outcome
        for *_, written in taken:
            written.set_result(None)

    def done_for(self, i: int) -> Callable[[dict[str, Any] | BaseException], None]:
        def done(result: dict[str, Any] | BaseException) -> None:
            self.record(i, result)

        return done

    def record(self, i: int, result: dict[str, Any] | BaseException) -> None:
        self.recorded[i] = True
        wall = time.monotonic() - self.started
        self.jobs.append(self.pool.submit(self._record, i, result, wall))

    def _record(self, i: int, result: dict[str, Any] | BaseException, wall: float) -> None:
        # What its own reports decided comes first, as it would have stopped a lone trial.
        stopped = self.stopped[i]
        outcome = stopped if stopped is not None else result
        claim = self.group[i]
        _record_safely(claim, outcome, self.curves[i], wall)
        checkpointed = self.store is not None and self.checkpoints[i] is not None
        if checkpointed and ended_for_good(claim, outcome):
            assert self.store is not None
            settle_checkpoint(claim, self.store, complete=isinstance(outcome, dict))

    def close(self) -> None:
        """Wait for every report and result; a database failure is raised here."""
        self.pool.shutdown(wait=True)
        for job in self.jobs:
            job.result()


def _run_done(
    runs: TrialRuns,
    r: int,
    trial_done: Callable[[dict[str, Any] | BaseException], None],
    result: dict[str, Any] | BaseException,
) -> None:
    """Run ``r`` left the stack; the trial's result is recorded once all its runs have."""
    if runs.done(r, result):
        trial_done(runs.outcome())


def _train_stack(
    group: list[Claim],
    device: str,
    stop: threading.Event,
    train_stacked: StackedTrainer,
    store: CheckpointStore | None,
) -> None:
    numbers = ", ".join(str(c.trial.number) for c in group)
    output = TrialOutput(group, f"(shared by the stack of trials {numbers}: they trained as one)\n")
    recorder = _Recorder(group, stop, output, store)
    cadence = SaveCadence(group[0].spec.checkpoint_every)  # the members save at one epoch
    log.info("training trials %s of %s as one stack of %d", numbers, group[0].spec.name, len(group))
    try:
        members = []
        for i, claim in enumerate(group):
            setup = resolve_trial(claim.spec, claim.trial.params)
            seeds = run_seeds(setup.config, claim.spec.repeats)
            if store is not None and len(seeds) == 1:  # a trial of many runs keeps none
                recorder.checkpoints[i] = open_checkpoint(
                    claim, store, recorder.curves[i], stop, output, WorkerInterrupted,
                    cadence=cadence, saving_curve=recorder.saving_curves[i],
                    stopping=partial(recorder.stopping.__getitem__, i),  # the stack's decision
                )  # fmt: skip
            # Each of the trial's runs is a member of its own (its seed's init, data and
            # noise); TrialRuns combines their epochs and results into the trial's.
            runs = TrialRuns(seeds, recorder.report_for(i))
            for r, seed in enumerate(seeds):
                members.append(
                    StackMember(
                        {**setup.config, "seed": seed},
                        setup.eta,
                        setup.gamma,
                        runs.report_for(r),
                        partial(_run_done, runs, r, recorder.done_for(i)),
                        checkpoint=recorder.checkpoints[i],
                        noise=setup.noise,
                    )  # fmt: skip
                )
        _limit_torch_threads()
        with output.capturing(), recorder.deadline.watched():
            train_stacked(members, device=device)
    except Exception as exc:
        # The stack itself failed: every member still in it fails as a lone trial would.
        output.add_traceback(exc)
        for i in range(len(group)):
            if not recorder.recorded[i]:
                recorder.record(i, exc)
    finally:
        output.flush(force=True)
        recorder.close()
