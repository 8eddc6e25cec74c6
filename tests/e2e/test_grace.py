"""SIGTERM's grace: a worker whose trainer does not end its epoch in time still exits."""

from __future__ import annotations

import signal
import time

import pytest

from tests.e2e.conftest import Server, Workers, quadratic_spec

pytestmark = pytest.mark.slow


def test_sigterm_interrupts_a_long_epoch_after_the_grace(server: Server, workers: Workers) -> None:
    worker = workers.start("--grace", "1")
    server.submit({**quadratic_spec("long", 1), "task": "spins", "max_retries": 0})
    # The trial is RUNNING from its claim on; wait until its trainer spins, or SIGTERM could
    # land before training starts (then the trial is queued again with no grace needed).
    server.wait_for(lambda: "spinning" in workers.logs(), timeout=30, what="the trainer")
    signalled = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, workers.logs()
    assert time.monotonic() - signalled < 15  # the grace (1 s) plus recording, not the epoch
    trials = server.trials("long")
    # Interrupted, not the trial's fault: queued again whatever max_retries says.
    assert [t["state"] for t in trials] == ["FAIL", "WAITING"]
    assert trials[0]["fail_reason"] == "interrupted: worker stopped"
    assert "the epoch did not end within 1s" in workers.logs()
