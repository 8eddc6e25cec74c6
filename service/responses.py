"""A JSON response that any Python string can go into, lone surrogates included.

JSON text must be UTF-8, which cannot hold a lone surrogate (``"\\ud800"`` decoded by
``json.loads``). A message that echoes such input would make Starlette's `JSONResponse`
fail with a 500; this one writes the surrogate as the visible text ``\\ud800`` instead.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


def printable(value: Any) -> Any:
    """`value` with lone surrogates in its strings (keys included) written as ``\\udXXXX``."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(v) for v in value]
    return value


class SafeJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return super().render(printable(content))
