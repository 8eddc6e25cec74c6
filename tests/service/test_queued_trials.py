"""POST /studies/NAME/trials: parameter sets queued by hand, on SQLite and PostgreSQL.

The race of many worker processes for queued sets is in tests/e2e/test_queued_race.py.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState

from worker.claims import caches, claim_trial, fail_and_maybe_retry, finish_trial, suggest_all

STUDIES = "/api/v1/studies"
SPACE = {
    "schedule": {"type": "categorical", "choices": ["polynomial", "exponential"]},
    "half_life": {"type": "float", "low": 10, "high": 1000, "when": {"schedule": ["exponential"]}},
    "eta": {"type": "categorical", "choices": [0.01, 0.3, 1.0]},
    "gamma": {"type": "float", "low": 0.3, "high": 1.0},
    "epochs": 1,
}


def make(client: Any, n_trials: int = 3) -> None:
    spec = {
        "name": "q",
        "task": "quadratic",
        "search_space": SPACE,
        "n_trials": n_trials,
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
    }
    assert client.post(STUDIES, json=spec).status_code == 201


def claim(worker_storage: Any) -> Any:
    caches.candidates.clear()
    got = claim_trial(worker_storage, "w", "h", "cpu", "q")
    assert got is not None
    suggest_all(got.trial, got.spec)
    return got


def test_a_queued_set_runs_with_its_values_the_rest_sampled_and_is_marked(
    make_client: Any, worker_storage: Any
) -> None:
    client = make_client()
    make(client)
    answer = client.post(f"{STUDIES}/q/trials", json={"params": {"eta": 1, "gamma": 0.55}})
    assert answer.status_code == 201, answer.text
    queued = {"number": 0, "params": {"eta": 1.0, "gamma": 0.55}}
    assert answer.json() == {"data": [queued], "count": 1}
    waiting = client.get(f"{STUDIES}/q/trials").json()["data"]
    assert [(t["state"], t["queued"], t["params"]) for t in waiting] == [
        ("WAITING", True, {"eta": 1.0, "gamma": 0.55})
    ]
    assert client.get(f"{STUDIES}/q").json()["progress"]["waiting"] == 1

    got = claim(worker_storage)
    assert got.trial.number == 0
    params = got.trial.params
    assert params["eta"] == 1.0 and params["gamma"] == 0.55
    assert params["schedule"] in ("polynomial", "exponential")  # sampled, as it was left out
    finish_trial(got, TrialState.COMPLETE, 0.25, metrics={"loss": 0.25})
    # The next claim samples a new trial: the queued one ran once.
    assert claim(worker_storage).trial.number == 1
    record = client.get(f"{STUDIES}/q/trials/0").json()
    assert record["queued"] is True and record["state"] == "COMPLETE" and record["attempt"] == 0
    assert client.get(f"{STUDIES}/q/trials/1").json()["queued"] is False
    # It counted in the budget like any other trial.
    assert client.get(f"{STUDIES}/q").json()["progress"]["finished"] == 1


def test_queued_sets_count_in_the_budget_409_names_what_is_left(make_client: Any) -> None:
    client = make_client()
    make(client, n_trials=3)
    one = {"params": {"eta": 0.3}}
    assert client.post(f"{STUDIES}/q/trials", json=[one, one]).status_code == 201
    refused = client.post(f"{STUDIES}/q/trials", json=[one, one])
    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert "2 parameter sets given, but the budget has 1 trials left" in detail
    assert "2 queued" in detail and "grow n_trials first" in detail
    assert client.get(f"{STUDIES}/q").json()["progress"]["waiting"] == 2  # none of them queued
    assert client.patch(f"{STUDIES}/q", json={"n_trials": 4}).status_code == 200
    assert client.post(f"{STUDIES}/q/trials", json=[one, one]).status_code == 201
    assert client.post(f"{STUDIES}/q/trials", json=one).status_code == 409


def test_each_bad_value_is_a_422_naming_it_and_nothing_is_queued(make_client: Any) -> None:
    client = make_client()
    make(client, n_trials=10)
    good = {"params": {"eta": 0.3}}
    cases = [
        ({"params": {"lr": 0.1}}, ["body", "params", "lr"], "no parameter 'lr'"),
        ({"params": {"gamma": 1.5}}, ["body", "params", "gamma"], "1.5 is outside [0.3, 1]"),
        ({"params": {"eta": 0.5}}, ["body", "params", "eta"], "not one of its choices"),
        ({"params": {"epochs": 3}}, ["body", "params", "epochs"], "is fixed at 1"),
        ({"params": {"half_life": 70}}, ["body", "params", "half_life"], "give schedule too"),
        ([good, {"params": {"gamma": "x"}}], ["body", 1, "params", "gamma"], "must be a number"),
        ({"params": {}, "extra": 1}, None, "extra"),
        ([], ["body"], "at least one parameter set"),
    ]
    for body, loc, says in cases:
        answer = client.post(f"{STUDIES}/q/trials", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert says in answer.text, (body, answer.text)
        if loc is not None:
            assert answer.json()["detail"][0]["loc"] == loc
    assert client.get(f"{STUDIES}/q/trials").json()["count"] == 0
    assert client.post(f"{STUDIES}/nope/trials", json=good).status_code == 404


def test_a_queued_set_given_up_is_queued_again_still_marked(
    make_client: Any, worker_storage: Any
) -> None:
    client = make_client()
    make(client)
    client.post(f"{STUDIES}/q/trials", json={"params": {"eta": 0.01, "gamma": 0.9}})
    got = claim(worker_storage)
    fail_and_maybe_retry(got, "interrupted (SIGTERM)", retry_counts=False)
    again = client.get(f"{STUDIES}/q/trials/1").json()
    assert again["state"] == "WAITING" and again["queued"] is True and again["retry_of"] == 0
    assert again["params"] == got.trial.params  # those queued, and those it sampled
    assert claim(worker_storage).trial.params == got.trial.params
