"""Fixtures the worker's tests share."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
import typer

from worker.cli import register

# The device the noise's guarantees are checked on: the CPU here; benchmarks/gpu_check.py
# runs the tests that take `device` on CUDA with NOISETUNE_TEST_DEVICE=cuda.
TEST_DEVICE = os.environ.get("NOISETUNE_TEST_DEVICE", "cpu")
if torch.device(TEST_DEVICE).type == "cuda":
    # Deterministic cuBLAS (see `device`) needs this before its first call.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread, as a worker trains: tiny networks run fastest so, results are what a
    worker computes (another count sums in another order), and the machine stays responsive."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def device() -> Iterator[torch.device]:
    """NOISETUNE_TEST_DEVICE (cpu by default). On CUDA in deterministic mode: the bit-for-bit
    tests compare two runs, which kernels that sum with atomics would set apart, noise or not."""
    dev = torch.device(TEST_DEVICE)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.fail(f"NOISETUNE_TEST_DEVICE={TEST_DEVICE}, but torch sees no CUDA device")
    if dev.type != "cuda":
        yield dev
        return
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield dev
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


@pytest.fixture
def app() -> typer.Typer:
    """The worker's commands (`train`, `worker`, `launch`, ...) on a root app of their own."""
    root = typer.Typer()
    register(root)
    return root
