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
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search_spaces import StudySpec  # noqa: E402
from search_spaces.storage import open_storage  # noqa: E402
from search_spaces.study_rows import register_study  # noqa: E402

NAME = "stacked"


class RunFailed(RuntimeError):
    """A study's workers failed or ran out of time, or its trials did not all finish."""


class RanOutOfTime(RunFailed):
    """The workers were still at work when the time limit passed (they were killed)."""


def paper_study(n_trials: int, epochs: int) -> dict[str, Any]:
    """The measured study: the paper's network and space, the same trials at every K."""
    return {
        "name": NAME,
        "task": "deep_mlp",
        "task_config": {"epochs": epochs, "dataset": "digits"},
        "search_space": "paper",
        "n_trials": n_trials,
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "max_retries": 0,
    }


def run_study(
    spec: dict[str, Any],
    db: Path,
    *,
    device: str,
    batch: str,
    workers: int,
    threads: int = 1,
    timeout: float | None = None,
    log_dir: Path | None = None,
    log_level: str | None = None,
) -> list[FrozenTrial]:
    """Register `spec` in a fresh SQLite database `db` and run `workers` worker processes
    (``python -m worker --exit-when-idle --batch <batch>``) until no work is left; the
    finished trials (complete, pruned or diverged). Worker output goes to
    ``<log_dir>/<db stem>-worker-<i>.log`` when given, else to this process's own; they log
    at `log_level`, else at NOISETUNE_LOG_LEVEL, else at WARNING."""
    url = f"sqlite:///{db}"
    name = spec["name"]
    register_study(open_storage(url), StudySpec.model_validate(spec))
    env = {**os.environ, "NOISETUNE_TORCH_THREADS": str(threads)}
    env["NOISETUNE_LOG_LEVEL"] = log_level or env.get("NOISETUNE_LOG_LEVEL", "WARNING")
    # The project root first; what was on the path stays (wheels installed to a folder).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "worker", "--storage", url, "--device", device,
        "--study", name, "--batch", batch, "--exit-when-idle", "--heartbeat-interval", "10",
    ]  # fmt: skip
    logs = [log_dir / f"{db.stem}-worker-{i}.log" for i in range(workers)] if log_dir else []
    procs = []
    for i in range(workers):
        # Closed right after the start: the child keeps its own copy.
        out = open(logs[i], "wb") if logs else None  # noqa: SIM115
        procs.append(subprocess.Popen(command, env=env, cwd=db.parent, stdout=out, stderr=out))
        if out is not None:
            out.close()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise RanOutOfTime(f"--batch {batch}: the workers ran past {timeout:.0f} s") from None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    if any(codes):
        failed = next(i for i, code in enumerate(codes) if code)
        tail = logs[failed].read_text(errors="replace")[-2000:] if logs else ""
        raise RunFailed(f"--batch {batch}: a worker exited with {codes}\n{tail}".rstrip())
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    done = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or t.user_attrs.get("fail_reason") == "diverged"
    ]
    if len(done) != spec["n_trials"]:
        states = sorted({t.state.name for t in trials})
        raise RunFailed(
            f"--batch {batch}: {len(done)} of {spec['n_trials']} trials finished ({states})"
        )
    return done


def trial_span(trials: list[FrozenTrial]) -> float:
    """Seconds from the first trial's start to the last one's completion."""
    start = min(t.datetime_start for t in trials if t.datetime_start is not None)
    end = max(t.datetime_complete for t in trials if t.datetime_complete is not None)
    return (end - start).total_seconds()


def measure(
    k: int,
    n_trials: int,
    workdir: Path,
    *,
    device: str,
    workers: int,
    threads: int,
    epochs: int,
    timeout: float | None = None,
) -> tuple[int, float]:
    """Run the measured study with `workers` workers at --batch k; (finished trials,
    seconds from the first start to the last completion)."""
    trials = run_study(
        paper_study(n_trials, epochs), workdir / f"stack-{k}.db",
        device=device, batch=str(k), workers=workers, threads=threads, timeout=timeout,
    )  # fmt: skip
    return len(trials), trial_span(trials)


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
                try:
                    finished, seconds = measure(
                        k, n_trials, workdir, device=args.device, workers=args.workers,
                        threads=args.threads, epochs=args.epochs,
                    )  # fmt: skip
                except RunFailed as exc:
                    raise SystemExit(str(exc)) from None
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
