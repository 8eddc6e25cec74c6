"""Plot data and the plot API, on real databases written the way workers write them."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial

from search_spaces.storage import open_storage
from service.plots import PLOT_KINDS, build_figure, compute_info, study_snapshot
from service.plots._data import ContourInfo, HistoryInfo, ParallelInfo, TimelineInfo
from service.plots._importance import ImportanceInfo
from service.plots._reader import read_trials
from service.plots._snapshot import TooFew
from service.plots._training import IntermediateInfo, NoiseScheduleInfo, total_steps
from tests.service.dashboard_fixtures import make_study

PLOTS = "/api/v1/studies/{}/plots/{}"


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _trials(url: str, name: str, state: TrialState) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(states=(state,))


@pytest.fixture(scope="module")
def paper(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A study with trials in every state: 12 complete, 2 pruned, 1 failed, 1 running.

    Shared by the tests that only read it; what depends on the database backend (the
    reader, the change detection, the API) runs on every backend through `storage_url`.
    """
    url = f"sqlite:///{tmp_path_factory.mktemp('plots') / 'noisetune.db'}"
    make_study(url, "paper")
    return url


@pytest.fixture
def paper_any(storage_url: str) -> str:
    """The same study, on a database of its own on each backend."""
    make_study(storage_url, "paper")
    return storage_url


def test_history_has_one_point_per_complete_trial(paper: str) -> None:
    info = compute_info(study_snapshot(open_storage(paper), "paper"), "history")
    assert isinstance(info, HistoryInfo)
    complete = _trials(paper, "paper", TrialState.COMPLETE)
    assert info.numbers == sorted(t.number for t in complete)
    assert info.values == [t.value for t in sorted(complete, key=lambda t: t.number)]
    # val_accuracy is maximized: the best-so-far line only rises and ends at the best trial.
    assert all(a <= b for a, b in itertools.pairwise(info.best_values))
    best = max(complete, key=lambda t: t.value or 0)
    assert info.best_values[-1] == best.value and info.best_number == best.number


def test_intermediate_marks_pruned_trials(paper: str) -> None:
    snap = study_snapshot(open_storage(paper), "paper")
    info = compute_info(snap, "intermediate")
    assert isinstance(info, IntermediateInfo)
    pruned = {t.number for t in _trials(paper, "paper", TrialState.PRUNED)}
    assert {c.number for c in info.curves if c.state == "PRUNED"} == pruned
    assert len(info.curves) == len(snap.trials)  # every trial reported at least one epoch
    assert all(c.steps == list(range(1, len(c.steps) + 1)) for c in info.curves)
    fig = build_figure(snap, "intermediate").to_plotly_json()
    marks = next(t for t in fig["data"] if t["name"] == "pruned here")
    assert sorted(marks["customdata"]) == sorted(pruned)
    assert set(marks["x"]) == {2}  # the fixture prunes after epoch 2


def test_noise_schedule_follows_the_paper(paper: str) -> None:
    snap = study_snapshot(open_storage(paper), "paper")
    info = compute_info(snap, "noise_schedule")
    assert isinstance(info, NoiseScheduleInfo)
    best = sorted(_trials(paper, "paper", TrialState.COMPLETE), key=lambda t: -(t.value or 0))
    assert [s.number for s in info.schedules] == [t.number for t in best[:5]]
    for s, trial in zip(info.schedules, best[:5], strict=True):
        assert (s.eta, s.gamma) == (trial.params["eta"], trial.params["gamma"])
        # eta is the variance at the first step (t = 0), not a standard deviation.
        assert s.steps[0] == 0 and s.sigma[0] ** 2 == pytest.approx(s.eta)
        assert s.steps[-1] == trial.user_attrs["metrics"]["steps"] - 1
        for t, sigma in zip(s.steps, s.sigma, strict=True):
            assert sigma**2 == pytest.approx(s.eta / (1 + t) ** s.gamma)


def test_fixed_gamma_comes_from_the_space(paper: str) -> None:
    # The paper's space fixes gamma at 0.55 and searches eta only.
    make_study(paper, "fixed", complete=6, pruned=0, failed=0, running=0, space="paper")
    snap = study_snapshot(open_storage(paper), "fixed")
    schedules = compute_info(snap, "noise_schedule")
    assert isinstance(schedules, NoiseScheduleInfo)
    assert {s.gamma for s in schedules.schedules} == {0.55}
    contour = compute_info(snap, "contour")
    assert isinstance(contour, TooFew) and "gamma = 0.55" in contour.message


