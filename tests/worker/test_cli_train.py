"""The worker's CLI commands, mounted on a root app the way the service mounts them."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from search_spaces import DEEP_MLP
from worker import data
from worker.cli import json_safe, parse_config_items

TINY = ["-c", "depth=3", "-c", "width=8", "-c", "epochs=2"]


@pytest.fixture(autouse=True)
def _restore_threads() -> Any:
    import torch

    before = torch.get_num_threads()  # `train` sets the process's torch threads
    yield
    torch.set_num_threads(before)


def invoke(app: typer.Typer, *args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


def test_train_prints_final_metrics_as_the_last_json_line(app: typer.Typer) -> None:
    result = invoke(app, "train", "--task", "deep_mlp", "--eta", "0.3", "--no-progress", *TINY)
    assert result.exit_code == 0, result.output
    metrics = last_json(result.stdout)
    assert set(metrics) == {*DEEP_MLP.metrics, "steps", "epochs", "diverged"}
    assert metrics["epochs"] == 2 and metrics["diverged"] is False


def test_train_nan_becomes_null(app: typer.Typer) -> None:
    args = ["train", "--task", "quadratic", "--eta", "2", "-c", "diverge_eta=1"]
    result = invoke(app, *args)
    assert result.exit_code == 0, result.output
    assert last_json(result.stdout) == {"loss": None, "steps": 1, "epochs": 1, "diverged": True}


def test_seed_option_overrides_config_seed(app: typer.Typer) -> None:
    def loss(*extra: str) -> float:
        result = invoke(app, "train", "--task", "quadratic", "--eta", "0.1", *extra)
        assert result.exit_code == 0, result.output
        return float(last_json(result.stdout)["loss"])

    assert loss("--seed", "4", "-c", "seed=1") == loss("-c", "seed=4") != loss("-c", "seed=1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "nope"], "unknown task 'nope'"),
        (["-c", "depht=3"], "unknown key 'depht'"),
        (["-c", "lr=-1"], "lr"),
        (["-c", "depth"], "KEY=VALUE"),
        (["--eta", "-0.5"], "eta"),
        (["--device", "tpu9"], "device"),
        (["--schedule", "sawtooth"], "schedule must be one of polynomial"),
        (["--schedule", "cosine"], "the cosine schedule needs horizon"),
        (["--placement", "sideways"], "placement must be one of after_clip, before_clip"),
    ],
)
def test_bad_input_exits_2_with_one_line(app: typer.Typer, args: list[str], message: str) -> None:
    result = invoke(app, "train", "--no-progress", *args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_train_takes_any_schedule_family(app: typer.Typer) -> None:
    from search_spaces import NoiseSetup
    from worker.tasks import deep_mlp

    args = ["--eta", "0.3", "--schedule", "linear", "--horizon", "15", "--noise-window", "12",
            "--placement", "before_clip", "--scale", "relative", "-c", "clip=1.0"]  # fmt: skip
    result = invoke(app, "train", "--no-progress", *args, *TINY)
    assert result.exit_code == 0, result.output
    setup = NoiseSetup(0.3, schedule="linear", horizon=15, window=12, placement="before_clip",
                       scale="relative")  # fmt: skip
    config = {"depth": 3, "width": 8, "epochs": 2, "clip": 1.0}
    expected = deep_mlp.train(config, eta=0.3, gamma=0.55, noise=setup)
    assert last_json(result.stdout) == json.loads(json.dumps(expected))


def test_missing_mnist_is_a_message_not_a_traceback(app: typer.Typer, tmp_path: Any) -> None:
    args = ["-c", "dataset=mnist", "-c", f"data_dir={tmp_path}"]
    result = invoke(app, "train", "--no-progress", *args)
    assert result.exit_code == 1
    assert "noisetune data download mnist" in result.stderr and "Traceback" not in result.output


def test_config_values_are_yaml_scalars() -> None:
    parsed = parse_config_items(["clip=null", "lr=1e-2", "depth=3", "activation=tanh", "x=a=b"])
    assert parsed == {"clip": None, "lr": 0.01, "depth": 3, "activation": "tanh", "x": "a=b"}
    assert json_safe({"a": math.nan, "b": [math.inf, 1.0]}) == {"a": None, "b": [None, 1.0]}


def test_reproduce_prints_one_row_per_eta(app: typer.Typer) -> None:
    args = ["reproduce", "--seeds", "2", "--epochs", "2", "--workers", "1", "--init", "zero"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "…" not in result.stdout  # nothing cut at 80 columns
    header = next(line.split() for line in lines if line.split()[:2] == ["eta", "runs"])
    assert header[2:6] == ["mean", "95%", "CI", "best"]
    rows = [line.split() for line in lines]
    rows = [r for r in rows if r and r[0].replace(".", "").isdigit() and r[1] == "2"]
    assert [float(r[0]) for r in rows] == [0.0, 0.01, 0.3, 1.0]
    for r in rows:
        mean, (low, high) = float(r[2]), (float(x) for x in r[3].split("-"))
        assert 0.0 <= low <= mean <= high <= 100.0
    # Success rates with their Wilson intervals: "k/2 low-high" at 50% and 90%.
    assert all(r[6].endswith("/2") and r[8].endswith("/2") for r in rows)
    assert "zero init" in result.stdout
    assert "eta=1 vs eta=0, same seeds:" in result.stdout
    assert "note: 2 runs per eta" in result.stdout and "verdict:" in result.stdout


def test_reproduce_refuses_an_unknown_init(app: typer.Typer) -> None:
    result = invoke(app, "reproduce", "--init", "good")
    assert result.exit_code == 2 and "--init must be simple or zero" in result.output


def test_worker_command_passes_options_to_run_workers(
    app: typer.Typer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.runner

    seen: dict[str, Any] = {}

    def fake_run_workers(**kwargs: Any) -> int:
        seen.update(kwargs)
        return 3

    monkeypatch.setattr(worker.runner, "run_workers", fake_run_workers)
    args = ["worker", "--storage", "sqlite:///x.db", "--gpus", "0,1", "--max-trials", "5"]
    result = invoke(app, *args, "--exit-when-idle", "--batch", "auto")
    assert result.exit_code == 3, result.output
    assert seen == {
        "storage": "sqlite:///x.db",
        "device": "auto",
        "gpus": "0,1",
        "study": None,
        "max_trials": 5,
        "exit_when_idle": True,
        "heartbeat_interval": 10.0,
        "stack": "auto",
        "grace": 30.0,
        "checkpoints": None,
    }


def test_download_offline_is_a_clear_failure(
    app: typer.Typer, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(data, "MNIST_MIRRORS", ("http://127.0.0.1:9/",))
    result = invoke(app, "data", "download", "mnist", "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "could not download" in result.stderr and "Traceback" not in result.output
    assert invoke(app, "data", "download", "cifar10").exit_code == 2


@pytest.mark.slow
def test_train_in_a_real_process_with_progress_bar() -> None:
    code = (
        "import sys, typer; from worker.cli import register; app = typer.Typer(); "
        "register(app); app(sys.argv[1:])"
    )
    args = ["train", "--eta", "0.01", "--seed", "1", *TINY]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert last_json(proc.stdout)["steps"] > 0
    assert "val_acc" in proc.stderr  # the progress bar went to standard error
