"""The ``noisetune`` command: a real server and real submissions, then user errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from typer.testing import CliRunner

from search_spaces import StudySpec
from search_spaces.storage import open_storage
from service.auth import create_token
from service.cli import app
from service.studies import create_study

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
SPEC_YAML = """\
name: cli-study
task: quadratic
task_config: {epochs: 2}
n_trials: 5
sampler: {type: random, seed: 1}
"""


def noisetune() -> list[str]:
    """The installed console script, or the same entry point through the interpreter."""
    script = Path(sys.executable).parent / "noisetune"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from service.cli import main; main()"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOISETUNE_")}
    return env | {"PYTHONPATH": str(ROOT)} | extra


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*noisetune(), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(**env),
        timeout=120,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """`noisetune serve ARGS` on a free port, once it answers /healthz; (process, its URL)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with open(log, "wb") as fh:
        server = subprocess.Popen(
            [*noisetune(), "serve", "--port", str(port), *args],
            stdout=fh, stderr=subprocess.STDOUT, cwd=tmp_path, env=clean_env(),
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise AssertionError("server did not come up:\n" + log.read_text())
        time.sleep(0.2)


@pytest.mark.slow
def test_serve_submit_and_status_with_real_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'served.db'}"
    # A token in the table makes writes need one; it must never reach the server's log.
    token = create_token(open_storage(url).engine, "write")
    server, server_url = _serve(tmp_path, "--storage", url)
    log = tmp_path / "server.log"
    try:
        (tmp_path / "spec.yaml").write_text(SPEC_YAML)

        submitted = run(
            "submit", "spec.yaml", "--server", server_url, cwd=tmp_path, NOISETUNE_API_TOKEN=token
        )
        assert submitted.returncode == 0, submitted.stderr
        assert submitted.stdout == "cli-study\n"

        # The refusals go through the same real server, from an in-process CLI (faster).
        spec, bad = str(tmp_path / "spec.yaml"), str(tmp_path / "bad.json")
        with_token = {"NOISETUNE_API_TOKEN": token, "NOISETUNE_SERVER": server_url}
        again = runner.invoke(app, ["submit", spec], env=with_token)
        assert again.exit_code == 1 and "already exists" in again.stderr
        assert again.stdout == "" and "Traceback" not in again.output

        Path(bad).write_text(
            json.dumps({"name": "b", "task": "quadratic", "task_config": {"x": 1}})
        )
        refused = runner.invoke(app, ["submit", bad], env=with_token)
        assert refused.exit_code == 1 and "task_config: " in refused.stderr
        assert "unknown key 'x'" in refused.stderr

        anonymous = runner.invoke(app, ["submit", spec, "--server", server_url])
        assert anonymous.exit_code == 1 and "HTTP 401" in anonymous.stderr

        listing = run("status", "--storage", url, cwd=tmp_path)
        assert listing.returncode == 0, listing.stderr
        assert "cli-study" in listing.stdout and "0/5" in listing.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert token not in log.read_text()
    assert "POST /api/v1/studies" in log.read_text()  # the access log is on, headers are not


def test_status_reads_the_database_directly(storage_url: str, storage: Any) -> None:
    empty = runner.invoke(app, ["status", "--storage", storage_url])
    assert empty.exit_code == 0 and "no studies" in empty.stdout
    spec = StudySpec.model_validate({"name": "st", "task": "quadratic", "n_trials": 4})
    create_study(storage, spec)
    study = optuna.load_study(study_name="st", storage=storage)
    dist: dict[str, optuna.distributions.BaseDistribution] = {
        "eta": optuna.distributions.CategoricalDistribution([0.01, 0.3, 1.0])
    }
    study.add_trials(
        [
            optuna.trial.create_trial(params={"eta": 0.3}, distributions=dist, value=0.125),
            optuna.trial.create_trial(params={"eta": 1.0}, distributions=dist, value=0.5),
            optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING),
        ]
    )
    listing = runner.invoke(app, ["status", "--storage", storage_url])
    assert listing.exit_code == 0, listing.output
    row = next(line for line in listing.stdout.splitlines() if "st" in line.split())
    assert "running" in row and "2/4" in row and "0.125" in row
    detail = runner.invoke(app, ["status", "st", "--storage", storage_url])
    assert detail.exit_code == 0, detail.output
    assert "2/4 finished, 1 running" in detail.stdout
    assert "#0  loss 0.125  eta=0.3" in detail.stdout
    assert "COMPLETE 2, PRUNED 0, FAIL 0, RUNNING 1, WAITING 0" in detail.stdout


