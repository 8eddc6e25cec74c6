"""Parsing specs never blocks a real server: /healthz answers while maximal parses run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.slow  # real processes

PARSE = "/api/v1/specs/parse"
# The largest body /specs/parse takes: a flow sequence of 64 KiB.
FLOW = "[" + ", ".join(["1"] * (64 * 1024 // 3 - 1)) + "]"


@pytest.fixture
def storage_url(tmp_path: Path, _sqlite_template: Path) -> str:
    """SQLite only (overrides the two-backend fixture): the parse never touches storage."""
    path = tmp_path / "noisetune.db"
    path.write_bytes(_sqlite_template.read_bytes())
    return f"sqlite:///{path}"


def test_healthz_answers_while_maximal_specs_parse(server: Server) -> None:
    assert len(FLOW.encode()) <= 64 * 1024
    stop = threading.Event()
    parsed: list[int] = []

    def parse_forever() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                answer = client.post(
                    PARSE, content=FLOW, headers={"content-type": "application/yaml"}
                )
                parsed.append(answer.status_code)

    threads = [threading.Thread(target=parse_forever) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        while not parsed:  # the parses are under way
            time.sleep(0.01)
        waits = []
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(10):
                started = time.monotonic()
                assert client.get("/healthz").status_code == 200
                waits.append(time.monotonic() - started)
                time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert set(parsed) == {422}  # parsed in full, and refused: not a mapping
    assert max(waits) < 0.5, waits
