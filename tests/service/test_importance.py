"""Importance with its uncertainty: ANOVA effect sizes, bootstrap intervals, notes, cache.

Studies are hand-built Optuna trials on real databases (no training): the parameter that
matters is known, so the rankings and intervals can be checked against it. Statistical
checks use fixed seeds and tolerances a few standard errors wide.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial

from search_spaces import StudySpec
from search_spaces.storage import open_storage
from service.plots import _cache, build_figure, compute_info, study_snapshot
from service.plots._anova import anova_shares, omega_squared, quantile_bins
from service.plots._bootstrap import percentile_intervals
from service.plots._importance import ImportanceInfo, importance_info
from service.plots._importance_notes import importance_notes, trials_to_rank
from service.plots._snapshot import StudySnapshot
from tests.service.dashboard_fixtures import SPACE, register_study

Objective = Callable[[random.Random, float, float, float], float]


def eta_leads(rng: random.Random, eta: float, gamma: float, lr: float) -> float:
    """eta explains 96% of the variance (chance or not), gamma 1%, lr nothing."""
    return 0.1 + 0.6 * (eta >= 0.3) + 0.15 * gamma + rng.gauss(0, 0.05)


def gamma_and_lr_tie(rng: random.Random, eta: float, gamma: float, lr: float) -> float:
    """gamma and lr matter equally (each over its own range); eta not at all."""
    lr_unit = math.log(lr / 0.01) / math.log(10)
    return 0.5 + 0.1 * (gamma - 0.3) / 0.7 + 0.1 * lr_unit + rng.gauss(0, 0.01)


def build(url: str, name: str, n: int, objective: Objective, seed: int = 0) -> StudySnapshot:
    """`n` complete trials drawn at random from the paper's space, valued by `objective`."""
    spec = {"name": name, "task": "deep_mlp", "search_space": SPACE, "n_trials": n}
    study = register_study(url, spec)
    dists = StudySpec.model_validate(spec).space.distributions()
    rng = random.Random(seed)
    trials = []
    for _ in range(n):
        params = {
            "eta": rng.choice([0.0, 0.01, 0.3, 1.0]),
            "gamma": rng.uniform(0.3, 1.0),
            "lr": math.exp(rng.uniform(math.log(0.01), math.log(0.1))),
        }
        value = objective(rng, params["eta"], params["gamma"], params["lr"])
        trials.append(create_trial(params=params, distributions=dists, value=value))
    study.add_trials(trials)
    return study_snapshot(open_storage(url), name)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('importance') / 'noisetune.db'}"


@pytest.fixture(scope="module")
def leads(url: str) -> dict[int, StudySnapshot]:
    return {n: build(url, f"leads-{n}", n, eta_leads, seed=n) for n in (30, 300)}


def _info(snap: StudySnapshot, evaluator: str = "anova") -> ImportanceInfo:
    info = importance_info(snap, evaluator)
    assert isinstance(info, ImportanceInfo), info
    return info


def _width(info: ImportanceInfo, param: str) -> float:
    low, high = info.intervals[info.params.index(param)]
    return high - low


# ---- the ANOVA evaluator ----


def test_omega_squared_takes_off_what_chance_explains() -> None:
    rng = np.random.default_rng(0)
    noise, eta_sq, effect = [], [], []
    for _ in range(400):
        groups = rng.integers(0, 4, 40)
        y = rng.normal(size=40)
        noise.append(omega_squared(groups, y))
        centred = y - y.mean()
        sums, counts = np.bincount(groups, weights=centred), np.bincount(groups)
        eta_sq.append((sums**2 / np.maximum(counts, 1)).sum() / (centred @ centred))
        # Group means 0, 1, 2, 3 and unit noise: the groups explain 1.25 / 2.25 of it.
        effect.append(omega_squared(groups, groups + rng.normal(size=40)))
    # eta squared explains (k - 1) / (n - 1) = 0.077 by chance; omega squared takes that off
    # (what is left, about 0.026, is the clipping of negative estimates at 0).
    assert np.mean(eta_sq) == pytest.approx(3 / 39, abs=0.01)
    assert np.mean(noise) < 0.04
    # Standard error of the mean of 400 draws is about 0.006.
    assert np.mean(effect) == pytest.approx(1.25 / 2.25, abs=0.03)


