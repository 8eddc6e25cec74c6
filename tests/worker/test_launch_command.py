"""`noisetune launch slurm` without a cluster: its script, its worker command, its refusals.

A stand-in `sbatch` on PATH (Slurm is not ours and not installed here) takes a real
submission through submitit, so the dry run is compared with what sbatch would get.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from worker.slurm_launch import PRE_TIMEOUT_SIGNAL, WorkerTask, parse_slurm_time

ROOT = Path(__file__).resolve().parents[2]

PG = "postgresql+psycopg://noisetune:s3cret@db-host:5432/noisetune"


def launch(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, ["launch", "slurm", *args])


@pytest.fixture()
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`sbatch` and `srun` on PATH; sbatch keeps the script it gets in tmp_path/got.sh."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    got = tmp_path / "got.sh"
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(
        f'#!/bin/sh\ncp "$1" {shlex.quote(str(got))}\necho "Submitted batch job 4242"\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.delenv("NOISETUNE_CHECKPOINTS", raising=False)
    return got


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 1800),
        ("4:00", 240),
        ("4:00:00", 14400),
        ("1-00:00:00", 86400),
        ("2-12", 2 * 86400 + 12 * 3600),
        ("1-02:30", 86400 + 2 * 3600 + 1800),
        (" 0:90 ", 90),
    ],
)
def test_slurm_time_formats(text: str, seconds: int) -> None:
    assert parse_slurm_time(text) == seconds


@pytest.mark.parametrize("text", ["4h", "", "1:2:3:4", "-1", "1-", "0", "0:00:00", "UNLIMITED"])
def test_slurm_time_refuses_what_slurm_would(text: str) -> None:
    with pytest.raises(ValueError, match="--time"):
        parse_slurm_time(text)


def _dry_run(app: typer.Typer, tmp_path: Path, *args: str) -> tuple[str, str]:
    """The dry run's batch script and worker command line."""
    result = launch(app, "--storage", PG, "--logs", str(tmp_path / "logs"), "--dry-run", *args)
    assert result.exit_code == 0, result.output
    script, command = result.stdout.split("# Each of ")
    return script.split("\n", 1)[1], command.splitlines()[1]


def test_dry_run_prints_the_array_and_a_worker_command_the_cli_parses(
    app: typer.Typer, tmp_path: Path
) -> None:
    args = ["--workers", "4", "--partition", "gpu", "--time", "1-00:00:00", "--study", "s1"]
    script, command = _dry_run(app, tmp_path, *args, "--mem", "16G", "--sbatch", "account=p7")
    for line in [
        "#SBATCH --array=0-3%4",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --partition=gpu",
        "#SBATCH --signal=USR2@90",
        "#SBATCH --time=1440",
        "#SBATCH --mem=16G",
        "#SBATCH --account=p7",
        f"#SBATCH --output={tmp_path}/logs/%A_%a_0_log.out",
    ]:
        assert line in script.splitlines(), script
    assert "s3cret" not in command
    noisetune, worker, *argv = shlex.split(command)
    assert (noisetune, worker) == ("noisetune", "worker")
    worker_cli = typer.main.get_command(app).commands["worker"]  # type: ignore[attr-defined]
    params = worker_cli.make_context("worker", argv).params
    assert params["exit_when_idle"] and params["storage"] == PG.replace("s3cret", "***")
    assert (params["study"], params["device"], params["grace"]) == ("s1", "cuda:0", 30.0)


def test_requeues_make_the_job_requeueable_and_count_down(app: typer.Typer, tmp_path: Path) -> None:
    script, _ = _dry_run(app, tmp_path, "--workers", "2")
    assert "#SBATCH --requeue" not in script.splitlines()
    script, _ = _dry_run(app, tmp_path, "--workers", "2", "--requeues", "2")
    assert "#SBATCH --requeue" in script.splitlines()
    # What submitit pickles in place of the task when it requeues it: one requeue fewer.
    task = WorkerTask(["--exit-when-idle"], requeues=2)
    again = task.checkpoint()
    assert again is not None and isinstance(again.function, WorkerTask)
    assert (again.function.argv, again.function.requeues) == (task.argv, 1)
    assert WorkerTask(task.argv, requeues=0).checkpoint() is None


