"""`noisetune demo`, the README's main command, end to end on a tiny budget."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, free_port

pytestmark = pytest.mark.slow


def test_demo_runs_the_paper_study_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NOISETUNE_STORAGE", None)
    done = subprocess.run(
        [sys.executable, "-m", "service", "demo", "--trials", "3", "--epochs", "2",
         "--port", str(free_port())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    assert "Dashboard: http://127.0.0.1:" in done.stderr
    assert "Best trial" in done.stdout and "Parameter importance" in done.stdout
    # The effect of noise, by eta, with intervals and a note on how few runs it rests on.
    assert "val_accuracy (maximize) by eta: 3 runs" in done.stdout
    assert "note:" in done.stdout
    # The embedded default: a SQLite file in the working directory.
    assert (tmp_path / "noisetune.db").is_file()