def test_quantile_bins_hold_about_ten_trials_and_keep_ties_together() -> None:
    x = np.random.default_rng(1).uniform(0.01, 0.1, 100)
    bins = quantile_bins(x)
    assert np.bincount(bins).tolist() == [10] * 10
    assert (quantile_bins(np.log(x)) == bins).all()  # a log axis bins the same
    assert np.unique(quantile_bins(x[:25])).size == 2  # at least two bins
    ties = np.array([1.0] * 20 + [2.0] * 20)
    assert sorted(np.bincount(quantile_bins(ties))[quantile_bins(ties)[[0, -1]]]) == [20, 20]


def test_anova_shares_sum_to_one_and_split_equal_effects_evenly() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=400), rng.uniform(size=400)
    shares = anova_shares({"a": (a, False), "b": (b, False)}, a + b + rng.normal(0, 0.05, 400))
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["a"] == pytest.approx(0.5, abs=0.1)
    flat = anova_shares({"a": (a, False), "b": (b, False)}, rng.normal(size=400) * 0 + 1)
    assert flat == {"a": 0.5, "b": 0.5}


# ---- the bootstrap ----


def test_percentile_intervals_are_reproducible_and_cover_the_mean() -> None:
    def mean_of(data: np.ndarray) -> Callable[[np.ndarray], dict[str, float]]:
        return lambda rows: {"mean": float(data[rows].mean())}

    data = np.random.default_rng(3).normal(size=50)
    first = percentile_intervals(mean_of(data), 50, 200, seed=0)
    assert first == percentile_intervals(mean_of(data), 50, 200, seed=0)
    assert first != percentile_intervals(mean_of(data), 50, 200, seed=1)
    assert first.resamples == 200 and first.confidence == 0.95
    # Coverage of the true mean (0) over 200 data sets: 95% nominal; the percentile interval
    # of a mean of 50 runs a little short, and 200 trials give a standard error of 1.5%.
    rng = np.random.default_rng(4)
    covered = 0
    for _ in range(200):
        sample = rng.normal(size=50)
        low, high = percentile_intervals(mean_of(sample), 50, 200, seed=0).intervals["mean"]
        covered += low <= 0.0 <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_undefined_resamples_are_left_out_and_the_estimate_is_reached() -> None:
    def statistic(rows: np.ndarray) -> dict[str, float] | None:
        return None if rows[0] == 0 else {"x": 0.5}

    boot = percentile_intervals(statistic, 4, 100, point={"x": 0.7})
    assert 60 <= boot.resamples <= 90  # a quarter of resamples start with row 0
    assert boot.intervals == {"x": (0.5, 0.7)}
    nothing = percentile_intervals(lambda rows: None, 4, 10)
    assert nothing.resamples == 0 and nothing.intervals == {}
    with pytest.raises(ValueError, match="resamples >= 1"):
        percentile_intervals(statistic, 4, 0)


# ---- importance of studies ----


def test_same_trials_give_the_same_intervals(url: str, leads: dict[int, StudySnapshot]) -> None:
    info = _info(leads[30])
    assert info.resamples == 200 and len(info.intervals) == 3
    assert _info(leads[30]) == info
    # Read again from the database (a new snapshot, no cache): the same answer.
    _cache.snapshots.clear()
    assert _info(study_snapshot(open_storage(url), "leads-30")) == info


def test_intervals_hold_the_estimate_and_narrow_with_more_trials(
    leads: dict[int, StudySnapshot],
) -> None:
    few, many = _info(leads[30]), _info(leads[300])
    for info in (few, many):
        assert info.params[0] == "eta"
        for share, (low, high) in zip(info.importances, info.intervals, strict=True):
            assert 0.0 <= low <= share <= high <= 1.0
    # Ten times the trials: about a third the width (1 / sqrt(10)); at least half is asked.
    assert _width(many, "eta") < 0.5 * _width(few, "eta")
    # With 300 trials eta is settled first: its interval clears everyone else's.
    assert many.intervals[0][0] > max(high for _, high in many.intervals[1:])
    assert many.notes == ()


