"""Where trials keep their checkpoints, and the object a trainer saves and loads through.

A store is a directory or any fsspec URL (a shared file system; ``s3://bucket/prefix``
with s3fs installed; ``memory://`` in tests). A trial's checkpoint is keyed by its study
and the number of its first attempt, so a retry of a lost or interrupted trial finds the
checkpoint its first attempt (or any later one) saved. Writes go to a temporary name and
are then moved over the old checkpoint: a crash during a save leaves the previous one
readable. Loading never unpickles arbitrary objects (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import fsspec
import torch
from sqlalchemy.engine import make_url

log = logging.getLogger("noisetune.worker")

DEFAULT_DIR_NAME = "noisetune-checkpoints"
# Without checkpoint_every, a trainer saves at every epoch end but at most this often.
MIN_SAVE_INTERVAL_S = 60.0


class CheckpointStore:
    """Checkpoints under one directory or fsspec URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key}.pt"

    def save(self, key: str, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        path = self._path(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        temporary = f"{path}.{uuid.uuid4().hex}.partial"
        with self.fs.open(temporary, "wb") as fh:
            fh.write(buffer.getvalue())
        self.fs.mv(temporary, path)  # a rename on a file system: the old one or the new one

    def load(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as fh:
            data = fh.read()
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        return state if isinstance(state, dict) else None

    def remove(self, key: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm(path)

    def copy(self, key: str, to: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.copy(path, self._path(to))


def default_store_url(storage_url: str) -> str | None:
    """``noisetune-checkpoints/`` beside a SQLite database; None for other databases."""
    url = make_url(storage_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return str(Path(url.database).resolve().parent / DEFAULT_DIR_NAME)


class Checkpoint:
    """What a trainer that takes ``checkpoint`` saves through and resumes from.

    ``load()`` gives the last saved state (None: start from scratch); ``save(state)`` at
    every epoch end, which writes as the study asks: every `every` epochs, or (unset) at
    most once a minute; and always when the worker is stopping, after which it raises the
    worker's stop exception.
    """

    def __init__(
        self,
        store: CheckpointStore,
        key: str,
        *,
        every: int | None,
        resumed: dict[str, Any] | None,
        curve: list[dict[str, Any]],
        stopping: Any,
        stop_exc: type[BaseException],
    ) -> None:
        self.store, self.key, self.every = store, key, every
        self.resumed = resumed
        self.curve, self.stopping, self.stop_exc = curve, stopping, stop_exc
        self.saves_asked = 0
        self.saved_at = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        return None if self.resumed is None else self.resumed.get("trainer")

    def save(self, state: dict[str, Any]) -> None:
        self.saves_asked += 1
        stop = bool(self.stopping())
        if self.every is not None:
            due = self.saves_asked % self.every == 0
        else:
            due = time.monotonic() - self.saved_at >= MIN_SAVE_INTERVAL_S
        if due or stop:
            epoch = self.curve[-1]["epoch"] if self.curve else 0
            self.store.save(self.key, {"trainer": state, "curve": list(self.curve), "epoch": epoch})
            self.saved_at = time.monotonic()
        if stop:
            raise self.stop_exc