def test_schedule_length_comes_from_the_steps_workers_record() -> None:
    def trial(**user_attrs: Any) -> FrozenTrial:
        return create_trial(value=0.5, params={}, distributions={}, user_attrs=user_attrs)

    assert total_steps(trial(metrics={"steps": 770, "epochs": 70})) == 770
    # A pruned trial's metrics are its last curve point, which holds the steps reached.
    curve = [{"epoch": 1, "steps": 11}, {"epoch": 2, "steps": 22}]
    assert total_steps(trial(metrics={}, curve=curve)) == 22
    # A trainer that reports no steps at all: one step per epoch, whatever the task.
    assert total_steps(trial(metrics={"epochs": 5})) == 5
    assert total_steps(trial(metrics={}, curve=[{"epoch": 1}, {"epoch": 2}])) == 2
    assert total_steps(trial(metrics={})) == 1


def test_contour_is_eta_by_gamma_with_cells_averaged(paper: str) -> None:
    snap = study_snapshot(open_storage(paper), "paper")
    info = compute_info(snap, "contour")
    assert isinstance(info, ContourInfo)
    assert (info.x.name, info.y.name) == ("eta", "gamma")
    assert info.x.categorical and info.x.cells == ["0.0", "0.01", "0.3", "1.0"]
    filled = [v for row in info.z for v in row if v is not None]
    values = [float(t.value or 0.0) for t in snap.complete]
    assert min(values) <= min(filled) <= max(filled) <= max(values)
    assert info.n_trials == len(snap.complete) == len(info.points_value)
    other = compute_info(snap, "contour", params=["lr", "gamma"])
    assert (other.x.name, other.y.name, other.x.log) == ("lr", "gamma", True)


def test_parallel_and_slice_cover_every_searched_parameter(paper: str) -> None:
    snap = study_snapshot(open_storage(paper), "paper")
    parallel = compute_info(snap, "parallel")
    assert isinstance(parallel, ParallelInfo)
    assert [d.label for d in parallel.dimensions] == ["eta", "gamma", "lr"]
    assert len(parallel.objective) == parallel.n_total == len(snap.complete)
    eta, _, lr = parallel.dimensions
    assert eta.categories is not None and lr.log and lr.categories is None
    sliced = compute_info(snap, "slice")
    assert [p.name for p in sliced.params] == ["eta", "gamma", "lr"]


def test_timeline_has_a_bar_per_started_trial(paper: str) -> None:
    snap = study_snapshot(open_storage(paper), "paper")
    info = compute_info(snap, "timeline")
    assert isinstance(info, TimelineInfo)
    assert len(info.bars) == len(snap.trials)
    assert all(b.end >= b.start for b in info.bars)
    assert [b.state for b in info.bars].count("RUNNING") == 1


@pytest.mark.parametrize("evaluator", ["anova", "ped_anova", "fanova"])
def test_importance_shares_and_cache(paper: str, evaluator: str) -> None:
    snap = study_snapshot(open_storage(paper), "paper")
    info = compute_info(snap, "importance", evaluator=evaluator)
    assert isinstance(info, ImportanceInfo)
    assert set(info.params) == {"eta", "gamma", "lr"}
    assert sum(info.importances) == pytest.approx(1.0)
    assert info.importances == sorted(info.importances, reverse=True)
    # Every share within its bootstrap interval; 12 trials are too few to rank 3 parameters.
    assert len(info.intervals) == 3 and info.resamples > 0
    for share, (low, high) in zip(info.importances, info.intervals, strict=True):
        assert 0.0 <= low <= share <= high <= 1.0
    assert info.notes[0].startswith("Too few trials to rank 3 parameters: 12 complete")
    # Computed once per study, evaluator and finished trials: the same object comes back.
    assert compute_info(snap, "importance", evaluator=evaluator) is info


def test_too_few_trials_give_a_figure_that_says_so(paper: str) -> None:
    make_study(paper, "young", complete=1, pruned=0, failed=0, running=1)
    snap = study_snapshot(open_storage(paper), "young")
    fig = build_figure(snap, "importance").to_plotly_json()
    texts = [a["text"] for a in fig["layout"]["annotations"]]
    assert texts == ["needs at least 4 complete trials (has 1)"]
    assert isinstance(compute_info(snap, "contour"), TooFew)
    assert isinstance(compute_info(snap, "history"), HistoryInfo)


