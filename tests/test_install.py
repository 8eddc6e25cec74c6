"""What a service-only install (`pip install noisetune`, no torch) can and cannot do."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real processes

ROOT = Path(__file__).resolve().parents[1]
# The noisetune command, in a process where `import torch` fails as it does without torch.
WITHOUT_TORCH = (
    "import sys; sys.modules['torch'] = None; sys.argv[0] = 'noisetune'; "
    "from service.cli import main; main()"
)


def _noisetune_without_torch(
    *args: str, cwd: Path, code: str = WITHOUT_TORCH
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, cwd=cwd, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_torch_comes_only_with_the_worker_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("torch")]
    assert any(d.startswith("torch>=") for d in project["optional-dependencies"]["worker"])


@pytest.mark.parametrize(
    "args", [["worker", "--exit-when-idle"], ["train", "--task", "quadratic"], ["reproduce"]]
)
def test_training_commands_without_torch_say_what_to_install(
    args: list[str], tmp_path: Path
) -> None:
    done = _noisetune_without_torch(*args, cwd=tmp_path)
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "noisetune[worker]"' in lines[0], done.stderr
    assert done.stdout == ""


def test_the_service_commands_work_without_torch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'noisetune.db'}"
    assert _noisetune_without_torch("migrate", "--storage", url, cwd=tmp_path).returncode == 0
    done = _noisetune_without_torch("status", "--storage", url, cwd=tmp_path)
    assert done.returncode == 0 and "no studies" in done.stdout, done


def test_the_slurm_launch_needs_no_torch_and_names_its_extra(tmp_path: Path) -> None:
    """A login node submits workers without PyTorch; without submitit, it says what to add."""
    args = ["launch", "slurm", "--workers", "2", "--storage", "postgresql+psycopg://h/db"]
    done = _noisetune_without_torch(*args, "--dry-run", cwd=tmp_path)
    assert done.returncode == 0 and "#SBATCH --array=0-1%2" in done.stdout, done
    without_submitit = WITHOUT_TORCH.replace(
        "sys.modules['torch'] = None", "sys.modules['submitit'] = None"
    )
    done = _noisetune_without_torch(*args, "--dry-run", cwd=tmp_path, code=without_submitit)
    assert done.returncode == 1, done
    assert done.stderr.strip().splitlines()[-1].endswith('pip install "noisetune[slurm]"'), done
