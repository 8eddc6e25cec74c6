"""The worker process around the pulling loop: its signals, one child per GPU, its memory.

SIGTERM, Ctrl-C or SIGUSR2 stops the worker at the end of the current epoch, within a grace
(see ``install_signal_handlers``); ``--gpus`` runs one worker process per GPU and passes
signals on; glibc keeps freed memory for the next step's tensors.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import threading
from typing import Any

from worker.trial_run import WorkerInterrupted
from worker.trial_stop import stop_trainer

log = logging.getLogger("noisetune.worker")


DEFAULT_GRACE_S = 30.0
# SIGUSR2 is Slurm's pre-timeout signal as submitit asks for it (`--signal=USR2@90`): a
# worker near its job's time limit stops as it would on SIGTERM (worker.slurm_launch).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
# The stop signals this process has received, in order: a Slurm task whose worker stopped
# on the pre-timeout signal may requeue itself (worker.slurm_launch.WorkerTask).
received_stop_signals: list[signal.Signals] = []


def install_signal_handlers(stop: threading.Event, grace_s: float) -> None:
    """Any of STOP_SIGNALS: stop at the end of the current epoch, or after `grace_s` at most.

    A trainer whose epoch does not end within the grace is stopped from outside
    (worker.trial_stop), its trial queued again as any interrupted trial is.
    """

    def stop_late() -> None:
        if stop_trainer(WorkerInterrupted):
            log.warning("the epoch did not end within %gs: trial interrupted", grace_s)

    def handler(signum: int, _frame: Any) -> None:
        received_stop_signals.append(signal.Signals(signum))
        if stop.is_set():
            return
        log.warning(
            "%s: stopping at the end of the current epoch (at most %gs)",
            signal.Signals(signum).name,
            grace_s,
        )
        stop.set()
        timer = threading.Timer(grace_s, stop_late)
        timer.daemon = True
        timer.start()

    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


def _gpu_ids(gpus: str) -> list[str]:
    if gpus == "all":
        import torch

        count = torch.cuda.device_count()
        if count == 0:
            raise SystemExit("--gpus all: no CUDA device is visible")
        return [str(i) for i in range(count)]
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    if not ids or not all(g.isdigit() for g in ids):
        raise SystemExit(f"--gpus must be 'all' or a list like 0,1; got {gpus!r}")
    return ids


def run_per_gpu(gpus: str, args: list[str]) -> int:
    """One worker process per GPU; stop signals are passed on and the parent waits for all."""
    procs = [
        subprocess.Popen([sys.executable, "-m", "worker", "--device", f"cuda:{g}", *args])
        for g in _gpu_ids(gpus)
    ]

    def forward(signum: int, _frame: Any) -> None:
        for p in procs:
            p.send_signal(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, forward)
    return max(p.wait() for p in procs)


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def reuse_freed_memory() -> None:
    """Keep freed memory in the process for the next step's tensors (glibc only).

    glibc hands blocks over 128 KB back to the OS when freed, and maps them anew at the next
    allocation, where every page faults on first touch. A stack's activations are such
    blocks (16 members x 128 rows x 50 floats: 400 KB a layer), allocated and freed at
    every step (benchmarks/stacked.py says what the faults cost). Blocks up to 32 MB
    (glibc's largest setting) now come from the heap, which keeps up to 256 MB free.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return  # not glibc (musl, macOS): its allocator is left as it is
    mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
    mallopt(_M_TRIM_THRESHOLD, 256 * 2**20)
