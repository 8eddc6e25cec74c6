"""The binary_arith task: its data, its learning, and a restart alone equals it in a stack."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import torch

from search_spaces import BINARY_ARITH, BinaryArithConfig, NoiseSetup, TaskConfigError
from worker.stacked import StackMember
from worker.tasks.binary_arith import held_out_examples, train, train_batch, train_generator
from worker.tasks.binary_arith_data import answers, draw_examples, encode
from worker.tasks.binary_arith_stacked import stack_key, train_stacked

# A few steps of a small grid: what the equality tests need to see every part move.
TINY = {"channels": 6, "steps_per_epoch": 6, "epochs": 2, "test_size": 24, "batch_size": 8}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bits_of(value: int, length: int) -> list[int]:
    return [(value >> i) & 1 for i in range(length)]


@pytest.mark.parametrize(
    ("operation", "bits"), [("addition", 5), ("multiplication", 5), ("multiplication", 40)]
)
def test_answers_are_the_sum_and_product(operation: str, bits: int) -> None:
    """Against Python's integers, past 64 bits too (a 40-bit product has 80)."""
    rng = random.Random(7)
    pairs = [(rng.getrandbits(bits), rng.getrandbits(bits)) for _ in range(50)]
    pairs += [(2**bits - 1, 2**bits - 1), (0, 0)]  # every carry; nothing at all
    cfg = BinaryArithConfig(operation=operation, train_bits=bits, test_bits=bits)  # type: ignore[arg-type]
    length = cfg.length(bits)
    a = torch.tensor([bits_of(x, bits) for x, _ in pairs])
    b = torch.tensor([bits_of(y, bits) for _, y in pairs])
    got = answers(a, b, cfg.operation, length)
    expected = [bits_of(x + y if operation == "addition" else x * y, length) for x, y in pairs]
    assert got.tolist() == expected
    assert encode(a, b, length)[:, :bits].tolist() == (a + 2 * b).tolist()
    assert not encode(a, b, length)[:, bits:].any()


