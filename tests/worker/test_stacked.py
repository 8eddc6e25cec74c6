"""Stacked training: each member behaves as its lone run, whatever its stack mates do."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from worker.noise import GradientNoise
from worker.runner import AUTO_CPU_STACK, auto_stack_size, parse_stack_size
from worker.stacked import StackMember
from worker.stacked_noise import StackedGradientNoise
from worker.tasks import deep_mlp
from worker.tasks.deep_mlp_stacked import _config, run_stack, stack_key, train_stacked
from worker.tasks.stacked_mlp import StackedMLP

SMALL = {"depth": 6, "width": 16, "epochs": 2}
# digits keeps 1,401 training samples: 10 minibatches of 141 per epoch, 20 steps in 2 epochs.
TWENTY_STEPS = {"batch_size": 141, "epochs": 2}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def alone(
    config: dict[str, Any], eta: float, gamma: float
) -> tuple[dict[str, Any], list[dict[str, float]], dict[str, torch.Tensor]]:
    """deep_mlp.train's result, curve and final parameters."""
    built: list[torch.nn.Module] = []
    curve: list[dict[str, float]] = []

    def build_model(*args: Any) -> torch.nn.Module:
        built.append(original_build(*args))
        return built[-1]

    original_build = deep_mlp.build_model
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deep_mlp, "build_model", build_model)
        result = deep_mlp.train(config, eta=eta, gamma=gamma, report=lambda e, m: curve.append(m))
    return result, curve, built[0].state_dict()


def member(config: dict[str, Any], eta: float, gamma: float = 0.55, **kw: Any) -> StackMember:
    return StackMember(config=config, eta=eta, gamma=gamma, **kw)


@pytest.mark.parametrize(
    "config",
    [
        SMALL,
        {**SMALL, "optimizer": "momentum", "clip": 1.0, "seed": 3},
        {**SMALL, "optimizer": "adam", "lr": 0.003, "activation": "tanh", "init": "good"},
        {**SMALL, "activation": "sigmoid", "seed": 4},
        # 1,401 samples in batches of 100: the last minibatch has one row.
        {**SMALL, "activation": "gelu", "seed": 5, "batch_size": 100},
    ],
    ids=["sgd", "momentum-clip", "adam", "sigmoid", "gelu"],
)
def test_one_member_is_exactly_the_lone_run(config: dict[str, Any]) -> None:
    result, curve, params = alone(config, 0.3, 0.55)
    stacked_curve: list[dict[str, float]] = []
    run = run_stack(
        [member(config, 0.3, report=lambda e, m: stacked_curve.append(m))], keep_params=True
    )
    assert run.results == [result]
    assert stacked_curve == curve
    lone = run.params[0]
    assert lone is not None and lone.keys() == params.keys()
    assert all(torch.equal(lone[name], params[name]) for name in params)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_members_match_their_lone_runs_after_twenty_steps(optimizer: str) -> None:
    base = {"optimizer": optimizer, **TWENTY_STEPS}  # the paper's 20 x 50 network
    lr = {"sgd": 0.03, "momentum": 0.005, "adam": 0.003}[optimizer]
    setups = [
        ({**base, "lr": lr, "seed": 0}, 0.3, 0.55),
        ({**base, "lr": lr * 2, "seed": 1, "clip": 1.0, "momentum": 0.5}, 1.0, 0.3),
        ({**base, "lr": lr / 3, "seed": 2}, 0.0, 0.55),
        ({**base, "lr": lr, "seed": 3, "clip": 10.0}, 0.01, 1.0),
    ]
    run = run_stack([member(c, eta, gamma) for c, eta, gamma in setups], keep_params=True)
    for (config, eta, gamma), result, stacked in zip(setups, run.results, run.params, strict=True):
        assert isinstance(result, dict) and result["steps"] == 20 and not result["diverged"]
        # Each member trains on its own seed's split and minibatch order.
        lone_result, _, lone = alone(config, eta, gamma)
        assert stacked is not None
        # Adam divides by the root of the second moment: where a gradient is near 0 a
        # rounding difference moves the step by a fraction of lr (seen: 2.5e-5 on one CPU).
        atol = 1e-4 if optimizer == "adam" else 1e-6
        for name, value in lone.items():
            torch.testing.assert_close(stacked[name], value, rtol=1e-4, atol=atol)
        assert result["val_accuracy"] == pytest.approx(lone_result["val_accuracy"], abs=0.003)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
