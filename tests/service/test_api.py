"""The REST API against real databases (SQLite file and PostgreSQL), through TestClient.

Trials are written with Optuna on the same storage, the way workers write them.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from search_spaces.tables import trial_runs_table, workers_table

ROOT = Path(__file__).resolve().parents[2]
STUDIES = "/api/v1/studies"
SPACE = {
    "eta": {"type": "float", "low": 0.001, "high": 3.0, "log": True},
    "gamma": {"type": "float", "low": 0.0, "high": 1.0},
}
DISTS: dict[str, BaseDistribution] = {
    "eta": FloatDistribution(0.001, 3.0, log=True),
    "gamma": FloatDistribution(0.0, 1.0),
}


def spec(name: str = "s1", **fields: Any) -> dict[str, Any]:
    return {"name": name, "task": "quadratic", "search_space": SPACE, **fields}


def worker_trial(
    study: optuna.Study,
    state: TrialState,
    value: float | None = None,
    curve: tuple[float, ...] = (0.9, 0.5, 0.3),
    fail_reason: str | None = None,
) -> None:
    """Claim, train and finish one trial as a worker does (attrs, per-epoch reports, tell)."""
    trial = study.ask(DISTS)
    for key, v in {"worker": "w-7", "host": "node1", "device": "cpu", "attempt": 0}.items():
        trial.set_user_attr(key, v)
    for epoch, loss in enumerate(curve, start=1):
        trial.report(loss, step=epoch)
    if state == TrialState.RUNNING:
        return
    trial.set_user_attr("metrics", {"loss": None if math.isnan(curve[-1]) else curve[-1]})
    trial.set_user_attr("curve", [{"epoch": e, "loss": v} for e, v in enumerate(curve, 1)])
    trial.set_user_attr("wall_time_s", 0.25)
    if fail_reason is not None:
        trial.set_user_attr("fail_reason", fail_reason)
    study.tell(trial, value, state=state)


def complete_trials(
    study: optuna.Study, n: int, objective: Any, seed: int = 0, attrs: bool = True
) -> None:
    """`n` COMPLETE trials added in bulk, with the attrs a worker sets unless `attrs` is off."""
    rng = random.Random(seed)
    worker_attrs = {"worker": "w-1", "host": "h", "device": "cpu", "attempt": 0}
    trials = []
    for _ in range(n):
        params = {
            "eta": math.exp(rng.uniform(math.log(0.001), math.log(3.0))),
            "gamma": rng.uniform(0.0, 1.0),
        }
        value = objective(**params)
        extra: dict[str, Any] = {}
        if attrs:
            extra = dict(
                intermediate_values={1: value * 2, 2: value},
                user_attrs=worker_attrs | {"metrics": {"loss": value}},
            )
        trials.append(create_trial(params=params, distributions=DISTS, value=value, **extra))
    study.add_trials(trials)


def load(storage: Any, name: str) -> optuna.Study:
    return optuna.load_study(
        study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=0)
    )


def test_create_answers_201_with_the_study(make_client: Any, storage: Any) -> None:
    client = make_client()
    answer = client.post(STUDIES, json=spec(priority=3, n_trials=7))
    assert answer.status_code == 201, answer.text
    study = answer.json()
    assert study == client.get(f"{STUDIES}/s1").json()
    assert study["status"] == "running" and study["n_trials"] == 7 and study["priority"] == 3
    assert study["spec"]["metric"] == "loss" and study["spec"]["direction"] == "minimize"
    assert study["progress"] == {"finished": 0, "running": 0, "waiting": 0, "warm_start": 0}
    assert study["counts"] == dict.fromkeys(["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"], 0)
    assert study["best_trial"] is None
    assert abs(time.time() - _timestamp(study["created_at"])) < 60
    # Workers rebuild the study from the spec stored with it, in both places.
    assert load(storage, "s1").user_attrs["noisetune_spec"] == study["spec"]
    listing = client.get(STUDIES).json()
    assert listing["count"] == 1 and listing["data"][0]["name"] == "s1"


def _timestamp(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_duplicate_names_conflict(make_client: Any, storage: Any) -> None:
    client = make_client()
    assert client.post(STUDIES, json=spec()).status_code == 201
    again = client.post(STUDIES, json=spec())
    assert again.status_code == 409 and "already exists" in again.json()["detail"]
    # A bare Optuna study of that name (made without the service) blocks it too.
    optuna.create_study(study_name="bare", storage=storage)
    assert client.post(STUDIES, json=spec("bare")).status_code == 409


def test_unknown_studies_are_404(make_client: Any) -> None:
    client = make_client()
    client.post(STUDIES, json=spec())
    for name in ["nope", "S1", "ünï", "a%00b", "x" * 300]:
        for path in ["", "/trials", "/importance"]:
            answer = client.get(f"{STUDIES}/{name}{path}")
            assert answer.status_code == 404 and "no study named" in answer.json()["detail"]
        assert client.post(f"{STUDIES}/{name}/stop").status_code == 404
        assert client.post(f"{STUDIES}/{name}/resume").status_code == 404
        assert client.delete(f"{STUDIES}/{name}").status_code == 404


INVALID = [
    (spec(task="nope"), "task", "registered tasks are"),
    (spec(task_config={"foo": 1}), "task_config", "unknown key 'foo'"),
    (spec(task_config={"epochs": 0}), "task_config", "epochs"),
    (
        spec(search_space={"bogus": {"type": "float", "low": 0, "high": 1}}),
        "search_space",
        "'bogus'",
    ),
    (
        spec(search_space={"eta": {"type": "float", "low": 2, "high": 1}}),
        "search_space",
        "low must be <= high",
    ),
    (spec(search_space="nope"), "search_space", "built-in spaces are"),
    (spec(sampler={"type": "annealing"}), "sampler.type", "'tpe'"),
    (spec(sampler={"type": "tpe", "options": {"bogus": 1}}), "sampler", "unknown option"),
    (spec(pruner={"type": "median", "options": {"n_startup_trials": -1}}), "pruner", "pruner"),
    (spec(name="bad name!"), "name", "letter, digit"),
    (spec(name=""), "name", "letter, digit"),
    (spec(name="ü" * 5), "name", "letter, digit"),
    (spec(n_trials=0), "n_trials", "greater than or equal to 1"),
    (spec(n_trials=10**30), "n_trials", "less than or equal to"),
    (spec(metric="accuracy"), "metric", "reports loss"),
    (spec(direction="sideways"), "direction", "'minimize'"),
    (spec(priority=2**40), "priority", "must be in"),
    (spec(colour="red"), "colour", "allowed: name, task"),
    ({"task": "quadratic"}, "name", "Field required"),
]


def test_invalid_specs_are_422_naming_the_field(make_client: Any) -> None:
    client = make_client()
    for body, field, fragment in INVALID:
        answer = client.post(STUDIES, json=body)
        assert answer.status_code == 422, (body, answer.text)
        messages = [d["msg"] for d in answer.json()["detail"]]
        assert any(m.startswith(field) and fragment in m for m in messages), (body, messages)
    assert client.get(STUDIES).json()["count"] == 0


def test_non_finite_numbers_are_refused_not_stored_as_null(make_client: Any) -> None:
    # diverge_eta accepts any number > 0, infinity included: the store check must refuse it.
    body = '{"name": "s1", "task": "quadratic", "task_config": {"diverge_eta": Infinity}}'
    client = make_client()
    answer = client.post(STUDIES, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["msg"] == "task_config.diverge_eta: must be a finite number"
    assert client.get(STUDIES).json()["count"] == 0


ODD_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", STUDIES, {"content": b"{not json"}),
    ("POST", STUDIES, {"content": b"[1, 2]"}),
    ("POST", STUDIES, {"content": b'"x"'}),
    ("POST", STUDIES, {"content": b"null"}),
    ("POST", STUDIES, {"content": b"[" * 50_000}),
    ("POST", STUDIES, {"content": b'{"name": "s", "task": "quadratic", "n_trials": 1e999}'}),
    (
        "POST",
        STUDIES,
        {"content": b'{"name": "s", "task": "quadratic", "sampler": {"seed": 1e30}}'},
    ),
    ("POST", STUDIES, {"content": b'{"name": "s", "task": {"a": [1]}, "task_config": []}'}),
    ("POST", STUDIES, {"content": '{"name": "\u2603\U0001f600", "task": "q"}'.encode()}),
    ("POST", STUDIES, {"content": b'{"name": "\\ud800", "task": "quadratic"}'}),
    ("POST", STUDIES, {"content": b"\xff\xfe\x00", "headers": {"content-type": "text/plain"}}),
    (
        "POST",
        STUDIES,
        {"json": spec(search_space={"eta": {"type": "int", "low": 1, "high": 10**40}})},
    ),
    ("POST", STUDIES, {"json": spec(task_config={"seed": 10**40})}),
    ("GET", f"{STUDIES}/s1/trials?offset=-1", {}),
    ("GET", f"{STUDIES}/s1/trials?offset=99999999999999999999999", {}),
    ("GET", f"{STUDIES}/s1/trials?limit=abc", {}),
    ("GET", f"{STUDIES}/s1/trials?state=%C3%BC%00", {}),
    ("GET", f"{STUDIES}/s1/importance?evaluator=%00", {}),
    ("GET", f"{STUDIES}/%F0%9F%98%80", {}),
    ("DELETE", f"{STUDIES}/..%2F..", {}),
]


def test_no_input_makes_the_server_answer_500(make_client: Any) -> None:
    client = make_client()
    client.post(STUDIES, json=spec())
    for method, url, kwargs in ODD_REQUESTS:
        answer = client.request(method, url, **kwargs)
        assert 400 <= answer.status_code < 500, (method, url, kwargs, answer.text)
        assert "detail" in answer.json()
    assert client.get(STUDIES).json()["count"] == 1


def test_trials_page_filter_and_count(make_client: Any, storage: Any) -> None:
    client = make_client()
    client.post(STUDIES, json=spec(n_trials=100))
    study = load(storage, "s1")
    worker_trial(study, TrialState.COMPLETE, 0.3)  # 0
    worker_trial(study, TrialState.PRUNED, curve=(0.9,))  # 1
    worker_trial(study, TrialState.FAIL, curve=(0.9, math.nan), fail_reason="diverged")  # 2
    worker_trial(study, TrialState.RUNNING, curve=(0.8,))  # 3
    complete_trials(study, 8, lambda eta, gamma: eta + gamma)  # 4..11

    page = client.get(f"{STUDIES}/s1/trials", params={"offset": 2, "limit": 5}).json()
    assert page["count"] == 12
    assert [t["number"] for t in page["data"]] == [2, 3, 4, 5, 6]
    failed, running = page["data"][0], page["data"][1]
    assert failed["state"] == "FAIL" and failed["fail_reason"] == "diverged"
    assert failed["value"] is None and failed["metrics"] == {"loss": None}
    assert failed["intermediate_values"] == {"1": 0.9, "2": None}  # NaN travels as null
    assert running["state"] == "RUNNING" and running["datetime_complete"] is None
    assert running["duration_s"] is None and running["metrics"] is None
    assert (running["worker"], running["host"], running["device"], running["attempt"]) == (
        "w-7",
        "node1",
        "cpu",
        0,
    )

    first = client.get(f"{STUDIES}/s1/trials").json()["data"][0]
    assert first["state"] == "COMPLETE" and first["value"] == 0.3
    assert first["intermediate_values"] == {"1": 0.9, "2": 0.5, "3": 0.3}
    assert set(first["params"]) == {"eta", "gamma"} and first["duration_s"] >= 0
    assert first["datetime_start"] <= first["datetime_complete"]

    complete = client.get(f"{STUDIES}/s1/trials", params={"state": "complete", "limit": 3}).json()
    assert complete["count"] == 9 and [t["number"] for t in complete["data"]] == [0, 4, 5]
    assert client.get(f"{STUDIES}/s1/trials", params={"state": "PRUNED"}).json()["count"] == 1
    assert client.get(f"{STUDIES}/s1/trials", params={"offset": 12}).json() == {
        "data": [],
        "count": 12,
    }
    bad = client.get(f"{STUDIES}/s1/trials", params={"state": "done"})
    assert bad.status_code == 422 and "COMPLETE" in bad.json()["detail"][0]["msg"]
    assert client.get(f"{STUDIES}/s1/trials", params={"limit": 1001}).status_code == 422

    detail = client.get(f"{STUDIES}/s1").json()
    assert detail["counts"] == {"COMPLETE": 9, "PRUNED": 1, "FAIL": 1, "RUNNING": 1, "WAITING": 0}
    assert detail["progress"] == {"finished": 10, "running": 1, "waiting": 0, "warm_start": 0}
    assert detail["best_trial"]["value"] == min(
        t.value for t in study.trials if t.value is not None
    )


def test_trial_pages_match_optuna_own_reading(make_client: Any, storage: Any) -> None:
    """The page is read with SQL on Optuna's tables; it must agree with Optuna itself."""
    client = make_client()
    client.post(STUDIES, json=spec())
    study = load(storage, "s1")
    worker_trial(study, TrialState.COMPLETE, -math.inf, curve=(1.0, math.inf))
    worker_trial(study, TrialState.FAIL, curve=(0.5,), fail_reason="worker w-1 lost")
    complete_trials(study, 3, lambda eta, gamma: eta * gamma)
    page = client.get(f"{STUDIES}/s1/trials").json()["data"]
    for public, frozen in zip(page, study.get_trials(), strict=True):
        assert public["number"] == frozen.number and public["state"] == frozen.state.name
        assert public["params"] == frozen.params
        assert public["value"] == as_json(frozen.value)
        steps = {str(k): v for k, v in frozen.intermediate_values.items()}
        assert public["intermediate_values"] == as_json(steps)
        for key in ("worker", "host", "device", "attempt", "metrics", "fail_reason"):
            assert public[key] == as_json(frozen.user_attrs.get(key))


