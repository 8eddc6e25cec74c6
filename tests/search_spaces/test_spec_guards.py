"""Guards on a raw spec: text a database can store, and nesting no step recurses too far on."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from pydantic import ValidationError

from search_spaces import StudySpec
from search_spaces._spec_guards import MAX_DEPTH, check_raw_spec


def nested(levels: int, leaf: Any = 1) -> Any:
    """`levels` mappings, one inside the next, built without recursion."""
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"task_config": {"x": "a\ud800b"}}, "task_config.x: the value contains"),
        ({"task_config": {"x\ud800": 1}}, "task_config.x\\ud800: the key contains"),
        ({"name": "\udfff"}, "name: the value contains"),
        ({"search_space": {"eta": {"choices": ["ok", "\ud83d"]}}}, "search_space.eta.choices.1:"),
    ],
)
def test_text_that_cannot_be_encoded_is_refused_naming_where(
    raw: dict[str, Any], where: str
) -> None:
    with pytest.raises(ValueError) as info:
        check_raw_spec(raw)
    message = str(info.value)
    assert message.startswith(where)
    assert message.endswith("contains a character that cannot be encoded (lone surrogate)")
    message.encode("utf-8")  # the message itself can be sent back
    with pytest.raises(ValidationError, match="lone surrogate"):
        StudySpec.model_validate({"name": "s", "task": "quadratic", **raw})


def test_nesting_is_limited_to_32_levels() -> None:
    check_raw_spec(nested(MAX_DEPTH))  # the spec itself is the outermost level
    check_raw_spec([nested(MAX_DEPTH - 1)])
    with pytest.raises(
        ValueError, match="a.a.a.a.a.a.a.a ... \\(24 more levels\\): nested deeper than 32"
    ):
        check_raw_spec(nested(MAX_DEPTH + 1))
    with pytest.raises(ValueError, match=r"^0\.0\.a\.a.* nested deeper"):
        check_raw_spec([[nested(MAX_DEPTH - 1)]])


@pytest.mark.parametrize("levels", [500, 3000, 50_000])
def test_deep_specs_are_refused_without_recursing(levels: int) -> None:
    raw = {
        "name": "s",
        "task": "quadratic",
        "search_space": {"eta": {"type": "float", "low": 0.1, "high": 1.0}},
        "sampler": {"type": "cmaes", "options": {"x0": nested(levels)}},
    }
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # far below the depth: a recursive walk could not get through
    try:
        with pytest.raises(
            ValueError, match=r"sampler\.options\.x0\.a\.a\.a\.a\.a .* nested deeper"
        ):
            check_raw_spec(raw)
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(ValidationError, match="nested deeper than 32 levels"):
        StudySpec.model_validate(raw)


def test_specs_stored_before_the_guards_still_load() -> None:
    # SQLite stored these: JSON escapes a lone surrogate, and options were not checked.
    stored = StudySpec.from_stored(
        {
            "name": "s",
            "task": "deep_mlp",
            "task_config": {"data_dir": "/data/\ud800"},
            "search_space": {"eta": {"type": "float", "low": 0.1, "high": 1.0}},
            "sampler": {"type": "cmaes", "options": {"x0": nested(40)}},
        }
    )
    assert stored.task_config["data_dir"] == "/data/\ud800"
    with pytest.raises(ValidationError, match="nested deeper than 32 levels"):
        StudySpec.model_validate(stored.model_dump())  # not as a new submission
