"""benchmarks/gpu_check.sh: it still runs, at tiny sizes on the CPU, and checks what it says."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from worker.runner import AUTO_CPU_STACK

ROOT = Path(__file__).resolve().parents[1]


def _device_tests() -> dict[str, tuple[str, ...]]:
    """gpu_check.py's DEVICE_TESTS, read from its source (importing it needs benchmarks/)."""
    tree = ast.parse((ROOT / "benchmarks" / "gpu_check.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and ast.unparse(node.target) == "DEVICE_TESTS":
            assert node.value is not None
            return ast.literal_eval(node.value)
    raise AssertionError("benchmarks/gpu_check.py defines no DEVICE_TESTS")


def _tests_taking_device(path: Path) -> dict[str, bool]:
    """Each test function of a module, and whether it takes the `device` fixture."""
    tree = ast.parse(path.read_text())
    return {
        node.name: "device" in [a.arg for a in node.args.args]
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def test_every_device_test_exists_and_runs_on_the_device_under_test() -> None:
    # A test renamed, or one that no longer takes `device`, would pass on the GPU unseen.
    checks = _device_tests()
    assert set(checks) == {
        "noise eta=0 bit identity",
        "noise variance = eta/(1+t)^gamma",
        "exact resume from a checkpoint",
    }
    for tests in checks.values():
        assert tests
        for test in tests:
            path, name = test.split("::")
            assert _tests_taking_device(ROOT / path).get(name), test


@pytest.mark.slow  # about a minute of real processes: pytest and four workers
def test_the_cpu_run_prints_every_row_and_passes() -> None:
    done = subprocess.run(
        # Budgets stretched: a loaded CI machine must not turn a slow section into a failure.
        ["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--python", sys.executable,
         "--budget-scale", "3"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("noisetune GPU check on cpu"), lines[0]
    rows = {
        cells[0]: cells[1:]
        for line in lines
        if line.startswith("| ")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    for check in _device_tests():
        assert rows[check][2] == "ok", rows[check]
    for label in ("paper net 20 x 50, batch 128", "large net 4 x 256, batch 256"):
        result = rows[f"noise step-time ratio, {label}"][0]
        assert float(result.split()[0]) > 0, result
    assert rows["trials/hour K=1 (lone trials)"][0].endswith("s)")
    for k in (4, 8):
        assert rows[f"trials/hour K={k} vs K=1"][2] in ("ok", "missed")
        assert rows[f"trials/hour K={k} vs K=1"][0].split("x")[0].replace(".", "").isdigit()
    assert rows["--batch auto chooses"][0] == str(AUTO_CPU_STACK)
    assert rows["paper study, 8 trials x 3 epochs, --batch auto"][2] == "ok"
    assert any(line.startswith("sections: tests") for line in lines)


# What the GPU machine has (or must keep its own builds of), as gpu_check_wheels.txt says.
MACHINE_HAS = {
    "torch", "numpy", "scipy", "scikit-learn", "joblib", "threadpoolctl", "sympy", "mpmath",
    "networkx", "filelock", "setuptools", "nvidia", "triton",
}  # fmt: skip


def _name(requirement: str) -> str:
    return re.split(r"[\s\[;<>=!~(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _closure(root: str, extras: set[str]) -> set[str]:
    """The distributions `root[extras]` needs at run time, as installed here."""
    seen: set[str] = set()
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in wanted | {""}
            ):
                continue
            dep = _name(requirement.name)
            if dep not in seen and not dep.startswith(tuple(MACHINE_HAS)):
                seen.add(dep)
                todo.append((dep, set(requirement.extras)))
    return seen


def test_the_wheels_list_holds_every_package_the_worker_and_pytest_need() -> None:
    # A dependency added to pyproject.toml but not to the list fails on the GPU machine only.
    listed = {
        _name(line)
        for line in (ROOT / "benchmarks" / "gpu_check_wheels.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    needed = _closure("noisetune", {"worker"}) | _closure("pytest", set()) | {"pytest"}
    assert needed <= listed, sorted(needed - listed)
