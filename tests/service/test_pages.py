"""The dashboard's pages, static files and the YAML spec endpoint behind the submit form."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.pages import PLOTLY_JS, STATIC_FILES
from tests.service.dashboard_fixtures import add_worker, make_study

EXTERNAL = re.compile(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", re.IGNORECASE)
PARSE = "/api/v1/specs/parse"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from service.app import create_app
    from service.settings import Settings

    url = f"sqlite:///{tmp_path_factory.mktemp('pages') / 'noisetune.db'}"
    make_study(url, "paper")
    add_worker(url, "host-a:100", "paper", interval=3600)
    settings = Settings(storage=url, host="127.0.0.1", api_token=None, read_requires_token=False)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
        yield c


def _page(client: TestClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    return response.text


def test_studies_page_lists_the_study(client: TestClient) -> None:
    html = _page(client, "/")
    assert 'id="studies-table"' in html and 'data-name="paper"' in html
    assert "15 / 16" in html  # finished of n_trials: 12 complete + 2 pruned + 1 failed
    for nav in ('href="/"', 'href="/workers"', 'href="/submit"'):
        assert nav in html


def test_study_page_shows_importance_first(client: TestClient) -> None:
    html = _page(client, "/studies/paper")
    sections = re.findall(r'id="section-(\w+)"', html)
    assert sections[:6] == [
        "importance",
        "history",
        "parallel",
        "contour",
        "intermediate",
        "noise_schedule",
    ]
    for element in (
        'id="trials-table"',
        'id="state-filter"',
        'id="stop-btn"',
        'id="finished"',
        "/static/plotly.min.js",
        "/static/study.js",
    ):
        assert element in html
    # The importance ranking's notes go under its plot (study.js fills them from the API).
    importance = html[html.index('id="section-importance"') : html.index('id="section-history"')]
    assert '<ul class="notes" id="importance-notes" role="note" hidden></ul>' in importance


def test_trial_page_shows_what_the_worker_recorded(client: TestClient) -> None:
    html = _page(client, "/studies/paper/trials/0")
    for element in ('id="curve"', 'id="params"', 'id="run"', "host-a", "cpu", "eta", "gamma"):
        assert element in html
    failed = client.get("/api/v1/studies/paper/trials?state=FAIL").json()["data"][0]
    assert "diverged" in _page(client, f"/studies/paper/trials/{failed['number']}")


def test_trial_page_draws_the_noise_to_gradient_ratio_per_layer(client: TestClient) -> None:
    trials = client.get("/api/v1/studies/paper/trials?state=COMPLETE").json()["data"]
    noisy = next(t for t in trials if t["params"]["eta"] > 0)
    record = client.get(f"/api/v1/studies/paper/trials/{noisy['number']}").json()
    assert all(len(p["noise_grad_ratio_layers"]) == 4 for p in record["curve"])
    html = _page(client, f"/studies/paper/trials/{noisy['number']}")
    assert 'id="ratio-panel" style="margin-top:16px" >' in html  # shown
    figure = client.get(f"/api/v1/studies/paper/trials/{noisy['number']}/plots/ratio").json()
    names = [trace["name"] for trace in figure["data"]]
    assert names == ["layer 1", "layer 2", "layer 3", "layer 4", "whole model"]
    assert figure["data"][-1]["y"] == [p["noise_grad_ratio"] for p in record["curve"]]
    assert figure["layout"]["yaxis"]["type"] == "log"
    # The learning curve leaves the ratios to their own figure.
    curve = client.get(f"/api/v1/studies/paper/trials/{noisy['number']}/plots/curve").json()
    assert not any("ratio" in trace["name"] for trace in curve["data"])
    study = client.get("/api/v1/studies/paper/plots/noise_ratio").json()
    assert 1 <= len(study["data"]) <= 5 and "best" in study["layout"]["title"]["text"]


def test_workers_and_submit_pages(client: TestClient) -> None:
    workers = _page(client, "/workers")
    assert 'id="workers-table"' in workers and "host-a:100" in workers
    submit = _page(client, "/submit")
    assert '<textarea id="spec"' in submit and "deep_mlp" in submit


def test_unknown_study_and_trial_are_404_pages(client: TestClient) -> None:
    for path in ("/studies/nope", "/studies/paper/trials/999"):
        response = client.get(path)
        assert response.status_code == 404 and "Not found" in response.text


def test_nothing_is_loaded_from_another_host(client: TestClient) -> None:
    pages = ["/", "/studies/paper", "/studies/paper/trials/0", "/workers", "/submit"]
    served = {path: _page(client, path) for path in pages}
    for name in STATIC_FILES:
        response = client.get(f"/static/{name}")
        assert response.status_code == 200
        served[name] = response.text
    for name, text in served.items():
        assert not EXTERNAL.search(text), name
    for html in (served[p] for p in pages):
        for ref in re.findall(r'(?:src|href)="([^"]*)"', html):
            assert ref.startswith(("/", "#", "data:")), ref


def test_plotly_js_comes_from_the_installed_package(client: TestClient) -> None:
    response = client.get("/static/plotly.min.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.content == Path(PLOTLY_JS).read_bytes()
    assert client.get("/static/..%2Fpages.py").status_code == 404
    assert client.get("/static/missing.js").status_code == 404


def test_pages_hold_no_data_when_reads_need_a_token(
    make_client: Callable[..., Any], storage_url: str
) -> None:
    make_study(storage_url, "secret", complete=2, pruned=0, failed=0, running=0)
    client = make_client(read_requires_token=True)
    assert client.get("/api/v1/studies").status_code == 401
    html = _page(client, "/")
    assert 'data-name="secret"' not in html
    assert '"study": null' in _page(
        client, "/studies/secret"
    )  # the script fetches it, with a token
    assert 'id="token-dialog"' in html


def test_spec_parse_turns_yaml_into_the_json_body(client: TestClient) -> None:
    text = "name: yaml-study\ntask: quadratic\nsearch_space: paper-gamma\nn_trials: 4\n"
    response = client.post(PARSE, content=text, headers={"Content-Type": "application/yaml"})
    assert response.status_code == 200, response.text
    spec = response.json()["spec"]
    assert spec == {
        "name": "yaml-study",
        "task": "quadratic",
        "search_space": "paper-gamma",
        "n_trials": 4,
    }
    created = client.post("/api/v1/studies", json=spec)
    assert created.status_code == 201 and created.json()["name"] == "yaml-study"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "task": "nope"},
        {"name": "x", "task": "quadratic", "n_trials": 0},
        {"name": "x", "task": "quadratic", "search_space": {"eta": [1, 2]}},
        {"name": "x", "task": "quadratic", "bogus": 1},
    ],
)
def test_spec_parse_errors_match_the_study_api(client: TestClient, body: dict[str, Any]) -> None:
    import yaml

    parsed = client.post(
        PARSE, content=yaml.safe_dump(body), headers={"Content-Type": "application/yaml"}
    )
    direct = client.post("/api/v1/studies", json=body)
    assert parsed.status_code == direct.status_code == 422
    assert parsed.json() == direct.json()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &x [1]\nb: *x\n", "anchors and aliases"),
        ("- 1\n- 2\n", "must be a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
        ("name: x\ntask: quadratic\ntask_config: {sleep_s: .nan}\n", "finite"),
    ],
)
def test_spec_parse_refuses_bad_text(client: TestClient, text: str, message: str) -> None:
    response = client.post(PARSE, content=text, headers={"Content-Type": "application/yaml"})
    assert response.status_code == 422
    assert message in response.json()["detail"][0]["msg"]
