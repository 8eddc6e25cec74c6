"""What `service.client.Client` raises: a server's refusal (its HTTP status and message),
a server that cannot be reached, and a spec file that cannot be read."""

from __future__ import annotations

from typing import Any


class NoisetuneError(Exception):
    """Anything the client raises on purpose; catch this to catch them all."""


class ClientError(NoisetuneError):
    """The server answered 4xx or 5xx.

    `status` is the HTTP status, `message` what the server said was wrong (one line per
    problem), `detail` the answer's ``detail`` as sent (a 422's list of ``{loc, msg}``).
    """

    def __init__(self, status: int, message: str, detail: Any = None, url: str = "") -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.detail, self.url = status, message, detail, url


class ServerUnreachable(NoisetuneError, ConnectionError):
    """No answer from the server at `url`: refused, timed out, or cut off."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(message)
        self.url = url


class SpecFileError(NoisetuneError, ValueError):
    """A spec file that cannot be read, is not YAML or JSON, or holds no study spec."""


def server_message(response: Any) -> tuple[str, Any]:
    """What a refusal says, one problem per line, and its ``detail`` as sent."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return f"HTTP {response.status_code}: {response.text[:500]}", None
    if isinstance(detail, list):
        lines = (str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        return "\n".join(lines), detail
    return str(detail), detail
