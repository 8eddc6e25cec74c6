"""A study whose trials lack a conditional parameter: plots, importance, pages and the API.

``momentum`` is drawn only when ``optimizer`` is ``momentum``, so most trials lack it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from search_spaces.storage import open_storage
from service.plots import EVALUATORS, PLOT_KINDS, build_figure, compute_info, study_snapshot
from service.plots._data import INACTIVE, ContourInfo, ParallelInfo, SliceInfo
from service.plots._importance import ImportanceInfo
from service.plots._snapshot import StudySnapshot, TooFew
from service.plots._training import NoiseScheduleInfo
from service.report import render_report
from tests.service.dashboard_fixtures import make_study

SPACE = {
    "optimizer": {"type": "categorical", "choices": ["sgd", "momentum", "adam"]},
    "momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": {"optimizer": ["momentum"]}},
    "eta": {"type": "categorical", "choices": [0.0, 0.01, 0.3, 1.0]},
    "lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True},
}


def make_conditional(url: str) -> None:
    make_study(url, "cond", space=SPACE, complete=24, seed=3)


@pytest.fixture(scope="module")
def snap(tmp_path_factory: pytest.TempPathFactory) -> StudySnapshot:
    url = f"sqlite:///{tmp_path_factory.mktemp('conditional') / 'noisetune.db'}"
    make_conditional(url)
    return study_snapshot(open_storage(url), "cond")


def with_momentum(snap: StudySnapshot) -> list[int]:
    return [t.number for t in snap.complete if "momentum" in t.params]


def test_the_study_has_both_branches(snap: StudySnapshot) -> None:
    assert 3 <= len(with_momentum(snap)) < len(snap.complete)
    assert snap.partial == {"momentum"}
    assert all(("momentum" in t.params) == (t.params["optimizer"] == "momentum")
               for t in snap.trials)  # fmt: skip


def test_slice_draws_a_conditional_parameter_over_the_trials_that_have_it(
    snap: StudySnapshot,
) -> None:
    info = compute_info(snap, "slice")
    assert isinstance(info, SliceInfo)
    by_name = {p.name: p for p in info.params}
    assert set(by_name) == {"optimizer", "momentum", "eta", "lr"}
    assert by_name["momentum"].numbers == with_momentum(snap)
    assert None not in by_name["momentum"].values
    assert len(by_name["lr"].numbers) == len(snap.complete)


def test_parallel_gives_trials_without_the_parameter_a_tick_of_their_own(
    snap: StudySnapshot,
) -> None:
    info = compute_info(snap, "parallel")
    assert isinstance(info, ParallelInfo)
    assert len(info.objective) == len(snap.complete)  # no trial is left out
    dim = next(d for d in info.dimensions if d.label == "momentum")
    assert dim.categories is None and dim.inactive_at is not None
    drawn = [v for v in dim.values if v != dim.inactive_at]
    assert len(drawn) == len(with_momentum(snap)) and min(drawn) > dim.inactive_at
    figure = build_figure(snap, "parallel").to_plotly_json()
    axis = next(d for d in figure["data"][0]["dimensions"] if d["label"] == "momentum")
    assert axis["ticktext"][0] == INACTIVE and axis["tickvals"][0] == dim.inactive_at


def test_contour_of_a_conditional_parameter_uses_the_trials_that_have_both(
    snap: StudySnapshot,
) -> None:
    default = compute_info(snap, "contour")
    assert isinstance(default, ContourInfo)
    assert "momentum" not in (default.x.name, default.y.name)  # shared parameters come first
    info = compute_info(snap, "contour", params=["momentum", "lr"])
    assert isinstance(info, ContourInfo)
    assert info.n_trials == len(with_momentum(snap))
    assert sorted(info.points_number) == with_momentum(snap)
    assert not info.x.categorical and None not in info.points_x


def test_importance_ranks_the_shared_parameters_and_names_the_others(
    snap: StudySnapshot,
) -> None:
    for evaluator in EVALUATORS:
        info = compute_info(snap, "importance", evaluator=evaluator)
        assert isinstance(info, ImportanceInfo)
        assert set(info.params) == {"optimizer", "eta", "lr"}
        assert info.not_ranked == ("momentum",)
        assert info.n_trials == len(snap.complete)
    text = build_figure(snap, "importance").to_json()
    assert "not ranked (conditional, not in every trial): momentum" in text


def test_every_plot_draws(snap: StudySnapshot) -> None:
    for kind in PLOT_KINDS:
        figure = json.loads(build_figure(snap, kind).to_json())
        assert figure["data"], kind


def test_too_few_trials_with_both_parameters_is_said(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'noisetune.db'}"
    make_study(url, "few", space=SPACE, complete=6, pruned=0, failed=0, running=0, seed=1)
    snap = study_snapshot(open_storage(url), "few")
    having = len(with_momentum(snap))
    assert 0 < having < 3
    info = compute_info(snap, "contour", params=["momentum", "lr"])
    assert isinstance(info, TooFew)
    assert (
        info.message == f"needs at least 3 complete trials with both momentum and lr (has {having})"
    )


def test_the_api_and_pages_answer_200(make_client: Any, storage_url: str) -> None:
    make_conditional(storage_url)
    client = make_client()
    base = "/api/v1/studies/cond"
    for kind in PLOT_KINDS:
        response = client.get(f"{base}/plots/{kind}")
        assert response.status_code == 200, (kind, response.text)
    for query in ("params=momentum,lr", "params=optimizer,momentum"):
        assert client.get(f"{base}/plots/contour?{query}").status_code == 200
    importance = client.get(f"{base}/importance")
    assert importance.status_code == 200
    assert importance.json()["not_ranked"] == ["momentum"]
    assert set(importance.json()["importances"]) == {"optimizer", "eta", "lr"}
    trials = client.get(f"{base}/trials").json()["data"]
    lacking = [t for t in trials if t["params"]["optimizer"] != "momentum"]
    assert lacking and all("momentum" not in t["params"] for t in lacking)
    for path in (base, "/studies/cond", f"/studies/cond/trials/{lacking[0]['number']}",
                 f"{base}/trials/{lacking[0]['number']}"):  # fmt: skip
        assert client.get(path).status_code == 200, path
    html = render_report(storage_url, "cond")
    assert "momentum" in html


def test_submissions_name_a_bad_condition_in_a_422(make_client: Any) -> None:
    client = make_client()
    body = {"name": "c", "task": "deep_mlp", "task_config": {"epochs": 2}, "search_space": SPACE}
    bad = {**SPACE, "momentum": {**SPACE["momentum"], "when": {"optimizer": ["nesterov"]}}}
    answer = client.post("/api/v1/studies", json={**body, "search_space": bad})
    assert answer.status_code == 422, answer.text
    (detail,) = answer.json()["detail"]
    assert detail["loc"][-1] == "search_space"
    assert "parameter 'momentum': when.optimizer lists 'nesterov'" in detail["msg"]
    grid = {**body, "sampler": {"type": "grid"}}
    answer = client.post("/api/v1/studies", json=grid)
    assert answer.status_code == 422
    assert "the grid sampler needs categorical choices or a stepped range" in answer.text
    assert client.post("/api/v1/studies", json=body).status_code == 201


def test_noise_schedules_use_the_default_of_a_gamma_the_trial_lacks(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'noisetune.db'}"
    space = {
        "eta": {"type": "categorical", "choices": [0.3, 1.0]},
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
        "gamma": {"type": "float", "low": 0.6, "high": 1.0, "when": {"optimizer": ["sgd"]}},
    }
    make_study(url, "g", space=space, complete=8, pruned=0, failed=0, running=0)
    snap = study_snapshot(open_storage(url), "g")
    info = compute_info(snap, "noise_schedule")
    assert isinstance(info, NoiseScheduleInfo)
    trials = {t.number: t for t in snap.complete}
    lacking = [s for s in info.schedules if "gamma" not in trials[s.number].params]
    assert lacking and all(s.gamma == 0.55 for s in lacking)
