"""One GPU's check of noisetune in under 5 minutes, printed as one small table.

Four sections, each within a time budget (``--budget-scale`` stretches them all):

1. the noise's tests on the device (pytest with NOISETUNE_TEST_DEVICE): eta 0 is
   bit-identical to the bare optimizer, the noise's variance is the schedule's, a resumed
   run equals the uninterrupted one bit for bit;
2. step time with / without the noise (benchmarks/noise_overhead.py's rounds and paired
   ratio) on the paper's 20 x 50 network and on a large one that keeps the device busy;
3. finished trials per hour at --batch K against K = 1 (benchmarks/stacked.py: real
   workers on a fresh SQLite database, rates from the trials' timestamps);
4. ``noisetune demo``'s paper study (40 trials of 150 epochs) with one worker at
   ``--batch auto``: its wall time, and the K that ``--batch auto`` chose.

``--device cpu`` runs the same sections at tiny sizes, so that CI checks the script works.
The exit status is 1 when a correctness check fails (a test, a worker, a study whose trials
did not all finish); a speed target missed is printed as "missed", not an error.

    bash benchmarks/gpu_check.sh [--wheels DIR] [--python PY] [--device cuda|cpu]
    .venv/bin/python benchmarks/gpu_check.py --device cpu
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from noise_overhead import BATCH, INPUTS, configured_steps, mlp, paired_ratio, time_blocks  # noqa: E402
from stacked import RanOutOfTime, RunFailed, measure, run_study, trial_span  # noqa: E402

from service.demo import demo_spec  # noqa: E402
from worker.runner import AUTO_CPU_STACK, AUTO_MAX_STACK, AUTO_MEMBER_BYTES  # noqa: E402

# The tests that take the `device` fixture, by the row they answer.
DEVICE_TESTS: dict[str, tuple[str, ...]] = {
    "noise eta=0 bit identity": (
        "tests/worker/test_noise.py::test_eta_zero_is_bit_identical_to_the_bare_optimizer",
    ),
    "noise variance = eta/(1+t)^gamma": (
        "tests/worker/test_noise.py::test_empirical_variance_and_mean_match_the_schedule",
        "tests/worker/test_noise.py::test_steps_count_from_zero_and_advance_once_per_step",
    ),
    "exact resume from a checkpoint": (
        "tests/worker/test_noise.py::test_resumed_run_continues_bit_identically",
        "tests/worker/test_checkpoints.py::test_a_resumed_run_equals_the_uninterrupted_one_bit_for_bit",
    ),
}
STEP_RATIO_TARGET = 1.02
STACK_SPEEDUP_TARGET = 15.0
# What the worker logs when it stacks (worker/runner.py); absent, it trains one at a time.
STACK_LOG = re.compile(r"training up to (\d+) trials at once")


@dataclass(frozen=True)
class Sizes:
    """What each section runs on one kind of device, chosen to fit its budget."""

    large: tuple[int, int, int]  # the large network: depth, width, batch (inputs = width)
    blocks: tuple[int, int]  # steps per timed block: paper network, large network
    rounds: int  # most timed rounds per network
    stack_sizes: tuple[int, ...]  # K > 1, each one full stack of K trials
    lone_trials: int  # trials of K = 1, one after another
    stack_epochs: int
    study: tuple[int, int]  # the paper study: trials, epochs
    budgets: dict[str, float]  # section -> seconds


SIZES = {
    "cuda": Sizes(
        large=(8, 4096, 4096), blocks=(20, 4), rounds=30, stack_sizes=(32, 128, 256),
        lone_trials=16, stack_epochs=25, study=(40, 150),
        budgets={"tests": 60, "step time": 45, "stacked": 120, "study": 60},
    ),
    "cpu": Sizes(
        large=(4, 256, 256), blocks=(5, 2), rounds=20, stack_sizes=(4, 8),
        lone_trials=4, stack_epochs=2, study=(8, 3),
        budgets={"tests": 60, "step time": 20, "stacked": 90, "study": 45},
    ),
}  # fmt: skip

Row = tuple[str, str, str, str]  # check, result, target, pass ("ok", "FAIL", "missed", "-")


def speed(met: bool) -> str:
    return "ok" if met else "missed"


def device_tests(device: str, workdir: Path, timeout: float) -> tuple[list[Row], str]:
    """Run DEVICE_TESTS on `device` in one pytest process; a row per check, and pytest's
    output when something failed."""
    report = workdir / "device-tests.xml"
    ids = [test for tests in DEVICE_TESTS.values() for test in tests]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               f"--junitxml={report}", *ids]  # fmt: skip
    env = {**os.environ, "NOISETUNE_TEST_DEVICE": device}
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired:
        return [(row, f"ran past {timeout:.0f} s", "all pass", "FAIL") for row in DEVICE_TESTS], ""
    outcomes: dict[str, list[bool]] = {}  # "path::function" -> passed, per parametrization
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            path = case.get("classname", "").replace(".", "/") + ".py"
            test = f"{path}::{case.get('name', '').split('[')[0]}"
            bad = [child for child in case if child.tag in ("failure", "error", "skipped")]
            outcomes.setdefault(test, []).append(not bad)
    rows: list[Row] = []
    for row, tests in DEVICE_TESTS.items():
        results = [passed for test in tests for passed in outcomes.get(test, [])]
        missing = [test for test in tests if test not in outcomes]
        ok = bool(results) and all(results) and not missing
        shown = f"passed {sum(results)} of {len(results)}"
        if missing:
            shown += f", {len(missing)} not run"
        rows.append((row, shown, "all pass", "ok" if ok else "FAIL"))
    return rows, "" if all(r[3] == "ok" for r in rows) else output


def step_time_rows(device: torch.device, sizes: Sizes, deadline: float) -> list[Row]:
    """The noise's step-time ratio (noise / bare, paired by round) on two networks."""
    depth, width, batch = sizes.large
    networks: list[tuple[str, Callable[[], torch.nn.Module], int, int]] = [
        (f"paper net 20 x 50, batch {BATCH}", lambda: mlp(device), INPUTS, BATCH),
        (f"large net {depth} x {width}, batch {batch}",
         lambda: mlp(device, depth, width, width, init_std=None), width, batch),
    ]  # fmt: skip
    rows: list[Row] = []
    start = time.monotonic()
    for i, ((name, build, inputs, n), block) in enumerate(zip(networks, sizes.blocks, strict=True)):
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(n, inputs, generator=generator).to(device)
        y = torch.randint(0, 10, (n,), generator=generator).to(device)
        steps = configured_steps(build, [("bare", None), ("noise", {})], x, y, eta=0.3)
        # The paper's network takes a third of what is left, the large one the rest.
        until = start + (deadline - start) / 3 if i == 0 else deadline
        wall, _ = time_blocks(steps, device, block, sizes.rounds, deadline=until)
        ratio = paired_ratio(wall, "noise")
        noisy, bare = (1000 * statistics.median(wall[c]) for c in ("noise", "bare"))
        result = f"{ratio:.3f} (medians {noisy:.2f} / {bare:.2f} ms)"
        target = f"<= {STEP_RATIO_TARGET}"
        rows.append(
            (f"noise step-time ratio, {name}", result, target, speed(ratio <= STEP_RATIO_TARGET))
        )
        del steps, x, y
        gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the workers that follow size --batch auto from free memory
    return rows


