"""End to end: a real server, real worker processes, a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from tests.e2e.conftest import Server, Workers, quadratic_spec

pytestmark = pytest.mark.slow

RESULT_STATES = {"COMPLETE", "PRUNED"}


def _results(trials: list[dict]) -> list[dict]:
    """Trials with a result of their own: complete, pruned, or diverged."""
    return [t for t in trials if t["state"] in RESULT_STATES or t["fail_reason"] == "diverged"]


def _training(server: Server, name: str) -> dict:
    """A trial that is training: RUNNING, parameters sampled, first epoch reported."""
    found: list[dict] = []

    def check() -> bool:
        found[:] = [
            t
            for t in server.trials(name)
            if t["state"] == "RUNNING" and len(t["params"]) == 2 and t["intermediate_values"]
        ]
        return bool(found)

    server.wait_for(check, what="a trial to train")
    return found[0]


def test_study_runs_to_completion_with_exactly_n_trials(server: Server, workers: Workers) -> None:
    server.submit(quadratic_spec("complete", 6))
    for _ in range(2):
        workers.start("--exit-when-idle")
    assert workers.wait_all() == [0, 0], workers.logs()
    study = server.study("complete")
    assert study["status"] == "completed"
    trials = server.trials("complete")
    assert len(_results(trials)) == 6
    assert all(t["state"] == "COMPLETE" for t in trials)
    assert {t["device"] for t in trials} == {"cpu"}
    assert all(t["worker"] and t["metrics"]["loss"] == t["value"] for t in trials)
    assert study["best_trial"]["value"] == min(t["value"] for t in trials)


def test_racing_workers_never_overshoot(server: Server, workers: Workers) -> None:
    server.submit(quadratic_spec("race", 5, sleep_s=0.05))
    for _ in range(4):
        workers.start("--exit-when-idle")
    assert workers.wait_all() == [0, 0, 0, 0], workers.logs()
    trials = server.trials("race")
    assert len(trials) == 5, [(t["number"], t["state"], t["fail_reason"]) for t in trials]
    assert sorted(t["number"] for t in trials) == list(range(5))
    assert Counter(t["worker"] for t in trials).total() == 5


def test_sigkill_mid_trial_loses_nothing(server: Server, workers: Workers) -> None:
    server.submit(quadratic_spec("kill", 3, epochs=12, sleep_s=0.25))
    victim = workers.start(heartbeat=0.5)
    killed = _training(server, "kill")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    workers.start("--exit-when-idle")
    assert workers.wait_all()[1] == 0, workers.logs()
    trials = server.trials("kill")
    lost = next(t for t in trials if t["number"] == killed["number"])
    assert lost["state"] == "FAIL"
    assert "lost" in lost["fail_reason"]
    rerun = [t for t in trials if t["params"] == killed["params"] and t["state"] == "COMPLETE"]
    assert len(rerun) == 1 and rerun[0]["attempt"] == 1
    assert len(_results(trials)) == 3
    assert server.study("kill")["status"] == "completed"


def test_sigterm_requeues_the_trial_and_exits_zero(server: Server, workers: Workers) -> None:
    server.submit(quadratic_spec("term", 1, epochs=40, sleep_s=0.25))
    proc = workers.start()
    running = _training(server, "term")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, workers.logs()
    trials = {t["number"]: t for t in server.trials("term")}
    assert trials[running["number"]]["state"] == "FAIL"
    assert trials[running["number"]]["fail_reason"].startswith("interrupted")
    waiting = [t for t in trials.values() if t["state"] == "WAITING"]
    assert len(waiting) == 1 and waiting[0]["params"] == running["params"]
    assert server.study("term")["status"] == "running"


def test_diverged_trials_count_and_are_not_retried(server: Server, workers: Workers) -> None:
    spec = quadratic_spec("diverge", 6, diverge_eta=0.5)
    spec["search_space"] = {"eta": {"type": "categorical", "choices": [0.01, 1.0]}}
    server.submit(spec)
    workers.start("--exit-when-idle")
    assert workers.wait_all() == [0], workers.logs()
    trials = server.trials("diverge")
    assert len(trials) == 6, "diverged trials count in the budget and are not retried"
    diverged = [t for t in trials if t["state"] == "FAIL"]
    assert diverged and all(t["fail_reason"] == "diverged" for t in diverged)
    assert all(t["params"]["eta"] == 1.0 for t in diverged)
    assert server.study("diverge")["status"] == "completed"


def test_stopped_study_gets_no_new_trials(server: Server, workers: Workers) -> None:
    server.submit(quadratic_spec("stopped", 50, epochs=2, sleep_s=0.1))
    workers.start()
    server.wait_for(lambda: len(server.trials("stopped")) >= 2, what="two trials")
    assert server.client.post("/api/v1/studies/stopped/stop").status_code == 200
    server.wait_for(
        lambda: not any(t["state"] == "RUNNING" for t in server.trials("stopped")),
        what="the running trial to finish",
    )
    before = len(server.trials("stopped"))
    second = workers.start("--exit-when-idle")
    assert second.wait(timeout=30) == 0, "a stopped study leaves nothing to serve"
    assert len(server.trials("stopped")) == before
    assert server.study("stopped")["status"] == "stopped"


def test_seeded_study_is_reproducible_with_one_worker(server: Server, workers: Workers) -> None:
    for name in ("seeded-a", "seeded-b"):
        spec = quadratic_spec(name, 6)
        spec["sampler"] = {"type": "tpe", "seed": 7, "options": {"n_startup_trials": 3}}
        server.submit(spec)
        workers.start("--exit-when-idle", "--study", name)
        workers.wait_all()
    params = [[t["params"] for t in server.trials(n)] for n in ("seeded-a", "seeded-b")]
    assert params[0] == params[1]
    assert len({tuple(sorted(p.items())) for p in params[0]}) == 6


def test_max_trials_limits_one_worker(server: Server, workers: Workers) -> None:
    server.submit(quadratic_spec("limited", 10))
    assert workers.start("--max-trials", "2").wait(timeout=60) == 0
    assert len(server.trials("limited")) == 2
