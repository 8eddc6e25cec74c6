"""Warm starts: another study's trials copied in before sampling, on SQLite and PostgreSQL.

The sampler is the worker's own (worker.claims), so what it samples first is what a
worker of the fleet would train first.
"""

from __future__ import annotations

import random
from statistics import median
from typing import Any

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from search_spaces.optuna_adapter import insert_complete_trials
from worker.claims import caches, claim_trial, finish_trial, suggest_all
from worker.tasks.quadratic import objective

STUDIES = "/api/v1/studies"
ETA = {"type": "float", "low": 0.001, "high": 1.0, "log": True}


def spec(name: str, gamma_low: float = 0.3, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "task": "quadratic",
        "task_config": {"epochs": 1},
        "search_space": {"eta": ETA, "gamma": {"type": "float", "low": gamma_low, "high": 1.0}},
        "n_trials": 5,
        "sampler": {"type": "tpe", "seed": 0},
        "pruner": {"type": "none"},
        **extra,
    }


def source_with_trials(client: Any, storage: Any) -> list[optuna.trial.FrozenTrial]:
    """Study `src` with 30 complete trials spread over the space (their value: the
    quadratic bowl, least at eta 0.3, gamma 0.55) and one pruned, failed and running."""
    assert client.post(STUDIES, json=spec("src", n_trials=40)).status_code == 201
    study = optuna.load_study(study_name="src", storage=storage)
    dists = {"eta": FloatDistribution(0.001, 1.0, log=True), "gamma": FloatDistribution(0.3, 1.0)}
    rng = random.Random(1)
    trials = []
    for _ in range(30):
        p = {"eta": 10 ** rng.uniform(-3, 0), "gamma": rng.uniform(0.3, 1.0)}
        value = objective(p["eta"], p["gamma"])
        trials.append(
            optuna.trial.create_trial(
                params=p, distributions=dists, value=value, user_attrs={"metrics": {"loss": value}}
            )
        )
    with storage.engine.begin() as conn:  # add_trials would cost 0.1 s a trial on PostgreSQL
        insert_complete_trials(conn, storage.get_study_id_from_name("src"), trials)
    p = {"eta": 0.3, "gamma": 0.55}
    for state in (TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING):
        study.add_trial(optuna.trial.create_trial(state=state, params=p, distributions=dists))
    return trials


def first_samples(worker_storage: Any, name: str, k: int) -> list[float]:
    """The bowl's value at what a worker samples for the study's first `k` trials."""
    values = []
    for _ in range(k):
        caches.candidates.clear()
        claim = claim_trial(worker_storage, "w", "h", "cpu", name)
        assert claim is not None
        p = suggest_all(claim.trial, claim.spec)
        values.append(objective(p["eta"], p["gamma"]))
        finish_trial(claim, TrialState.COMPLETE, values[-1], metrics={"loss": values[-1]})
    caches.candidates.clear()
    assert claim_trial(worker_storage, "w", "h", "cpu", name) is None  # the budget is spent
    return values


def test_copies_are_marked_apart_and_not_counted_and_tpe_starts_informed(
    make_client: Any, storage: Any, worker_storage: Any
) -> None:
    client = make_client()
    source = source_with_trials(client, storage)
    # gamma from 0.4: the source's trials below it lie outside this study's space.
    answer = client.post(STUDIES, json=spec("warm", 0.4, warm_start={"from": "src"}))
    assert answer.status_code == 201, answer.text
    numbers = [i for i, t in enumerate(source) if t.params["gamma"] >= 0.4]
    inside = [source[i] for i in numbers]
    assert 10 < len(inside) < 30
    study = answer.json()
    assert study["spec"]["warm_start"] == {"from": "src"}
    assert study["status"] == "running" and study["progress"]["finished"] == 0
    assert study["progress"]["warm_start"] == len(inside)
    assert study["counts"]["COMPLETE"] == len(inside)

    copies = client.get(f"{STUDIES}/warm/trials", params={"limit": 100}).json()["data"]
    assert [c["warm_start"] for c in copies] == [{"study": "src", "number": n} for n in numbers]
    for copy, original in zip(copies, inside, strict=True):
        assert copy["state"] == "COMPLETE" and copy["value"] == original.value
        assert copy["params"] == original.params and copy["metrics"] == {"loss": original.value}
        assert copy["queued"] is False and copy["intermediate_values"] == {}

    # The first trials the worker samples: near the source's best, where a cold start of
    # the same spec samples at random (TPE starts up with 10 random trials).
    assert client.post(STUDIES, json=spec("cold", 0.4)).status_code == 201
    warm = first_samples(worker_storage, "warm", 5)
    cold = first_samples(worker_storage, "cold", 5)
    assert median(warm) < 0.3 and median(warm) < median(cold) / 5, (warm, cold)

    # Five trials of its own spent the budget of 5: the copies took none of it.
    finished = client.get(f"{STUDIES}/warm").json()
    assert finished["status"] == "completed" and finished["progress"]["finished"] == 5
    assert finished["progress"]["warm_start"] == len(inside)


def test_an_unknown_or_incompatible_study_is_refused(make_client: Any) -> None:
    client = make_client()
    client.post(STUDIES, json=spec("src"))
    mlp = {"task": "deep_mlp", "task_config": {"epochs": 1}, "search_space": "paper"}
    client.post(STUDIES, json={**spec("mlp_loss"), **mlp, "metric": "val_loss"})
    cases = [
        (spec("a", warm_start={"from": "nope"}), "no study named 'nope'"),
        (spec("b", direction="maximize", warm_start={"from": "src"}), "direction"),
        ({**spec("c"), **mlp, "warm_start": {"from": "src"}}, "task 'quadratic'"),
        ({**spec("d"), **mlp, "warm_start": {"from": "mlp_loss"}}, "metric 'val_loss'"),
        (spec("e", warm_start={"study": "src"}), "warm_start"),
    ]
    for body, says in cases:
        answer = client.post(STUDIES, json=body)
        assert answer.status_code == 422, (body["name"], answer.text)
        assert says in answer.text, (body["name"], answer.text)
    names = [s["name"] for s in client.get(STUDIES).json()["data"]]
    assert names == ["src", "mlp_loss"]  # nothing half made
