"""The dashboard in headless Chromium, against a real `noisetune serve` process.

Needs Debian's chromium (``apt-get install chromium``) and Playwright for Python; no
browser is downloaded. Skipped where chromium is missing, except in CI (``CI`` set).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from optuna.trial import create_trial

from search_spaces import StudySpec
from search_spaces.storage import open_storage
from service.plots import PLOT_KINDS
from service.queued_trials import enqueue
from service.report import write_report
from service.schemas import QueuedTrialCreate, StudyUpdate
from service.studies import create_study
from service.study_changes import update_study
from tests.service.dashboard_fixtures import make_study

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not os.environ.get("CI"),
        reason=f"{CHROMIUM} is missing (apt-get install chromium); required when CI is set",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A finished study served by a real uvicorn process: (base URL, storage URL)."""
    folder = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{folder / 'noisetune.db'}"
    make_study(url, "finished", complete=12, pruned=2, failed=1, running=0, epochs=6)
    # Over the built-in `schedules` space: families, and parameters some trials lack.
    make_study(url, "families", complete=12, pruned=0, failed=0, running=0, space="schedules")
    port = _free_port()
    exe = shutil.which("noisetune", path=str(Path(sys.executable).parent)) or "noisetune"
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [exe, "serve", "--storage", url, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start: {(folder / 'server.log').read_text()}")
            time.sleep(0.2)
        yield base, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if os.environ.get("CI"):
        from playwright import sync_api
    else:
        sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def _watch(page: Any) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    return errors, requests


def _wait_until(done: Callable[[], bool], timeout: float = 10) -> None:
    # Polled from here: page.wait_for_function evaluates a string, which the pages'
    # Content-Security-Policy forbids.
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_study_page_renders_plots_and_trials(
    server: tuple[str, str], browser: Any, tmp_path: Path
) -> None:
    base, url = server
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors, requests = _watch(page)
    page.goto(f"{base}/studies/finished")
    page.wait_for_selector("#section-importance .js-plotly-plot svg.main-svg", timeout=15000)
    page.wait_for_selector("#trials-table tbody tr", timeout=15000)
    bars = page.locator("#section-importance .js-plotly-plot .barlayer .point")
    assert bars.count() == 3  # eta, gamma, lr
    # Each share with its interval as an error bar, and the notes beside the plot: 12
    # complete trials are too few to rank three parameters.
    assert page.locator("#section-importance .errorbar path.xerror").count() == 3
    notes = page.locator("#importance-notes li")
    _wait_until(lambda: notes.count() > 0)
    assert notes.first.inner_text().startswith("Too few trials to rank 3 parameters")
    assert page.locator("#importance-notes").is_visible()
    assert page.locator("#trials-table tbody tr").count() == 15
    assert page.locator("#finished").inner_text() == "15"
    # Sorting by value (a click on the header) puts the best trial first: maximize.
    page.locator("#trials-table th", has_text="Value").click()
    page.locator("#trials-table th", has_text="Value").click()
    first = page.locator("#trials-table tbody tr").first.locator("td").nth(2).inner_text()
    best = page.locator("#best .stat").inner_text()
    assert first in best
    page.wait_for_selector("#section-history .js-plotly-plot svg.main-svg", timeout=15000)
    # The effect of noise: error bars per eta, and the table of groups beside them.
    page.locator("#section-effect").scroll_into_view_if_needed()  # plots draw when seen
    page.wait_for_selector("#section-effect .js-plotly-plot svg.main-svg", timeout=15000)
    page.wait_for_selector("#effect-table tbody tr", timeout=15000)
    assert page.locator("#effect-table tbody tr").count() >= 2
    assert "by eta" in page.locator("#effect-title").inner_text()
    # Every figure draws under the page's Content-Security-Policy (scripts from the server
    # only, no eval): the parallel-coordinates plot is WebGL, drawn by regl.
    page.locator("#section-parallel").scroll_into_view_if_needed()
    page.wait_for_selector("#plot-parallel canvas.gl-canvas-focus", state="attached", timeout=15000)
    _wait_until(lambda: page.locator(".js-plotly-plot").count() == len(PLOT_KINDS), timeout=15)
    # A trial that finishes now shows up without a reload: the page polls the API.
    study = optuna.load_study(study_name="finished", storage=url)
    study.add_trial(create_trial(value=0.5, params={}, distributions={}))
    _wait_until(lambda: page.locator("#finished").inner_text() == "16")
    _wait_until(lambda: page.locator("#trials-count").inner_text().startswith("16"))
    page.screenshot(path=str(tmp_path / "study.png"), full_page=True)
    assert errors == []
    assert all(url.startswith(base) or url.startswith("data:") for url in requests), requests
    page.close()


def test_a_schedules_study_draws_every_plot(server: tuple[str, str], browser: Any) -> None:
    base, _ = server
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors, _ = _watch(page)
    page.goto(f"{base}/studies/families")
    page.wait_for_selector("#section-importance .js-plotly-plot svg.main-svg", timeout=15000)
    page.locator("#section-parallel").scroll_into_view_if_needed()
    _wait_until(lambda: page.locator(".js-plotly-plot").count() == len(PLOT_KINDS), timeout=15)
    legend = page.locator("#section-noise_schedule .legendtext").all_text_contents()
    assert any("horizon=" in t or "half_life=" in t or "γ=" in t for t in legend), legend
    assert errors == []
    page.close()


def test_trial_page_draws_its_curve_and_ratio(server: tuple[str, str], browser: Any) -> None:
    base, _ = server
    noisy = next(
        t
        for t in httpx.get(f"{base}/api/v1/studies/finished/trials?state=COMPLETE").json()["data"]
        if t["params"].get("eta", 0) > 0
    )
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors, _ = _watch(page)
    page.goto(f"{base}/studies/finished/trials/{noisy['number']}")
    page.wait_for_selector("#curve.js-plotly-plot svg.main-svg", timeout=15000)
    page.wait_for_selector("#ratio.js-plotly-plot svg.main-svg", timeout=15000)
    assert page.locator("#ratio-panel").is_visible()
    assert page.locator("#ratio .scatterlayer .trace").count() == 5  # 4 layers, whole model
    assert errors == []
    page.close()


def test_report_opens_from_disk(server: tuple[str, str], browser: Any, tmp_path: Path) -> None:
    _, url = server
    out = tmp_path / "report.html"
    assert write_report("finished", out, url) == 0
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors, requests = _watch(page)
    page.goto(out.as_uri())
    page.wait_for_selector("#section-importance .js-plotly-plot svg.main-svg", timeout=15000)
    assert page.locator(".js-plotly-plot").count() == len(PLOT_KINDS)
    page.screenshot(path=str(tmp_path / "report.png"))
    assert errors == []
    assert all(r.startswith(("file:", "data:")) for r in requests), requests
    page.close()


def test_docs_page_runs_under_the_csp(server: tuple[str, str], browser: Any) -> None:
    base, _ = server
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors, requests = _watch(page)
    page.goto(f"{base}/docs")
    page.wait_for_selector("#swagger-ui .opblock-summary", timeout=15000)
    assert page.locator("#swagger-ui .opblock-summary").count() > 10
    assert errors == []
    assert all(url.startswith(base) or url.startswith("data:") for url in requests), requests
    page.close()


def test_the_dashboard_writes_as_the_same_origin(server: tuple[str, str], browser: Any) -> None:
    # Browsers send Origin and Sec-Fetch-Site on these POSTs: the server's cross-site
    # refusal must let its own pages through.
    base, _ = server
    page = browser.new_page()
    errors, _ = _watch(page)
    page.goto(f"{base}/submit")
    page.fill("#spec", "name: from-browser\ntask: quadratic\nn_trials: 2\n")
    page.click("#check-btn")
    page.wait_for_selector("#ok:not([hidden])", timeout=10000)
    page.click("#submit-btn")
    page.wait_for_selector("#ok a", timeout=10000)
    assert httpx.get(f"{base}/api/v1/studies/from-browser").status_code == 200
    assert errors == []
    page.close()


def test_notes_queued_and_warm_start_trials_are_shown_apart(
    server: tuple[str, str], browser: Any
) -> None:
    base, url = server
    storage = open_storage(url)
    spec = {"task": "quadratic", "search_space": "paper-gamma", "n_trials": 4}
    create_study(storage, StudySpec.model_validate({"name": "pilot", **spec}))
    dists: dict[str, Any] = {
        "eta": optuna.distributions.CategoricalDistribution([0.01, 0.3, 1.0]),
        "gamma": optuna.distributions.FloatDistribution(0.3, 1.0),
    }
    pilot = optuna.load_study(study_name="pilot", storage=url)
    for gamma in (0.4, 0.6):
        p = {"eta": 0.3, "gamma": gamma}
        pilot.add_trial(create_trial(value=gamma, params=p, distributions=dists))
    warm = {"name": "origins", "warm_start": {"from": "pilot"}, **spec}
    create_study(storage, StudySpec.model_validate(warm))
    enqueue(storage, "origins", [QueuedTrialCreate(params={"eta": 1.0})])
    update_study(storage, "origins", StudyUpdate(notes="# Pilot\n\n<script>alert(1)</script>"))

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors, _ = _watch(page)
    page.goto(f"{base}/studies/origins")
    page.wait_for_selector("#trials-table tbody tr", timeout=15000)
    assert page.locator("#notes .markdown h1").inner_text() == "Pilot"
    assert "<script>alert(1)</script>" in page.locator("#notes .markdown").inner_text()
    assert page.locator("#trials-table tbody tr.warm-start").count() == 2
    assert page.locator("#trials-table .badge.origin.queued").count() == 1
    assert page.locator("#warm-start-note").is_visible()
    assert page.locator("#warm-start-count").inner_text() == "2"
    assert errors == []
    page.close()
