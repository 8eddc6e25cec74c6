"""PATCH /studies/NAME: budget, priority, retries and notes, on SQLite and PostgreSQL.

Workers are real claims (worker.claims) against the same database: a change must reach
them, not only the answer.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

from search_spaces.study_rows import get_study_row
from search_spaces.tables import MAX_NOTES_BYTES
from worker.claims import caches, claim_trial, finish_trial, servable_studies, suggest_all

STUDIES = "/api/v1/studies"


def spec(name: str = "s", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "task": "quadratic",
        "task_config": {"epochs": 1},
        "search_space": "paper-gamma",
        "n_trials": 2,
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        **extra,
    }


def run_one(worker_storage: Any, name: str) -> Any:
    """Claim a trial of `name` as a worker would, and finish it; None if none was served."""
    caches.candidates.clear()  # a worker's list of candidates lives a second
    claim = claim_trial(worker_storage, "w", "h", "cpu", name)
    if claim is None:
        return None
    suggest_all(claim.trial, claim.spec)
    finish_trial(claim, TrialState.COMPLETE, 0.5, metrics={"loss": 0.5})
    return claim


def test_growing_a_completed_study_runs_it_again_and_shrinking_stops_at_the_count(
    make_client: Any, worker_storage: Any
) -> None:
    client = make_client()
    assert client.post(STUDIES, json=spec()).status_code == 201
    assert run_one(worker_storage, "s") and run_one(worker_storage, "s")
    assert client.get(f"{STUDIES}/s").json()["status"] == "completed"
    assert run_one(worker_storage, "s") is None

    grown = client.patch(f"{STUDIES}/s", json={"n_trials": 3})
    assert grown.status_code == 200, grown.text
    study = grown.json()
    assert study["status"] == "running" and study["n_trials"] == 3
    assert study["spec"]["n_trials"] == 3  # the stored spec follows
    assert run_one(worker_storage, "s") is not None  # workers pick it up
    assert client.get(f"{STUDIES}/s").json()["status"] == "completed"

    refused = client.patch(f"{STUDIES}/s", json={"n_trials": 2})
    assert refused.status_code == 409
    assert "below the 3 trials this study has already counted" in refused.json()["detail"]
    assert client.get(f"{STUDIES}/s").json()["n_trials"] == 3  # nothing changed
    assert client.patch(f"{STUDIES}/s", json={"n_trials": 3}).status_code == 200


def test_a_stopped_or_failed_study_is_changed_and_runs_once_resumed(
    make_client: Any, worker_storage: Any
) -> None:
    client = make_client()
    client.post(STUDIES, json=spec())
    client.post(f"{STUDIES}/s/stop")
    study = client.patch(f"{STUDIES}/s", json={"n_trials": 4, "priority": 7}).json()
    assert study["status"] == "stopped" and study["n_trials"] == 4 and study["priority"] == 7
    assert run_one(worker_storage, "s") is None
    assert client.post(f"{STUDIES}/s/resume").json()["status"] == "running"
    assert run_one(worker_storage, "s") is not None


def test_max_retries_and_priority_reach_the_workers(make_client: Any, worker_storage: Any) -> None:
    client = make_client()
    client.post(STUDIES, json=spec("low", n_trials=5, max_retries=2))
    client.post(STUDIES, json=spec("high", n_trials=5, priority=1))
    first = run_one(worker_storage, "low")
    assert first.spec.max_retries == 2
    client.patch(f"{STUDIES}/low", json={"max_retries": 0, "priority": 5})
    # The same worker process, its spec of the study cached: the change still reaches it.
    again = run_one(worker_storage, "low")
    assert again.spec.max_retries == 0
    assert [s.name for s in servable_studies(worker_storage.engine, None)] == ["low", "high"]
    stored = optuna.load_study(study_name="low", storage=worker_storage).user_attrs
    assert stored["noisetune_spec"]["max_retries"] == 0
    assert stored["noisetune_spec"]["priority"] == 5


def test_refusals_name_the_field(make_client: Any) -> None:
    client = make_client()
    client.post(STUDIES, json=spec())
    cases: list[tuple[Any, str]] = [
        ({}, "nothing to change"),
        ({"n_trials": 0}, "n_trials"),
        ({"max_retries": 11}, "max_retries"),
        ({"priority": 2**31}, "priority"),
        ({"status": "running"}, "status"),
        ({"notes": "é" * (MAX_NOTES_BYTES // 2 + 1)}, "notes: at most 65536 bytes"),
        ('{"notes": "a\\ud800"}', "no lone surrogates"),  # JSON text: httpx cannot send it
        ({"notes": "a\x00b"}, "NUL"),
    ]
    for body, says in cases:
        if isinstance(body, str):
            json_text = {"content": body, "headers": {"content-type": "application/json"}}
            answer = client.patch(f"{STUDIES}/s", **json_text)
        else:
            answer = client.patch(f"{STUDIES}/s", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert says in answer.text, (body, answer.text)
    assert client.patch(f"{STUDIES}/nope", json={"priority": 1}).status_code == 404


NOTES = """# Why this study

Runs **eta** near 0.3 after [the pilot](https://example.org/pilot).

<script>alert("x")</script> <img src=x onerror="alert(1)">
[click](javascript:alert(1))
"""


def test_notes_are_kept_and_rendered_safely_on_the_study_page(
    make_client: Any, storage: Any
) -> None:
    client = make_client()
    client.post(STUDIES, json=spec())
    assert 'id="notes"' not in client.get("/studies/s").text
    longest = "a" * MAX_NOTES_BYTES
    assert client.patch(f"{STUDIES}/s", json={"notes": longest}).status_code == 200
    study = client.patch(f"{STUDIES}/s", json={"notes": NOTES}).json()
    assert study["notes"] == NOTES and get_study_row(storage.engine, "s").notes == NOTES
    page = client.get("/studies/s").text
    notes = page[page.index('id="notes"') : page.index('id="progress-card"')]
    assert "<h1>Why this study</h1>" in notes and "<strong>eta</strong>" in notes
    assert '<a href="https://example.org/pilot" rel="nofollow noopener">the pilot</a>' in notes
    assert "<script" not in notes and "<img" not in notes and 'href="javascript' not in notes
    assert "&lt;script&gt;alert" in notes
    # Other fields leave the notes alone; an empty text clears them.
    assert client.patch(f"{STUDIES}/s", json={"priority": 2}).json()["notes"] == NOTES
    assert client.patch(f"{STUDIES}/s", json={"notes": ""}).json()["notes"] is None
    assert 'id="notes"' not in client.get("/studies/s").text
