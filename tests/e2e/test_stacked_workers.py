"""End to end: workers with --batch train deep_mlp trials as stacks and record each one alone."""

from __future__ import annotations

import math
import signal
import threading
from collections import Counter
from typing import Any

import optuna
import pytest
import torch

from search_spaces import StudySpec
from search_spaces.study_rows import register_study
from tests.e2e.conftest import Server, Workers, quadratic_spec
from worker.claims import claim_trials
from worker.stack_run import load_stacked_trainer, plan_stacks, run_claimed_stacks
from worker.tasks import deep_mlp

pytestmark = pytest.mark.slow
# Worker processes are slow to start; the claims they depend on are tested on every backend
# in process, so the process tests run on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)

TINY = {"depth": 4, "width": 16, "epochs": 3}


def mlp_spec(name: str, n_trials: int, **config: Any) -> dict[str, Any]:
    return {
        "name": name,
        "task": "deep_mlp",
        "task_config": {**TINY, **config},
        "search_space": "paper-gamma",
        "n_trials": n_trials,
        "sampler": {"type": "random", "seed": 3},
        "pruner": {"type": "none"},
    }


def stored_trials(storage_url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage_url).get_trials(deepcopy=False)


def test_claims_stay_in_budget_and_stack_by_architecture(
    storage: optuna.storages.RDBStorage,
) -> None:
    spec = mlp_spec("grouped", 5, epochs=2)
    spec["search_space"] = {"eta": 0.3, "width": {"type": "categorical", "choices": [8, 16]}}
    register_study(storage, StudySpec.model_validate(spec))
    register_study(storage, StudySpec.model_validate(quadratic_spec("cheap", 4)))
    claims = claim_trials(storage, "w", "host", "cpu", "grouped", 8)
    assert [c.trial.number for c in claims] == [0, 1, 2, 3, 4]  # the budget, not k
    assert claim_trials(storage, "w", "host", "cpu", "grouped", 8) == []
    stacked = load_stacked_trainer(claims[0].spec)
    assert stacked is not None
    groups = plan_stacks(claims, stacked[1])
    widths = Counter(c.trial.params["width"] for c in claims)
    assert len(widths) == 2, "the seeded sampler draws both widths"
    assert sorted(len(g) for g in groups) == sorted(widths.values())
    assert all(len({c.trial.params["width"] for c in g}) == 1 for g in groups)
    threads = torch.get_num_threads()
    try:
        run_claimed_stacks(claims, "cpu", threading.Event())  # one torch thread, as workers use
    finally:
        torch.set_num_threads(threads)
    trials = optuna.load_study(study_name="grouped", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    assert all(t.user_attrs["metrics"]["epochs"] == 2 for t in trials)
    # Quadratic trials cannot be stacked: a stacking worker claims one, leaving the rest to others.
    assert len(claim_trials(storage, "w", "host", "cpu", "cheap", 4)) == 1


def test_pruned_and_diverged_members_are_recorded_as_lone_trials(
    storage: optuna.storages.RDBStorage,
) -> None:
    spec = mlp_spec("pruned", 8, epochs=4)
    spec["search_space"] = {"eta": {"type": "categorical", "choices": [0.01, 0.3, 1.0, 1e6]}}
    spec["pruner"] = {"type": "median", "options": {"n_startup_trials": 0, "n_warmup_steps": 0}}
    register_study(storage, StudySpec.model_validate(spec))
    threads = torch.get_num_threads()
    try:
        # The median pruner compares with finished trials: a first stack gives it some.
        for k in (3, 5):
            claims = claim_trials(storage, "w", "host", "cpu", "pruned", k)
            run_claimed_stacks(claims, "cpu", threading.Event())
    finally:
        torch.set_num_threads(threads)
    trials = optuna.load_study(study_name="pruned", storage=storage).get_trials()
    states = Counter(t.user_attrs.get("fail_reason") or t.state.name for t in trials)
    assert set(states) == {"COMPLETE", "PRUNED", "diverged"}, states
    pruned_early = [
        t for t in trials if t.state.name == "PRUNED" and len(t.intermediate_values) < 4
    ]
    assert pruned_early, "a member pruned mid-run left the stack while the others went on"
    for t in trials:
        curve, metrics = t.user_attrs["curve"], t.user_attrs["metrics"]
        finite = [p["epoch"] for p in curve if p["val_accuracy"] is not None]
        assert sorted(t.intermediate_values) == finite
        if t.state.name == "PRUNED":
            assert metrics == curve[-1]  # a pruned trial keeps its last point, as alone
        elif t.state.name == "COMPLETE":
            assert len(curve) == 4 and metrics["epochs"] == 4
        else:
            assert t.params["eta"] == 1e6 and metrics["diverged"] and len(curve) == 1


@SQLITE_ONLY
def test_batched_worker_records_every_member_as_its_own_trial(
    server: Server, workers: Workers, storage_url: str
) -> None:
    server.submit(mlp_spec("stacked", 6))
    workers.start("--exit-when-idle", "--batch", "4")
    assert workers.wait_all() == [0], workers.logs()
    assert "as one stack of 4" in workers.logs() and "as one stack of 2" in workers.logs()
    trials = server.trials("stacked")
    assert len(trials) == 6 and all(t["state"] == "COMPLETE" for t in trials)
    assert server.study("stacked")["status"] == "completed"
    for t in trials:
        assert sorted(int(epoch) for epoch in t["intermediate_values"]) == [1, 2, 3]
        assert t["metrics"]["epochs"] == 3 and t["value"] == t["metrics"]["val_accuracy"]
    for frozen in stored_trials(storage_url, "stacked"):
        curve = frozen.user_attrs["curve"]
        assert [p["epoch"] for p in curve] == [1, 2, 3]
        assert {p["epoch"]: p["val_accuracy"] for p in curve} == frozen.intermediate_values
        # Members share seed 0, hence data order: each equals its own lone run.
        alone = deep_mlp.train(TINY, eta=frozen.params["eta"], gamma=frozen.params["gamma"])
        metrics = frozen.user_attrs["metrics"]
        assert metrics["val_accuracy"] == alone["val_accuracy"]
        assert math.isclose(metrics["val_loss"], alone["val_loss"], rel_tol=1e-6)
        assert math.isclose(metrics["train_loss"], alone["train_loss"], rel_tol=1e-6)


@SQLITE_ONLY
def test_sigkill_of_a_batched_worker_reruns_all_its_trials(
    server: Server, workers: Workers, storage_url: str
) -> None:
    # Long enough that the kill lands mid-training: a stack of this tiny net finishes 30
    # epochs within a poll or two of the server.
    server.submit(mlp_spec("killed", 3, epochs=300))
    victim = workers.start("--batch", "3", heartbeat=0.5)
    server.wait_for(
        lambda: (
            sum(t["state"] == "RUNNING" for t in server.trials("killed")) == 3
            and all(t["intermediate_values"] for t in server.trials("killed"))
        ),
        what="a stack of three trials to train",
    )
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = server.trials("killed")
    workers.start("--exit-when-idle", "--batch", "3")
    assert workers.wait_all()[1] == 0, workers.logs()
    trials = server.trials("killed")
    lost = [t for t in trials if t["number"] in {k["number"] for k in killed}]
    assert len(lost) == 3 and all(t["state"] == "FAIL" and "lost" in t["fail_reason"] for t in lost)
    reruns = [t for t in trials if t["state"] == "COMPLETE"]
    assert sorted(t["attempt"] for t in reruns) == [1, 1, 1]
    assert sorted(str(t["params"]) for t in reruns) == sorted(str(t["params"]) for t in killed)
    assert all(len(t["intermediate_values"]) == 300 for t in reruns)
    assert server.study("killed")["status"] == "completed"
