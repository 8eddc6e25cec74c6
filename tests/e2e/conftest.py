"""Real processes for end-to-end tests: a uvicorn server and worker processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log
        self.client = httpx.Client(base_url=url, timeout=30)

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        answer = self.client.post("/api/v1/studies", json=spec)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def study(self, name: str) -> dict[str, Any]:
        return dict(self.client.get(f"/api/v1/studies/{name}").json())

    def trials(self, name: str) -> list[dict[str, Any]]:
        answer = self.client.get(f"/api/v1/studies/{name}/trials", params={"limit": 1000})
        return list(answer.json()["data"])

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 60, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# Tasks registered only for these tests (an entry point, as a third-party package has).
PLUGIN = ROOT / "tests" / "e2e" / "plugin"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(PLUGIN)])
    env.pop("NOISETUNE_API_TOKEN", None)
    return env


def start_server(storage_url: str, tmp_path: Path) -> Server:
    """`noisetune serve` in a subprocess, once it answers /healthz."""
    port = free_port()
    log = tmp_path / f"server-{port}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--storage", storage_url,
             "--port", str(port)],
            stdout=fh, stderr=subprocess.STDOUT, env=_env(), cwd=tmp_path,
        )  # fmt: skip
    srv = Server(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise AssertionError("server exited: " + log.read_text())
        try:
            if srv.client.get("/healthz").status_code == 200:
                return srv
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            srv.close()
            raise AssertionError("server did not start: " + log.read_text())
        time.sleep(0.2)


@pytest.fixture
def server(storage_url: str, tmp_path: Path) -> Iterator[Server]:
    srv = start_server(storage_url, tmp_path)
    try:
        yield srv
    finally:
        srv.close()


class Workers:
    """Starts `python -m worker` processes and cleans them up."""

    def __init__(self, storage_url: str, tmp_path: Path) -> None:
        self.storage_url, self.tmp_path = storage_url, tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, heartbeat: float = 2.0) -> subprocess.Popen[bytes]:
        """A worker; `heartbeat` long enough by default that a loaded machine (a stalled
        disk, more workers than cores) never misses two beats and gets its trials reaped:
        only tests of a lost worker shorten it, for the worker they kill."""
        log = self.tmp_path / f"worker-{len(self.procs)}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "worker", "--storage", self.storage_url,
                 "--heartbeat-interval", str(heartbeat), "--device", "cpu", *args],
                stdout=fh, stderr=subprocess.STDOUT, env=_env(), cwd=self.tmp_path,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.tmp_path.glob("worker-*.log")))

    def wait_all(self, timeout: float = 120) -> list[int]:
        deadline = time.monotonic() + timeout
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                raise AssertionError("worker did not exit:\n" + self.logs()) from None
        return codes

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()


@pytest.fixture
def workers(storage_url: str, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(storage_url, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


def quadratic_spec(name: str, n_trials: int, **config: Any) -> dict[str, Any]:
    return {
        "name": name,
        "task": "quadratic",
        "task_config": {"epochs": 3, **config},
        "search_space": "paper-gamma",
        "n_trials": n_trials,
        "sampler": {"type": "random", "seed": 1},
        "pruner": {"type": "none"},
    }
