"""Resource estimates: what one trial of a config needs, and the worst a search space asks for."""

from __future__ import annotations

from typing import Any

import pytest

from search_spaces import (
    DEEP_MLP,
    QUADRATIC,
    DeepMLPConfig,
    ResourceEstimate,
    ResourceLimitError,
    StudySpec,
    check_resources,
    estimate_resources,
)
from search_spaces._resources import human_bytes

GIB = 2**30


def spec(task: str = "deep_mlp", **fields: Any) -> StudySpec:
    return StudySpec.model_validate({"name": "s", "task": task, **fields})


def memory(**config: Any) -> int:
    assert DEEP_MLP.resources is not None
    return DEEP_MLP.resources(DeepMLPConfig(**config)).memory_bytes


def test_the_papers_default_config_is_small() -> None:
    estimate = estimate_resources(spec())
    assert estimate is not None and estimate.seconds is None
    assert 1_000_000 < estimate.memory_bytes < 16 * 2**20
    check_resources(spec(), 8 * GIB)  # nothing raised


def test_memory_grows_with_every_size_and_the_dataset() -> None:
    base = memory()
    assert memory(width=100) > base and memory(depth=40) > base
    assert memory(batch_size=512) > base and memory(dataset="mnist") > base
    assert memory(optimizer="sgd") < memory(optimizer="momentum") < memory(optimizer="adam")
    # A minibatch holds at most the training set: digits has fewer than 1,500 samples.
    assert memory(batch_size=2048) == memory(batch_size=65536)
    assert memory(dataset="mnist", batch_size=2048) < memory(dataset="mnist", batch_size=65536)


def test_the_estimate_is_the_worst_corner_of_the_space() -> None:
    space = {
        "eta": {"type": "categorical", "choices": [0.01, 1.0]},
        "width": {"type": "int", "low": 16, "high": 512},
        "depth": {"type": "categorical", "choices": [4, 2, 30]},
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "batch_size": 256,
    }
    estimate = estimate_resources(spec(search_space=space, task_config={"dataset": "mnist"}))
    worst = memory(dataset="mnist", width=512, depth=30, optimizer="adam", batch_size=256)
    assert estimate == ResourceEstimate(memory_bytes=worst)


def test_a_huge_config_is_refused_in_human_units() -> None:
    huge = spec(
        task_config={"dataset": "mnist", "optimizer": "adam"},
        search_space={
            "width": {"type": "int", "low": 64, "high": 4096},
            "depth": 200,
            "batch_size": {"type": "categorical", "choices": [128, 65536]},
        },
    )
    estimate = estimate_resources(huge)
    assert estimate is not None and estimate.memory_bytes > 8 * GIB
    with pytest.raises(ResourceLimitError) as info:
        check_resources(huge, 8 * GIB)
    message = str(info.value)
    assert message.startswith(f"deep_mlp needs about {human_bytes(estimate.memory_bytes)}")
    for shown in ("width=4096", "depth=200", "batch_size=65536", "dataset='mnist'"):
        assert shown in message
    assert message.endswith("this server allows 8 GiB (NOISETUNE_MAX_TRIAL_MEMORY)")
    assert isinstance(info.value, ValueError)
    check_resources(huge, estimate.memory_bytes)  # exactly the estimate is allowed


def test_the_runs_of_a_stacked_trial_count_together() -> None:
    wide = {"dataset": "mnist", "width": 1024, "depth": 20}
    one = estimate_resources(spec(task_config=wide))
    assert one is not None
    check_resources(spec(task_config=wide, repeats=1), one.memory_bytes)
    # deep_mlp trains a trial's 40 seeds as one stack: forty runs' memory at once.
    with pytest.raises(ResourceLimitError, match=r"its 40 runs \(repeats\) side by side"):
        check_resources(spec(task_config=wide, repeats=40), 39 * one.memory_bytes)
    check_resources(spec(task_config=wide, repeats=40), 40 * one.memory_bytes)


def test_tasks_without_an_estimate_pass() -> None:
    assert QUADRATIC.resources is None
    assert estimate_resources(spec("quadratic")) is None
    check_resources(spec("quadratic"), 1)


def test_human_units() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(8 * GIB) == "8 GiB"
    assert human_bytes(12.3 * GIB) == "12.3 GiB"
    assert human_bytes(1536 * 2**20) == "1.5 GiB"


def test_an_estimate_is_never_negative() -> None:
    with pytest.raises(ValueError, match="memory_bytes"):
        ResourceEstimate(memory_bytes=-1)
    with pytest.raises(ValueError, match="seconds"):
        ResourceEstimate(memory_bytes=1, seconds=float("nan"))


@pytest.mark.parametrize(
    "config",
    [
        {},  # the paper's network: 20 x 50, SGD, batches of 128
        {"width": 1024, "depth": 6, "optimizer": "adam", "batch_size": 512},
        {"width": 8, "depth": 60, "optimizer": "momentum", "batch_size": 1024},
        {"width": 256, "depth": 12, "activation": "gelu", "batch_size": 1024},
        {"width": 64, "depth": 3, "activation": "tanh", "batch_size": 1},
    ],
)
def test_the_estimate_is_close_to_what_torch_holds(config: dict[str, Any]) -> None:
    """Against the real model on digits: parameters, gradients, optimizer state and the
    tensors autograd saves for backward, measured, plus the data arrays."""
    torch = pytest.importorskip("torch")
    from torch.nn import functional as F

    from worker.data import load_digits_split
    from worker.tasks.deep_mlp import build_model, build_optimizer

    cfg = DeepMLPConfig(**config)
    split = load_digits_split(cfg.val_fraction, 0)
    model = build_model(cfg, split.x_train.shape[1], torch.Generator().manual_seed(0))
    params = list(model.parameters())
    optimizer = build_optimizer(cfg, params)
    x = torch.from_numpy(split.x_train[: cfg.batch_size])
    y = torch.from_numpy(split.y_train[: cfg.batch_size])

    param_ptrs = {p.data_ptr() for p in params}
    saved: dict[int, int] = {}

    def pack(t: Any) -> Any:
        if t.data_ptr() not in param_ptrs:
            saved[t.data_ptr()] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()

    param_bytes = sum(p.numel() * p.element_size() for p in params)
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in params)
    state_bytes = sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if torch.is_tensor(v) and v.dim() > 0
    )
    data_bytes = sum(a.nbytes for a in (split.x_train, split.y_train, split.x_val, split.y_val))
    noise_bytes = param_bytes  # GradientNoise draws one float32 per gradient entry
    measured = param_bytes + grad_bytes + state_bytes + noise_bytes + sum(saved.values())
    measured += data_bytes
    estimate = memory(**config)
    assert measured <= estimate <= 3 * measured, (measured, estimate)
