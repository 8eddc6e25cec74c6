"""Named search spaces that ship with noisetune."""

from __future__ import annotations

from typing import Any

from search_spaces._params import SearchSpace, SearchSpaceError, parse_search_space
from search_spaces.schedules import DEFAULT_GAMMA

PAPER_ETAS = [0.01, 0.3, 1.0]

BUILTIN_SPACES: dict[str, dict[str, Any]] = {
    # The paper's grid: eta from {0.01, 0.3, 1.0}, gamma fixed at 0.55.
    "paper": {"eta": {"type": "categorical", "choices": PAPER_ETAS}, "gamma": DEFAULT_GAMMA},
    # The same etas with gamma searched too.
    "paper-gamma": {
        "eta": {"type": "categorical", "choices": PAPER_ETAS},
        "gamma": {"type": "float", "low": 0.3, "high": 1.0},
    },
    # eta = 0 is the no-noise control the paper compares against.
    "paper-baseline": {
        "eta": {"type": "categorical", "choices": [0.0, *PAPER_ETAS]},
        "gamma": DEFAULT_GAMMA,
    },
    # Which schedule: the five families with eta 0 as the control, each family's own
    # parameter searched only when it is chosen (placement, scale and window: defaults).
    "schedules": {
        "schedule": {
            "type": "categorical",
            "choices": ["polynomial", "constant", "exponential", "cosine", "linear"],
        },
        "eta": {"type": "categorical", "choices": [0.0, *PAPER_ETAS]},
        "gamma": {
            "type": "float",
            "low": 0.3,
            "high": 1.0,
            "when": {"schedule": ["polynomial"]},
        },
        "half_life": {
            "type": "int",
            "low": 10,
            "high": 10000,
            "log": True,
            "when": {"schedule": ["exponential"]},
        },
        "horizon": {
            "type": "int",
            "low": 100,
            "high": 100000,
            "log": True,
            "when": {"schedule": ["cosine", "linear"]},
        },
    },  # fmt: skip
    "wide": {
        "eta": {"type": "float", "low": 1e-3, "high": 3.0, "log": True},
        "gamma": {"type": "float", "low": 0.0, "high": 1.0},
        "lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
    },
}


def builtin_space_names() -> list[str]:
    return list(BUILTIN_SPACES)


def resolve_search_space(name_or_space: str | dict[str, Any] | SearchSpace) -> SearchSpace:
    """A built-in name or an inline space, parsed."""
    if isinstance(name_or_space, str):
        if name_or_space not in BUILTIN_SPACES:
            raise SearchSpaceError(
                f"unknown built-in search space {name_or_space!r}; "
                f"built-in spaces are {', '.join(BUILTIN_SPACES)}"
            )
        return parse_search_space(BUILTIN_SPACES[name_or_space])
    return parse_search_space(name_or_space)