def stacked_rows(device: str, sizes: Sizes, workdir: Path, deadline: float) -> list[Row]:
    """Trials per hour at each K of `sizes` against K = 1, one worker on the device."""
    rates: dict[int, float] = {}
    rows: list[Row] = []
    for k in (1, *sizes.stack_sizes):
        label = f"trials/hour K={k}" + (" (lone trials)" if k == 1 else " vs K=1")
        left = deadline - time.monotonic()
        if left <= 0:
            rows.append((label, "not run: out of time", "", "missed"))
            continue
        n_trials = sizes.lone_trials if k == 1 else k
        try:
            finished, seconds = measure(
                k, n_trials, workdir, device=device, workers=1, threads=1,
                epochs=sizes.stack_epochs, timeout=left,
            )  # fmt: skip
        except RunFailed as exc:
            status = "missed" if isinstance(exc, RanOutOfTime) else "FAIL"
            rows.append((label, str(exc).splitlines()[0], "", status))
            continue
        rates[k] = finished / seconds * 3600
        took = f"{n_trials} trials of {sizes.stack_epochs} epochs in {seconds:.1f} s"
        if k == 1:
            rows.append((label, f"{rates[1]:,.0f}/h ({took})", "", "-"))
            continue
        gain = rates[k] / rates[1] if 1 in rates else float("nan")
        target = f">= {STACK_SPEEDUP_TARGET:.0f}x"
        met = gain >= STACK_SPEEDUP_TARGET  # False without K = 1 to compare
        rows.append((label, f"{gain:.1f}x ({rates[k]:,.0f}/h, {took})", target, speed(met)))
    return rows


