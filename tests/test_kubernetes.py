"""The Kubernetes manifests render, are valid for the API, and run what noisetune really has.

Each kustomization is rendered once with ``kubectl kustomize``; the commands are then parsed
by the real CLI, the variables checked against the settings noisetune reads, and the probes
sent to the real app with the Host header the kubelet sends.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml
from fastapi.testclient import TestClient
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url
from typer.core import TyperGroup

from search_spaces.storage import STORAGE_ENV, open_storage
from service.app import create_app
from service.cli import app as service_app
from service.cli import load_plugins
from service.settings import Settings
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
KUSTOMIZATIONS = {
    "base": BASE,
    "postgres": KUBERNETES / "overlays" / "postgres",
    "cpu": KUBERNETES / "overlays" / "cpu",
}
# The Kubernetes release whose API schemas the manifests must satisfy (kubectl's here).
KUBERNETES_VERSION = "1.32.0"
# What the kubelet's HTTP probes send as Host when a probe names none: the pod's IP and port.
POD_IP = "10.244.1.7"
# Seconds a worker needs after --grace to queue its trial again and record it.
GRACE_MARGIN_S = 10
# The image each Dockerfile target is pushed as (as docker-compose.yml names them).
TARGET_OF_IMAGE = {"noisetune": "service", "noisetune-worker": "worker"}
# Variables a noisetune container may set besides NOISETUNE_*: libpq's password.
LIBPQ_ENV = {"PGPASSWORD"}

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Manifest]]:
    """Every kustomization's manifests, as ``kubectl kustomize`` renders them."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl must be installed in CI (see .ci/run)")
        pytest.skip("kubectl is not installed")
    out = {}
    for name, path in KUSTOMIZATIONS.items():
        done = subprocess.run(
            [kubectl, "kustomize", str(path)], check=True, capture_output=True, text=True
        )
        out[name] = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    return out


@pytest.fixture(scope="module")
def cli() -> TyperGroup:
    """The ``noisetune`` command as `service.cli.main` builds it: its own commands plus the
    plugins' (the worker's), without changing the module's app."""
    group = typer.main.get_command(service_app)
    assert isinstance(group, TyperGroup)
    plugins = typer.Typer()
    load_plugins(plugins)
    plugin_group = typer.main.get_command(plugins)
    assert isinstance(plugin_group, TyperGroup)
    for name, command in plugin_group.commands.items():
        group.add_command(command, name)
    return group


def parse(cli: TyperGroup, argv: list[str]) -> tuple[str, dict[str, Any]]:
    """(subcommand, its parameters) of a container's command; a bad one raises TyperException."""
    assert argv[0] == "noisetune", argv
    command = cli.get_command(typer.Context(cli), argv[1])
    assert command is not None, f"noisetune has no command {argv[1]!r}"
    return argv[1], command.make_context(argv[1], list(argv[2:])).params


def find(docs: list[Manifest], kind: str, name: str) -> Manifest:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def secret(docs: list[Manifest]) -> dict[str, str]:
    """The decoded data of the generated ``noisetune`` Secret."""
    (found,) = [
        d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].startswith("noisetune-")
    ]
    return {k: base64.b64decode(v).decode() for k, v in found.get("data", {}).items()}


def workloads(docs: list[Manifest]) -> list[Manifest]:
    return [d for d in docs if d["kind"] in {"Deployment", "StatefulSet", "Job"}]


def pod_specs(docs: list[Manifest]) -> Iterator[Manifest]:
    for doc in workloads(docs):
        yield doc["spec"]["template"]["spec"]


