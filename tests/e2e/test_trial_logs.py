"""A trial's log, its full record and its epoch times, from real worker processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.conftest import ROOT, Server, Workers, _env, quadratic_spec

pytestmark = pytest.mark.slow


def test_a_crashing_trainer_leaves_its_output_and_traceback(
    server: Server, workers: Workers, storage_url: str
) -> None:
    workers.start()
    crash = {**quadratic_spec("crash", 1), "task": "prints_then_raises", "max_retries": 0}
    server.submit(crash)
    server.submit(quadratic_spec("fine", 2))
    server.wait_for(
        lambda: server.study("crash")["counts"]["FAIL"] == 1, timeout=60, what="the crash"
    )
    log = server.client.get("/api/v1/studies/crash/trials/0/log")
    assert log.status_code == 200 and log.headers["content-type"].startswith("text/plain")
    text = log.text
    for line in (
        "loading the data: 1797 images",
        "a warning on stderr",
        "WARNING my_trainer: learning rate looks large",
        "Traceback (most recent call last):",
        "ValueError: the loss went negative at step 3",
    ):
        assert line in text, text
    assert text.index("loading the data") < text.index("Traceback")  # the traceback last
    record = server.client.get("/api/v1/studies/crash/trials/0").json()
    assert record["fail_reason"] == "ValueError: the loss went negative at step 3"  # one line
    assert [p["epoch"] for p in record["curve"]] == [1]
    assert record["retry_of"] is None and record["resumed_from_epoch"] is None

    shown = subprocess.run(
        [sys.executable, "-m", "service", "logs", "crash", "0", "--storage", storage_url],
        capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0 and shown.stdout == text, shown.stderr

    server.wait_for(
        lambda: server.study("fine")["status"] == "completed", timeout=60, what="the next study"
    )
    fine = server.client.get("/api/v1/studies/fine/trials/0").json()
    assert [p["epoch"] for p in fine["curve"]] == [1, 2, 3]
    assert all(p["epoch_s"] >= 0 and p["steps"] == p["epoch"] for p in fine["curve"])
    assert server.client.get("/api/v1/studies/fine/trials/0/log").text == ""  # printed nothing
    assert server.client.get("/api/v1/studies/fine/trials/9").status_code == 404
    page = server.client.get("/studies/crash/trials/0").text
    assert "ValueError: the loss went negative at step 3" in page and 'id="trial-log"' in page


def test_a_trainer_that_stops_reporting_is_stopped_at_its_timeout(
    server: Server, workers: Workers
) -> None:
    worker = workers.start()
    stuck = {**quadratic_spec("stuck", 1), "task": "spins", "trial_timeout_s": 1.0}
    server.submit(stuck)
    server.wait_for(
        lambda: server.study("stuck")["counts"]["FAIL"] == 1, timeout=30, what="the timeout"
    )
    [trial] = server.trials("stuck")
    assert trial["fail_reason"] == "timeout after 1 s" and trial["duration_s"] < 10
    assert server.study("stuck")["status"] == "completed"  # counted, not retried
    server.submit(quadratic_spec("next", 2))
    server.wait_for(
        lambda: server.study("next")["status"] == "completed", timeout=60, what="the next study"
    )
    assert worker.poll() is None, workers.logs()