def test_hand_written_gradients_are_autograds(activation: str) -> None:
    """The stack's backward, written out op by op, against autograd on the same forward."""
    cfgs = [_config({**SMALL, "activation": activation, "seed": i}) for i in range(3)]
    stack = StackedMLP(cfgs, 64, torch.device("cpu"))
    # Each member's own minibatch: (K, n, features) and (K, n).
    x = torch.randn(3, 29, 64, generator=torch.Generator().manual_seed(0))
    y = torch.randint(10, (3, 29), generator=torch.Generator().manual_seed(1))
    logits, losses, grads = stack.loss_and_grads(x, y)

    params = [p.clone().requires_grad_() for p in stack.params]
    stack.params = params
    reference = stack.forward(x)
    per_member = torch.stack([F.cross_entropy(reference[k], y[k]) for k in range(3)])
    expected = torch.autograd.grad(per_member.sum(), params)
    assert torch.equal(logits, reference.detach())
    torch.testing.assert_close(losses, per_member.detach(), rtol=1e-6, atol=0)
    # Autograd's bmm backward sums the weight gradient in another order: rounding apart.
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)


def test_a_diverging_member_leaves_the_others_untouched() -> None:
    config = {**SMALL, "epochs": 3}
    calm = [member({**config, "seed": 1}, 0.3), member({**config, "seed": 2}, 0.01, 1.0)]
    wild = member({**config, "seed": 5}, 1e12)
    with_wild = run_stack([calm[0], wild, calm[1]], keep_params=True)
    without = run_stack(calm, keep_params=True)
    diverged = with_wild.results[1]
    assert isinstance(diverged, dict) and diverged["diverged"] is True
    assert diverged["epochs"] == 1 and math.isnan(diverged["train_loss"])
    assert [with_wild.results[0], with_wild.results[2]] == without.results
    for a, b in zip([with_wild.params[0], with_wild.params[2]], without.params, strict=True):
        assert a is not None and b is not None
        assert all(torch.equal(a[name], b[name]) for name in a)


def test_a_member_whose_report_raises_stops_alone() -> None:
    class Pruned(Exception):
        pass

    epochs: dict[int, list[int]] = {0: [], 1: [], 2: []}
    finished: dict[int, Any] = {}

    def report_of(i: int) -> Any:
        def report(epoch: int, metrics: dict[str, float]) -> None:
            epochs[i].append(epoch)
            if i == 1 and epoch == 2:
                raise Pruned

        return report

    config = {**SMALL, "epochs": 4}
    members = [
        member({**config, "seed": i}, 0.1 * (i + 1), report=report_of(i), done=finished.__setitem__)
        for i in range(3)
    ]
    for i, m in enumerate(members):
        m.done = lambda result, i=i: finished.__setitem__(i, result)
    results = train_stacked(members)
    assert isinstance(results[1], Pruned) and finished[1] is results[1]
    assert epochs == {0: [1, 2, 3, 4], 1: [1, 2], 2: [1, 2, 3, 4]}
    assert [r["epochs"] for r in (results[0], results[2])] == [4, 4]
    assert finished[0] is results[0] and finished[2] is results[2]
    # Members 0 and 2 trained exactly as they would have without member 1.
    assert [results[0], results[2]] == train_stacked([members[0], members[2]])