def test_examples_come_from_the_seed_alone() -> None:
    cfg = BinaryArithConfig(seed=4, test_size=32)
    state = torch.random.get_rng_state()
    first, again, other = (
        held_out_examples(cfg),
        held_out_examples(cfg),
        held_out_examples(cfg.model_copy(update={"seed": 5})),
    )
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    batches = [train_batch(cfg, train_generator(cfg)) for _ in range(2)]
    assert torch.equal(batches[0][0], batches[1][0])
    # The training stream is not the test set, and no global generator was touched.
    generator = train_generator(cfg)
    test_like = draw_examples(generator, 32, cfg.test_bits, cfg.operation, cfg.length(20))
    assert not torch.equal(test_like[0], first[0])
    assert torch.equal(torch.random.get_rng_state(), state)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"train_bits": 12, "test_bits": 8}, "test_bits (8) must be at least train_bits (12)"),
        ({"operation": "division"}, "operation"),
        ({"channels": 0}, "channels"),
        ({"layers": 2}, "unknown key 'layers'"),
    ],
)
def test_bad_configs_name_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(TaskConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(config, eta=0.0, gamma=0.55)


def test_it_learns_addition_without_noise() -> None:
    """From half the bits wrong to almost none, on held-out examples, in 100 steps of a
    small grid (whether a restart also holds on longer numbers is the experiment's
    question, not this test's)."""
    curve: list[dict[str, Any]] = []
    config = {"train_bits": 6, "test_bits": 6, "channels": 8, "steps_per_epoch": 25,
              "epochs": 4, "test_size": 64, "seed": 0}  # fmt: skip
    result = train(config, eta=0.0, gamma=0.55, report=lambda e, m: curve.append(m))
    assert not result["diverged"] and result["steps"] == 100
    assert curve[0]["train_error"] > 0.2
    assert result["train_error"] < 0.01
    assert result["test_error"] < 0.01, curve


def lone_curve(config: dict[str, Any], eta: float, **kw: Any) -> list[dict[str, Any]]:
    curve: list[dict[str, Any]] = []
    result = train(config, eta=eta, gamma=0.55, report=lambda e, m: curve.append(m), **kw)
    return [*curve, result]


def stacked_curves(
    configs: list[dict[str, Any]], etas: list[float], **kw: Any
) -> list[list[dict[str, Any]]]:
    curves: list[list[dict[str, Any]]] = [[] for _ in configs]
    members = [
        StackMember(config, eta, 0.55, report=_reporter(curve), **kw)
        for config, eta, curve in zip(configs, etas, curves, strict=True)
    ]
    results = train_stacked(members)
    return [[*curve, result] for curve, result in zip(curves, results, strict=True)]


def _reporter(curve: list[dict[str, Any]]) -> Any:
    return lambda epoch, metrics: curve.append(metrics)


def assert_close(got: list[dict[str, Any]], want: list[dict[str, Any]], rtol: float) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for key, value in w.items():
            if isinstance(value, float) and math.isfinite(value):
                assert g[key] == pytest.approx(value, rel=rtol, abs=1e-9), key
            elif key != "noise_grad_ratio_layers":
                assert g[key] == value, key


@pytest.mark.parametrize(
    "config",
    [
        {**TINY, "seed": 3},
        {**TINY, "seed": 4, "width": 2, "optimizer": "momentum", "lr": 0.05, "clip": None},
        {**TINY, "seed": 5, "operation": "multiplication", "train_bits": 3, "test_bits": 4},
    ],
    ids=["adam-clip", "momentum-grid", "multiplication"],
)
def test_a_restart_in_a_stack_is_its_lone_run(config: dict[str, Any]) -> None:
    """Its own data, init and noise: stack mates with other seeds, noise, lr and clipping
    change nothing but rounding; a stack of one is the lone run bit for bit."""
    alone = lone_curve(config, eta=0.3)
    (single,) = stacked_curves([config], [0.3])
    assert single == alone
    mates = [{**config, "seed": 11, "lr": 0.02, "clip": 0.5}, {**config, "seed": 12}]
    _, stacked, _ = stacked_curves([mates[0], config, mates[1]], [0.0, 0.3, 1.0])
    assert_close(stacked, alone, rtol=1e-4)
    assert stacked[-1]["test_error"] != stacked_curves([mates[0]], [0.0])[0][-1]["test_error"]


def test_a_mate_that_leaves_changes_nothing() -> None:
    config = {**TINY, "seed": 3, "epochs": 3}
    alone = lone_curve(config, eta=1.0)

    def stop(epoch: int, metrics: dict[str, Any]) -> None:
        raise RuntimeError("pruned")

    left: list[Any] = []
    curve: list[dict[str, Any]] = []
    members = [
        StackMember({**config, "seed": 8}, 0.0, 0.55, report=stop, done=left.append),
        StackMember(config, 1.0, 0.55, report=_reporter(curve)),
    ]
    pruned, result = train_stacked(members)
    assert isinstance(pruned, RuntimeError) and left == [pruned]
    assert_close([*curve, result], alone, rtol=1e-4)


def test_placement_before_clip_is_the_lone_runs() -> None:
    config = {**TINY, "seed": 2, "clip": 0.1}
    noise = NoiseSetup(0.3, 0.55, placement="before_clip")
    alone = lone_curve(config, eta=0.3, noise=noise)
    assert alone != lone_curve(config, eta=0.3)
    (stacked,) = stacked_curves([config], [0.3], noise=noise)
    assert stacked == alone


def test_stacks_share_shapes_not_seeds_or_noise() -> None:
    key = stack_key({**TINY, "seed": 1, "lr": 0.1, "clip": None})
    assert key == stack_key({**TINY, "seed": 2})
    assert key != stack_key({**TINY, "train_bits": 9})
    with pytest.raises(ValueError, match="cannot share a stack"):
        train_stacked([StackMember(TINY, 0.0, 0.55), StackMember({**TINY, "width": 2}, 0.0, 0.55)])


def test_the_definition_is_registered_and_stackable() -> None:
    from search_spaces import get_task_definition

    assert get_task_definition("binary_arith") is BINARY_ARITH
    assert BINARY_ARITH.direction == "minimize" and BINARY_ARITH.stackable
    assert BINARY_ARITH.resources is not None
    small = BINARY_ARITH.resources(BinaryArithConfig())
    large = BINARY_ARITH.resources(BinaryArithConfig(channels=48, batch_size=64))
    assert 0 < small.memory_bytes < large.memory_bytes


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_a_worker_trains_a_study_of_restarts_as_one_stack(storage: Any) -> None:
    """Claimed together, stacked by the worker, recorded one trial each."""
    import threading

    import optuna

    from search_spaces import StudySpec
    from search_spaces.study_rows import register_study
    from worker.claims import claim_trials
    from worker.stack_run import run_claimed_stacks

    spec = {
        "name": "restarts",
        "task": "binary_arith",
        "task_config": TINY,
        "search_space": {"eta": {"type": "categorical", "choices": [0.0, 1.0]}},
        "n_trials": 3,
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
    }
    register_study(storage, StudySpec.model_validate(spec))
    claims = claim_trials(storage, "w", "host", "cpu", "restarts", 3)
    run_claimed_stacks(claims, "cpu", threading.Event())
    trials = optuna.load_study(study_name="restarts", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    assert all(0.0 <= t.value <= 1.0 for t in trials)  # test_error, the primary metric
    assert all(t.user_attrs["metrics"]["steps"] == 12 for t in trials)


@pytest.mark.parametrize(
    "config",
    [{"width": 4, "channels": 64, "batch_size": 64}, {"train_bits": 20, "test_bits": 20}],
)
def test_the_memory_estimate_covers_a_training_step(config: dict[str, Any]) -> None:
    """Parameters, gradients, noise buffer, Adam's state, what autograd saves and the test
    set, measured on one step, against search_spaces' estimate."""
    from torch.nn import functional as F

    from worker.tasks.binary_arith import build_optimizer
    from worker.tasks.binary_arith_model import BinaryArithNet

    cfg = BinaryArithConfig(**config)
    model = BinaryArithNet(cfg.channels, cfg.width, torch.Generator().manual_seed(0))
    params = list(model.parameters())
    optimizer = build_optimizer(cfg, params)
    symbols, answers_ = train_batch(cfg, train_generator(cfg))
    ptrs = {p.data_ptr() for p in params}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() not in ptrs:
            saved[t.data_ptr()] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(symbols).reshape(-1, 2), answers_.reshape(-1))
    loss.backward()
    optimizer.step()
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    state_bytes = sum(v.numel() * v.element_size() for s in optimizer.state.values()
                      for v in s.values() if v.dim() > 0)  # fmt: skip
    test_bytes = sum(t.numel() * t.element_size() for t in held_out_examples(cfg))
    measured = 3 * param_bytes + state_bytes + sum(saved.values()) + test_bytes
    assert BINARY_ARITH.resources is not None
    estimate = BINARY_ARITH.resources(cfg).memory_bytes
    assert measured <= estimate <= 3 * measured, (measured, estimate)
