"""``noisetune study set`` and ``noisetune enqueue`` against a real server, on both backends.

The server is uvicorn in a thread of the test process (a subprocess would cost seconds of
imports per backend); the CLI talks HTTP to it as it would to any server.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from search_spaces import StudySpec
from service.app import create_app
from service.cli import app
from service.settings import Settings
from service.studies import create_study, get_study
from service.trials import list_trials

runner = CliRunner()


@pytest.fixture
def server(storage_url: str) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    settings = Settings(
        storage=storage_url, host="127.0.0.1", api_token=None, auth="auto", allowed_hosts=[]
    )
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not served.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    served.should_exit = True
    thread.join(timeout=30)


def cli(*args: str, server: str) -> Any:
    env: dict[str, str | None] = {"NOISETUNE_SERVER": server, "NOISETUNE_API_TOKEN": None}
    return runner.invoke(app, list(args), env=env)


def test_study_set_and_enqueue_change_the_study(server: str, storage: Any) -> None:
    spec = {"name": "c", "task": "quadratic", "search_space": "paper-gamma", "n_trials": 2}
    create_study(storage, StudySpec.model_validate(spec))

    changed = cli("study", "set", "c", "--n-trials", "80", "--priority", "5", server=server)
    assert changed.exit_code == 0, changed.output
    assert changed.stdout == "c: running, 0/80 finished, priority 5, max_retries 2\n"
    notes = cli("study", "set", "c", "--notes", "*pilot*", "--max-retries", "1", server=server)
    assert notes.exit_code == 0, notes.output
    study = get_study(storage, "c")
    assert (study.n_trials, study.priority, study.notes) == (80, 5, "*pilot*")
    assert study.spec["max_retries"] == 1

    queued = cli("enqueue", "c", "eta=0.3", "gamma=0.55", server=server)
    assert queued.exit_code == 0, queued.output
    assert queued.stdout == "0\n"
    assert cli("enqueue", "c", "eta=1", server=server).stdout == "1\n"
    trials = list_trials(storage, "c").data
    assert [(t.params, t.queued, t.state) for t in trials] == [
        ({"eta": 0.3, "gamma": 0.55}, True, "WAITING"),
        ({"eta": 1.0}, True, "WAITING"),
    ]


def test_refusals_are_one_message_without_a_traceback(server: str, storage: Any) -> None:
    spec = {"name": "c", "task": "quadratic", "search_space": "paper-gamma", "n_trials": 1}
    create_study(storage, StudySpec.model_validate(spec))
    cases = [
        (["enqueue", "c", "eta=0.5"], "params.eta: 0.5 is not one of its choices"),
        (["enqueue", "c", "eta"], "parameters are given as NAME=VALUE"),
        (["enqueue", "c", "eta=0.3", "eta=1"], "eta is given twice"),
        (["study", "set", "c"], "nothing to change"),
        (["study", "set", "c", "--n-trials", "0"], "n_trials"),
        (["study", "set", "nope", "--priority", "1"], "no study named 'nope'"),
        (["study", "set", "c", "--notes", "a", "--notes-file", "x.md"], "not both"),
    ]
    for args, says in cases:
        result = cli(*args, server=server)
        assert result.exit_code == 1, (args, result.output)
        assert says in result.stderr and "Traceback" not in result.output, (args, result.output)
    assert cli("enqueue", "c", "eta=0.3", server=server).exit_code == 0
    full = cli("enqueue", "c", "eta=0.3", server=server)
    assert full.exit_code == 1 and "HTTP 409" in full.stderr
    assert "the budget has 0 trials left" in full.stderr and "--n-trials" in full.stderr
    closed = cli("enqueue", "c", "eta=0.3", server="http://127.0.0.1:9")
    assert closed.exit_code == 1 and "cannot connect" in closed.stderr
