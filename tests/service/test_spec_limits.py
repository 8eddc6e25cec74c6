"""Spec input that used to make the server answer 500 or stall: deep nesting, size, surrogates."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from service.responses import SafeJSONResponse
from service.spec_text import MAX_DEPTH, json_too_deep

STUDIES = "/api/v1/studies"
PARSE = "/api/v1/specs/parse"
JSON = {"content-type": "application/json"}
YAML = {"content-type": "application/yaml"}
DEEP = 3000


def deep_json() -> str:
    return "[" * DEEP + "]" * DEEP


def deep_x0() -> str:
    """A spec whose sampler.options.x0 is nested `DEEP` levels."""
    inner = '{"a": ' * DEEP + "1" + "}" * DEEP
    return (
        '{"name": "deep", "task": "quadratic", "sampler": {"type": "cmaes", '
        f'"options": {{"x0": {inner}}}}}}}'
    )


def deep_yamls() -> list[str]:
    # Block style indents one more space per level, so deep YAML fits a body only as flow
    # collections or as "- - - ..." on one line.
    return [
        "{a: " * DEEP + "1" + "}" * DEEP,
        "- " * DEEP + "1\n",
        "name: deep\ntask: quadratic\nsampler:\n  type: cmaes\n  options:\n    x0: "
        + "[" * DEEP
        + "]" * DEEP
        + "\n",
    ]


def test_json_depth_scan() -> None:
    assert not json_too_deep(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    assert json_too_deep(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    # Brackets inside strings, escaped quotes included, nest nothing.
    assert not json_too_deep(b'{"a": "' + b"[" * 100 + b'\\"{{{{", "b": [1]}')
    assert json_too_deep(b'{"a": "\\"", "b": ' + b"{" * 100 + b"}" * 100 + b"}")


def _warm(client: Any) -> Any:
    """The client after one request: a new app opens its database (and checks its schema
    version) on first use, which is start-up, not the time an answer takes."""
    assert client.get("/healthz").status_code == 200
    return client


def _timed(client: Any, url: str, body: str, headers: dict[str, str]) -> Any:
    started = time.monotonic()
    response = client.post(url, content=body, headers=headers)
    assert time.monotonic() - started < 1.0, (url, body[:40])
    return response


def test_deep_json_is_refused_quickly_on_both_endpoints(make_client: Callable[..., Any]) -> None:
    client = _warm(make_client())
    for body in (deep_json(), deep_x0()):
        for url in (STUDIES, PARSE):
            response = _timed(client, url, body, JSON)
            assert response.status_code == 422, response.text
            assert f"deeper than {MAX_DEPTH} levels" in response.json()["detail"][0]["msg"]
    # Without a Content-Type FastAPI reads JSON too, so the guard applies as well.
    assert _timed(client, STUDIES, deep_x0(), {}).status_code == 422
    assert client.get(STUDIES).json()["count"] == 0
    # Nesting that a spec may have is fine.
    shallow = '{"name": "ok", "task": "quadratic", "sampler": {"type": "cmaes", "options": {}}}'
    assert client.post(STUDIES, content=shallow, headers=JSON).status_code == 201


def test_deep_yaml_is_refused_quickly(make_client: Callable[..., Any]) -> None:
    client = _warm(make_client())
    for text in deep_yamls():
        response = _timed(client, PARSE, text, YAML)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body"]


def test_spec_parse_takes_at_most_64_kib(make_client: Callable[..., Any]) -> None:
    client = make_client()
    spec = "name: big\ntask: quadratic\n"
    padded = spec + "#" * (64 * 1024 - len(spec) - 1) + "\n"
    assert client.post(PARSE, content=padded, headers=YAML).status_code == 200
    response = client.post(PARSE, content=padded + "#", headers=YAML)
    assert response.status_code == 413
    assert "at most 65536 bytes" in response.json()["detail"]
    # A maximal flow sequence parses (and is refused as not a mapping). How fast, and that
    # the server answers meanwhile, is tests/e2e/test_parse_load.py's to measure.
    flow = "[" + ", ".join(["1"] * (64 * 1024 // 3 - 1)) + "]"
    response = client.post(PARSE, content=flow, headers=YAML)
    assert response.status_code == 422 and "mapping" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "\\ud800", "task": "quadratic"}',
        '{"name": "s", "task": "quadratic", "\\ud800": 1}',
        '{"name": "s", "task": "quadratic", "task_config": {"\\udfff": "\\ud800"}}',
    ],
)
def test_a_lone_surrogate_answers_422_and_stores_nothing(
    make_client: Callable[..., Any], body: str
) -> None:
    client = make_client()
    for url, headers in ((STUDIES, JSON), (PARSE, JSON), (PARSE, YAML)):
        response = client.post(url, content=body, headers=headers)
        assert response.status_code == 422, (url, response.text)
        assert response.json()["detail"]
    assert client.get(STUDIES).json()["count"] == 0


def test_messages_with_a_lone_surrogate_can_be_sent() -> None:
    response = SafeJSONResponse({"detail": [{"loc": ["body", "\ud800"], "msg": "bad \udfff"}]})
    assert response.body == b'{"detail":[{"loc":["body","\\\\ud800"],"msg":"bad \\\\udfff"}]}'
    assert SafeJSONResponse({"detail": "caf\u00e9"}).body == '{"detail":"café"}'.encode()
