"""Reading a request's whole body inside ASGI middleware, and handing it on unchanged.

Middleware that must see the body first (its size, its nesting) buffers it here and
replays it to the app, which then reads it as if nothing had come between.
"""

from __future__ import annotations

from starlette.types import Message, Receive


class BodyTooLarge(Exception):
    """More bytes arrived than the caller allows."""


async def read_body(receive: Receive, max_bytes: int | None = None) -> bytes | None:
    """The whole body, or None when the client disconnected first.

    Raises `BodyTooLarge` as soon as more than `max_bytes` arrived (nothing more is read).
    """
    body, more = bytearray(), True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if max_bytes is not None and len(body) > max_bytes:
            raise BodyTooLarge
    return bytes(body)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives `body` once, then whatever `receive` gives (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
