"""`noisetune report`: one HTML file that needs no server and no network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.pages import PLOTLY_JS
from service.plots import PLOT_KINDS
from service.report import write_report
from service.studies import StudyNotFound
from tests.service.dashboard_fixtures import make_study


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'noisetune.db'}"
    make_study(url, "paper")
    return url


def _without_plotly(html: str) -> str:
    """The report minus the inlined plotly.js (whose licence comments name websites)."""
    start = html.index("<script>/**\n* plotly.js")
    end = html.index("</script>", start)
    return html[:start] + html[end:]


def test_report_is_self_contained(url: str, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "report.html"
    assert write_report("paper", str(out), url) == 0
    html = out.read_text(encoding="utf-8")
    # plotly.js inline, not linked: the file opens from disk with no network.
    plotly = PLOTLY_JS.read_text(encoding="utf-8")
    assert plotly[:2000] in html and plotly[-2000:] in html
    rest = _without_plotly(html)
    assert not re.search(r"https?://", rest)
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="(?!data:)', rest)
    # Every plot, and one table row per trial.
    figures = re.findall(r'<script type="application/json" class="figure"', rest)
    assert len(figures) == len(PLOT_KINDS)  # one per plot kind
    body = rest[rest.index('<table id="trials-table">') :]
    assert body.count('<span class="badge ') == 16
    assert "diverged" in body and "host-a:10" in body
    # The importance ranking's notes sit under its plot, as on the study page.
    notes = rest[rest.index('id="section-importance"') : rest.index('id="section-history"')]
    assert '<ul class="notes" role="note"><li>Too few trials to rank 3 parameters:' in notes


def test_report_of_an_unknown_study_names_it(url: str, tmp_path: Path) -> None:
    out = tmp_path / "missing.html"
    with pytest.raises(LookupError, match="'ghost'") as caught:
        write_report("ghost", out, url)
    assert isinstance(caught.value, StudyNotFound)
    assert not out.exists()


def test_cli_writes_the_report(url: str, tmp_path: Path) -> None:
    from service.cli import app

    out = tmp_path / "cli.html"
    result = CliRunner().invoke(app, ["report", "paper", "-o", str(out), "--storage", url])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > len(PLOTLY_JS.read_bytes())