def test_stack_key_separates_architectures_not_hyperparameters() -> None:
    assert stack_key(SMALL) == stack_key({**SMALL, "lr": 0.1, "seed": 4, "clip": 1.0})
    assert stack_key(SMALL) != stack_key({**SMALL, "depth": 7})
    with pytest.raises(ValueError, match="cannot share a stack"):
        train_stacked([member(SMALL, 0.1), member({**SMALL, "width": 8}, 0.1)])


# -- StackedGradientNoise -----------------------------------------------------------------


def stacked_zero_grads(k: int, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    return [torch.zeros(k, *shape) for shape in shapes]


def test_each_member_gets_its_own_variance_and_decay() -> None:
    shapes = [(200, 100), (100,)]
    etas, gammas = [0.5, 0.0, 2.0], [0.55, 0.55, 1.0]
    noise = StackedGradientNoise(stacked_zero_grads(3, shapes), etas, gammas, seeds=[1, 2, 3])
    for t in range(3):
        grads = stacked_zero_grads(3, shapes)
        noise.add_to(grads)
        for k, (eta, gamma) in enumerate(zip(etas, gammas, strict=True)):
            drawn = torch.cat([g[k].flatten() for g in grads]).double()
            expected = eta / (1 + t) ** gamma
            if expected == 0:
                assert torch.count_nonzero(drawn) == 0
            else:
                assert drawn.var().item() == pytest.approx(expected, rel=0.05)
                assert abs(drawn.mean().item()) < 4 * math.sqrt(expected / drawn.numel())
    assert noise.t == [3, 3, 3]


def test_member_noise_is_what_gradient_noise_draws_for_it() -> None:
    shapes = [(7, 5), (5,), (3, 7)]
    etas, gammas, seeds = [0.3, 1.0, 0.01], [0.55, 0.0, 1.0], [11, 12, 13]
    noise = StackedGradientNoise(stacked_zero_grads(3, shapes), etas, gammas, seeds)
    lone = []
    for eta, gamma, seed in zip(etas, gammas, seeds, strict=True):
        params = [torch.zeros(s, requires_grad=True) for s in shapes]
        lone.append((params, GradientNoise(torch.optim.SGD(params, lr=0.0), eta, gamma, seed=seed)))
    for step in range(3):
        grads = stacked_zero_grads(3, shapes)
        noise.add_to(grads)
        for k, (params, noisy) in enumerate(lone):
            for p in params:
                p.grad = torch.zeros_like(p)
            noisy.step()
            drawn = [p.grad for p in params]
            assert all(
                d is not None and torch.equal(g[k], d) for g, d in zip(grads, drawn, strict=True)
            )
        if step == 0:  # compacting keeps each member's own stream and step
            noise.keep([2, 0, 1])
            lone = [lone[2], lone[0], lone[1]]


def test_batched_noise_rejects_bad_arguments() -> None:
    grads = stacked_zero_grads(2, [(3,)])
    with pytest.raises(ValueError, match="eta"):
        StackedGradientNoise(grads, [0.1], [0.5, 0.5], seeds=[1, 2])
    with pytest.raises(ValueError, match="eta"):
        StackedGradientNoise(grads, [0.1, -1.0], [0.5, 0.5], seeds=[1, 2])
    with pytest.raises(ValueError, match="seeds"):
        StackedGradientNoise(grads, [0.1, 0.1], [0.5, 0.5], seeds=[1])


# -- the worker's --batch option -----------------------------------------------------------


def test_batch_option_parses_counts_and_auto() -> None:
    assert (
        parse_stack_size("8") == 8
        and parse_stack_size(" 1 ") == 1
        and parse_stack_size("auto") is None
    )
    for bad in ("0", "-2", "many", "2.5", "100000"):
        with pytest.raises(SystemExit, match="--batch must be 'auto' or a whole number"):
            parse_stack_size(bad)
    assert auto_stack_size("cpu") == AUTO_CPU_STACK
