"""Faults with real processes on PostgreSQL: big fleets, killed workers, a database restart."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from search_spaces.storage import migrate
from tests.e2e.conftest import Server, Workers, free_port, quadratic_spec, start_server
from tests.e2e.private_postgres import PrivatePostgres, available

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
on_postgres = pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)


def _check_budget(trials: list[dict], n_trials: int) -> None:
    numbers = [t["number"] for t in trials]
    assert len(numbers) == len(set(numbers)), "duplicated trial numbers"
    results = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]
    assert len(results) == n_trials
    assert not [t for t in trials if t["state"] in ("RUNNING", "WAITING")]


@on_postgres
def test_sixteen_workers_on_one_study(server: Server, workers: Workers) -> None:
    server.submit(quadratic_spec("fleet", 60, epochs=1))
    for _ in range(16):
        workers.start("--exit-when-idle")
    assert workers.wait_all(timeout=240) == [0] * 16, workers.logs()
    trials = server.trials("fleet")
    _check_budget(trials, 60)
    assert len(trials) == 60
    assert server.study("fleet")["status"] == "completed"


@on_postgres
def test_killed_workers_are_replaced_and_nothing_is_lost(server: Server, workers: Workers) -> None:
    rng = random.Random(0)
    server.submit(quadratic_spec("chaos", 30, epochs=4, sleep_s=0.15))
    fleet = [workers.start("--exit-when-idle", heartbeat=0.5) for _ in range(8)]
    server.wait_for(lambda: len(server.trials("chaos")) >= 8, what="the fleet to start")
    for victim in rng.sample(fleet, 3):  # a third of the fleet, at random moments
        time.sleep(rng.uniform(0.2, 1.5))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        workers.start("--exit-when-idle")
    server.wait_for(
        lambda: server.study("chaos")["status"] == "completed", timeout=180, what="completion"
    )
    trials = server.trials("chaos")
    _check_budget(trials, 30)
    lost = [t for t in trials if t["state"] == "FAIL"]
    assert all("lost" in t["fail_reason"] for t in lost)
    # A worker killed between claiming and sampling leaves a trial without parameters:
    # nothing ran, so there is nothing to rerun, and it did not count.
    for t in (t for t in lost if t["params"]):
        # One killed between two suggestions has part of them: its rerun keeps that part.
        reruns = [
            r
            for r in trials
            if r["number"] > t["number"]
            and all(r["params"].get(k) == v for k, v in t["params"].items())
        ]
        assert reruns, f"trial {t['number']} was lost and never rerun: {t}"
    assert Counter(t["state"] for t in trials)["COMPLETE"] == 30


@pytest.mark.skipif(not available(), reason="PostgreSQL server binaries are not installed")
def test_postgres_restart_mid_study(tmp_path: Path) -> None:
    pg = PrivatePostgres(free_port())
    pg.init()
    pg.start()
    migrate(pg.url)  # a new PostgreSQL database is migrated by hand, as in production
    srv = start_server(pg.url, tmp_path)
    pool = Workers(pg.url, tmp_path)
    try:
        srv.submit(quadratic_spec("restart", 16, epochs=4, sleep_s=0.2))
        for _ in range(2):
            pool.start("--exit-when-idle", heartbeat=1.0)
        srv.wait_for(lambda: srv.study("restart")["progress"]["finished"] >= 3, what="progress")
        pg.restart(down_for=3.0)
        assert pool.wait_all(timeout=180) == [0, 0], pool.logs()
        trials = srv.trials("restart")  # the server rode through the restart as well
        _check_budget(trials, 16)
        assert srv.client.get("/healthz").status_code == 200
        assert "database unavailable" in pool.logs()
    finally:
        pool.stop_all()
        srv.close()
        pg.destroy()
