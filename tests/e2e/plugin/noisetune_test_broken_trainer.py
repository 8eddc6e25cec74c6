"""A trainer module that fails at import, as one with a missing dependency does."""

from __future__ import annotations

import noisetune_missing_dependency  # type: ignore[import-not-found]  # noqa: F401


def train(config: dict, **kwargs: object) -> dict:
    raise AssertionError("never reached")
