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


def _without_times(
    curve: list[dict[str, Any]], drop: tuple[str, ...] = ("epoch_s",)
) -> list[dict[str, Any]]:
    return [{k: v for k, v in p.items() if k not in drop} for p in curve]


# The noise-to-gradient ratios are norms a stack batches: exact within one stack's layout.
RATIOS = ("epoch_s", "noise_grad_ratio", "noise_grad_ratio_layers")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_an_interrupted_trial_resumes_exactly(
    server: Server, workers: Workers, tmp_path: Path, how: signal.Signals
) -> None:
    store = str(tmp_path / "checkpoints")
    spec = {
        "name": "resume", "task": "deep_mlp", "task_config": CONFIG,
        "search_space": {"eta": 0.3, "gamma": 0.55},  # all fixed: the retry is queued all the same
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
    assert [p["epoch"] for p in retry["curve"]] == list(range(1, CONFIG["epochs"] + 1))  # once each
    assert _without_times(retry["curve"]) == points  # bit for bit (JSON keeps float64 exact)
    assert {k: retry["metrics"][k] for k in result} == result
    assert not Path(store, "study-resume").exists() or not list(Path(store).rglob("*.pt"))


STACK_SEEDS = [3, 8, 5]  # the first member's seed draws the stack's data split and order


def _stack_reference(seeds: list[int]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The uninterrupted stack of these members, in this order, as a worker trains it."""
    import torch

    from worker.stacked import StackMember
    from worker.tasks.deep_mlp_stacked import train_stacked

    curves: list[list[dict[str, Any]]] = [[] for _ in seeds]
    members = [
        StackMember(
            {**CONFIG, "seed": seed},
            0.3,
            0.55,
            report=lambda e, m, c=curve: c.append({"epoch": e, **m}),
        )  # fmt: skip
        for seed, curve in zip(seeds, curves, strict=True)
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = train_stacked(members)
    finally:
        torch.set_num_threads(threads)
    return list(zip(results, curves, strict=True))


@pytest.mark.parametrize(
    ("how", "storage_url"),
    [
        pytest.param(signal.SIGKILL, "postgresql", marks=pytest.mark.postgres, id="sigkill-pg"),
        pytest.param(signal.SIGTERM, "sqlite", id="sigterm-sqlite"),
    ],
    indirect=["storage_url"],
)
def test_an_interrupted_stack_resumes_exactly(
    server: Server, workers: Workers, tmp_path: Path, how: signal.Signals
) -> None:
    store = str(tmp_path / "checkpoints")
    spec = {
        "name": "stack", "task": "deep_mlp", "task_config": CONFIG,
        "search_space": {
            "eta": 0.3, "gamma": 0.55, "seed": {"type": "categorical", "choices": STACK_SEEDS},
        },
        "n_trials": 3,
        "sampler": {"type": "grid", "seed": 0}, "pruner": {"type": "none"},
        "checkpoint_every": 1, "max_retries": 2,
    }  # fmt: skip
    server.submit(spec)
    first = workers.start("--checkpoints", store, "--batch", "3", heartbeat=0.5)
    stop_at = random.Random(int(how)).randint(3, 20)

    def epochs() -> int:
        trials = server.trials("stack")
        return min((len(t["intermediate_values"]) for t in trials), default=0)

    server.wait_for(lambda: len(server.trials("stack")) == 3 and epochs() >= stop_at,
                    timeout=120, what=f"epoch {stop_at}")  # fmt: skip
    first.send_signal(how)
    first.wait(timeout=60)
    workers.start("--checkpoints", store, "--batch", "3", "--exit-when-idle")
    server.wait_for(
        lambda: server.study("stack")["status"] == "completed", timeout=180, what="the retries"
    )
    trials = server.trials("stack")
    assert [t["state"] for t in trials] == ["FAIL"] * 3 + ["COMPLETE"] * 3, trials
    first_seeds = [t["params"]["seed"] for t in trials[:3]]  # the lost stack's order
    reference = _stack_reference(first_seeds)
    retries = [server.client.get(f"/api/v1/studies/stack/trials/{n}").json() for n in (3, 4, 5)]
    assert sorted(r["retry_of"] for r in retries) == [0, 1, 2]
    # Saved at one epoch end (SIGTERM always: the stack decides to stop once per epoch;
    # SIGKILL unless it fell between two members' saves), the members resume as one stack
    # and continue bit for bit.
    resumed = {r["resumed_from_epoch"] for r in retries}
    assert min(resumed) >= stop_at - 1
    if how == signal.SIGTERM:
        assert len(resumed) == 1, resumed
    for retry in retries:
        result, points = reference[retry["retry_of"]]
        assert [p["epoch"] for p in retry["curve"]] == list(range(1, CONFIG["epochs"] + 1))
        if len(resumed) == 1:
            assert _without_times(retry["curve"], RATIOS) == _without_times(points, RATIOS)
            ratios = [p["noise_grad_ratio"] for p in retry["curve"]]
            assert ratios == pytest.approx([p["noise_grad_ratio"] for p in points], rel=1e-5)
            assert {k: retry["metrics"][k] for k in result} == result
        else:  # SIGKILL between two members' saves: two stacks, products batched differently
            assert retry["metrics"]["val_loss"] == pytest.approx(result["val_loss"], rel=1e-3)
    assert not list(Path(store).rglob("*.pt"))