def test_on_slurm_a_task_requeues_with_scontrol_and_leaves_the_next_task(
    tmp_path: Path,
) -> None:
    """The Slurm side of --requeues, as array task 4242_1 runs it: submitit's requeue path
    calls `scontrol requeue 4242_1`, and the task pickled for the rerun has one fewer."""
    from submitit.helpers import DelayedSubmission

    bin_dir, folder = tmp_path / "bin", tmp_path / "logs"
    bin_dir.mkdir()
    folder.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/scontrol.txt\n')
    scontrol.chmod(0o755)
    pickle = folder / "4242_1_submitted.pkl"
    submitted = DelayedSubmission(WorkerTask(["--exit-when-idle"], requeues=2))
    submitted.set_timeout(240, 2)  # as SlurmExecutor(max_num_timeout=2) sets it
    submitted.dump(pickle)
    env = {
        **os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SUBMITIT_EXECUTOR": "slurm", "SUBMITIT_FOLDER": str(folder),
        "SLURM_JOB_ID": "4243", "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "1",
        "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NTASKS": "1",
        "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "node1",
    }  # fmt: skip
    code = "from worker.slurm_launch import _requeue_this_task; _requeue_this_task()"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert (tmp_path / "scontrol.txt").read_text().split() == ["requeue", "4242_1"], done.stderr
    assert done.returncode != 0  # submitit leaves the process at once, as on its own USR2
    again = DelayedSubmission.load(pickle)
    assert isinstance(again.function, WorkerTask) and again.function.requeues == 1


def test_cpu_and_multi_gpu_workers(app: typer.Typer, tmp_path: Path) -> None:
    script, command = _dry_run(app, tmp_path, "--workers", "2", "--gpus-per-worker", "0")
    assert "--device cpu" in command and "gpus-per-node" not in script
    script, command = _dry_run(app, tmp_path, "--workers", "2", "--gpus-per-worker", "4")
    assert "--gpus all" in command and "--device" not in command
    assert {"#SBATCH --gpus-per-node=4", "#SBATCH --cpus-per-task=4"} <= set(script.splitlines())


@pytest.mark.parametrize("workers", [4, 1])
def test_dry_run_is_what_sbatch_gets(
    app: typer.Typer, tmp_path: Path, fake_slurm: Path, workers: int
) -> None:
    args = ["--workers", str(workers), "--partition", "gpu", "--setup", "module load cuda"]
    script, _ = _dry_run(app, tmp_path, *args)
    result = launch(app, "--storage", PG, "--logs", str(tmp_path / "logs"), *args)
    assert result.exit_code == 0, result.output
    assert fake_slurm.read_text() == script.rstrip("\n") + "\n"
    ids = ["4242"] if workers == 1 else [f"4242_{i}" for i in range(workers)]
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ids
    assert "scancel 4242" in result.stderr


def test_a_refused_submission_is_one_line(
    app: typer.Typer, tmp_path: Path, fake_slurm: Path
) -> None:
    sbatch = fake_slurm.parent / "bin" / "sbatch"
    sbatch.write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\n"
                      "exit 1\n")  # fmt: skip
    result = launch(app, "--workers", "2", "--storage", PG, "--logs", str(tmp_path / "logs"))
    assert result.exit_code == 1
    assert "sbatch refused the job: sbatch: error: invalid partition" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time", "4h"], "--time takes Slurm's formats"),
        (["--time", "1:00"], "--time (60s) must be longer than --signal-delay (90s)"),
        (["--grace", "80"], "--signal-delay 90s must be at least --grace 80s plus 15s"),
        (["--batch", "0"], "--batch must be 'auto' or a whole number"),
        (["--mem", "16 GB"], "--mem takes Slurm's format"),
        (["--sbatch", "time=10"], "--sbatch time: use --time"),
        (["--sbatch", "array=0-9"], "--sbatch array: use --workers"),
        (["--sbatch", "=x"], "--sbatch takes KEY=VALUE or KEY"),
        (["--cluster", "k8s"], "--cluster must be slurm or local"),
        (["--storage", "sqlite:///nt.db"], "the storage is a SQLite file"),
    ],
)
def test_user_errors_are_one_line(
    app: typer.Typer, tmp_path: Path, args: list[str], message: str
) -> None:
    storage = [] if "--storage" in args else ["--storage", PG]
    logs = tmp_path / "logs"
    result = launch(app, "--workers", "2", *storage, "--logs", str(logs), *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not logs.exists()  # refused before anything is written


def test_without_slurm_it_says_so(
    app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = launch(app, "--workers", "2", "--storage", PG, "--logs", str(tmp_path / "logs"))
    assert result.exit_code == 1
    assert "sbatch and srun not found" in result.stderr and "Traceback" not in result.output


def test_the_pre_timeout_signal_stops_a_worker() -> None:
    from worker.process import STOP_SIGNALS

    assert getattr(signal, f"SIG{PRE_TIMEOUT_SIGNAL}") in STOP_SIGNALS
