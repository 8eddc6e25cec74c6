"""Workers as a Slurm job array, submitted through submitit: what each task runs, and how.

`noisetune launch slurm` (worker.cli_launch) builds a `SlurmLaunch` and submits it here.
Each array task runs `noisetune worker --exit-when-idle` inside submitit's job process
(`WorkerTask`). Slurm sends that process USR2 `signal_delay_s` before the time limit
(submitit's `--signal=USR2@N`); the worker stops on it as on SIGTERM, and its trial is
queued again; with `requeues` left, the task then requeues itself. Nothing here imports
torch: the launch runs on a login node.
"""

from __future__ import annotations

import logging
import math
import re
import shlex
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    import submitit

# submitit's default pre-timeout signal; the worker stops on it (worker.process.STOP_SIGNALS).
PRE_TIMEOUT_SIGNAL = "USR2"
DEFAULT_SIGNAL_DELAY_S = 90  # submitit's default
# What a worker needs after its grace to record the trial and leave (the README's Kubernetes
# advice is the same: the grace plus 15 s).
RECORD_MARGIN_S = 15
DEFAULT_LOGS = Path("noisetune-slurm")


def parse_slurm_time(text: str) -> int:
    """Slurm's ``--time`` in seconds: MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    match = re.fullmatch(r"(?:([0-9]+)-)?([0-9]+)(?::([0-9]+))?(?::([0-9]+))?", text.strip())
    if match is None:
        raise ValueError(
            "--time takes Slurm's formats: MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM or "
            f"D-HH:MM:SS (e.g. 4:00:00 or 1-00:00:00), got {text!r}"
        )
    days, *parts = match.groups()
    given = [int(p) for p in parts if p is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        h, m, s = (given + [0, 0])[:3]
        seconds = int(days) * 86400 + h * 3600 + m * 60 + s
    elif len(given) == 3:
        seconds = given[0] * 3600 + given[1] * 60 + given[2]
    elif len(given) == 2:
        seconds = given[0] * 60 + given[1]
    else:
        seconds = given[0] * 60
    if seconds <= 0:
        raise ValueError(f"--time must be longer than 0, got {text!r}")
    return seconds


def check_timing(time_s: int, signal_delay_s: int, grace_s: float) -> None:
    """The pre-timeout signal must leave the worker its grace and the time to record."""
    if signal_delay_s < grace_s + RECORD_MARGIN_S:
        raise ValueError(
            f"--signal-delay {signal_delay_s}s must be at least --grace {grace_s:g}s plus "
            f"{RECORD_MARGIN_S}s to record the trial; a worker still busy at the time limit is "
            "killed, and its trial waits to be found lost instead of being queued at once"
        )
    if time_s <= signal_delay_s:
        raise ValueError(
            f"--time ({time_s}s) must be longer than --signal-delay ({signal_delay_s}s), "
            "how long before the time limit the workers are told to stop"
        )


def worker_argv(
    storage: str,
    study: str | None,
    gpus_per_worker: int,
    batch: str,
    grace: float,
    checkpoints: str | None,
) -> list[str]:
    """`noisetune worker`'s arguments for every array task (the same for all)."""
    argv = ["--exit-when-idle", "--storage", _absolute_sqlite(storage)]
    if study:
        argv += ["--study", study]
    if gpus_per_worker == 0:
        argv += ["--device", "cpu"]
    elif gpus_per_worker == 1:
        argv += ["--device", "cuda:0"]  # Slurm shows a task its own GPUs only
    else:
        argv += ["--gpus", "all"]  # one worker process per GPU of the task
    argv += ["--batch", batch, "--grace", f"{grace:g}"]
    if checkpoints:
        argv += ["--checkpoints", checkpoints]
    return argv


def _absolute_sqlite(url: str) -> str:
    # A task may start in another directory (sbatch --chdir); the file stays the same one.
    parsed = make_url(url)
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:":
        return url
    if Path(db).is_absolute():
        return url
    return parsed.set(database=str(Path(db).resolve())).render_as_string(hide_password=False)


def shown_command(argv: Sequence[str]) -> str:
    """The worker command as a shell line, any database password hidden."""
    shown = list(argv)
    for i, arg in enumerate(shown[:-1]):
        if arg == "--storage":
            shown[i + 1] = make_url(shown[i + 1]).render_as_string(hide_password=True)
    return shlex.join(["noisetune", "worker", *shown])


@dataclass(frozen=True)
class SlurmLaunch:
    """One job array of `workers` tasks, each running `noisetune worker worker_argv`."""

    workers: int
    worker_argv: tuple[str, ...]
    time_s: int
    logs: Path  # submitit's folder: the tasks' logs and pickles; absolute
    gpus_per_worker: int = 1
    cpus_per_worker: int = 1
    signal_delay_s: int = DEFAULT_SIGNAL_DELAY_S
    partition: str | None = None
    mem: str | None = None
    job_name: str = "noisetune-worker"
    setup: tuple[str, ...] = ()
    sbatch: Mapping[str, str | bool] = field(default_factory=dict)
    requeues: int = 0  # times a task stopped at its time limit is queued again in Slurm


def slurm_parameters(launch: SlurmLaunch) -> dict[str, Any]:
    """SlurmExecutor's parameters (sbatch's options, in submitit's names)."""
    params: dict[str, Any] = {
        "job_name": launch.job_name,
        "time": math.ceil(launch.time_s / 60),  # minutes, as submitit counts them
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": launch.cpus_per_worker,
        "signal_delay_s": launch.signal_delay_s,
        "stderr_to_stdout": True,  # one log per task, the worker's and submitit's lines in order
    }
    if launch.gpus_per_worker:
        params["gpus_per_node"] = launch.gpus_per_worker
    if launch.partition:
        params["partition"] = launch.partition
    if launch.mem:
        params["mem"] = launch.mem
    if launch.setup:
        params["setup"] = list(launch.setup)
    extra: dict[str, str | bool] = dict(launch.sbatch)
    if launch.requeues:
        extra["requeue"] = True  # `scontrol requeue` needs a job that may be requeued
    if extra:
        params["additional_parameters"] = extra
    return params


