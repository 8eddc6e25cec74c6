"""`noisetune launch slurm`: workers as a Slurm job array (worker.slurm_launch submits it).

Every user error is one line on standard error and exit code 2; a submission sbatch refuses,
or a worker that fails while `--wait` waits for it, exit code 1.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from search_spaces.storage import resolve_url
from worker.settings import WorkerSettings, parse_stack_size
from worker.slurm_launch import (
    DEFAULT_LOGS,
    DEFAULT_SIGNAL_DELAY_S,
    SlurmLaunch,
    check_pre_timeout_signal,
    check_timing,
    parse_slurm_time,
    sbatch_script,
    shown_command,
    submit,
    worker_argv,
)

if TYPE_CHECKING:
    import submitit

EXIT_USAGE = 2
EXIT_FAILURE = 1
CLUSTERS = ("slurm", "local")
# sbatch options the launch sets itself: each with the option that sets it, if any.
OWN_SBATCH = {
    "time": "--time",
    "partition": "--partition",
    "job-name": "--job-name",
    "gpus-per-node": "--gpus-per-worker",
    "cpus-per-task": "--cpus-per-worker",
    "mem": "--mem",
    "signal": "--signal-delay",
    "array": "--workers",
    "nodes": None,
    "ntasks-per-node": None,
    "output": "--logs",
    "error": "--logs",
    "open-mode": None,
    "requeue": "--requeues",
}

launch_app = typer.Typer(help="Start workers through a cluster's scheduler.", no_args_is_help=True)


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _sbatch_options(items: list[str]) -> dict[str, str | bool]:
    """``--sbatch KEY=VALUE`` (or a bare ``KEY`` flag) as sbatch options, ours refused."""
    options: dict[str, str | bool] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", key) or (sep and not value):
            _fail(f"--sbatch takes KEY=VALUE or KEY (e.g. account=proj, exclusive), got {item!r}")
        if key in OWN_SBATCH:
            by = OWN_SBATCH[key]
            _fail(f"--sbatch {key}: " + (f"use {by}" if by else "the launch sets it"))
        options[key] = value if sep else True
    return options


def _check_storage(url: str, cluster: str, allow_sqlite: bool) -> None:
    if url.startswith("sqlite") and cluster == "slurm" and not allow_sqlite:
        _fail(
            f"the storage is a SQLite file ({url}): workers on several nodes would share it "
            "over a network file system, where SQLite's locks do not hold. Use PostgreSQL "
            "(--storage postgresql+psycopg://USER:PASSWORD@HOST/DB), or --allow-sqlite if "
            "every task runs on the machine that holds the file"
        )


@launch_app.command("slurm")
def slurm_command(
    workers: Annotated[int, typer.Option(min=1, help="Array tasks, one worker each.")],
    gpus_per_worker: Annotated[
        int,
        typer.Option(
            min=0,
            help="GPUs per task: 1 runs `--device cuda:0`, more run one worker process per "
            "GPU (`--gpus all`), 0 a CPU worker (`--device cpu`).",
        ),
    ] = 1,
    cpus_per_worker: Annotated[
        int | None, typer.Option(min=1, help="CPU cores per task (default: one per GPU, >= 1).")
    ] = None,
    mem: Annotated[
        str | None, typer.Option(help="Memory per task in Slurm's format: 16G, 4000M.")
    ] = None,
    partition: Annotated[str | None, typer.Option(help="Slurm partition.")] = None,
    time: Annotated[
        str, typer.Option(help="Time limit per task: 4:00:00, 1-00:00:00, MINUTES, ...")
    ] = "4:00:00",
    study: Annotated[str | None, typer.Option(help="Only work on this study.")] = None,
    storage: Annotated[
        str | None, typer.Option(help="Database URL (default $NOISETUNE_STORAGE).")
    ] = None,
    batch: Annotated[str, typer.Option(help="The worker's --batch: trials stacked.")] = "1",
    grace: Annotated[
        float, typer.Option(min=0, help="The worker's --grace: seconds to stop after a signal.")
    ] = 30.0,
    checkpoints: Annotated[
        str | None,
        typer.Option(
            help="The worker's --checkpoints (default $NOISETUNE_CHECKPOINTS): without a "
            "store, a trial stopped at the time limit starts over."
        ),
    ] = None,
    signal_delay: Annotated[
        int,
        typer.Option(
            min=1,
            help="Seconds before the time limit at which Slurm sends USR2 and the workers stop "
            "(at least --grace + 15).",
        ),
    ] = DEFAULT_SIGNAL_DELAY_S,
    requeues: Annotated[
        int,
        typer.Option(
            min=0,
            help="Times a task that reaches its time limit is requeued: its worker stops on "
            "USR2, queues its trial again, and the task starts anew (default 0: it ends).",
        ),
    ] = 0,
    job_name: Annotated[str, typer.Option(help="Slurm job name.")] = "noisetune-worker",
    logs: Annotated[
        Path, typer.Option(help="Folder for the tasks' logs (and submitit's files).")
    ] = DEFAULT_LOGS,
    setup: Annotated[
        list[str] | None,
        typer.Option(help="A line the batch script runs before the workers; repeatable."),
    ] = None,
    sbatch: Annotated[
        list[str] | None,
        typer.Option(help="Any other sbatch option, KEY=VALUE or KEY; repeatable."),
    ] = None,
    allow_sqlite: Annotated[
        bool, typer.Option(help="Accept a SQLite storage (every task on the file's machine).")
    ] = False,
    cluster: Annotated[
        str,
        typer.Option(
            help="slurm, or local: the same array as processes on this machine "
            "(submitit's local executor), to try a launch without a cluster."
        ),
    ] = "slurm",
    dry_run: Annotated[
        bool, typer.Option(help="Print the batch script and the worker command; submit nothing.")
    ] = False,
    wait: Annotated[
        bool | None,
        typer.Option(help="Wait for the workers to exit (default: only with --cluster local)."),
    ] = None,
) -> None:
    """Submit N workers as a Slurm job array; each runs `noisetune worker --exit-when-idle`."""
    if cluster not in CLUSTERS:
        _fail(f"--cluster must be slurm or local, got {cluster!r}")
    if mem is not None and not re.fullmatch(r"[0-9]+[KMGT]?", mem):
        _fail(f"--mem takes Slurm's format, a number with K, M, G or T (16G), got {mem!r}")
    try:
        time_s = parse_slurm_time(time)
        check_timing(time_s, signal_delay, grace)
        parse_stack_size(batch)
    except (ValueError, SystemExit) as exc:
        _fail(str(exc))
    url = resolve_url(storage)
    _check_storage(url, cluster, allow_sqlite)
    checkpoints = checkpoints or WorkerSettings().checkpoints
    argv = worker_argv(url, study, gpus_per_worker, batch, grace, checkpoints)
    launch = SlurmLaunch(
        workers=workers,
        worker_argv=tuple(argv),
        time_s=time_s,
        logs=logs.expanduser().resolve(),
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker or max(1, gpus_per_worker),
        signal_delay_s=signal_delay,
        partition=partition,
        mem=mem,
        job_name=job_name,
        setup=tuple(setup or ()),
        sbatch=_sbatch_options(sbatch or []),
        requeues=requeues,
    )
    try:
        from submitit.core.utils import FailedJobError, FailedSubmissionError
    except ImportError:
        _fail('`noisetune launch` needs submitit: pip install "noisetune[slurm]"', EXIT_FAILURE)
    try:
        check_pre_timeout_signal()
    except ValueError as exc:
        _fail(str(exc))
    if not checkpoints and not url.startswith("sqlite"):
        typer.echo(
            "note: no --checkpoints: a trial stopped at the time limit starts over", err=True
        )
    if dry_run:
        _print_dry_run(launch)
        return
    if cluster == "slurm" and (missing := [c for c in ("sbatch", "srun") if not shutil.which(c)]):
        _fail(
            f"{' and '.join(missing)} not found: run this on a Slurm login node (or try "
            "--dry-run, or --cluster local)",
            EXIT_FAILURE,
        )
    try:
        jobs = submit(launch, cluster)
    except (FailedJobError, FailedSubmissionError) as exc:
        _fail(f"sbatch refused the job: {str(exc).strip()}", EXIT_FAILURE)
    _print_submitted(jobs, launch, cluster)
    # Local tasks are this process's children: leaving them behind would surprise.
    if cluster == "local" if wait is None else wait:
        raise typer.Exit(_wait_for(jobs))


def _print_dry_run(launch: SlurmLaunch) -> None:
    tasks = f"array tasks 0-{launch.workers - 1}" if launch.workers > 1 else "the job"
    typer.echo(f"# The batch script sbatch would get ({launch.workers} workers):")
    typer.echo(sbatch_script(launch))
    typer.echo(f"# Each of {tasks} runs, in submitit's process (the same command for all):")
    typer.echo(shown_command(launch.worker_argv))
    if launch.requeues:
        typer.echo(f"# and is requeued at its time limit, up to {launch.requeues} times.")


def _print_submitted(jobs: list[submitit.Job[int]], launch: SlurmLaunch, cluster: str) -> None:
    where = "Slurm" if cluster == "slurm" else "this machine (submitit's local executor)"
    typer.echo(f"submitted {len(jobs)} workers on {where}, each running:", err=True)
    typer.echo(f"  {shown_command(launch.worker_argv)}", err=True)
    for job in jobs:
        typer.echo(f"{job.job_id}\t{job.paths.stdout}")
    if cluster == "slurm":
        first = jobs[0].job_id.split("_")[0]
        typer.echo(f"stop them with: scancel {first}", err=True)


def _wait_for(jobs: list[submitit.Job[int]]) -> int:
    """Each job's outcome, once all have ended; 1 if any worker failed."""
    from submitit.core.utils import UncompletedJobError

    failed = 0
    try:
        for job in jobs:
            try:
                job.result()
                typer.echo(f"{job.job_id}\tdone", err=True)
            except UncompletedJobError:
                failed += 1
                typer.echo(f"{job.job_id}\tfailed; its log: {job.paths.stdout}", err=True)
    except KeyboardInterrupt:
        typer.echo("stopped waiting", err=True)
        return EXIT_FAILURE
    return EXIT_FAILURE if failed else 0
