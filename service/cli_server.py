"""How the CLI's write commands talk to a server: its URL, the token, and refusals as
one-line messages (no traceback)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from service.cli_common import fail

ServerOption = Annotated[
    str | None,
    typer.Option(help="the noisetune server (default: $NOISETUNE_SERVER or localhost:8000)"),
]


def refusal(response: Any) -> str:
    """What the server said was wrong, one message per line."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return f"HTTP {response.status_code}: {response.text[:500]}"
    if isinstance(detail, list):
        return "\n".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return str(detail)


def call_server(method: str, path: str, body: Any, server: str | None, *, what: str) -> Any:
    """Send `body` as JSON to the API path `path` (``/api/v1`` is added); the answer's
    JSON, or a clean exit saying why the server refused `what` (or could not be reached)."""
    import httpx

    from service.settings import ClientSettings

    client = ClientSettings()
    server = server or client.server
    headers = {"content-type": "application/json"}
    if client.api_token is not None:
        headers["authorization"] = f"Bearer {client.api_token.get_secret_value()}"
    try:
        content = json.dumps(body, allow_nan=False)
    except ValueError as exc:
        fail(f"{what}: a value JSON cannot carry: {exc}")
    url = server.rstrip("/") + "/api/v1" + path
    try:
        response = httpx.request(method, url, content=content, headers=headers, timeout=60)
    except httpx.ConnectError:
        fail(f"cannot connect to the noisetune server at {server} (is `noisetune serve` running?)")
    except httpx.HTTPError as exc:
        fail(f"request to {server} failed: {type(exc).__name__}: {exc}")
    if response.status_code >= 400:
        fail(f"the server refused {what} (HTTP {response.status_code}):\n{refusal(response)}")
    return response.json()
