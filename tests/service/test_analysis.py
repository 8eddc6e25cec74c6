"""The effect analysis: the API on both backends, the CLI, the study page and the report.

Trials are hand-built with the ``runs`` a worker records (and some without, as recorded
before), so that every expected number can be worked out from the values below.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial
from scipy import stats
from typer.testing import CliRunner

from service.cli import app
from service.report import render_report
from tests.service.dashboard_fixtures import register_study

API = "/api/v1/studies"
CHOICES = {"eta": [0.0, 0.1, 1.0], "gamma": [0.55, 0.9]}
SPEC = {
    "name": "crn",
    "task": "quadratic",
    "task_config": {"seed": 7},
    "search_space": {k: {"type": "categorical", "choices": v} for k, v in CHOICES.items()},
    "success": {"thresholds": [0.5, 0.2]},
}
T2_975 = 4.302652729749462  # Student's t, 2 degrees of freedom, 97.5%


def runs(*losses: float | None) -> list[dict[str, Any]]:
    """One run per seed 0, 1, ...; None: that seed diverged."""
    return [
        {"seed": s, "diverged": v is None, "metrics": {"loss": v}, "curve": []}
        for s, v in enumerate(losses)
    ]


def make_crn_study(url: str, spec: dict[str, Any] = SPEC) -> None:
    """Three seeds shared across arms, legacy trials without runs, and trials left out."""
    study = register_study(url, spec)
    dists = {k: CategoricalDistribution(v) for k, v in CHOICES.items()}

    def add(eta: float, gamma: float, state: TrialState, **attrs: Any) -> None:
        value = attrs["metrics"]["loss"] if state == TrialState.COMPLETE else None
        params = {"eta": eta, "gamma": gamma}
        study.add_trial(
            create_trial(
                state=state, value=value, params=params, distributions=dists, user_attrs=attrs
            )
        )

    done, failed = TrialState.COMPLETE, TrialState.FAIL
    add(0.0, 0.55, done, runs=runs(0.6, 0.5, 0.7), metrics={"loss": 0.6})
    add(0.1, 0.55, done, runs=runs(0.4, 0.45, 0.3), metrics={"loss": 0.3833})
    add(0.1, 0.9, done, runs=runs(0.5, 0.35, None), metrics={"loss": 0.425})
    # Recorded before `runs`: one run each, on task_config's seed 7.
    add(1.0, 0.55, failed, metrics={"loss": None}, fail_reason="diverged")
    add(1.0, 0.55, done, metrics={"loss": 0.9})
    # Left out: pruned, failed for another reason, running.
    add(0.0, 0.55, TrialState.PRUNED, metrics={"loss": 0.1})
    add(0.0, 0.9, failed, fail_reason="RuntimeError: boom", metrics={"loss": 0.1})
    add(0.1, 0.55, TrialState.RUNNING)


@pytest.fixture
def client(make_client: Any, storage_url: str) -> TestClient:
    make_crn_study(storage_url)
    return make_client()  # type: ignore[no-any-return]


def _by_label(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["label"]: g for g in answer["groups"]}


def test_groups_by_eta_with_intervals_success_rates_and_the_eta_0_baseline(
    client: TestClient,
) -> None:
    response = client.get(f"{API}/crn/analysis", params={"by": "eta"})
    assert response.status_code == 200, response.text
    assert "NaN" not in response.text and "Infinity" not in response.text
    answer = response.json()
    assert (answer["metric"], answer["direction"], answer["by"]) == ("loss", "minimize", ["eta"])
    assert (answer["success_metric"], answer["success_direction"]) == ("loss", "minimize")
    assert answer["thresholds"] == [0.5, 0.2] and answer["confidence"] == 0.95
    assert answer["runs"] == 11 and answer["baseline"] == "eta=0.0"
    assert answer["left_out"] == {"pruned": 1, "failed": 1, "running": 1}
    groups = _by_label(answer)
    assert list(groups) == ["eta=0.0", "eta=0.1", "eta=1.0"]

    quiet, noisy, loud = groups["eta=0.0"], groups["eta=0.1"], groups["eta=1.0"]
    counts = ("trials", "runs", "seeds", "diverged", "values")
    assert [quiet[k] for k in counts] == [1, 3, 3, 0, 3]
    assert [noisy[k] for k in counts] == [2, 6, 3, 1, 5]
    assert [loud[k] for k in counts] == [2, 2, 1, 1, 1]
    # 0.6, 0.5, 0.7: sd 0.1 on 2 degrees of freedom. A loss: the best is the lowest.
    half = T2_975 * 0.1 / math.sqrt(3)
    assert quiet["mean"] == pytest.approx(0.6) and quiet["median"] == pytest.approx(0.6)
    assert quiet["interval"] == pytest.approx([0.6 - half, 0.6 + half])
    assert quiet["best"] == 0.5 and quiet["baseline"] and quiet["comparison"] is None
    # The diverged run is left out of the mean: 0.4, 0.45, 0.3, 0.5, 0.35.
    values = [0.4, 0.45, 0.3, 0.5, 0.35]
    expected = stats.t.interval(0.95, 4, loc=0.4, scale=stats.sem(values))
    assert noisy["mean"] == pytest.approx(0.4) and noisy["interval"] == pytest.approx(expected)
    assert (noisy["median"], noisy["best"]) == pytest.approx((0.4, 0.3))
    assert (loud["mean"], loud["interval"], loud["best"]) == (0.9, None, 0.9)

    # Success below 0.5 (a loss): 0.5 itself fails, and so does every diverged run.
    rates = [(s["threshold"], s["successes"], s["runs"]) for s in noisy["success"]]
    assert rates == [(0.5, 4, 6), (0.2, 0, 6)]
    wilson = stats.binomtest(4, 6).proportion_ci(method="wilson")
    assert noisy["success"][0]["rate"] == pytest.approx(4 / 6)
    assert noisy["success"][0]["interval"] == pytest.approx([wilson.low, wilson.high])
    assert [s["successes"] for s in quiet["success"] + loud["success"]] == [0, 0, 0, 0]
    assert loud["success"][0]["interval"] == pytest.approx([0.0, 0.6576198], abs=1e-6)

    # Paired on seeds: eta 0.1's per-seed means 0.45, 0.4, 0.3 against 0.6, 0.5, 0.7.
    paired = noisy["comparison"]
    reference = stats.ttest_rel([0.45, 0.4, 0.3], [0.6, 0.5, 0.7])
    assert paired["pairs"] == 3 and paired["mean_difference"] == pytest.approx(-0.65 / 3)
    assert paired["p_value"] == pytest.approx(float(reference.pvalue))
    ci = reference.confidence_interval(0.95)
    assert paired["interval"] == pytest.approx([ci.low, ci.high])
    # eta 1.0 ran seed 7 only, which the baseline never ran.
    assert loud["comparison"] == {
        "pairs": 0,
        "mean_difference": None,
        "interval": None,
        "p_value": None,
    }
    notes = answer["notes"]
    assert "left out: 1 failed, 1 pruned, 1 running" in notes
    assert "group eta=0.0 has 3 runs: its interval is wide" in notes
    assert "group eta=1.0 has 2 runs, 1 with a value of the metric: no interval" in notes
    assert "group eta=1.0 shares 0 seeds with the baseline: no paired interval" in notes
    assert not any("eta=0.1 has" in n for n in notes)  # 6 runs is not few


def test_several_parameters_and_a_named_baseline(client: TestClient) -> None:
    query = {"by": "eta,gamma", "baseline": "0,0.55"}
    answer = client.get(f"{API}/crn/analysis", params=query).json()
    groups = _by_label(answer)
    assert answer["baseline"] == "eta=0.0, gamma=0.55"
    assert list(groups) == [
        "eta=0.0, gamma=0.55",
        "eta=0.1, gamma=0.55",
        "eta=0.1, gamma=0.9",
        "eta=1.0, gamma=0.55",
    ]
    assert groups["eta=0.1, gamma=0.9"]["params"] == {"eta": 0.1, "gamma": 0.9}
    # Seed 2 diverged in eta=0.1, gamma=0.9: two pairs, -0.1 and -0.15.
    two = groups["eta=0.1, gamma=0.9"]["comparison"]
    assert two["pairs"] == 2 and two["mean_difference"] == pytest.approx(-0.125)
    three = groups["eta=0.1, gamma=0.55"]["comparison"]
    assert three["pairs"] == 3 and three["mean_difference"] == pytest.approx(-0.65 / 3)
    # The same without `baseline`: the one group with eta 0 is the default.
    default = client.get(f"{API}/crn/analysis", params={"by": "eta,gamma"}).json()
    assert default["baseline"] == "eta=0.0, gamma=0.55"
    # Another baseline turns the differences around.
    other = client.get(f"{API}/crn/analysis", params={"by": "eta", "baseline": "0.1"}).json()
    assert _by_label(other)["eta=0.0"]["comparison"]["mean_difference"] == pytest.approx(0.65 / 3)
    # Without eta there is no default: said in a note, and nothing is compared.
    by_gamma = client.get(f"{API}/crn/analysis", params={"by": "gamma"}).json()
    assert by_gamma["baseline"] is None
    assert [g["runs"] for g in by_gamma["groups"]] == [8, 3]
    assert all(g["comparison"] is None for g in by_gamma["groups"])
    assert any(n.startswith("no baseline") for n in by_gamma["notes"])


BAD_QUERIES = [
    ({"by": "lr"}, "by", "'lr' is not a parameter of study 'crn' (allowed: eta, gamma)"),
    ({"by": "eta,nope"}, "by", "'nope' is not a parameter"),
    ({"by": ""}, "by", "name a parameter (allowed: eta, gamma)"),
    ({"by": "eta,eta"}, "by", "names a parameter twice"),
    ({"by": "eta", "baseline": "0.3"}, "baseline", "0.3 matches no group (groups: eta=0.0;"),
    ({"by": "eta", "baseline": "0,0.55"}, "baseline", "give 1 value(s)"),
    ({"by": "eta", "metric": "accuracy"}, "metric", "'accuracy' is not reported"),
]


def test_bad_queries_are_422_naming_the_field_and_unknown_studies_404(client: TestClient) -> None:
    for query, field, message in BAD_QUERIES:
        response = client.get(f"{API}/crn/analysis", params=query)
        assert response.status_code == 422, (query, response.text)
        (detail,) = response.json()["detail"]
        assert detail["loc"] == ["query", field] and message in detail["msg"], query
    response = client.get(f"{API}/ghost/analysis", params={"by": "eta"})
    assert response.status_code == 404 and "no study named 'ghost'" in response.json()["detail"]


def test_metric_defaults_to_the_success_metric(make_client: Any, storage_url: str) -> None:
    study = register_study(
        storage_url,
        {
            "name": "acc",
            "task": "deep_mlp",
            "task_config": {"epochs": 1},
            "search_space": {"eta": {"type": "categorical", "choices": [0.0, 0.3]}},
            "success": {"metric": "val_loss", "thresholds": [1.0]},
        },
    )
    dists = {"eta": CategoricalDistribution([0.0, 0.3])}
    for eta, accuracy, loss in [(0.0, (0.5, 0.6), (1.2, 1.1)), (0.3, (0.7, 0.65), (0.9, 1.0))]:
        recorded = [
            {"seed": s, "diverged": False, "metrics": {"val_accuracy": a, "val_loss": v}}
            for s, (a, v) in enumerate(zip(accuracy, loss, strict=True))
        ]
        attrs = {"runs": recorded, "metrics": recorded[0]["metrics"]}
        study.add_trial(
            create_trial(value=accuracy[0], params={"eta": eta}, distributions=dists,
                         user_attrs=attrs)
        )  # fmt: skip
    client = make_client()
    by_loss = client.get(f"{API}/acc/analysis").json()  # `by` defaults to eta
    assert (by_loss["metric"], by_loss["direction"]) == ("val_loss", "minimize")
    noisy = _by_label(by_loss)["eta=0.3"]
    assert noisy["best"] == 0.9 and noisy["success"][0]["successes"] == 1  # 1.0 is not < 1.0
    by_accuracy = client.get(f"{API}/acc/analysis", params={"metric": "val_accuracy"}).json()
    assert (by_accuracy["metric"], by_accuracy["direction"]) == ("val_accuracy", "maximize")
    noisy = _by_label(by_accuracy)["eta=0.3"]
    assert noisy["best"] == 0.7 and noisy["comparison"]["mean_difference"] == pytest.approx(0.125)
    # The success rates stay on the success metric.
    assert by_accuracy["success_metric"] == "val_loss" and noisy["success"][0]["successes"] == 1


# ---- the CLI, the page and the report, on a SQLite file ----


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('analysis') / 'noisetune.db'}"
    make_crn_study(url)
    return url


def test_cli_prints_the_table(url: str) -> None:
    args = ["analyze", "crn", "--by", "eta,gamma", "--baseline", "0,0.55", "--storage", url]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "loss (minimize) by eta, gamma: 11 runs" in out
    assert "vs eta=0.0, gamma=0.55" in out and "loss < 0.5" in out
    row = next(line for line in out.splitlines() if "eta=0.1, gamma=0.9" in line)
    assert "1/3 33% [6%, 79%]" in row and "-0.125" in row and "(2 pairs)" in row
    assert "note: left out: 1 failed, 1 pruned, 1 running" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ghost"], "no study named 'ghost'"),
        (["crn", "--by", "lr"], "by: 'lr' is not a parameter of study 'crn'"),
        (["crn", "--baseline", "5"], "baseline: 5 matches no group"),
        (["crn", "--metric", "acc"], "metric: 'acc' is not reported"),
    ],
)
def test_cli_errors_are_one_line(url: str, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["analyze", *args, "--storage", url])
    assert result.exit_code == 1 and message in result.stderr
    assert "Traceback" not in result.output and result.stdout == ""


@pytest.fixture(scope="module")
def page_client(url: str) -> Iterator[TestClient]:
    from service.app import create_app
    from service.settings import Settings

    settings = Settings(storage=url, host="127.0.0.1", api_token=None, read_requires_token=False)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
        yield c


def test_study_page_has_the_effect_section(page_client: TestClient) -> None:
    html = page_client.get("/studies/crn").text
    section = html[html.index('id="section-effect"') : html.index('id="trials-panel"')]
    assert 'data-kind="effect"' in section and 'id="effect-table"' in section
    assert 'id="effect-notes"' in section
    figure = page_client.get(f"{API}/crn/plots/effect").json()
    means, *rates = figure["data"]
    assert means["x"] == ["eta=0.0", "eta=0.1", "eta=1.0"]
    assert means["y"] == pytest.approx([0.6, 0.4, 0.9])
    half = T2_975 * 0.1 / math.sqrt(3)
    assert means["error_y"]["array"][0] == pytest.approx(half)
    assert means["error_y"]["array"][2] == 0  # one value: no interval, no bar
    assert [r["name"] for r in rates] == ["< 0.5", "< 0.2"]
    assert rates[0]["y"] == pytest.approx([0.0, 4 / 6, 0.0])
    wilson = stats.binomtest(4, 6).proportion_ci(method="wilson")
    assert rates[0]["error_y"]["arrayminus"][1] == pytest.approx(4 / 6 - wilson.low)


def test_effect_plot_says_why_without_eta(tmp_path: Path) -> None:
    from search_spaces.storage import open_storage
    from service.plots import build_figure, study_snapshot

    url = f"sqlite:///{tmp_path / 'gamma.db'}"
    spec = {**SPEC, "name": "gamma-only", "search_space": {"gamma": SPEC["search_space"]["gamma"]}}
    register_study(url, spec)
    figure = json.loads(
        build_figure(study_snapshot(open_storage(url), "gamma-only"), "effect").to_json()
    )
    assert figure["layout"]["annotations"][0]["text"] == "eta is not a parameter of this study"


def test_report_has_the_effect_section(url: str) -> None:
    html = render_report(url, "crn")
    section = html[html.index('id="section-effect"') :]
    section = section[: section.index("</section>")]
    assert 'data-target="plot-effect"' in section
    assert "loss (minimize) by eta: 11 runs" in section
    assert "<td>eta=0.1</td>" in section and "4/6 67% [30%, 90%]" in section
    assert "group eta=1.0 has 2 runs, 1 with a value of the metric: no interval" in section