def noisetune_containers(docs: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    """(pod spec, container) for every container that runs a noisetune image."""
    for spec in pod_specs(docs):
        for container in spec.get("initContainers", []) + spec["containers"]:
            if image_name(container["image"]) in TARGET_OF_IMAGE:
                yield spec, container


def image_name(image: str) -> str:
    """``registry.lab/noisetune-worker:0.2.0-cpu`` -> ``noisetune-worker``."""
    return image.rsplit("/", 1)[-1].split(":", 1)[0]


def container_env(container: Manifest, docs: list[Manifest]) -> dict[str, str]:
    """The container's variables as the kubelet sets them (optional keys left out if absent)."""
    data, env = secret(docs), {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["name"].startswith("noisetune-"), ref
        if ref["key"] in data:
            env[var["name"]] = data[ref["key"]]
        else:
            assert ref.get("optional"), f"{var['name']}: the Secret has no {ref['key']}"
    return env


def pod_labels(docs: list[Manifest], deployment: str) -> dict[str, str]:
    template = find(docs, "Deployment", deployment)["spec"]["template"]
    return dict(template["metadata"]["labels"])


def env_names(settings: type[BaseSettings]) -> set[str]:
    prefix = settings.model_config.get("env_prefix", "")
    return {f"{prefix}{field}".upper() for field in settings.model_fields}


def test_every_kustomization_is_tested() -> None:
    found = {p.parent for p in KUBERNETES.rglob("kustomization.yaml")}
    assert found == set(KUSTOMIZATIONS.values())


def test_every_manifest_is_valid_for_the_kubernetes_api(rendered: dict[str, list[Any]]) -> None:
    problems = []
    for name, docs in rendered.items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.absolute_path)
                what = f"{doc['kind']}/{doc['metadata']['name']}"
                problems.append(f"{name}: {what}: {where}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_each_kustomization_holds_the_fleet(rendered: dict[str, list[Manifest]]) -> None:
    fleet = {
        ("Job", "noisetune-migrate"),
        ("Deployment", "noisetune"),
        ("Service", "noisetune"),
        ("Deployment", "noisetune-worker"),
    }
    postgres = {("StatefulSet", "noisetune-postgres"), ("Service", "noisetune-postgres")}
    for name, docs in rendered.items():
        kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
        assert fleet <= kinds, name
        assert (postgres <= kinds) == (name != "base"), name
        assert secret(docs).keys() >= {"NOISETUNE_STORAGE", "NOISETUNE_API_TOKEN"}
        # The service and the workers start once the migrate Job has done its work.
        for deployment in ("noisetune", "noisetune-worker"):
            pod = find(docs, "Deployment", deployment)["spec"]["template"]["spec"]
            (wait,) = pod["initContainers"]
            assert wait["command"] == ["noisetune", "migrate", "--check", "--wait"]
            assert wait["image"] == pod["containers"][0]["image"]
        # Each workload owns its pods, and each Service sends to one workload's pods.
        templates = [d["spec"]["template"]["metadata"]["labels"] for d in workloads(docs)]
        for doc in workloads(docs):
            if doc["kind"] != "Job":
                labels = doc["spec"]["template"]["metadata"]["labels"]
                assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for service in (d for d in docs if d["kind"] == "Service"):
            chosen = service["spec"]["selector"].items()
            assert sum(chosen <= labels.items() for labels in templates) == 1


def test_commands_parse_with_the_real_cli(
    rendered: dict[str, list[Manifest]], cli: TyperGroup
) -> None:
    for name, docs in rendered.items():
        commands = {}
        for _, container in noisetune_containers(docs):
            command, params = parse(cli, container["command"])
            if params.get("check"):  # an init container's wait for the migrate Job
                assert params["wait"], container["name"]
                continue
            commands[command] = params
        assert set(commands) == {"migrate", "serve", "worker"}, name
        assert commands["serve"]["host"] == "0.0.0.0"
        # One worker process per pod: --gpus would start one per visible GPU.
        assert commands["worker"]["gpus"] is None
        assert commands["worker"]["device"] == ("cpu" if name == "cpu" else "auto")


def test_a_bad_command_fails_to_parse(cli: TyperGroup) -> None:
    with pytest.raises(typer.TyperException, match="--gpu"):
        parse(cli, ["noisetune", "worker", "--gpu", "all"])


def test_every_variable_is_one_noisetune_reads(rendered: dict[str, list[Manifest]]) -> None:
    read_by = {
        "serve": env_names(Settings),
        "worker": env_names(WorkerSettings),
        "migrate": {STORAGE_ENV},
    }
    assert "NOISETUNE_ALLOWED_HOSTS" in read_by["serve"]
    for docs in rendered.values():
        for _, container in noisetune_containers(docs):
            command = container["command"]
            key = command[1]
            names = {var["name"] for var in container["env"]}
            assert STORAGE_ENV in names, container["name"]
            assert names <= read_by[key] | LIBPQ_ENV, (container["name"], names - read_by[key])


def test_the_postgres_overlay_points_every_process_at_its_server(
    rendered: dict[str, list[Manifest]],
) -> None:
    for name in ("postgres", "cpu"):
        docs = rendered[name]
        database = find(docs, "StatefulSet", "noisetune-postgres")
        (postgres,) = database["spec"]["template"]["spec"]["containers"]
        env = container_env(postgres, docs)
        url = make_url(secret(docs)["NOISETUNE_STORAGE"])
        service = find(docs, "Service", database["spec"]["serviceName"])
        assert url.host == service["metadata"]["name"]
        assert url.port == service["spec"]["ports"][0]["port"]
        assert (url.username, url.database) == (env["POSTGRES_USER"], env["POSTGRES_DB"])
        # The password is libpq's PGPASSWORD in every noisetune container, not in the URL.
        assert url.password is None
        for _, container in noisetune_containers(docs):
            assert container_env(container, docs)["PGPASSWORD"] == env["POSTGRES_PASSWORD"]
        # Each process holds at most 4 connections: room for 16 workers, the service and a
        # migration at least (README, "Run on a cluster").
        args = postgres["args"]
        setting = args[args.index("-c") + 1]
        assert setting.startswith("max_connections=")
        assert int(setting.split("=")[1]) >= 4 * (16 + 2)


def test_ports_line_up(rendered: dict[str, list[Manifest]], cli: TyperGroup) -> None:
    for docs in rendered.values():
        pod = find(docs, "Deployment", "noisetune")["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        _, params = parse(cli, container["command"])
        (port,) = container["ports"]
        assert port["containerPort"] == params["port"]
        service = find(docs, "Service", "noisetune")
        (service_port,) = service["spec"]["ports"]
        assert service_port["targetPort"] in (port["name"], port["containerPort"])
        assert service["spec"]["selector"].items() <= pod_labels(docs, "noisetune").items()
        for probe in (container["readinessProbe"], container["livenessProbe"]):
            assert probe["httpGet"]["port"] in (port["name"], port["containerPort"])


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> Iterator[str]:
    path = tmp_path / "noisetune.db"
    shutil.copyfile(_sqlite_template, path)
    url = f"sqlite:///{path}"
    yield url
    open_storage(url).engine.dispose()


def test_probes_are_answered_200_by_the_real_server(
    rendered: dict[str, list[Manifest]],
    cli: TyperGroup,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = rendered["base"]
    (container,) = find(docs, "Deployment", "noisetune")["spec"]["template"]["spec"]["containers"]
    # Settings as `serve` builds them in this container: its variables, then its options.
    for name in [n for n in os.environ if n.startswith("NOISETUNE_")]:
        monkeypatch.delenv(name)
    for name, value in {**container_env(container, docs), STORAGE_ENV: sqlite_url}.items():
        monkeypatch.setenv(name, value)
    _, params = parse(cli, container["command"])
    settings = Settings(**{k: getattr(v, "value", v) for k, v in params.items() if v is not None})
    app = create_app(settings)
    paths = {getattr(route, "path", None) for route in app.routes}
    for probe in (container["readinessProbe"], container["livenessProbe"]):
        get = probe["httpGet"]
        assert get["path"] in paths
        headers = {h["name"].lower(): h["value"] for h in get.get("httpHeaders", [])}
        host = headers.get("host", f"{POD_IP}:{settings.port}")
        with TestClient(app, base_url=f"http://{host}") as client:
            assert client.get(get["path"]).status_code == 200, host
    # Clients in the cluster name the Service.
    service = find(docs, "Service", "noisetune")
    in_cluster = f"{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    with TestClient(app, base_url=f"http://{in_cluster}") as client:
        assert client.get("/healthz").status_code == 200
    # What the probes would get without their Host header.
    with TestClient(app, base_url=f"http://{POD_IP}:{settings.port}") as client:
        assert client.get("/healthz").status_code == 400


def test_the_termination_grace_covers_the_workers_own(
    rendered: dict[str, list[Manifest]], cli: TyperGroup
) -> None:
    for docs in rendered.values():
        pod = find(docs, "Deployment", "noisetune-worker")["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        _, params = parse(cli, container["command"])
        assert pod["terminationGracePeriodSeconds"] >= params["grace"] + GRACE_MARGIN_S


def test_workers_ask_for_one_gpu_but_on_the_cpu_overlay(
    rendered: dict[str, list[Manifest]],
) -> None:
    for name, docs in rendered.items():
        (container,) = find(docs, "Deployment", "noisetune-worker")["spec"]["template"]["spec"][
            "containers"
        ]
        limits = container["resources"].get("limits", {})
        if name == "cpu":
            assert "nvidia.com/gpu" not in limits
            assert "gpu" not in yaml.safe_dump(docs)
        else:
            assert limits["nvidia.com/gpu"] == 1
        assert container["resources"]["requests"].keys() >= {"cpu", "memory"}


def test_images_are_the_dockerfile_targets_at_this_version(
    rendered: dict[str, list[Manifest]],
) -> None:
    stages = set(re.findall(r"^FROM \S+ AS (\w+)", (ROOT / "Dockerfile").read_text(), flags=re.M))
    assert set(TARGET_OF_IMAGE.values()) <= stages
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    named = {image_name(s["image"]): s["build"]["target"] for s in compose.values() if "build" in s}
    assert named == TARGET_OF_IMAGE
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    tags = {"noisetune": version, "noisetune-worker": version}
    for name, docs in rendered.items():
        for _, container in noisetune_containers(docs):
            image = container["image"]
            want = tags[image_name(image)]
            if name == "cpu" and image_name(image) == "noisetune-worker":
                want += "-cpu"  # built with TORCH_VARIANT=cpu
            assert image == f"{image_name(image)}:{want}"
