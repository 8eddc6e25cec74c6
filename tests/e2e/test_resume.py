"""A worker killed mid-trial: the retry resumes from the checkpoint and ends exactly where an
uninterrupted run ends (deep_mlp on the CPU)."""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server, Workers

pytestmark = pytest.mark.slow

CONFIG = {"dataset": "digits", "depth": 4, "width": 16, "epochs": 60, "lr": 0.05, "seed": 3}


def _reference() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The uninterrupted run, as a worker trains it (one torch thread: another count sums
    in another order)."""
    import torch

    from worker.tasks.deep_mlp import train

    points: list[dict[str, Any]] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(
            CONFIG, eta=0.3, gamma=0.55, report=lambda e, m: points.append({"epoch": e, **m})
        )
    finally:
        torch.set_num_threads(threads)
    return result, points


def _without_times(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in p.items() if k != "epoch_s"} for p in curve]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_an_interrupted_trial_resumes_exactly(
    server: Server, workers: Workers, tmp_path: Path, how: signal.Signals
) -> None:
    store = str(tmp_path / "checkpoints")
    spec = {
        "name": "resume", "task": "deep_mlp", "task_config": CONFIG,
        "search_space": {"eta": {"type": "categorical", "choices": [0.3]}, "gamma": 0.55},
        "n_trials": 1,
        "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"},
        "checkpoint_every": 1, "max_retries": 2,
    }  # fmt: skip
    server.submit(spec)
    first = workers.start("--checkpoints", store, heartbeat=0.5)
    stop_at = random.Random(int(how)).randint(3, 20)

    def epochs() -> int:
        trials = server.trials("resume")
        return len(trials[0]["intermediate_values"]) if trials else 0

    server.wait_for(lambda: epochs() >= stop_at, timeout=120, what=f"epoch {stop_at}")
    first.send_signal(how)
    first.wait(timeout=60)
    workers.start("--checkpoints", store, "--exit-when-idle")
    server.wait_for(
        lambda: server.study("resume")["status"] == "completed", timeout=180, what="the retry"
    )
    trials = server.trials("resume")
    assert [t["state"] for t in trials] == ["FAIL", "COMPLETE"], trials
    retry = server.client.get("/api/v1/studies/resume/trials/1").json()
    assert retry["retry_of"] == 0, retry
    assert retry["resumed_from_epoch"] >= stop_at - 1
    result, points = _reference()
    assert [p["epoch"] for p in retry["curve"]] == list(range(1, 61))  # none missing or twice
    assert _without_times(retry["curve"]) == points  # bit for bit (JSON keeps float64 exact)
    assert {k: retry["metrics"][k] for k in result} == result
    assert not Path(store, "study-resume").exists() or not list(Path(store).rglob("*.pt"))
