"""The cost of checkpointing every epoch of the paper's network, against not saving.

deep_mlp on digits with the paper's settings (20 x 50 ReLU, simple init, plain SGD lr
0.03, batch 128, eta 1.0), trained for `--epochs` epochs with a checkpoint written at every
epoch end (`checkpoint_every: 1`, the costliest setting) into a directory store, and
without one. The two alternate, `--rounds` times each; each keeps its fastest round (this
machine's speed drifts from minute to minute). Prints seconds per epoch for both and the
overhead of saving as a share of an epoch's time.

    .venv/bin/python benchmarks/checkpoint_overhead.py [--epochs 30] [--rounds 3]

Target: under 5% of epoch time. A save costs about the same whatever the epoch (the state
is the network's, not the data's), so the share falls as epochs grow: the script also
prints what one save would be of an MNIST epoch (469 steps against digits' 11).
"""

from __future__ import annotations

import argparse
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


def run(epochs: int, store: CheckpointStore | None) -> float:
    """Seconds per epoch of one training run (saving every epoch when `store` is given)."""
    config = {**PAPER, "epochs": epochs, "seed": 0}
    curve: list[dict[str, Any]] = []
    checkpoint = None
    if store is not None:
        checkpoint = Checkpoint(store, "bench/0", every=1, resumed=None, curve=curve,
                                stopping=lambda: False, stop_exc=RuntimeError)  # fmt: skip
    started = time.perf_counter()
    train(config, eta=1.0, gamma=0.55, report=lambda e, m: curve.append({"epoch": e, **m}),
          checkpoint=checkpoint)  # fmt: skip
    return (time.perf_counter() - started) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as a worker trains
    run(2, None)  # warm-up: imports, the dataset, first allocations
    with tempfile.TemporaryDirectory(prefix="noisetune-ckpt-") as tmp:
        store = CheckpointStore(tmp)
        plain, saving = [], []
        for i in range(args.rounds):
            for side in ("plain", "saving") if i % 2 == 0 else ("saving", "plain"):
                if side == "plain":
                    plain.append(run(args.epochs, None))
                else:
                    saving.append(run(args.epochs, store))
        size = Path(tmp, "bench", "0.pt").stat().st_size
    best_plain, best_saving = min(plain), min(saving)
    print(f"epochs {args.epochs}, rounds {args.rounds}, checkpoint {size / 1024:.0f} KiB")
    print(f"no checkpoint:     {1000 * best_plain:7.2f} ms/epoch")
    print(f"checkpoint/epoch:  {1000 * best_saving:7.2f} ms/epoch")
    overhead = best_saving / best_plain - 1
    per_save = best_saving - best_plain
    print(f"overhead: {100 * overhead:.1f}% of epoch time (target < 5%)")
    # digits trains 11 steps an epoch; MNIST's 60,000 images at batch 128 take 469.
    mnist_epoch = best_plain * 469 / 11
    print(
        f"one save costs {1000 * per_save:.2f} ms: {100 * per_save / mnist_epoch:.2f}% of an "
        f"MNIST epoch of the same network (extrapolated from steps, not measured)"
    )


if __name__ == "__main__":
    main()
