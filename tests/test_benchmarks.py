"""Every benchmark still starts: its imports and arguments match the code it measures.

Benchmarks run by hand (`make bench`), not in CI; this keeps a refactor from breaking one
unnoticed. `--help` parses the arguments and exits before measuring anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real processes

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", BENCHMARKS)
def test_the_benchmark_starts(script: str) -> None:
    done = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--help"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
