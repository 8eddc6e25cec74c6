"""What browsers may ask: the Host check, cross-site writes, security headers, local /docs."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from service.security import HostAllowList, split_host

STUDIES = "/api/v1/studies"
EXTERNAL = re.compile(r"https?://", re.IGNORECASE)


def spec(name: str) -> dict[str, Any]:
    return {"name": name, "task": "quadratic"}


def test_host_names_and_ports() -> None:
    assert split_host("127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert split_host("[::1]:8000") == ("::1", 8000)
    assert split_host("[::1]") == ("::1", None)
    assert split_host("LocalHost") == ("localhost", None)
    assert split_host("::1") == ("::1", None)
    assert split_host("a.example:http") is None and split_host("[::1") is None
    hosts = HostAllowList(["svc.lab.org", " 10.0.0.5 "])
    for allowed in ("localhost:1", "127.0.0.1", "[::1]:9", "svc.lab.org:8000", "10.0.0.5"):
        assert hosts.allows(allowed), allowed
    for refused in ("attacker.example", "svc.lab.org.attacker.example", "", None, "lab.org"):
        assert not hosts.allows(refused), refused
    assert HostAllowList(["*"]).allows("anything.example")


def test_a_foreign_host_can_neither_create_nor_delete(make_client: Callable[..., Any]) -> None:
    client = make_client()
    assert client.post(STUDIES, json=spec("mine")).status_code == 201
    foreign = {"Host": "attacker.example"}
    refused = client.post(STUDIES, json=spec("theirs"), headers=foreign)
    assert refused.status_code == 400
    message = refused.json()["detail"]
    assert "attacker.example" in message and "--allowed-hosts" in message
    assert client.delete(f"{STUDIES}/mine", headers=foreign).status_code == 400
    assert client.get(STUDIES, headers=foreign).status_code == 400
    assert client.get("/", headers=foreign).status_code == 400
    assert [s["name"] for s in client.get(STUDIES).json()["data"]] == ["mine"]
    for loopback in ("localhost:8000", "127.0.0.1:1234", "[::1]:8000"):
        assert client.get(STUDIES, headers={"Host": loopback}).status_code == 200


def test_allowed_hosts_let_named_hosts_in(make_client: Callable[..., Any]) -> None:
    client = make_client(allowed_hosts="svc.lab.org,10.0.0.5")
    for host in ("svc.lab.org", "svc.lab.org:8000", "10.0.0.5:8000"):
        assert client.get(STUDIES, headers={"Host": host}).status_code == 200
    assert client.get(STUDIES, headers={"Host": "other.lab.org"}).status_code == 400
    anyone = make_client(allowed_hosts=["*"])
    assert anyone.post(STUDIES, json=spec("s"), headers={"Host": "x.example"}).status_code == 201


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:9999"},  # another port is another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_cross_site_writes_are_refused(
    make_client: Callable[..., Any], headers: dict[str, str]
) -> None:
    client = make_client()  # loopback and token-free: the mode cross-site pages aim at
    assert client.post(STUDIES, json=spec("s")).status_code == 201
    stop = client.post(f"{STUDIES}/s/stop", headers=headers)
    assert stop.status_code == 403
    assert "cross-site" in stop.json()["detail"]
    assert client.post(STUDIES, json=spec("s2"), headers=headers).status_code == 403
    assert client.delete(f"{STUDIES}/s", headers=headers).status_code == 403
    studies = client.get(STUDIES, headers=headers).json()["data"]  # reads stay open
    assert [(s["name"], s["status"]) for s in studies] == [("s", "running")]


def test_same_origin_writes_and_clients_without_origin_work(
    make_client: Callable[..., Any],
) -> None:
    client = make_client()
    same = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}
    assert client.post(STUDIES, json=spec("a"), headers=same).status_code == 201
    assert client.post(f"{STUDIES}/a/stop").status_code == 200  # curl, the CLI, httpx
    resumed = client.post(f"{STUDIES}/a/resume", headers={"Sec-Fetch-Site": "none"})
    assert resumed.status_code == 200
    ported = {"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8000"}
    assert client.post(f"{STUDIES}/a/stop", headers=ported).status_code == 200


def test_security_headers_on_pages_api_and_docs(make_client: Callable[..., Any]) -> None:
    client = make_client()
    for path in ("/", "/submit", STUDIES, "/docs", "/static/app.js", "/nowhere"):
        response = client.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-eval" not in csp and "'unsafe-inline'" not in csp.split("style-src")[0]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
    refused = client.get("/", headers={"Host": "attacker.example"})
    assert refused.headers["x-content-type-options"] == "nosniff"


def test_pages_have_no_inline_scripts(make_client: Callable[..., Any]) -> None:
    client = make_client()
    for path in ("/", "/submit", "/workers", "/docs"):
        html = client.get(path).text
        for tag in re.findall(r"<script[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, (path, tag)
        assert not re.search(r"\son[a-z]+=", html), path


def test_docs_load_nothing_from_another_host(make_client: Callable[..., Any]) -> None:
    client = make_client()
    html = client.get("/docs").text
    assert not EXTERNAL.search(html)
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert len(refs) == 4  # favicon, CSS, Swagger UI, its start-up script
    for ref in refs:
        assert ref.startswith("/"), ref
        assert client.get(ref).status_code == 200, ref
    assert "/openapi.json" in html
    assert client.get("/redoc").status_code == 404
    assert client.get("/static/swagger/index.html").status_code == 404