def test_the_default_ranks_first_what_explains_the_variance_where_ped_anova_does_not(
    leads: dict[int, StudySnapshot],
) -> None:
    # The contradiction of issue 15: PED-ANOVA asks what sets the best 10% apart; those all
    # have eta 0.3 or 1.0 (two of four choices), and gamma orders them on its 50-point grid.
    anova = _info(leads[300])
    assert anova.params[0] == "eta" and anova.importances[0] > 0.9
    ped = _info(leads[300], "ped_anova")
    assert ped.params[0] == "gamma" and ped.importances[ped.params.index("eta")] < 0.5, ped


def test_too_few_trials_to_rank_are_said(url: str) -> None:
    info = _info(build(url, "few", 12, eta_leads, seed=6))
    assert info.notes[0] == (
        "Too few trials to rank 3 parameters: 12 complete, about 30 needed. "
        "Read the shares as a first look, not a ranking."
    )


def test_an_open_ranking_is_said(url: str) -> None:
    info = _info(build(url, "tie", 40, gamma_and_lr_tie, seed=7))
    assert set(info.params[:2]) == {"gamma", "lr"}
    first, second = info.params[:2]
    assert len(info.notes) == 1, info.notes  # 40 trials are enough for 3 parameters
    assert info.notes[0].startswith(
        f"The ranking of {first} over {second} is not settled: their 95% intervals overlap"
    )


def test_note_rules() -> None:
    assert trials_to_rank("anova", 1) == 20 and trials_to_rank("anova", 3) == 30
    assert trials_to_rank("ped_anova", 3) == 50  # 5 trials in its top 10%
    apart = [(0.6, 0.9), (0.1, 0.59)]
    assert importance_notes("anova", ["a", "b"], apart, 20, 0.95) == ()
    touching = [(0.6, 0.9), (0.1, 0.6)]
    (note,) = importance_notes("anova", ["a", "b"], touching, 20, 0.95)
    assert note == (
        "The ranking of a over b is not settled: their 95% intervals overlap "
        "(a 60%–90%, b 10%–60%)."
    )
    assert importance_notes("anova", ["a"], [(0.0, 1.0)], 3, 0.95) == ()  # nothing to rank
    assert len(importance_notes("ped_anova", ["a", "b"], apart, 49, 0.95)) == 1


def test_cached_until_a_trial_finishes(url: str) -> None:
    storage = open_storage(url)
    before = build(url, "cache", 30, eta_leads, seed=8)
    info = compute_info(before, "importance")
    assert isinstance(info, ImportanceInfo)
    study = optuna.load_study(study_name="cache", storage=url)
    study.add_trial(create_trial(state=TrialState.RUNNING, params={}, distributions={}))
    running = study_snapshot(storage, "cache")
    assert running.signature != before.signature  # the study changed ...
    assert compute_info(running, "importance") is info  # ... but not its finished trials
    done = before.complete[0]
    study.add_trial(create_trial(params=done.params, distributions=done.distributions, value=0.5))
    again = compute_info(study_snapshot(storage, "cache"), "importance")
    assert isinstance(again, ImportanceInfo) and again is not info
    assert again.n_trials == 31 and again.intervals != info.intervals


def test_the_figure_draws_each_interval_as_an_error_bar(leads: dict[int, StudySnapshot]) -> None:
    info = _info(leads[30])
    fig = build_figure(leads[30], "importance").to_plotly_json()
    (bar,) = fig["data"]
    error = bar["error_x"]
    assert error["type"] == "data" and error["symmetric"] is False
    # Drawn bottom-up: the last bar is the most important parameter.
    for share, plus, minus, (low, high) in zip(
        bar["x"], error["array"], error["arrayminus"], info.intervals[::-1], strict=True
    ):
        assert plus >= 0 and minus >= 0
        assert (share - minus, share + plus) == pytest.approx((low, high))
    assert list(bar["y"]) == info.params[::-1]
    assert fig["layout"]["yaxis"]["ticktext"][-1] == f"eta {info.importances[0]:.0%}"
    assert "95% intervals over 200 resamples" in fig["layout"]["xaxis"]["title"]["text"]