def as_json(value: Any) -> Any:
    """What JSON can carry of `value`: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    return value


def test_importance_with_too_few_trials(make_client: Any, storage: Any) -> None:
    client = make_client()
    client.post(STUDIES, json=spec())
    answer = client.get(f"{STUDIES}/s1/importance").json()
    assert answer["evaluator"] == "anova" and answer["importances"] == {}
    assert "at least 4 complete trials" in answer["message"]
    assert answer["intervals"] == {} and answer["notes"] == [] and answer["bootstrap"] == 0
    worker_trial(load(storage, "s1"), TrialState.COMPLETE, 0.5)
    assert client.get(f"{STUDIES}/s1/importance").json()["importances"] == {}
    # Every parameter fixed: nothing is sampled, so nothing can be important.
    client.post(STUDIES, json=spec("fixed", search_space={"eta": 0.3, "gamma": 0.55}))
    load(storage, "fixed").add_trials([create_trial(value=v) for v in (1.0, 2.0, 3.0, 4.0)])
    fixed = client.get(f"{STUDIES}/fixed/importance").json()
    assert fixed["importances"] == {} and "searched parameter that varies" in fixed["message"]
    # Every value the same: no parameter explains any of it, whatever the evaluator.
    client.post(STUDIES, json=spec("flat"))
    complete_trials(load(storage, "flat"), 6, lambda eta, gamma: 1.0, attrs=False)
    for evaluator in ("anova", "ped_anova", "fanova"):
        flat = client.get(f"{STUDIES}/flat/importance?evaluator={evaluator}").json()
        assert flat["importances"] == {} and "whose loss differs" in flat["message"], flat


def test_importance_finds_the_parameter_that_matters(make_client: Any, storage: Any) -> None:
    client = make_client()
    client.post(STUDIES, json=spec())

    def loss(eta: float, gamma: float) -> float:  # eta matters; gamma is irrelevant
        return math.log(eta / 0.3) ** 2

    complete_trials(load(storage, "s1"), 30, loss, attrs=False)
    # fANOVA refits a forest per resample (seconds here): tests/service/test_importance.py.
    resamples = {"anova": 200, "ped_anova": 100}
    for evaluator in resamples:
        url = f"{STUDIES}/s1/importance?evaluator={evaluator}"
        answer = client.get(url).json()
        shares = answer["importances"]
        assert answer["evaluator"] == evaluator and set(shares) == {"eta", "gamma"}
        assert shares["eta"] > shares["gamma"], answer
        assert sum(shares.values()) == pytest.approx(1.0)
        # Each share with its bootstrap interval, on the trials the shares rest on.
        assert answer["n_trials"] == 30 and answer["confidence"] == 0.95
        assert answer["bootstrap"] == resamples[evaluator]
        assert set(answer["intervals"]) == set(shares)
        for param, (low, high) in answer["intervals"].items():
            assert 0.0 <= low <= shares[param] <= high <= 1.0, answer
        assert isinstance(answer["notes"], list)
        assert client.get(url).json() == answer  # the cached answer is the same answer
    default = client.get(f"{STUDIES}/s1/importance").json()
    assert default["evaluator"] == "anova" and default["notes"] == [], default
    assert default["intervals"]["eta"][0] > default["intervals"]["gamma"][1]


def test_stop_resume_and_delete(make_client: Any, storage: Any) -> None:
    client = make_client()
    client.post(STUDIES, json=spec())
    study = load(storage, "s1")
    worker_trial(study, TrialState.COMPLETE, 0.2)
    with storage.engine.begin() as conn:
        conn.execute(
            sa.insert(trial_runs_table).values(
                trial_id=study.trials[0]._trial_id, study_name="s1", number=0, attempt=0
            )
        )
    assert client.post(f"{STUDIES}/s1/stop").json()["status"] == "stopped"
    assert client.get(f"{STUDIES}/s1").json()["status"] == "stopped"
    assert client.post(f"{STUDIES}/s1/resume").json()["status"] == "running"
    deleted = client.delete(f"{STUDIES}/s1")
    assert deleted.status_code == 204 and deleted.content == b""
    assert client.get(f"{STUDIES}/s1").status_code == 404
    assert "s1" not in optuna.get_all_study_names(storage)
    with storage.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(trial_runs_table)).scalar() == 0
    assert client.post(STUDIES, json=spec()).status_code == 201  # the name is free again


def test_a_study_with_its_budget_spent_is_completed(make_client: Any, storage: Any) -> None:
    client = make_client()
    client.post(STUDIES, json=spec(n_trials=2))
    complete_trials(load(storage, "s1"), 2, lambda eta, gamma: eta)
    assert client.get(f"{STUDIES}/s1").json()["status"] == "completed"


def test_workers_lists_live_workers_only(make_client: Any, storage: Any) -> None:
    t = time.time()
    rows = [
        dict(id="w-live", state="alive", heartbeat_at=t - 1, study_name="s1", trial_number=4),
        dict(id="w-stale", state="alive", heartbeat_at=t - 25, study_name=None, trial_number=None),
        dict(id="w-exited", state="exited", heartbeat_at=t, study_name=None, trial_number=None),
        dict(id="w-lost", state="lost", heartbeat_at=t - 1, study_name=None, trial_number=None),
    ]
    with storage.engine.begin() as conn:
        for i, row in enumerate(rows):
            conn.execute(
                sa.insert(workers_table).values(
                    host="node1",
                    pid=100 + i,
                    device="cpu",
                    trial_id=None,
                    started_at=t - 60,
                    heartbeat_interval=10.0,
                    **row,
                )
            )
    answer = make_client().get("/api/v1/workers").json()
    assert answer["count"] == 1
    live = answer["data"][0]
    assert (live["id"], live["host"], live["pid"], live["device"]) == (
        "w-live",
        "node1",
        100,
        "cpu",
    )
    assert live["study"] == "s1" and live["trial_number"] == 4
    assert abs(_timestamp(live["last_heartbeat"]) - (t - 1)) < 1e-3
    assert abs(_timestamp(live["started_at"]) - (t - 60)) < 1e-3


def test_healthz_and_the_catalog(make_client: Any) -> None:
    client = make_client()
    assert client.get("/healthz").json() == {"status": "ok"}
    tasks = {t["name"]: t for t in client.get("/api/v1/tasks").json()["data"]}
    assert tasks["quadratic"]["primary_metric"] == "loss"
    assert "epochs" in tasks["deep_mlp"]["config_schema"]["properties"]
    spaces = {s["name"] for s in client.get("/api/v1/search-spaces").json()["data"]}
    assert {"paper", "wide"} <= spaces
    schema = client.get("/openapi.json").json()
    assert {"/api/v1/studies", "/api/v1/studies/{name}/trials", "/healthz"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200


def test_healthz_is_503_while_the_database_is_unreachable(make_client: Any) -> None:
    client = make_client(storage="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    answer = client.get("/healthz")
    assert answer.status_code == 503 and answer.json()["status"] == "unavailable"
    assert client.get(STUDIES).status_code == 503


def test_bodies_over_the_limit_are_413(make_client: Any) -> None:
    client = make_client(max_body_bytes=2000)
    padded = spec(task_config={"seed": 1}, padding="x" * 3000)
    assert client.post(STUDIES, json=padded).status_code == 413  # by Content-Length

    def chunks() -> Any:  # no Content-Length: the bytes are counted as they arrive
        for _ in range(4):
            yield b" " * 1000

    streamed = client.post(STUDIES, content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert client.post(STUDIES, json=spec()).status_code == 201


@pytest.mark.slow
def test_the_service_never_imports_torch_or_the_worker(tmp_path: Path) -> None:
    script = f"""
import sys
from fastapi.testclient import TestClient
from service.app import create_app
from service.settings import Settings
app = create_app(Settings(storage="sqlite:///{tmp_path}/t.db"))
client = TestClient(app, base_url="http://127.0.0.1")
body = {{"name": "s", "task": "deep_mlp", "task_config": {{"epochs": 3}}, "search_space": "wide"}}
assert client.post("/api/v1/studies", json=body).status_code == 201
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "worker")))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().replace("'", '"')) == []
