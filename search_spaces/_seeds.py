"""Seeds derived from a base seed: one per purpose, stable across processes and machines."""

from __future__ import annotations

import hashlib


def derived_seed(seed: int, *salt: object) -> int:
    """A stable 32-bit seed from a base seed and a salt (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(repr((seed, *salt)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")