def check_pre_timeout_signal() -> None:
    """submitit's signal can be changed (SUBMITIT_PREEMPT_SIGNAL); the worker stops on USR2."""
    from submitit import JobEnvironment

    if JobEnvironment.USR_SIG != PRE_TIMEOUT_SIGNAL:
        raise ValueError(
            f"SUBMITIT_PREEMPT_SIGNAL={JobEnvironment.USR_SIG}: the workers stop on "
            f"{PRE_TIMEOUT_SIGNAL} (and SIGTERM) only; unset it"
        )


def sbatch_script(launch: SlurmLaunch) -> str:
    """The batch script that `submit` hands sbatch for `launch`, without submitting it.

    submitit renders it only inside a submission (and SlurmExecutor refuses to exist without
    srun), so this calls its private renderer as SlurmExecutor does: its parameters, the
    array's size (`map_count`; one task is a plain job) and the command of its
    `_submitit_command_str`. The one use of submitit's private API:
    tests/worker/test_launch_command.py compares it with what a submission hands sbatch.
    """
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join(
        [shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(launch.logs))]
    )
    map_count = launch.workers if launch.workers > 1 else None
    return _make_sbatch_string(
        command=command, folder=launch.logs, map_count=map_count, **slurm_parameters(launch)
    )


def submit(launch: SlurmLaunch, cluster: str) -> list[submitit.Job[int]]:
    """Submit the array on `cluster`: ``slurm``, or ``local`` (processes on this machine)."""
    import submitit

    check_pre_timeout_signal()
    # Each task's pickle holds the storage URL, password included.
    launch.logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    # max_num_timeout: submitit also counts the requeues of a task it deems timed out (with
    # a limit of 10 minutes or less, every one) and stops at its own cap, 3 by default.
    executor: submitit.Executor
    if cluster == "local":
        executor = submitit.LocalExecutor(folder=launch.logs, max_num_timeout=launch.requeues)
        executor.update_parameters(
            timeout_min=launch.time_s / 60,
            signal_delay_s=launch.signal_delay_s,
            gpus_per_node=launch.gpus_per_worker,
            tasks_per_node=1,
            stderr_to_stdout=True,
        )
    else:
        executor = submitit.SlurmExecutor(folder=launch.logs, max_num_timeout=launch.requeues)
        executor.update_parameters(**slurm_parameters(launch))
    task = WorkerTask(launch.worker_argv, launch.requeues)
    with executor.batch():  # one array job on Slurm
        jobs = [executor.submit(task) for _ in range(launch.workers)]
    return jobs


class WorkerFailed(RuntimeError):
    """The worker of an array task exited with an error (its log says why)."""


class WorkerTask:
    """What each array task runs: `noisetune worker ARGV`, in submitit's job process.

    In that process rather than a child of it: the worker installs its signal handlers after
    submitit's, so the pre-timeout USR2 reaches the worker's (submitit's would requeue or
    end the job at once), whether Slurm signals every process of the step or submitit's
    local executor signals only its own child.

    With `requeues` left, a worker that stopped on USR2 (its trial queued again in the
    database) then requeues its task through submitit, as submitit's own USR2 handler does
    for a callable with a `checkpoint` method: the task starts again, with one requeue
    fewer, and its worker joins the fleet anew.
    """

    def __init__(self, argv: Sequence[str], requeues: int = 0) -> None:
        self.argv = list(argv)
        self.requeues = requeues

    def __call__(self) -> int:
        import typer

        from worker.cli import register
        from worker.process import received_stop_signals

        app = typer.Typer(add_completion=False)
        register(app)
        # submitit logs through its own handlers; the worker's root handler would repeat it.
        logging.getLogger("submitit").propagate = False
        try:
            code = app(["worker", *self.argv], prog_name="noisetune", standalone_mode=False)
        except SystemExit as exc:  # the worker's one-line refusals
            code = exc.code
        if isinstance(code, str):
            raise WorkerFailed(code)
        if code:
            raise WorkerFailed(f"noisetune worker exited with {code}")
        if self.requeues > 0 and signal.SIGUSR2 in received_stop_signals:
            _requeue_this_task()  # exits the process
        return 0

    def checkpoint(self) -> submitit.helpers.DelayedSubmission | None:
        """submitit's hook: this task again, with one requeue fewer; None when none is left.

        Also what submitit's own USR2 handler calls when the signal comes before the worker
        has installed its handlers."""
        from submitit.helpers import DelayedSubmission

        if self.requeues <= 0:
            return None
        return DelayedSubmission(WorkerTask(self.argv, self.requeues - 1))


def _requeue_this_task() -> None:
    """Requeue the running task as submitit does on USR2: `checkpoint` pickles the next
    task in place of this one, then Slurm's `scontrol requeue` (the local executor: a
    restart) runs it. It ends this process."""
    import submitit
    from submitit.core.job_environment import SignalHandler
    from submitit.helpers import DelayedSubmission

    env = submitit.JobEnvironment()
    delayed = DelayedSubmission.load(env.paths.submitted_pickle)
    SignalHandler(env, env.paths, delayed).checkpoint_and_try_requeue(signal.SIGUSR2)