def test_user_errors_are_messages_without_tracebacks(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "spec.yaml").write_text(SPEC_YAML)
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    db = f"sqlite:///{tmp_path / 'x.db'}"
    cases = [
        (["submit", str(tmp_path / "spec.yaml"), "--server", closed], "cannot connect"),
        (["submit", str(tmp_path / "missing.yaml")], "cannot read"),
        (["submit", str(tmp_path / "broken.yaml")], "not valid YAML"),
        (["submit", str(tmp_path / "list.yaml")], "must hold a mapping"),
        (["status", "nope", "--storage", db], "no study named 'nope'"),
        (["status", "--storage", "postgresql+psycopg://u:pw@127.0.0.1:1/x"], "cannot open"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr and "Traceback" not in result.output, result.output
        assert isinstance(result.exception, SystemExit)
    assert ":pw@" not in runner.invoke(app, cases[-1][0]).stderr


def test_plugins_join_the_cli_and_a_broken_one_only_warns(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    (plugins / "fake_plugin-0.1.dist-info").mkdir(parents=True)
    (plugins / "fake_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-plugin\nVersion: 0.1\n"
    )
    (plugins / "fake_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[noisetune.commands]\nhello = hello_plugin:register\nbroken = no_such_module:register\n"
    )
    (plugins / "hello_plugin.py").write_text(
        "import sys\nprint('hello_plugin imported', file=sys.stderr)\n"
        "def register(app):\n"
        "    @app.command()\n"
        "    def hello() -> None:\n"
        "        print('hello from a plugin')\n"
    )
    script = """
import sys
from service.cli import main

def invoke(*args):
    sys.argv = ["noisetune", *args]
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, exc.code

# The CLI's own commands never load plugins: `noisetune serve` stays free of the worker.
invoke("token", "--help")
assert "hello_plugin" not in sys.modules
invoke("hello")
"""
    env = clean_env(PYTHONPATH=f"{ROOT}:{plugins}")
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("hello from a plugin\n")
    assert "warning: commands from 'no_such_module:register' are unavailable" in out.stderr


def test_demo_and_report_are_wired() -> None:
    demo = runner.invoke(app, ["demo", "--help"])
    assert demo.exit_code == 0
    for option in ("--storage", "--port", "--workers", "--trials", "--epochs"):
        assert option in demo.stdout
    report = runner.invoke(app, ["report", "--help"])
    assert report.exit_code == 0 and "--output" in report.stdout


@pytest.mark.slow
def test_serve_flags_reach_the_server(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'served.db'}"
    args = ["--storage", url, "--auth", "required", "--read-requires-token",
            "--allowed-hosts", "svc.lab.org"]  # fmt: skip
    server, base = _serve(tmp_path, *args)
    log = tmp_path / "server.log"
    try:
        assert httpx.get(f"{base}/api/v1/studies").status_code == 401
        body = {"name": "s", "task": "quadratic"}
        assert httpx.post(f"{base}/api/v1/studies", json=body).status_code == 401
        named = httpx.get(f"{base}/healthz", headers={"Host": "svc.lab.org:8000"})
        assert named.status_code == 200
        assert httpx.get(f"{base}/healthz", headers={"Host": "other.org"}).status_code == 400
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "noisetune token create --scope write" in log.read_text()


def test_serve_warns_when_bound_beyond_loopback_without_host_names() -> None:
    from service.cli import _serve_notes
    from service.settings import Settings

    def notes(**values: Any) -> str:
        base = {"storage": "sqlite:///:memory:", "api_token": None, "auth": "auto"}
        return "\n".join(_serve_notes(Settings(**(base | values))))

    assert "only loopback host names" in notes(host="0.0.0.0")
    assert "only loopback" not in notes(host="0.0.0.0", allowed_hosts="svc.lab.org")
    assert notes(host="127.0.0.1", allowed_hosts=[]) == ""