def study_rows(device: str, sizes: Sizes, workdir: Path, timeout: float) -> list[Row]:
    """`noisetune demo`'s study with one worker at --batch auto: what K it chose, and the
    study's wall time (worker start to exit) beside its trials' own span."""
    trials, epochs = sizes.study
    label = f"paper study, {trials} trials x {epochs} epochs, --batch auto"
    expected = (
        f"{AUTO_CPU_STACK} on a CPU"
        if device == "cpu"
        else f"free memory / 2 / {AUTO_MEMBER_BYTES >> 20} MiB, at most {AUTO_MAX_STACK}"
    )
    started = time.monotonic()
    try:
        done = run_study(
            demo_spec("paper-study", trials, epochs), workdir / "study.db", device=device,
            batch="auto", workers=1, timeout=timeout, log_dir=workdir, log_level="INFO",
        )  # fmt: skip
        wall = time.monotonic() - started
        best = max((t.value for t in done if t.value is not None), default=float("nan"))
        result = f"{wall:.1f} s (trials {trial_span(done):.1f} s), best val_accuracy {best:.3f}"
        status = "ok"
    except RunFailed as exc:
        result = str(exc).splitlines()[0]
        status = "missed" if isinstance(exc, RanOutOfTime) else "FAIL"
    log = workdir / "study-worker-0.log"
    found = STACK_LOG.search(log.read_text(errors="replace")) if log.exists() else None
    # No such line: one at a time, unless the worker never got as far as saying so.
    chosen = found.group(1) if found else "1" if status == "ok" else "unknown"
    return [
        ("--batch auto chooses", chosen, expected, "-"),
        (label, result, "all trials finish", status),
    ]


def header(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        where = f"{device} ({name}), CUDA {torch.version.cuda}"
    else:
        where = f"cpu ({os.cpu_count()} cores)"
    python = platform.python_version()
    return f"noisetune GPU check on {where}, torch {torch.__version__}, Python {python}"


def table(rows: list[Row]) -> str:
    """A Markdown table, padded so that it reads aligned as plain text too."""
    lines = [("check", "result", "target", "pass"), *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(4)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(lines[0]), line(tuple("-" * w for w in widths)),
                      *map(line, lines[1:])])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (tiny sizes)")
    parser.add_argument(
        "--budget-scale", type=float, default=1.0, help="stretches every section's time budget"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: torch {torch.__version__} sees no CUDA device; --device cpu runs "
              "the check at tiny sizes", file=sys.stderr)  # fmt: skip
        return 2
    if device.type not in SIZES:
        print(f"gpu_check: --device must be cuda, cuda:N or cpu, got {args.device!r}",
              file=sys.stderr)  # fmt: skip
        return 2
    sizes = SIZES[device.type]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if device.type == "cpu":
        torch.set_num_threads(1)  # as a worker trains
    budgets = {name: seconds * args.budget_scale for name, seconds in sizes.budgets.items()}
    took: dict[str, float] = {}
    rows: list[Row] = []
    failures = ""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="noisetune-gpu-check-") as tmp:
        workdir = Path(tmp)
        for section in budgets:
            print(f"gpu_check: {section} (budget {budgets[section]:.0f} s)", file=sys.stderr)
            t0 = time.monotonic()
            deadline = t0 + budgets[section]
            if section == "tests":
                new, failures = device_tests(args.device, workdir, budgets[section])
            elif section == "step time":
                new = step_time_rows(device, sizes, deadline)
            elif section == "stacked":
                new = stacked_rows(args.device, sizes, workdir, deadline)
            else:
                new = study_rows(args.device, sizes, workdir, budgets[section])
            rows += new
            took[section] = time.monotonic() - t0
    print(header(device))
    print(table(rows))
    spent = ", ".join(f"{s} {took[s]:.0f} s of {budgets[s]:.0f}" for s in budgets)
    print(f"sections: {spent}; total {time.monotonic() - started:.0f} s")
    if failures:
        print("\npytest's output for the tests that failed:\n" + failures[-6000:])
    return 1 if any(row[3] == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
