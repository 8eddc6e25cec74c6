"""Where trials keep their checkpoints, and the object a trainer saves and loads through.

A store is a directory or any fsspec URL (a shared file system; ``s3://bucket/prefix``
with s3fs installed; ``memory://`` in tests). A trial's checkpoint is keyed by its study
and the number of its first attempt, so a retry of a lost or interrupted trial finds the
checkpoint its first attempt (or any later one) saved. Writes go to a temporary name and
are then moved over the old checkpoint: a crash during a save leaves the previous one
readable. Loading never unpickles anything (see ``worker.checkpoint_format``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem
from sqlalchemy.engine import make_url

from worker import checkpoint_format

log = logging.getLogger("noisetune.worker")

DEFAULT_DIR_NAME = "noisetune-checkpoints"
# Without checkpoint_every, a trainer saves at every epoch end but at most this often.
MIN_SAVE_INTERVAL_S = 60.0
T = TypeVar("T")


class CheckpointStore:
    """Checkpoints under one directory or fsspec URL.

    ``save`` takes a snapshot of the state (its bytes) and leaves the writing to one
    background thread, so training goes on while the file system works (on ext4, replacing
    a file by a rename waits for its data: a millisecond, a few percent of a small epoch).
    Every other call first waits for the writes before it, so what ``load`` reads and what
    ``remove`` removes is what was saved last. A failed write is raised by the next call.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.fs.makedirs(self.root, exist_ok=True)
        self._folders: set[str] = set()  # made already: a save need not ask again
        self._lock = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None  # made at the first save
        self._last: Future[Any] | None = None

    def _path(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key}.pt"

    def save(self, key: str, state: dict[str, Any], *, wait: bool = False) -> None:
        """Save `state` under `key`; written in the background unless `wait`."""
        data = b"".join(checkpoint_format.dumps(state))  # a copy: training changes the tensors
        self._run(self._write, key, data, wait=wait)

    def load(self, key: str) -> dict[str, Any] | None:
        state: dict[str, Any] | None = self._run(self._read, key, wait=True)
        return state

    def remove(self, key: str) -> None:
        self._run(self._remove, key, wait=True)

    def copy(self, key: str, to: str) -> None:
        self._run(self._copy, key, to, wait=True)

    def wait(self) -> None:
        """Wait for every save so far; raise what a failed one raised."""
        self._run(lambda: None, wait=True)

    def _run(self, job: Callable[..., T], *args: Any, wait: bool) -> T | None:
        with self._lock:
            previous, self._last = self._last, None
        if previous is not None:
            previous.result()  # done long ago as a rule (it had an epoch); raises its error
        with self._lock:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="checkpoint-writer")
            # One thread, first come first served: a job runs after every save before it.
            future = self._writer.submit(job, *args)
            if not wait:
                self._last = future
        return future.result() if wait else None

    def _write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        folder = path.rsplit("/", 1)[0]
        if folder not in self._folders:
            self.fs.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        temporary = f"{path}.{uuid.uuid4().hex}.partial"
        if isinstance(self.fs, LocalFileSystem):  # the same, with less Python per save
            with open(temporary, "wb") as fh:
                fh.write(data)
            os.replace(temporary, path)
            return
        with self.fs.open(temporary, "wb") as fh:
            fh.write(data)
        self.fs.mv(temporary, path)  # a rename on a file system: the old one or the new one

    def _read(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as fh:
            data = fh.read()
        state = checkpoint_format.loads(data)
        return state if isinstance(state, dict) else None

    def _remove(self, key: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm(path)

    def _copy(self, key: str, to: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.copy(path, self._path(to))


def default_store_url(storage_url: str) -> str | None:
    """``noisetune-checkpoints/`` beside a SQLite database; None for other databases."""
    url = make_url(storage_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return str(Path(url.database).resolve().parent / DEFAULT_DIR_NAME)


class SaveCadence:
    """Which epoch ends write a checkpoint: every `every` epochs, or (None) at most once a
    minute. One cadence serves all members of a stack, so that they save at the same
    epochs and a stack lost as a whole resumes as a whole."""

    def __init__(self, every: int | None) -> None:
        self.every = every
        self.saved_at = time.monotonic()
        self._decided: tuple[int, bool] = (0, False)

    def due(self, asked: int) -> bool:
        """Whether the `asked`-th save request (counting from 1) writes."""
        if self._decided[0] != asked:
            if self.every is not None:
                due = asked % self.every == 0
            else:
                due = time.monotonic() - self.saved_at >= MIN_SAVE_INTERVAL_S
            if due:
                self.saved_at = time.monotonic()
            self._decided = (asked, due)
        return self._decided[1]


class Checkpoint:
    """What a trainer that takes ``checkpoint`` saves through and resumes from.

    ``load()`` gives the last saved state (None: start from scratch); ``save(state)`` at
    every epoch end, which writes as the study asks (``SaveCadence``); and always when the
    worker is stopping, after which it raises the worker's stop exception. `state` may be
    a function that returns it, called only when a save is due (a stack's members then
    build their states only at the epochs that write them).
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
        cadence: SaveCadence | None = None,
    ) -> None:
        self.store, self.key = store, key
        self.cadence = cadence if cadence is not None else SaveCadence(every)
        self.resumed = resumed
        self.curve, self.stopping, self.stop_exc = curve, stopping, stop_exc
        self.saves_asked = 0
        # The curve only grows: each point is encoded once, not at every save.
        self._encoded_points: list[str] = []

    def load(self) -> dict[str, Any] | None:
        return None if self.resumed is None else self.resumed.get("trainer")

    def save(self, state: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        self.saves_asked += 1
        stop = bool(self.stopping())
        if self.cadence.due(self.saves_asked) or stop:
            trainer_state = state() if callable(state) else state
            epoch = self.curve[-1]["epoch"] if self.curve else 0
            saved = {"trainer": trainer_state, "curve_json": self._curve_json(), "epoch": epoch}
            self.store.save(self.key, saved, wait=stop)  # on disk before the worker goes
        if stop:
            raise self.stop_exc

    def _curve_json(self) -> str:
        new = self.curve[len(self._encoded_points) :]
        self._encoded_points.extend(json.dumps(point) for point in new)
        return "[" + ",".join(self._encoded_points) + "]"


def saved_curve(saved: dict[str, Any]) -> list[dict[str, Any]]:
    """The curve a checkpoint holds (``curve_json``; 0.2 checkpoints held ``curve``)."""
    if isinstance(saved.get("curve_json"), str):
        curve = json.loads(saved["curve_json"])
    else:
        curve = saved.get("curve")
    return [p for p in curve if isinstance(p, dict)] if isinstance(curve, list) else []
