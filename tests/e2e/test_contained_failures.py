"""A study whose trainer cannot be imported, served by real worker processes.

Each trial fails with the exception's type and message, the study is stopped as failed
after three in a row, and the same workers then complete another study.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import ROOT, Server, Workers, _env, quadratic_spec

pytestmark = pytest.mark.slow


def test_a_broken_trainer_fails_its_study_and_the_fleet_goes_on(
    server: Server, workers: Workers, storage_url: str
) -> None:
    fleet = [workers.start(), workers.start()]
    broken = {**quadratic_spec("broken", 20), "task": "broken_import", "max_retries": 2}
    server.submit(broken)
    server.wait_for(
        lambda: server.study("broken")["status"] == "failed", timeout=60, what="the study to fail"
    )
    study = server.study("broken")
    assert "3 trials in a row" in study["fail_reason"]
    assert "noisetune_missing_dependency" in study["fail_reason"]
    time.sleep(1.5)  # workers poll every second: none may claim the failed study again
    trials = server.trials("broken")
    failed = [t for t in trials if t["state"] == "FAIL"]
    # Two workers may each have had one in flight when the third failure landed.
    assert 3 <= len(failed) <= 4
    assert {t["state"] for t in trials} <= {"FAIL", "WAITING"}  # retries wait for a resume
    for t in failed:
        assert t["fail_reason"].startswith("TrainerImportError: ")
        assert "No module named 'noisetune_missing_dependency'" in t["fail_reason"]

    shown = subprocess.run(
        [sys.executable, "-m", "service", "status", "broken", "--storage", storage_url],
        capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "failed" in shown.stdout and "3 trials in a row" in shown.stdout

    server.submit(quadratic_spec("after", 4))
    server.wait_for(
        lambda: server.study("after")["status"] == "completed", timeout=60, what="the next study"
    )
    assert all(p.poll() is None for p in fleet), workers.logs()
    assert len(server.trials("broken")) == len(trials)  # still nothing new claimed

    resumed = server.client.post("/api/v1/studies/broken/resume")
    assert resumed.status_code == 200
    assert resumed.json()["status"] == "running" and resumed.json()["fail_reason"] is None
    # Nothing has changed, so it fails again: after three more of its own.
    server.wait_for(
        lambda: server.study("broken")["status"] == "failed", timeout=60, what="a second failure"
    )
    # Three more failures, counted as trials that failed (a queued retry of the first round
    # may be one of them, without a new trial of its own).
    failed_now = [t for t in server.trials("broken") if t["state"] == "FAIL"]
    assert len(failed_now) >= len(failed) + 3
