"""The compose file is valid for docker-compose and describes the fleet users rely on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The file as docker-compose itself resolves it (variables, anchors, defaults)."""
    if shutil.which("docker-compose") is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose must be installed in CI (see .ci/run)")
        pytest.skip("docker-compose is not installed")
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        check=True, capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "POSTGRES_PASSWORD": "secret"},
    )  # fmt: skip
    return dict(yaml.safe_load(out.stdout))


def test_services_and_their_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"postgres", "migrate", "service", "worker"}
    assert services["postgres"]["healthcheck"]["test"]
    assert "pgdata" in compose["volumes"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("service", "worker"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"


def test_service_runs_noisetune_serve_and_workers_reserve_a_gpu(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["service"]["command"][:2] == ["noisetune", "serve"]
    assert services["worker"]["command"][:2] == ["noisetune", "worker"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    # Scaling with --scale worker=N needs no fixed container name or host port on workers.
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]


def test_every_process_shares_one_postgres_url(compose: dict[str, Any]) -> None:
    urls = {
        compose["services"][name]["environment"]["NOISETUNE_STORAGE"]
        for name in ("migrate", "service", "worker")
    }
    assert urls == {"postgresql+psycopg://noisetune:secret@postgres:5432/noisetune"}


def test_env_example_names_every_variable_the_compose_file_reads() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    example = (ROOT / ".env.example").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    declared = set(re.findall(r"^([A-Z_]+)=", example, flags=re.M))
    assert used <= declared, used - declared


def test_the_service_image_has_no_torch_and_the_worker_image_has(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["migrate"]["build"]["target"] == "service"
    assert services["service"]["build"]["target"] == "service"
    assert services["worker"]["build"]["target"] == "worker"
    assert services["worker"]["build"]["args"]["TORCH_VARIANT"] == "cpu"
    stages = dict(
        re.findall(r"^FROM \S+ AS (\w+)\n(.*?)(?=^FROM |\Z)", _dockerfile(), flags=re.M | re.S)
    )
    assert set(stages) == {"base", "service", "worker"}
    assert "pip install .\n" in stages["service"] and "torch" not in stages["service"].lower()
    assert '".[worker]"' in stages["worker"] and "TORCH_VARIANT" in stages["worker"]


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()
