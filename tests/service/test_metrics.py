"""``GET /metrics`` against real databases: what Prometheus would read, parsed as it would.

Trials are claimed and finished with the worker's own functions, so `claim_seconds` comes
from the code path that records it in production.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from search_spaces.tables import trial_runs_table, workers_table
from service.auth import create_token
from service.metrics import CLAIM_BUCKETS, MetricsCache
from worker.claims import claim_trial, fail_and_maybe_retry, finish_trial

STUDIES = "/api/v1/studies"


def spec(name: str, n_trials: int = 10) -> dict[str, Any]:
    return {
        "name": name,
        "task": "quadratic",
        "search_space": "paper-gamma",
        "n_trials": n_trials,
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "max_retries": 0,
    }


def scrape(client: Any, **headers: str) -> dict[str, list[Sample]]:
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(answer.text):
        samples.setdefault(family.name, []).extend(family.samples)
    return samples


def value(samples: dict[str, list[Sample]], name: str, family: str = "", **labels: str) -> float:
    """The one sample called `name` (in `family`, default the same name) with these labels."""
    found = [s for s in samples.get(family or name, []) if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples.get(family or name))
    return float(found[0].value)


@pytest.fixture
def client(make_client: Any) -> Iterator[Any]:
    made = make_client()
    # Every scrape reads the database afresh; the cache has a test of its own.
    made.app.state.metrics_cache = MetricsCache(max_age_s=0)
    yield made


def add_worker(engine: sa.Engine, wid: str, device: str, heartbeat_age: float, **row: Any) -> None:
    t = time.time()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(workers_table).values(
                id=wid,
                host="node1",
                pid=1,
                device=device,
                started_at=t - 60,
                heartbeat_at=t - heartbeat_age,
                heartbeat_interval=10.0,
                state=row.pop("state", "alive"),
                **row,
            )
        )


def test_trials_by_state_study_status_and_budget(client: Any, storage: Any) -> None:
    assert client.post(STUDIES, json=spec("busy", n_trials=4)).status_code == 201
    assert client.post(STUDIES, json=spec("halted")).status_code == 201
    assert client.post(STUDIES, json=spec("done", n_trials=1)).status_code == 201
    assert client.post(f"{STUDIES}/halted/stop").status_code == 200

    claims = [claim_trial(storage, "w-1", "node1", "cpu", "busy") for _ in range(4)]
    assert all(c is not None for c in claims)
    finish_trial(claims[0], TrialState.COMPLETE, 0.5)  # type: ignore[arg-type]
    finish_trial(claims[1], TrialState.PRUNED, None)  # type: ignore[arg-type]
    # No retries left: the failure counts in the budget, and is not queued again.
    fail_and_maybe_retry(claims[2], "boom", retry_counts=True)  # type: ignore[arg-type]
    done = claim_trial(storage, "w-1", "node1", "cpu", "done")
    assert done is not None
    finish_trial(done, TrialState.COMPLETE, 0.1)
    optuna.load_study(study_name="halted", storage=storage).enqueue_trial({"eta": 0.3})

    samples = scrape(client)
    expected = {
        "busy": {"COMPLETE": 1, "PRUNED": 1, "FAIL": 1, "RUNNING": 1, "WAITING": 0},
        "halted": {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 1},
        "done": {"COMPLETE": 1, "PRUNED": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 0},
    }
    for study, states in expected.items():
        for state, n in states.items():
            assert value(samples, "noisetune_trials", study=study, state=state) == n
    status = {"busy": "running", "halted": "stopped", "done": "completed"}
    for study, current in status.items():
        for name in ("running", "stopped", "completed"):
            want = 1.0 if name == current else 0.0
            assert value(samples, "noisetune_study_status", study=study, status=name) == want
    assert value(samples, "noisetune_study_budget_trials", study="busy") == 4
    assert value(samples, "noisetune_study_finished_trials", study="busy") == 3
    assert value(samples, "noisetune_study_finished_trials", study="done") == 1


def test_claim_latency_histogram_matches_the_claims(client: Any, storage: Any) -> None:
    assert client.post(STUDIES, json=spec("s1")).status_code == 201
    for _ in range(3):
        claim = claim_trial(storage, "w-1", "node1", "cpu", "s1")
        assert claim is not None
        finish_trial(claim, TrialState.COMPLETE, 1.0)
    with storage.engine.connect() as conn:
        recorded = conn.execute(sa.select(trial_runs_table.c.claim_seconds)).scalars().all()
    assert len(recorded) == 3 and all(s is not None and 0 < s < 60 for s in recorded)

    samples = scrape(client)
    name = "noisetune_claim_seconds"
    assert value(samples, f"{name}_count", name, study="s1") == 3
    assert math.isclose(value(samples, f"{name}_sum", name, study="s1"), sum(recorded))
    buckets = [value(samples, f"{name}_bucket", name, study="s1", le=str(b)) for b in CLAIM_BUCKETS]
    assert buckets == [sum(s <= b for s in recorded) for b in CLAIM_BUCKETS]
    assert value(samples, f"{name}_bucket", name, study="s1", le="+Inf") == 3


def test_claim_buckets_are_cumulative_and_skip_unmeasured_rows(client: Any, storage: Any) -> None:
    assert client.post(STUDIES, json=spec("s1")).status_code == 201
    # Rows as a worker writes them; None is a claim recorded before the column existed.
    seconds = [0.0004, 0.001, 0.003, 0.2, 20.0, None]
    with storage.engine.begin() as conn:
        conn.execute(
            sa.insert(trial_runs_table),
            [
                {"trial_id": 1000 + i, "study_name": "s1", "number": i, "claim_seconds": s}
                for i, s in enumerate(seconds)
            ],
        )
    samples = scrape(client)
    name = "noisetune_claim_seconds"
    le = {
        str(b): value(samples, f"{name}_bucket", name, study="s1", le=str(b))
        for b in (0.001, 0.0025, 0.005, 0.1, 0.25, 10.0)
    }
    # Bucket bounds are inclusive, as Prometheus defines `le`.
    assert le == {"0.001": 2, "0.0025": 2, "0.005": 3, "0.1": 3, "0.25": 4, "10.0": 4}
    assert value(samples, f"{name}_bucket", name, study="s1", le="+Inf") == 5
    assert value(samples, f"{name}_count", name, study="s1") == 5
    assert math.isclose(value(samples, f"{name}_sum", name, study="s1"), 20.2044)


def test_live_workers_by_device(client: Any, storage: Any) -> None:
    samples = scrape(client)
    assert value(samples, "noisetune_workers_live") == 0
    assert samples.get("noisetune_workers_live_by_device", []) == []

    engine = storage.engine
    add_worker(engine, "gpu-a", "cuda:0", 1, trial_id=7, trial_number=3, study_name="s1")
    add_worker(engine, "gpu-b", "cuda:0", 2)
    add_worker(engine, "cpu-a", "cpu", 3)
    add_worker(engine, "stale", "cpu", 25)  # missed two of its 10 s heartbeats
    add_worker(engine, "gone", "cuda:1", 1, state="exited")
    add_worker(engine, "lost", "cuda:1", 1, state="lost")
    samples = scrape(client)
    assert value(samples, "noisetune_workers_live") == 3
    assert value(samples, "noisetune_workers_live_by_device", device="cuda:0") == 2
    assert value(samples, "noisetune_workers_live_by_device", device="cpu") == 1
    assert value(samples, "noisetune_workers_busy_by_device", device="cuda:0") == 1
    assert value(samples, "noisetune_workers_busy_by_device", device="cpu") == 0
    devices = {s.labels["device"] for s in samples["noisetune_workers_live_by_device"]}
    assert devices == {"cuda:0", "cpu"}


def test_scrapes_within_the_cache_age_share_one_reading(make_client: Any) -> None:
    client = make_client()
    clock = [100.0]
    client.app.state.metrics_cache = MetricsCache(max_age_s=2.0, clock=lambda: clock[0])
    assert "noisetune_trials" not in {s.name for f in scrape(client).values() for s in f}
    assert client.post(STUDIES, json=spec("s1")).status_code == 201
    clock[0] += 1.9
    assert "noisetune_trials" not in {s.name for f in scrape(client).values() for s in f}
    clock[0] += 0.2
    assert value(scrape(client), "noisetune_trials", study="s1", state="COMPLETE") == 0


def test_openmetrics_on_request(client: Any) -> None:
    assert client.post(STUDIES, json=spec("s1")).status_code == 201
    answer = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in openmetrics_families(answer.text)}
    assert families["noisetune_claim_seconds"].type == "histogram"
    assert families["noisetune_trials"].type == "gauge"


def test_metrics_need_a_token_only_where_reads_do(make_client: Any, storage: Any) -> None:
    assert make_client().get("/metrics").status_code == 200
    # Writes need tokens once one exists; reads stay open unless configured otherwise.
    create_token(storage.engine, "write")
    assert make_client().get("/metrics").status_code == 200
    guarded = make_client(read_requires_token=True)
    assert guarded.get("/metrics").status_code == 401
    token = create_token(storage.engine, "read")
    answer = guarded.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
