"""Checks on a raw study spec before any field is read: text a database can store, and a
nesting depth that no later step (validation, JSON dumps, the dashboard) recurses too far on.

The walk is iterative and stops at the depth limit, so a spec nested thousands of levels deep
is refused without a RecursionError. New submissions only: see `StudySpec.from_stored`.
"""

from __future__ import annotations

from typing import Any

# A spec's deepest legitimate value (sampler.options.x0.<name>) is four levels down; 32
# leaves room for task configs of plug-in tasks.
MAX_DEPTH = 32
# At most this many path segments in a message: the rest of a deep path adds nothing.
SHOWN_SEGMENTS = 8


def check_raw_spec(data: Any) -> None:
    """Raise `ValueError` naming where `data` holds text that cannot be encoded as UTF-8
    (a lone surrogate) or nests deeper than `MAX_DEPTH` levels."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            _check_text(value, path)
            continue
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, list | tuple):
            items = [(str(i), v) for i, v in enumerate(value)]
        else:
            continue
        # `path` has one segment per container above the values of this one.
        if len(path) + 1 > MAX_DEPTH:
            raise ValueError(
                f"{_label(path)}: nested deeper than {MAX_DEPTH} levels "
                f"(a spec may nest at most {MAX_DEPTH} mappings and lists)"
            )
        for key, item in items:
            if isinstance(key, str):
                _check_text(key, (*path, key), is_key=True)
            stack.append((item, (*path, str(key))))


def _check_text(text: str, path: tuple[str, ...], is_key: bool = False) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        what = "the key" if is_key else "the value"
        raise ValueError(
            f"{_label(path)}: {what} contains a character that cannot be encoded (lone surrogate)"
        ) from None


def _label(path: tuple[str, ...]) -> str:
    """A path safe to put in a message: unencodable characters escaped, long paths cut."""
    label = ".".join(_printable(segment) for segment in path[:SHOWN_SEGMENTS])
    if len(path) > SHOWN_SEGMENTS:
        label += f" ... ({len(path) - SHOWN_SEGMENTS} more levels)"
    return label or "the spec"


def _printable(segment: str) -> str:
    return segment.encode("utf-8", "backslashreplace").decode("utf-8")
