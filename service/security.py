"""What a browser may ask of the server: the Host check, cross-site writes, security headers.

A page on another site can make a browser send requests here: by DNS rebinding (its own
name resolving to this server, so the request carries its ``Host``) or by a plain
cross-site form or fetch (carrying its ``Origin``). Both are refused before any route runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.responses import SafeJSONResponse
from service.settings import LOOPBACK_HOSTS

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Sec-Fetch-Site values a write may carry: the dashboard's own fetches ("same-origin") and
# requests a user makes directly ("none"). "same-site" is refused too: another port or
# subdomain of the same host is another origin, and may run someone else's page.
ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# Scripts only from this server. Plotly and Swagger UI set inline styles on the elements
# they draw, so styles allow 'unsafe-inline' (a style cannot run code); images allow data:
# URLs for the same reason (Swagger UI's icons).
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


def split_host(value: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a Host header value (``[::1]:8000`` gives ``("::1", 8000)``).

    None when the value is not a host name with an optional port.
    """
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    else:
        name, colon, port_text_ = value.rpartition(":")
        if not colon or ":" in name:  # no port, or a bare IPv6 address
            name, port_text = value, None
        else:
            port_text = port_text_
    if not name:
        return None
    if port_text is None:
        return name, None
    if not port_text.isdigit() or int(port_text) > 65535:
        return None
    return name, int(port_text)


class HostAllowList:
    """The names this server answers to: loopback always, plus the configured ones.

    ``*`` among the names allows any Host: only for a server behind a proxy that checks it.
    """

    def __init__(self, names: Iterable[str]) -> None:
        given = {n.strip().lower().strip("[]") for n in names if n.strip()}
        self.any = "*" in given
        self.names = frozenset(given | LOOPBACK_HOSTS)

    def allows(self, host: str | None) -> bool:
        if self.any:
            return True
        parsed = split_host(host) if host else None
        return parsed is not None and parsed[0] in self.names


def _same_origin(origin: str, host: str, scheme: str) -> bool:
    """Whether the ``Origin`` header names this server as the request reached it."""
    if origin == "null":
        return False
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    own = split_host(host)
    if own is None or parts.hostname is None or parts.hostname != own[0]:
        return False
    if own[1] is None:
        # A Host without a port is the scheme's default port. Behind a TLS proxy that does
        # not say it terminated TLS, the request looks like http while the page was https:
        # either default port is then this server.
        return origin_port in {DEFAULT_PORTS.get(scheme), 80, 443}
    return origin_port == own[1]


def _refuse(status: int, message: str) -> SafeJSONResponse:
    return SafeJSONResponse({"detail": message}, status_code=status)


class BrowserGuard:
    """Refuse requests for a Host not allowed (400) and cross-site writes (403).

    Requests without ``Origin`` and ``Sec-Fetch-Site`` (curl, the CLI, httpx) are not
    cross-site: only browsers send those headers, and browsers always send them on
    cross-site writes.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = ()) -> None:
        self.app, self.hosts = app, HostAllowList(allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host")
        if not self.hosts.allows(host):
            answer = _refuse(
                400,
                f"this server does not answer to the host {host!r}; to allow it, start the "
                "server with --allowed-hosts NAME (or set NOISETUNE_ALLOWED_HOSTS)",
            )
            await answer(scope, receive, send)
            return
        if scope["method"] in WRITE_METHODS:
            site = headers.get("sec-fetch-site")
            origin = headers.get("origin")
            if site is not None and site.lower() not in ALLOWED_FETCH_SITES:
                why = f"a {site} request (Sec-Fetch-Site)"
            elif origin is not None and not _same_origin(
                origin.strip().lower(), host or "", scope.get("scheme", "http")
            ):
                why = f"a request from {origin!r}"
            else:
                await self.app(scope, receive, send)
                return
            answer = _refuse(
                403, f"cross-site writes are refused: {why} may not change this server"
            )
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Add the Content-Security-Policy and the other security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
