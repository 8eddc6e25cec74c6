"""A study the workers stopped as failed: how the API, the CLI and its page show it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from search_spaces.storage import open_storage
from search_spaces.tables import studies_table
from tests.service.dashboard_fixtures import make_study

REASON = "stopped after 3 trials in a row failed with an exception; last: ImportError: no x"


@pytest.fixture
def client(storage_url: str) -> Iterator[TestClient]:
    from service.app import create_app
    from service.settings import Settings

    make_study(storage_url, "paper")
    with open_storage(storage_url).engine.begin() as conn:
        conn.execute(
            sa.update(studies_table)
            .where(studies_table.c.name == "paper")
            .values(status="failed", fail_reason=REASON, failure_streak=3)
        )
    settings = Settings(
        storage=storage_url, host="127.0.0.1", api_token=None, read_requires_token=False
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
        yield c


def test_the_api_shows_the_failure_and_resume_clears_it(client: TestClient) -> None:
    study = client.get("/api/v1/studies/paper").json()
    assert (study["status"], study["fail_reason"]) == ("failed", REASON)
    listed = client.get("/api/v1/studies").json()["data"]
    assert [(s["name"], s["status"]) for s in listed] == [("paper", "failed")]

    resumed = client.post("/api/v1/studies/paper/resume").json()
    assert resumed["status"] != "failed" and resumed["fail_reason"] is None


def test_the_study_page_shows_a_banner_with_the_reason(client: TestClient) -> None:
    html = client.get("/studies/paper").text
    banner = html[html.index('id="fail-banner"') :].split("</div>")[0]
    assert "hidden" not in banner.split(">")[0]
    assert REASON in banner
    resume = html[html.index('id="resume-btn"') :].split(">")[0]
    assert "hidden" not in resume

    client.post("/api/v1/studies/paper/resume")
    html = client.get("/studies/paper").text
    assert "hidden" in html[html.index('id="fail-banner"') :].split(">")[0]
