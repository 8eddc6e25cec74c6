"""Checkpoints: the store (a directory, fsspec's memory), atomic saves, and exact resume."""

from __future__ import annotations

import uuid
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch

from worker.checkpoints import Checkpoint, CheckpointStore, default_store_url, saved_curve
from worker.tasks.deep_mlp import train

SMALL = {"dataset": "digits", "depth": 4, "width": 16, "epochs": 6, "lr": 0.05, "seed": 3}


class Stopped(Exception):
    pass


@pytest.fixture(params=["directory", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
    if request.param == "directory":
        return CheckpointStore(str(tmp_path / "checkpoints"))
    return CheckpointStore(f"memory://noisetune-test-{uuid.uuid4().hex}")


def _checkpoint(store: CheckpointStore, curve: list[dict[str, Any]], stop_after: int | None):
    resumed = store.load("s/0")
    return Checkpoint(
        store, "s/0", every=1, resumed=resumed, curve=curve,
        stopping=lambda: stop_after is not None and len(curve) >= stop_after,
        stop_exc=Stopped,
    )  # fmt: skip


def test_a_resumed_run_equals_the_uninterrupted_one_bit_for_bit(
    store: CheckpointStore, device: torch.device
) -> None:
    run = partial(train, SMALL, eta=0.3, gamma=0.55, device=str(device))
    whole: list[dict[str, Any]] = []
    reference = run(report=lambda e, m: whole.append(m))

    curve: list[dict[str, Any]] = []
    with pytest.raises(Stopped):  # stopped after epoch 2, its checkpoint written
        run(report=lambda e, m: curve.append({"epoch": e, **m}),
            checkpoint=_checkpoint(store, curve, stop_after=2))  # fmt: skip
    saved = store.load("s/0")
    assert saved is not None and saved["epoch"] == 2 and len(saved_curve(saved)) == 2
    rest: list[dict[str, Any]] = []
    resumed = run(report=lambda e, m: rest.append(m),
                  checkpoint=_checkpoint(store, list(saved_curve(saved)), None))  # fmt: skip
    assert resumed == reference  # == on floats: bit for bit
    assert [
        {k: v for k, v in p.items() if k != "epoch"} for p in saved_curve(saved)
    ] + rest == whole


def test_a_crash_during_a_save_leaves_the_previous_checkpoint(
    store: CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save("s/0", {"epoch": 1, "weights": torch.ones(3)}, wait=True)

    def crash(*_: Any, **__: Any) -> None:
        raise OSError("disk full")

    # The write happened; the swap did not (a directory renames with os.replace).
    monkeypatch.setattr(store.fs, "mv", crash)
    monkeypatch.setattr("worker.checkpoints.os.replace", crash)
    store.save("s/0", {"epoch": 2, "weights": torch.zeros(3)})  # written in the background
    with pytest.raises(OSError, match="disk full"):
        store.load("s/0")  # the failed write is raised by the next call
    kept = store.load("s/0")
    assert kept is not None and kept["epoch"] == 1 and torch.equal(kept["weights"], torch.ones(3))


def test_loading_never_unpickles_arbitrary_objects(store: CheckpointStore) -> None:
    store.save("s/0", {"fine": torch.ones(1)}, wait=True)
    path = store._path("s/0")
    with store.fs.open(path, "wb") as fh:  # a checkpoint holding a class instance
        torch.save({"evil": Stopped()}, fh)
    with pytest.raises(Exception, match="[Ww]eights only"):
        store.load("s/0")


def test_saves_are_written_in_order_before_anything_that_follows(store: CheckpointStore) -> None:
    for epoch in range(1, 21):  # in the background, one after the other
        store.save("s/0", {"epoch": epoch, "weights": torch.full((100,), float(epoch))})
    loaded = store.load("s/0")
    assert loaded is not None and loaded["epoch"] == 20 and bool((loaded["weights"] == 20).all())
    store.save("s/0", {"epoch": 21})
    store.remove("s/0")  # after the save before it: nothing is left behind
    store.wait()
    assert store.load("s/0") is None


def test_the_default_store_sits_beside_a_sqlite_database(tmp_path: Path) -> None:
    assert default_store_url(f"sqlite:///{tmp_path / 'x.db'}") == str(
        tmp_path / "noisetune-checkpoints"
    )
    assert default_store_url("postgresql+psycopg://u@h/db") is None
