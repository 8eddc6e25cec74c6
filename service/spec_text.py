"""Bounds on spec text before it is parsed: nesting depth of JSON bodies and of YAML.

Python's json and PyYAML build nested values recursively, so a body nested a few thousand
levels deep raises RecursionError (a 500) or takes long. No study spec nests deeper than
a handful of levels, so text nested beyond `MAX_DEPTH` is refused before it is parsed.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

import yaml
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.asgi_body import read_body, replaying
from service.responses import SafeJSONResponse

MAX_DEPTH = 64
# libyaml's parser when PyYAML was built with it: much faster than the Python one.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# A JSON string, escapes included; brackets inside strings do not nest anything.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class SpecTextError(ValueError):
    """Spec text that is refused before (or while) it is parsed."""


def json_too_deep(body: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text `body` nests arrays and objects deeper than `limit`.

    One linear scan, with no parsing: strings are cut out, then brackets are counted.
    """
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return any(depth > limit for depth in accumulate(_STEP[b] for b in brackets))


def load_yaml(text: str, limit: int = MAX_DEPTH) -> Any:
    """YAML (or JSON) text as plain data, refusing aliases and nesting deeper than `limit`.

    A first pass over the parser's events (no values are built) checks both; only then is
    the text loaded. Aliases are refused because a few of them can expand exponentially.
    """
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, yaml.AliasEvent):
                raise SpecTextError("YAML anchors and aliases (&name, *name) are not supported")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > limit:
                    raise SpecTextError(f"the spec nests deeper than {limit} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise SpecTextError(f"the spec is not valid YAML or JSON: {exc}") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        if isinstance(exc, SpecTextError):
            raise
        raise SpecTextError(f"the spec holds a value that cannot be read: {exc}") from None


_JSON_TYPES = ("application/json", "+json")


class JsonDepthLimit:
    """Answer 422 to a write request whose JSON body nests deeper than `MAX_DEPTH`.

    Runs inside `BodyLimit`, so the body it buffers is already bounded.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_DEPTH) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in {"POST", "PUT", "PATCH"}:
            await self.app(scope, receive, send)
            return
        kind = Headers(scope=scope).get("content-type", "").split(";")[0].strip().lower()
        # FastAPI reads a body without Content-Type as JSON too.
        if kind and not kind.endswith(_JSON_TYPES):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return
        if json_too_deep(body, self.limit):
            msg = f"the body nests arrays and objects deeper than {self.limit} levels"
            answer = SafeJSONResponse({"detail": [{"loc": ["body"], "msg": msg}]}, 422)
            await answer(scope, receive, send)
            return
        await self.app(scope, replaying(body, receive), send)
