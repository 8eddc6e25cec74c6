"""The worker: pull trials from the database, train them with gradient noise, report.

A worker needs one thing to join a fleet: the storage URL. It registers itself, beats a
heartbeat from a background thread, and loops: recover lost trials, claim one, train it,
record the result. SIGTERM or Ctrl-C stops it at the end of the current epoch; its trial
is queued again and the process exits 0.

With ``--batch K`` (K > 1) a worker claims up to K trials of one study at once and trains
those that can share a stack as one model (see worker.stack_run). ``--batch auto`` sizes K
from the device: on CUDA from free memory (``AUTO_MEMBER_BYTES`` per member, half the free
memory, at most ``AUTO_MAX_STACK``), on CPU ``AUTO_CPU_STACK``. Each member keeps its own
seed's data split and order (worker.tasks.stack_data).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import optuna
import sqlalchemy as sa

from search_spaces.schema import SchemaOutOfDate
from search_spaces.storage import now, open_storage, resolve_url
from search_spaces.tables import workers_table
from worker.checkpoints import CheckpointStore, default_store_url
from worker.claims import (
    Claim,
    claim_trials,
    reap_lost_trials,
    release_own_trials,
    unfinished_studies,
)
from worker.db_retry import with_db_retry
from worker.process import (
    DEFAULT_GRACE_S,
    install_signal_handlers,
    reuse_freed_memory,
    run_per_gpu,
)
from worker.settings import WorkerSettings, parse_stack_size
from worker.stack_run import run_claimed_stacks

log = logging.getLogger("noisetune.worker")

# On a CPU core the gain from stacking flattens out between 16 and 32 members
# (benchmarks/stacked.py); 16 keeps a stack's memory within a shared L3 cache.
AUTO_CPU_STACK = 16
# Generous for the paper's networks: a 20 x 50 member on MNIST needs about 5 MB (weights,
# gradients, noise buffer, optimizer state, activations); the rest is headroom.
AUTO_MEMBER_BYTES = 64 * 2**20
AUTO_MAX_STACK = 256


def auto_stack_size(device: str) -> int:
    """How many trials to stack on ``device``: from free memory on CUDA, fixed on CPU."""
    if not device.startswith("cuda"):
        return AUTO_CPU_STACK
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return max(1, min(AUTO_MAX_STACK, free // 2 // AUTO_MEMBER_BYTES))


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda:0" if torch.cuda.is_available() else "cpu"


class Worker:
    def __init__(
        self,
        storage_url: str,
        device: str,
        study: str | None,
        heartbeat_interval: float,
        stack_size: int = 1,
        checkpoints: str | None = None,
    ) -> None:
        self.storage = open_storage(storage_url, worker=True)
        self.checkpoints = _checkpoint_store(storage_url, checkpoints)
        self.engine = self.storage.engine
        self.device = device
        self.study = study
        self.heartbeat_interval = heartbeat_interval
        self.stack_size = stack_size
        self.host = socket.gethostname()
        self.id = f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.stop = threading.Event()
        self._beating = threading.Event()
        # Whether the last claim may have committed without us hearing back (see _claim).
        self._claim_in_doubt = False
        # Whether our row names a trial we have finished (cleared when we go idle).
        self._shows_trial = False

    # -- registration and heartbeat ---------------------------------------------------------
    def register(self) -> None:
        t = now()
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(workers_table).values(
                    id=self.id,
                    host=self.host,
                    pid=os.getpid(),
                    device=self.device,
                    started_at=t,
                    heartbeat_at=t,
                    heartbeat_interval=self.heartbeat_interval,
                    state="alive",
                )
            )

    def beat(self, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(workers_table)
                .where(workers_table.c.id == self.id)
                .values(heartbeat_at=now(), **values)
            )

    def _heartbeat_loop(self) -> None:
        while not self._beating.wait(self.heartbeat_interval):
            try:
                # A worker given up as lost during a database outage is alive again: without
                # this, every later trial of it would be reaped at once.
                self.beat(state="alive")
            except Exception as exc:  # keep beating through a database restart
                log.warning("heartbeat failed: %s", exc)

    # -- the loop -----------------------------------------------------------------------------
    def run(self, max_trials: int | None, exit_when_idle: bool) -> int:
        with_db_retry(self.register, stop=self.stop, what="registering")
        beater = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beater.start()
        log.info("worker %s on %s joined %s", self.id, self.device, self.engine.url)
        if self.stack_size > 1:
            log.info("training up to %d trials at once", self.stack_size)
        done = 0
        next_reap = 0.0
        try:
            while not self.stop.is_set() and (max_trials is None or done < max_trials):
                if time.monotonic() >= next_reap:
                    # Lost workers are found by missed heartbeats, so looking more often
                    # than once per interval finds nothing new.
                    with_db_retry(self._reap, stop=self.stop, what="reaping")
                    next_reap = time.monotonic() + self.heartbeat_interval
                want = (
                    self.stack_size
                    if max_trials is None
                    else min(self.stack_size, max_trials - done)
                )
                claims = with_db_retry(
                    functools.partial(self._claim, want), stop=self.stop, what="claiming"
                )
                if not claims:
                    if self._shows_trial:
                        self._clear_trial()
                    if exit_when_idle and not with_db_retry(
                        lambda: unfinished_studies(self.engine, self.study),
                        stop=self.stop,
                        what="polling",
                    ):
                        log.info("nothing left to serve; exiting")
                        break
                    self.stop.wait(min(1.0, self.heartbeat_interval))
                    continue
                # One claim too: a retry of a stack's member resumes as a stack of one.
                run_claimed_stacks(claims, self.device, self.stop, self.checkpoints)
                done += len(claims)
        finally:
            self._beating.set()
            try:
                self.beat(state="exited", study_name=None, trial_id=None, trial_number=None)
            except Exception as exc:
                log.warning("could not mark worker exited: %s", exc)
        return 0

    def _reap(self) -> None:
        reap_lost_trials(self.storage, orphan_grace_s=2 * self.heartbeat_interval)

    def _claim(self, k: int) -> list[Claim]:
        if self._claim_in_doubt:
            # The last claim failed on a database error, perhaps after its commit: trials it
            # started would otherwise stay RUNNING under our heartbeat for ever.
            release_own_trials(self.storage, self.id)
        self._claim_in_doubt = True
        claims = claim_trials(self.storage, self.id, self.host, self.device, self.study, k)
        self._claim_in_doubt = False
        self._shows_trial = self._shows_trial or bool(claims)
        return claims

    def _clear_trial(self) -> None:
        """Our row stops naming a trial: only when idle, as the next claim replaces it."""
        with_db_retry(
            lambda: self.beat(study_name=None, trial_id=None, trial_number=None),
            stop=self.stop,
            what="heartbeat",
        )
        self._shows_trial = False


def _checkpoint_store(storage_url: str, given: str | None) -> CheckpointStore | None:
    """``--checkpoints``, else ``NOISETUNE_CHECKPOINTS``, else a folder beside SQLite."""
    url = given or WorkerSettings().checkpoints or default_store_url(storage_url)
    if url is None:
        log.warning(
            "no checkpoint store (--checkpoints URL or NOISETUNE_CHECKPOINTS): a trial whose "
            "worker is lost or stopped starts over from its first epoch"
        )
        return None
    log.info("checkpoints in %s", url)
    return CheckpointStore(url)


def run_workers(
    storage: str | None = None,
    device: str = "auto",
    gpus: str | None = None,
    study: str | None = None,
    max_trials: int | None = None,
    exit_when_idle: bool = False,
    heartbeat_interval: float = 10.0,
    stack: str = "1",
    grace: float = DEFAULT_GRACE_S,
    checkpoints: str | None = None,
) -> int:
    """Entry point of `noisetune worker`; returns the process exit code."""
    logging.basicConfig(
        level=WorkerSettings().log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if heartbeat_interval <= 0:
        raise SystemExit(f"--heartbeat-interval must be > 0, got {heartbeat_interval}")
    if grace < 0:
        raise SystemExit(f"--grace must be >= 0 seconds, got {grace}")
    k = parse_stack_size(stack)
    url = resolve_url(storage)
    if gpus is not None:
        args = ["--storage", url, "--heartbeat-interval", str(heartbeat_interval)]
        args += ["--batch", stack, "--grace", str(grace)]
        if checkpoints:
            args += ["--checkpoints", checkpoints]
        if study:
            args += ["--study", study]
        if max_trials is not None:
            args += ["--max-trials", str(max_trials)]
        if exit_when_idle:
            args.append("--exit-when-idle")
        return run_per_gpu(gpus, args)
    device = resolve_device(device)
    reuse_freed_memory()
    try:
        worker = Worker(
            url, device, study, heartbeat_interval, k or auto_stack_size(device), checkpoints
        )
    except SchemaOutOfDate as exc:
        raise SystemExit(f"noisetune worker: {exc}") from None
    install_signal_handlers(worker.stop, grace)
    started = time.monotonic()
    code = worker.run(max_trials, exit_when_idle)
    log.info("worker %s done after %.1fs", worker.id, time.monotonic() - started)
    return code
