"""How the CLI's write commands talk to a server, through `service.client.Client`: its URL,
the token, and refusals as one-line messages (no traceback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.cli_common import fail

if TYPE_CHECKING:
    from service.client import Client

ServerOption = Annotated[
    str | None,
    typer.Option(help="the noisetune server (default: $NOISETUNE_SERVER or localhost:8000)"),
]


@contextmanager
def server_client(server: str | None, *, what: str) -> Iterator[Client]:
    """A client of `server` (default: $NOISETUNE_SERVER); its errors end the command with
    one message saying why the server refused `what`, or could not be reached."""
    from service.client import Client, ClientError, ServerUnreachable, SpecFileError

    try:
        with Client(server) as client:
            yield client
    except ClientError as exc:
        fail(f"the server refused {what} (HTTP {exc.status}):\n{exc.message}")
    except ServerUnreachable as exc:
        fail(str(exc))
    except SpecFileError as exc:
        fail(str(exc))


def call_server(method: str, path: str, body: Any, server: str | None, *, what: str) -> Any:
    """Send `body` as JSON to the API path `path` (``/api/v1`` is added); the answer's
    JSON, or a clean exit saying why the server refused `what` (or could not be reached)."""
    with server_client(server, what=what) as client:
        try:
            return client.request(method, path, body).json()
        except ValueError as exc:
            fail(f"{what}: {exc}")
