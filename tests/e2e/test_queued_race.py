"""Parameter sets queued by hand, raced for by real worker processes on both backends."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from search_spaces import StudySpec
from service.queued_trials import enqueue
from service.schemas import QueuedTrialCreate
from service.studies import create_study
from service.trials import list_trials
from tests.e2e.conftest import Workers, quadratic_spec

pytestmark = pytest.mark.slow


def test_four_workers_run_each_of_twenty_queued_sets_exactly_once(
    storage: Any, workers: Workers
) -> None:
    create_study(storage, StudySpec.model_validate(quadratic_spec("queued", 20, epochs=1)))
    sets = [{"eta": [0.01, 0.3, 1.0][i % 3], "gamma": 0.3 + i / 40} for i in range(20)]
    queued = enqueue(storage, "queued", [QueuedTrialCreate(params=p) for p in sets])
    assert [q.params for q in queued.data] == sets
    for _ in range(4):
        workers.start("--exit-when-idle")
    assert workers.wait_all() == [0, 0, 0, 0], workers.logs()

    trials = list_trials(storage, "queued", limit=100).data
    assert len(trials) == 20, [(t.number, t.state, t.fail_reason) for t in trials]
    assert all(t.state == "COMPLETE" and t.queued and t.attempt == 0 for t in trials)
    ran = Counter((t.params["eta"], t.params["gamma"]) for t in trials)
    assert ran == Counter((p["eta"], p["gamma"]) for p in sets)  # each set once, no other
    assert len({t.worker for t in trials}) > 1, "the workers did not race"
