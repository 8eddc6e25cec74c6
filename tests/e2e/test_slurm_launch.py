"""`noisetune launch slurm` through submitit's local executor: real array tasks, real workers.

The same code path as on Slurm (the CLI builds the launch, submitit pickles the worker task
and starts `python -m submitit.core._submit`, which runs the worker), with the tasks as
processes on this machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from search_spaces import StudySpec
from search_spaces.storage import open_storage
from search_spaces.tables import workers_table
from service.studies import create_study
from service.trials import list_trials
from tests.e2e.conftest import _env, quadratic_spec

pytestmark = pytest.mark.slow


@contextmanager
def _launched(storage_url: str, tmp_path: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`noisetune launch slurm --cluster local` of CPU workers, logs under tmp_path/logs.

    Its own process group holds the launch, submitit's controllers and the workers: all are
    killed at the end, whatever the test did.
    """
    command = [
        sys.executable, "-c", "from service.cli import main; main()",
        "launch", "slurm", "--cluster", "local", "--gpus-per-worker", "0",
        "--storage", storage_url, "--logs", str(tmp_path / "logs"), *args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(), cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            proc.communicate()


def _create(storage_url: str, spec: dict[str, Any]) -> None:
    create_study(open_storage(storage_url), StudySpec.model_validate(spec))


def _trials(storage_url: str, name: str) -> list[tuple[str, str | None]]:
    listed = list_trials(open_storage(storage_url), name, limit=1000).data
    return [(t.state, t.fail_reason) for t in listed]


def _training(storage_url: str, name: str) -> bool:
    """Whether a trial of `name` has reported an epoch."""
    listed = list_trials(open_storage(storage_url), name).data
    return any(t.state == "RUNNING" and t.intermediate_values for t in listed)


def _logs(tmp_path: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((tmp_path / "logs").glob("*_log.out")))


def _workers(storage_url: str) -> list[Any]:
    with open_storage(storage_url).engine.connect() as conn:
        return list(conn.execute(sa.select(workers_table)))


def test_launched_array_completes_a_study_with_exactly_n_trials(
    storage_url: str, tmp_path: Path
) -> None:
    _create(storage_url, quadratic_spec("launched", 6))
    with _launched(storage_url, tmp_path, "--workers", "2", "--study", "launched") as launch:
        out, err = launch.communicate(timeout=180)
    logs = _logs(tmp_path)
    assert launch.returncode == 0, err + logs
    # One line per task on stdout: its job id and its log, which the worker wrote to.
    lines = [line.split("\t") for line in out.splitlines()]
    assert len(lines) == 2 and all(Path(log).exists() for _, log in lines), out
    assert err.count("\tdone") == 2, err
    assert _trials(storage_url, "launched") == [("COMPLETE", None)] * 6
    workers = _workers(storage_url)
    assert len(workers) == 2 and {w.state for w in workers} == {"exited"}, workers
    assert logs.count("nothing left to serve; exiting") == 2, logs


def test_usr2_stops_a_launched_worker_and_queues_its_trial(
    storage_url: str, tmp_path: Path
) -> None:
    """Slurm's pre-timeout signal reaches the worker's handler, not submitit's."""
    _create(storage_url, {**quadratic_spec("limit", 1, epochs=400, sleep_s=0.25), "max_retries": 0})
    args = ["--workers", "1", "--grace", "1", "--signal-delay", "16"]
    with _launched(storage_url, tmp_path, *args) as launch:
        deadline = time.monotonic() + 60
        # Signalled before its trial trains, the worker would leave before claiming it.
        while not _training(storage_url, "limit"):
            assert time.monotonic() < deadline and launch.poll() is None, _logs(tmp_path)
            time.sleep(0.2)
        (worker,) = _workers(storage_url)
        # The worker is submitit's job process itself (so no handler of submitit's is left
        # to take the signal): what Slurm signals 90 s before the time limit.
        assert b"submitit.core._submit" in Path(f"/proc/{worker.pid}/cmdline").read_bytes()
        os.kill(worker.pid, signal.SIGUSR2)
        out, err = launch.communicate(timeout=60)
    log = _logs(tmp_path)
    assert launch.returncode == 0, out + err + log
    assert "SIGUSR2: stopping at the end of the current epoch" in log
    # Interrupted, not the trial's fault: queued again whatever max_retries says.
    assert _trials(storage_url, "limit") == [
        ("FAIL", "interrupted: worker stopped"),
        ("WAITING", None),
    ]


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_a_task_at_its_time_limit_requeues_and_the_study_still_ends_exact(
    storage_url: str, tmp_path: Path
) -> None:
    """The local executor sends USR2 16 s before a 24 s limit, as Slurm would: the worker
    stops and queues its trial, the task requeues itself, and the next worker goes on."""
    _create(storage_url, quadratic_spec("long", 8, epochs=4, sleep_s=0.25))  # 8 s of trials
    args = ["--workers", "1", "--time", "0:24", "--signal-delay", "16", "--grace", "1"]
    with _launched(storage_url, tmp_path, *args, "--requeues", "4") as launch:
        out, err = launch.communicate(timeout=240)
    log = _logs(tmp_path)
    assert launch.returncode == 0 and err.count("\tdone") == 1, out + err + log
    assert "SIGUSR2: stopping at the end of the current epoch" in log
    assert "Requeued job" in log, log
    trials = _trials(storage_url, "long")
    assert trials.count(("COMPLETE", None)) == 8, trials
    assert set(trials) <= {("COMPLETE", None), ("FAIL", "interrupted: worker stopped")}
    assert len(_workers(storage_url)) >= 2  # a new worker after each requeue
