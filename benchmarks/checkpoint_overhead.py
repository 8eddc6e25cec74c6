"""The cost of checkpointing every epoch of the paper's network, against not saving.

deep_mlp on digits with the paper's settings (20 x 50 ReLU, simple init, plain SGD lr
0.03, batch 128, eta 1.0), checkpointing into a directory store. This machine's speed
drifts from minute to minute and a neighbour's load hits single epochs, so comparing one
run that saves with one that does not measures the drift more than the save. The pairing
here is per epoch instead: one run saves after every other epoch (`checkpoint_every: 2`),
so an epoch that follows a save and one that does not alternate every few tens of
milliseconds; the median of each kind gives the cost of one save, which is what saving
every epoch (`checkpoint_every: 1`, the costliest setting) adds to each epoch. A run that
saves every epoch and one that never saves are also timed, alternating, as a check.

    .venv/bin/python benchmarks/checkpoint_overhead.py [--epochs 40] [--rounds 4]

Target: under 5% of epoch time. A save costs about the same whatever the epoch (the state
is the network's, not the data's), so the share falls as epochs grow: the script also
prints what one save would be of an MNIST epoch (469 steps against digits' 11).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from worker.checkpoints import Checkpoint, CheckpointStore  # noqa: E402
from worker.tasks.deep_mlp import train  # noqa: E402

PAPER = {"dataset": "digits", "depth": 20, "width": 50, "lr": 0.03, "batch_size": 128}


def run(epochs: int, store: CheckpointStore | None, every: int = 1) -> list[float]:
    """Seconds between consecutive reports: entry i holds epoch i + 2's training and, with
    `store`, the save after epoch i + 1 when that epoch is a multiple of `every`."""
    config = {**PAPER, "epochs": epochs, "seed": 0}
    curve: list[dict[str, Any]] = []
    checkpoint = None
    if store is not None:
        checkpoint = Checkpoint(store, "bench/0", every=every, resumed=None, curve=curve,
                                stopping=lambda: False, stop_exc=RuntimeError)  # fmt: skip
    stamps: list[float] = []

    def report(epoch: int, metrics: dict[str, float]) -> None:
        stamps.append(time.perf_counter())
        curve.append({"epoch": epoch, **metrics})

    train(config, eta=1.0, gamma=0.55, report=report, checkpoint=checkpoint)
    return [b - a for a, b in itertools.pairwise(stamps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a worker trains
    run(2, None)  # warm-up: imports, the dataset, first allocations
    after_save, after_none, plain, saving = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="noisetune-ckpt-") as tmp:
        store = CheckpointStore(tmp)
        for i in range(args.rounds):
            gaps = run(args.epochs, store, every=2)
            after_save += gaps[1::2]  # epoch 2's save lies between the reports of 2 and 3
            after_none += gaps[0::2]
            for side in ("plain", "saving") if i % 2 == 0 else ("saving", "plain"):
                if side == "plain":
                    plain += run(args.epochs, None)
                else:
                    saving += run(args.epochs, store, every=1)
        size = Path(tmp, "bench", "0.pt").stat().st_size
    epoch = statistics.median(after_none)
    per_save = statistics.median(after_save) - epoch
    print(f"digits, 20 x 50, {args.rounds} rounds of {args.epochs} epochs, "
          f"checkpoint {size / 1024:.0f} KiB")  # fmt: skip
    print(f"epoch, no save before it:    {1000 * epoch:7.2f} ms  (median of {len(after_none)})")
    print(f"epoch after a save:          {1000 * (epoch + per_save):7.2f} ms  "
          f"(median of {len(after_save)})")  # fmt: skip
    print(f"one save: {1000 * per_save:.2f} ms = overhead of saving every epoch: "
          f"{100 * per_save / epoch:.1f}% of epoch time (target < 5%)")  # fmt: skip
    run_plain, run_saving = statistics.median(plain), statistics.median(saving)
    print(f"check, separate runs: {1000 * run_plain:.2f} ms/epoch never saving, "
          f"{1000 * run_saving:.2f} saving every epoch ({100 * (run_saving / run_plain - 1):+.1f}%,"
          f" drift included)")  # fmt: skip
    # digits trains 11 steps an epoch; MNIST's 60,000 images at batch 128 take 469.
    mnist_epoch = epoch * 469 / 11
    print(f"one save is {100 * per_save / mnist_epoch:.2f}% of an MNIST epoch of the same "
          f"network (extrapolated from steps, not measured)")  # fmt: skip


if __name__ == "__main__":
    main()
