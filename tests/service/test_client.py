"""`service.client.Client` against a live `noisetune serve` process, and a real worker.

One server on SQLite serves the module; a token in its tokens table makes every write need
one, so the same server also answers the client's 401. PostgreSQL is covered by one
session served from a thread of the test process (cheaper than a second subprocess).
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import uvicorn
from typer.testing import CliRunner

from search_spaces.storage import open_storage
from service.app import create_app
from service.auth import create_token
from service.cli import app
from service.client import Client, ClientError, ServerUnreachable, SpecFileError
from service.schemas import AnalysisPublic, ImportancePublic, StudyPublic, TrialPublic
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
N_TRIALS = 8
# eta 0 is the analysis's default baseline; gamma is searched, so importance ranks two.
SPACE = {
    "eta": {"type": "categorical", "choices": [0.0, 0.01, 0.3, 1.0]},
    "gamma": {"type": "float", "low": 0.3, "high": 1.0},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOISETUNE_")}
    return env | {"PYTHONPATH": str(ROOT)}


def spec(name: str, n_trials: int = N_TRIALS) -> dict[str, Any]:
    return {
        "name": name,
        "task": "quadratic",
        "task_config": {"epochs": 2},
        "search_space": SPACE,
        "n_trials": n_trials,
        "sampler": {"type": "random", "seed": 1},
        "pruner": {"type": "none"},
    }


class Served:
    def __init__(self, url: str, storage: str, token: str, folder: Path) -> None:
        self.url, self.storage, self.token, self.folder = url, storage, token, folder


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`noisetune serve` on a SQLite file whose tokens table holds one write token."""
    folder = tmp_path_factory.mktemp("client")
    storage = f"sqlite:///{folder / 'noisetune.db'}"
    token = create_token(open_storage(storage).engine, "write")
    port = _free_port()
    log = folder / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--storage", storage, "--port", str(port)],
            stdout=fh, stderr=subprocess.STDOUT, env=_env(), cwd=folder,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start:\n" + log.read_text()
            time.sleep(0.2)
        yield Served(url, storage, token, folder)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def client(served: Served, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    monkeypatch.delenv("NOISETUNE_SERVER", raising=False)
    monkeypatch.delenv("NOISETUNE_API_TOKEN", raising=False)
    with Client(served.url, served.token) as c:
        yield c


def run_worker(storage: str, study: str, folder: Path) -> None:
    """A real worker process that runs the study's trials and exits when none are left."""
    log = folder / f"worker-{study}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "--storage", storage, "--study", study,
             "--exit-when-idle", "--device", "cpu", "--heartbeat-interval", "2"],
            stdout=fh, stderr=subprocess.STDOUT, env=_env(), cwd=folder,
        )  # fmt: skip
    try:
        assert proc.wait(timeout=120) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_session_from_submit_to_dataframe(
    client: Client, served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    study = client.submit(spec("session"))
    assert isinstance(study, StudyPublic)
    assert (study.name, study.status, study.n_trials) == ("session", "running", N_TRIALS)
    queued = client.enqueue("session", {"eta": 0.3, "gamma": 0.55})
    assert [(q.number, q.params) for q in queued] == [(0, {"eta": 0.3, "gamma": 0.55})]
    # The analysis's baseline group, whatever the sampler draws.
    assert [q.number for q in client.enqueue("session", [{"eta": 0.0}])] == [1]
    run_worker(served.storage, "session", served.folder)

    done = client.wait("session", timeout=60)
    assert done.status == "completed" and done.progress.finished == N_TRIALS
    assert capsys.readouterr().err == ""  # no bar when stderr is not a terminal
    client.wait("session", timeout=5, progress=True)
    assert f"{N_TRIALS}/{N_TRIALS}" in capsys.readouterr().err

    trials = client.trials("session")
    assert all(isinstance(t, TrialPublic) for t in trials)
    assert [t.number for t in trials] == list(range(N_TRIALS))
    assert {t.state for t in trials} == {"COMPLETE"}
    # Pages of 3: the client walks limit/offset until every trial is in, in order.
    assert client.trials("session", page_size=3) == trials
    assert client.trials("session", state="complete", page_size=5) == trials
    assert client.trials("session", state="FAIL") == []

    df = client.dataframe("session")
    assert list(df["number"]) == list(range(N_TRIALS))
    assert {"state", "value", "params_eta", "params_gamma", "metrics_loss"} <= set(df.columns)
    assert list(df["value"]) == [t.value for t in trials]
    assert df["value"].dtype == "float64" and df["params_gamma"].dtype == "float64"
    assert str(df["datetime_complete"].dt.tz) == "UTC"
    assert list(df["origin"][:3]) == ["queued", "queued", "sampler"]
    assert client.dataframe("session", state="FAIL").empty

    importance = client.importance("session")
    assert isinstance(importance, ImportancePublic)
    assert set(importance.importances) == {"eta", "gamma"}
    assert math.isclose(sum(importance.importances.values()), 1.0)
    analysis = client.analysis("session", by="eta")
    assert isinstance(analysis, AnalysisPublic) and analysis.by == ["eta"]
    assert analysis.baseline == "eta=0.0"
    assert sum(g.trials for g in analysis.groups) == N_TRIALS
    by_both = client.analysis("session", by=["eta", "gamma"], baseline=None)
    assert by_both.by == ["eta", "gamma"]


def test_changes_stop_resume_and_delete(client: Client) -> None:
    client.submit(spec("changes", n_trials=2))
    changed = client.set("changes", n_trials=5, priority=3, notes="*pilot*")
    assert (changed.n_trials, changed.priority, changed.notes) == (5, 3, "*pilot*")
    assert client.set("changes", notes="").notes is None
    numbers = [q.number for q in client.enqueue("changes", [{"eta": 1.0}, {"eta": 0.01}])]
    assert numbers == [0, 1]
    assert client.study("changes").progress.waiting == 2

    with pytest.raises(TimeoutError, match="'changes' is still running after 0.3 s"):
        client.wait("changes", timeout=0.3, interval=0.1)
    assert client.stop("changes").status == "stopped"
    assert client.wait("changes", timeout=0).status == "stopped"
    assert client.resume("changes").status == "running"
    assert "changes" in [s.name for s in client.studies()]

    assert client.delete("changes") is None
    with pytest.raises(ClientError) as gone:
        client.study("changes")
    assert gone.value.status == 404


def test_refusals_carry_the_servers_status_and_message(
    client: Client, served: Served, tmp_path: Path
) -> None:
    with pytest.raises(ClientError) as unknown:
        client.study("nope")
    assert (unknown.value.status, unknown.value.message) == (404, "no study named 'nope'")
    for call in (client.trials, client.dataframe, client.importance, client.stop):
        with pytest.raises(ClientError, match="no study named 'nope'"):
            call("nope")

    bad = {**spec("bad"), "task_config": {"x": 1}}
    with pytest.raises(ClientError) as invalid:
        client.submit(bad)
    assert invalid.value.status == 422 and "unknown key 'x'" in invalid.value.message
    assert isinstance(invalid.value.detail, list) and invalid.value.detail[0]["loc"]

    client.submit(spec("full", n_trials=1))
    with pytest.raises(ClientError) as twice:
        client.submit(spec("full", n_trials=1))
    assert (twice.value.status, twice.value.message) == (409, "a study named 'full' already exists")
    with pytest.raises(ClientError) as over:
        client.enqueue("full", [{"eta": 0.3}, {"eta": 1.0}])
    assert over.value.status == 409 and "the budget has 1 trials left" in over.value.message
    with pytest.raises(ClientError) as bad_state:
        client.trials("full", state="DONE")
    assert bad_state.value.status == 422

    with Client(served.url) as anonymous:  # no token, and none in the environment
        assert anonymous.study("full").name == "full"  # reads stay open
        with pytest.raises(ClientError) as refused:
            anonymous.submit(spec("anonymous"))
        assert refused.value.status == 401 and "token" in refused.value.message

    closed = f"http://127.0.0.1:{_free_port()}"
    with Client(closed) as nobody, pytest.raises(ServerUnreachable, match=closed):
        nobody.studies()
    with pytest.raises(SpecFileError, match="cannot read"):
        client.submit(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="JSON cannot carry"):
        client.enqueue("full", {"eta": float("nan")})


def test_defaults_come_from_the_environment(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOISETUNE_SERVER", raising=False)
    monkeypatch.delenv("NOISETUNE_API_TOKEN", raising=False)
    with Client() as default:
        assert default.url == "http://127.0.0.1:8000"
    monkeypatch.setenv("NOISETUNE_SERVER", served.url + "/")
    monkeypatch.setenv("NOISETUNE_API_TOKEN", served.token)
    (tmp_path / "spec.yaml").write_text("name: from-yaml\ntask: quadratic\nn_trials: 3\n")
    (tmp_path / "spec.json").write_text('{"name": "from-json", "task": "quadratic"}')
    with Client() as c:
        assert c.url == served.url
        assert c.submit(tmp_path / "spec.yaml").n_trials == 3  # the token was sent
        assert c.submit(str(tmp_path / "spec.json")).name == "from-json"


def test_the_cli_submits_and_reads_status_through_the_server(
    served: Served, tmp_path: Path
) -> None:
    runner = CliRunner()
    env = {"NOISETUNE_SERVER": served.url, "NOISETUNE_API_TOKEN": served.token}
    (tmp_path / "spec.yaml").write_text("name: cli\ntask: quadratic\nn_trials: 4\n")
    submitted = runner.invoke(app, ["submit", str(tmp_path / "spec.yaml")], env=env)
    assert (submitted.exit_code, submitted.stdout) == (0, "cli\n"), submitted.output

    listing = runner.invoke(app, ["status", "--server", served.url])
    assert listing.exit_code == 0 and "cli" in listing.stdout and "0/4" in listing.stdout
    detail = runner.invoke(app, ["status", "cli", "--server", served.url])
    assert detail.exit_code == 0 and "0/4 finished, 0 running, 0 waiting" in detail.stdout
    missing = runner.invoke(app, ["status", "nope", "--server", served.url])
    assert missing.exit_code == 1 and f"no study named 'nope' in {served.url}" in missing.stderr
    both = runner.invoke(app, ["status", "--server", served.url, "--storage", served.storage])
    assert both.exit_code == 1 and "not both" in both.stderr


@pytest.fixture
def threaded_server(storage_url: str) -> Iterator[str]:
    """The API served by uvicorn in a thread, on `storage_url` (each backend)."""
    port = _free_port()
    settings = Settings(
        storage=storage_url, host="127.0.0.1", api_token=None, auth="auto", allowed_hosts=[]
    )
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def test_queued_trials_page_and_export_on_each_backend(threaded_server: str) -> None:
    with Client(threaded_server, token="") as c:
        c.submit(spec("backend", n_trials=7))
        c.enqueue("backend", [{"eta": eta} for eta in (0.0, 0.01, 0.3, 1.0, 0.3, 0.01, 0.0)])
        waiting = c.trials("backend", state="WAITING", page_size=2)
        assert [t.number for t in waiting] == list(range(7))
        assert [t.params["eta"] for t in waiting] == [0.0, 0.01, 0.3, 1.0, 0.3, 0.01, 0.0]
        df = c.dataframe("backend")
        assert isinstance(df, pd.DataFrame) and len(df) == 7
        assert set(df["state"]) == {"WAITING"} and df["value"].isna().all()
        assert list(df["params_eta"]) == [0.0, 0.01, 0.3, 1.0, 0.3, 0.01, 0.0]
