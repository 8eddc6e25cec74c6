"""Finished deep_mlp trials per hour: stacked trials (--batch K) against one trial at a time.

Each measurement is a fresh SQLite database, one study and real worker processes
(``python -m worker --exit-when-idle --batch K``), the same for every K: digits, the paper's
20 x 50 ReLU network with its settings (simple init, plain SGD lr 0.03, batch 128), eta from
the paper's {0.01, 0.3, 1.0} with gamma 0.55, a seeded random sampler (so every K trains the
same parameters) and no pruner (every trial runs all its epochs). Throughput comes from the
trials' own timestamps: finished trials / (last completion - first start).

K = 1 is one trial per process at a time, one worker per core (each with one torch thread);
every K > 1 runs the same number of workers with ``--batch K``. The trial count is
workers x the largest K, so every stack is full. Every K runs once per round, the rounds in
alternating order (1, 8, 16, 32, then 32, 16, 8, 1), and each K keeps its best round: on a
shared machine, load from elsewhere then weighs on no K more than another. 25 epochs by
default instead of the paper's 150 keep two rounds to about eight minutes on two cores; the
ratios are what matter (``--full`` runs 150).

    .venv/bin/python benchmarks/stacked.py                          # cpu: K = 1, 8, 16, 32
    .venv/bin/python benchmarks/stacked.py --full --rounds 1
    .venv/bin/python benchmarks/stacked.py --device cuda --workers 1 --stack-sizes 32 128 256

What shaped the stacked code, measured on a 2-core CPU with a 16-member stack of the paper's
network (the figures the code's comments refer to):
- autograd's bookkeeping (a graph node per layer, a Python call per node) cost about a
  third of a step, hence gradients written out by hand (worker/tasks/deep_mlp_stacked.py);
- activations as columns, ``W[k] @ h[k]``: 20% faster matrix products, 5-10% a step;
- the softmax along the minibatch (logits as columns) ran 9x faster than over rows of 10;
- page faults from glibc returning freed blocks cost 4% of a step (worker/runner.py's
  ``_reuse_freed_memory`` keeps them).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search_spaces import StudySpec  # noqa: E402
from search_spaces.storage import open_storage  # noqa: E402
from search_spaces.study_rows import register_study  # noqa: E402

NAME = "stacked"


def measure(k: int, args: argparse.Namespace, n_trials: int, workdir: Path) -> tuple[int, float]:
    """Run one study with `args.workers` workers at --batch k; (finished trials, seconds)."""
    url = f"sqlite:///{workdir / f'stack-{k}.db'}"
    spec = StudySpec.model_validate(
        {
            "name": NAME,
            "task": "deep_mlp",
            "task_config": {"epochs": args.epochs, "dataset": "digits"},
            "search_space": "paper",
            "n_trials": n_trials,
            "sampler": {"type": "random", "seed": 0},
            "pruner": {"type": "none"},
            "max_retries": 0,
        }
    )
    register_study(open_storage(url), spec)
    env = {**os.environ, "NOISETUNE_TORCH_THREADS": str(args.threads)}
    env.setdefault("NOISETUNE_LOG_LEVEL", "WARNING")
    env["PYTHONPATH"] = str(ROOT)
    command = [
        sys.executable, "-m", "worker", "--storage", url, "--device", args.device,
        "--study", NAME, "--batch", str(k), "--exit-when-idle", "--heartbeat-interval", "10",
    ]  # fmt: skip
    procs = [subprocess.Popen(command, env=env, cwd=workdir) for _ in range(args.workers)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"--batch {k}: a worker exited with {codes}")
    trials = optuna.load_study(study_name=NAME, storage=url).get_trials(deepcopy=False)
    done = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or t.user_attrs.get("fail_reason") == "diverged"
    ]
    if len(done) != n_trials:
        states = sorted({t.state.name for t in trials})
        raise SystemExit(f"--batch {k}: {len(done)} of {n_trials} trials finished ({states})")
    start = min(t.datetime_start for t in done if t.datetime_start is not None)
    end = max(t.datetime_complete for t in done if t.datetime_complete is not None)
    return len(done), (end - start).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--stack-sizes", "--batches", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 2))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="the paper's 150 epochs")
    parser.add_argument("--trials", type=int, help="per K (default: workers x largest K)")
    args = parser.parse_args()
    if args.full:
        args.epochs = 150
    n_trials = args.trials or args.workers * max(args.stack_sizes)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"deep_mlp on digits, 20 x 50, {args.epochs} epochs, {n_trials} trials per K, "
        f"{args.workers} worker(s) x {args.threads} thread(s) on {args.device}",
        flush=True,
    )
    ks = [1, *args.stack_sizes]
    best: dict[int, tuple[float, float]] = {}  # K -> (trials per hour, seconds)
    with tempfile.TemporaryDirectory(prefix="noisetune-stacked-") as tmp:
        for round_ in range(args.rounds):
            for k in ks if round_ % 2 == 0 else ks[::-1]:
                started = time.monotonic()
                workdir = Path(tmp) / f"round-{round_}"
                workdir.mkdir(exist_ok=True)
                finished, seconds = measure(k, args, n_trials, workdir)
                rate = finished / seconds * 3600
                if rate > best.get(k, (0.0, 0.0))[0]:
                    best[k] = (rate, seconds)
                took = time.monotonic() - started
                print(
                    f"  round {round_ + 1}, K={k}: {finished} trials in {seconds:.1f} s, "
                    f"{rate:.0f}/h (run {took:.0f} s)",
                    flush=True,
                )
    base = best[1][0]
    print(f"\nbest of {args.rounds} round(s):")
    print(f"{'K':>4} {'trials':>7} {'wall s':>8} {'trials/hour':>12} {'vs K=1':>7}")
    for k in ks:
        rate, seconds = best[k]
        print(f"{k:>4} {n_trials:>7} {seconds:>8.1f} {rate:>12.0f} {rate / base:>6.2f}x")


if __name__ == "__main__":
    main()