def test_every_kind_answers_plotly_json(paper_any: str, make_client: Callable[..., Any]) -> None:
    client = make_client()
    for kind in PLOT_KINDS:
        response = client.get(PLOTS.format("paper", kind))
        assert response.status_code == 200, (kind, response.text)
        fig = _strict_json(response.text)
        assert fig["data"] and "layout" in fig, kind
        again = client.get(
            PLOTS.format("paper", kind), headers={"If-None-Match": response.headers["etag"]}
        )
        assert again.status_code == 304, kind
    fanova = client.get(PLOTS.format("paper", "importance") + "?evaluator=fanova")
    assert "fANOVA" in fanova.json()["layout"]["title"]["text"]


def test_plot_errors(paper_any: str, make_client: Callable[..., Any]) -> None:
    client = make_client()
    unknown = client.get(PLOTS.format("paper", "pareto"))
    assert unknown.status_code == 404
    assert all(kind in unknown.json()["detail"] for kind in PLOT_KINDS)
    missing = client.get(PLOTS.format("nope", "history"))
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    bad = client.get(PLOTS.format("paper", "contour") + "?params=eta,width")
    assert bad.status_code == 422 and "eta, gamma, lr" in bad.json()["detail"][0]["msg"]
    assert client.get(PLOTS.format("paper", "importance") + "?evaluator=shap").status_code == 422


def test_snapshot_rereads_only_what_changed(paper_any: str) -> None:
    paper = paper_any
    storage = open_storage(paper)
    before = study_snapshot(storage, "paper")
    assert study_snapshot(storage, "paper") is before  # nothing changed: no read at all
    study = optuna.load_study(study_name="paper", storage=paper)
    running = study.get_trials(states=(TrialState.RUNNING,))[0]
    storage.set_trial_intermediate_value(running._trial_id, 4, 0.5)
    live = study_snapshot(storage, "paper")
    assert live is not before and live.trials[running.number].intermediate_values[4] == 0.5
    storage.set_trial_state_values(running._trial_id, TrialState.COMPLETE, [0.99])
    study.add_trial(create_trial(value=0.1, params={}, distributions={}))
    after = study_snapshot(storage, "paper")
    assert len(after.trials) == len(before.trials) + 1
    assert after.trials[running.number].state == TrialState.COMPLETE
    # Finished trials are never read twice: the same objects carry over.
    done = [t.number for t in before.trials if t.state != TrialState.RUNNING]
    assert all(after.trials[n] is before.trials[n] for n in done)


def test_database_stays_an_optuna_storage(paper_any: str) -> None:
    paper = paper_any
    storage = open_storage(paper)
    study_snapshot(storage, "paper")
    loaded = optuna.load_study(study_name="paper", storage=paper)
    trials = loaded.get_trials()
    assert len(trials) == 16 and loaded.best_trial.value is not None
    assert all("worker" in t.user_attrs for t in trials)
    # The bulk reader agrees with Optuna's own reader, trial for trial.
    assert read_trials(storage.engine, loaded._study_id, -1, set()) == trials
    assert not any(math.isnan(t.value) for t in trials if t.value is not None)


def test_noise_schedule_draws_every_family_exactly(paper: str) -> None:
    from search_spaces import NoiseSetup

    space = {
        "schedule": {"type": "categorical", "choices": ["cosine", "exponential", "linear"]},
        "eta": {"type": "categorical", "choices": [0.3, 1.0]},
        "half_life": {"type": "int", "low": 5, "high": 50, "when": {"schedule": ["exponential"]}},
        "horizon": {
            "type": "int", "low": 10, "high": 40, "when": {"schedule": ["cosine", "linear"]},
        },
        "noise_window": 30,
    }  # fmt: skip
    make_study(paper, "families", complete=8, pruned=0, failed=0, running=0, space=space)
    snap = study_snapshot(open_storage(paper), "families")
    info = compute_info(snap, "noise_schedule")
    assert isinstance(info, NoiseScheduleInfo) and info.schedules
    trials = {t.number: t for t in _trials(paper, "families", TrialState.COMPLETE)}
    for s in info.schedules:
        params = trials[s.number].params
        setup = NoiseSetup.from_values({**params, "noise_window": 30})
        assert s.setup == setup.as_params() and s.setup["schedule"] == params["schedule"]
        schedule = setup.make_schedule()
        # The worker's formula (numpy's cos may differ from math's in the last bit).
        assert s.sigma == pytest.approx([schedule.std(t) for t in s.steps], rel=1e-12, abs=0)
        cut = min(30, params.get("horizon", 30))  # sigma is 0 from here on
        if s.steps[-1] >= cut:
            assert cut - 1 in s.steps and cut in s.steps  # the drop is drawn where it is
            assert s.sigma[s.steps.index(cut)] == 0.0
    figure = build_figure(snap, "noise_schedule")
    assert any("half_life=" in trace.name or "horizon=" in trace.name for trace in figure.data)
