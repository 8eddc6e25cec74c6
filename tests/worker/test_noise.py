from __future__ import annotations

import io
import math
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from worker.noise import (
    ConstantSchedule,
    GradientNoise,
    PolynomialSchedule,
    make_schedule,
)

# Two-sided z for a per-check false-alarm rate of about 1e-6: with fixed seeds the tests are
# deterministic anyway, but the bounds are ones a correct implementation passes for any seed.
Z = NormalDist().inv_cdf(1 - 0.5e-6)


def chi2_bounds(n: int) -> tuple[float, float]:
    """Bounds on (sum x^2 / n) / sigma^2 for n iid N(0, sigma^2) draws (Wilson-Hilferty)."""

    def quantile(z: float) -> float:
        return (1 - 2 / (9 * n) + z * math.sqrt(2 / (9 * n))) ** 3

    return quantile(-Z), quantile(Z)


def noise_probe(
    eta: float, n: int, *, seed: int = 0, device: torch.device | str = "cpu"
) -> tuple[nn.Parameter, GradientNoise]:
    """A parameter with zero gradient and lr=0: after a step, its .grad is exactly the noise."""
    param = nn.Parameter(torch.zeros(n, device=device))
    noisy = GradientNoise(torch.optim.SGD([param], lr=0.0), eta, 0.55, seed=seed)
    return param, noisy


def draw(param: nn.Parameter, noisy: GradientNoise) -> torch.Tensor:
    param.grad = torch.zeros_like(param)
    noisy.step()
    return grad_of(param).clone()


def grad_of(param: torch.Tensor) -> torch.Tensor:
    assert param.grad is not None
    return param.grad


def mlp(seed: int, device: torch.device | str = "cpu") -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).to(device)


def batches(
    n: int, seed: int = 1, device: torch.device | str = "cpu"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same data everywhere
    for _ in range(n):
        x, y = (
            torch.randn(6, 8, generator=generator),
            torch.randint(0, 4, (6,), generator=generator),
        )
        yield x.to(device), y.to(device)


def train(model: nn.Module, optimizer: torch.optim.Optimizer, data: Iterator[tuple]) -> None:
    for x, y in data:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def assert_same_params(a: nn.Module, b: nn.Module) -> None:
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


# -- the rule: sigma_t^2 = eta / (1 + t)^gamma, eta a variance, t from 0 -------------------


@pytest.mark.parametrize("eta", [0.3, 1.0])
@pytest.mark.parametrize("t", [0, 9, 99, 999])
def test_empirical_variance_and_mean_match_the_schedule(
    eta: float, t: int, device: torch.device
) -> None:
    n = 100_000
    param, noisy = noise_probe(eta, n, seed=t, device=device)
    state = noisy.state_dict()
    state["gradient_noise"]["t"] = t  # jump to step t without taking t steps
    noisy.load_state_dict(state)
    sample = draw(param, noisy).double()

    variance = eta / (1 + t) ** 0.55
    low, high = chi2_bounds(n)
    assert low <= sample.square().mean().item() / variance <= high
    assert abs(sample.mean().item()) <= Z * math.sqrt(variance / n)
    assert noisy.t == t + 1


def test_steps_count_from_zero_and_advance_once_per_step(device: torch.device) -> None:
    n, eta = 100_000, 1.0
    param, noisy = noise_probe(eta, n, device=device)
    low, high = chi2_bounds(n)
    for t in range(10):
        sample = draw(param, noisy).double()
        ratio = sample.square().mean().item() / (eta / (1 + t) ** 0.55)
        # Off by one step would be off by >= 5% at t <= 9: far outside these bounds.
        assert low <= ratio <= high, t
    assert noisy.t == 10


def test_complex_gradients_get_the_variance_on_each_part() -> None:
    n, eta = 50_000, 0.3
    param = nn.Parameter(torch.zeros(n, dtype=torch.complex64))
    noisy = GradientNoise(torch.optim.SGD([param], lr=0.0), eta, seed=0)
    sample = torch.view_as_real(draw(param, noisy)).double()
    low, high = chi2_bounds(n)
    for part in (sample[:, 0], sample[:, 1]):
        assert low <= part.square().mean().item() / eta <= high


# -- reproducibility -----------------------------------------------------------------------


def test_same_seed_same_run_and_different_seeds_differ() -> None:
    models = [mlp(0) for _ in range(3)]
    for model, seed in zip(models, (7, 7, 8), strict=True):
        noisy = GradientNoise(torch.optim.SGD(model.parameters(), lr=0.1), eta=0.3, seed=seed)
        train(model, noisy, batches(5))
    assert_same_params(models[0], models[1])
    assert not torch.equal(models[0].get_parameter("0.weight"), models[2].get_parameter("0.weight"))


def test_default_seed_comes_from_torch_default_generator() -> None:
    param = nn.Parameter(torch.zeros(3))

    def seed_after(manual_seed: int) -> int:
        torch.manual_seed(manual_seed)
        return GradientNoise(torch.optim.SGD([param], lr=0.1), eta=0.3).seed

    assert seed_after(1) == seed_after(1)
    assert seed_after(1) != seed_after(2)


def test_resumed_run_continues_bit_identically(device: torch.device) -> None:
    n_steps, m_steps = 5, 6
    data = list(batches(n_steps + m_steps, device=device))

    model = mlp(0, device)
    noisy = GradientNoise(
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), eta=0.3, seed=3
    )
    train(model, noisy, iter(data[:n_steps]))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": noisy.state_dict()}, buffer)
    train(model, noisy, iter(data[n_steps:]))

    buffer.seek(0)
    checkpoint = torch.load(buffer)  # weights_only: the noise state must load safely
    resumed_model = mlp(1, device)
    resumed = GradientNoise(
        torch.optim.SGD(resumed_model.parameters(), lr=0.1, momentum=0.9), eta=0.3, seed=99
    )
    resumed_model.load_state_dict(checkpoint["model"])
    resumed.load_state_dict(checkpoint["optimizer"])
    assert resumed.t == n_steps and resumed.seed == 3
    train(resumed_model, resumed, iter(data[n_steps:]))

    assert_same_params(model, resumed_model)
    assert resumed.t == noisy.t == n_steps + m_steps


def test_loading_a_bare_optimizer_state_dict_is_refused() -> None:
    param = nn.Parameter(torch.zeros(3))
    bare = torch.optim.SGD([param], lr=0.1)
    noisy = GradientNoise(torch.optim.SGD([param], lr=0.1), eta=0.3, seed=0)
    with pytest.raises(ValueError, match="gradient_noise"):
        noisy.load_state_dict(bare.state_dict())


# -- the two code paths and the baseline ---------------------------------------------------


def mixed_model(seed: int) -> tuple[nn.Module, nn.Parameter, nn.Parameter]:
    """float32 layers, a float64 parameter (a second draw) and one that never gets a grad."""
    model = mlp(seed)
    extra = nn.Parameter(torch.ones(5, 3, dtype=torch.float64))
    unused = nn.Parameter(torch.ones(4))
    model.register_parameter("extra", extra)
    model.register_parameter("unused", unused)
    return model, extra, unused


def train_mixed(foreach: bool | None, eta: float = 0.3) -> tuple[nn.Module, GradientNoise]:
    model, extra, _ = mixed_model(0)
    noisy = GradientNoise(
        torch.optim.SGD(model.parameters(), lr=0.1), eta=eta, seed=5, foreach=foreach
    )
    for x, y in batches(4):
        noisy.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + extra.sum()
        loss.backward()
        noisy.step()
    return model, noisy


def test_foreach_and_loop_paths_draw_the_same_numbers() -> None:
    foreach_model, foreach_noisy = train_mixed(foreach=True)
    loop_model, loop_noisy = train_mixed(foreach=False)
    assert_same_params(foreach_model, loop_model)
    for a, b in zip(foreach_model.parameters(), loop_model.parameters(), strict=True):
        assert (a.grad is None and b.grad is None) or torch.equal(grad_of(a), grad_of(b))
    assert [b.foreach for b in foreach_noisy._buckets] == [True, True]
    assert [b.foreach for b in loop_noisy._buckets] == [False, False]
    _, auto_noisy = train_mixed(foreach=None)
    assert all(b.foreach for b in auto_noisy._buckets)


def test_float64_parameter_gets_noise() -> None:
    noisy_model, _ = train_mixed(foreach=None)
    clean_model, _ = train_mixed(foreach=None, eta=0.0)
    assert not torch.equal(noisy_model.get_parameter("extra"), clean_model.get_parameter("extra"))


def test_parameters_without_grad_are_skipped() -> None:
    model, _ = train_mixed(foreach=None)
    unused = model.get_parameter("unused")
    assert unused.grad is None
    assert torch.equal(unused, torch.ones(4))


def test_eta_zero_is_bit_identical_to_the_bare_optimizer(device: torch.device) -> None:
    bare_model, noisy_model = mlp(0, device), mlp(0, device)
    bare = torch.optim.SGD(bare_model.parameters(), lr=0.1, momentum=0.9)
    noisy = GradientNoise(
        torch.optim.SGD(noisy_model.parameters(), lr=0.1, momentum=0.9), eta=0.0, seed=0
    )
    train(bare_model, bare, batches(10, device=device))
    train(noisy_model, noisy, batches(10, device=device))
    assert_same_params(bare_model, noisy_model)
    assert noisy.t == 10
    assert noisy.state_dict()["gradient_noise"]["generators"] == {}  # nothing was drawn


# -- order inside a step: after unscaling and clipping -------------------------------------


def test_noise_is_added_after_clipping() -> None:
    max_norm, n = 1.0, 1_000
    param, noisy = noise_probe(eta=1.0, n=n, seed=4)
    param.grad = torch.full((n,), 100.0)
    torch.nn.utils.clip_grad_norm_([param], max_norm)
    clipped = param.grad.clone()
    noisy.step()

    probe, twin = noise_probe(eta=1.0, n=n, seed=4)
    noise = draw(probe, twin)
    assert torch.equal(param.grad, clipped + noise)
    assert param.grad.norm() > 10 * max_norm  # noise of std 1 on 1000 entries: norm ~ 31


def amp_setup(seed: int) -> tuple[nn.Linear, GradientNoise, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Linear(32, 64)
    noisy = GradientNoise(torch.optim.SGD(model.parameters(), lr=0.0), eta=0.3, seed=seed)
    x = torch.randn(16, 32)
    return model, noisy, x


def clean_grads(
    model: nn.Linear, x: torch.Tensor, max_norm: float | None = None
) -> list[torch.Tensor]:
    model.zero_grad()
    model(x).square().mean().backward()
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    return grads


def reference_noise(seed: int) -> list[torch.Tensor]:
    model = nn.Linear(32, 64)
    noisy = GradientNoise(torch.optim.SGD(model.parameters(), lr=0.0), eta=0.3, seed=seed)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    noisy.step()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_grad_scaler_step_adds_noise_to_unscaled_gradients() -> None:
    model, noisy, x = amp_setup(seed=11)
    grads = clean_grads(model, x)
    expected = [g + e for g, e in zip(grads, reference_noise(11), strict=True)]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    assert scaler.is_enabled()

    scaler.scale(model(x).square().mean()).backward()
    scaler.step(noisy)
    scaler.update()
    for p, want in zip(model.parameters(), expected, strict=True):
        assert torch.equal(grad_of(p), want)  # unscaling by a power of two is exact
    # Noise on scaled grads would show here as std sqrt(0.3) / 2**16 after unscaling.
    applied = torch.cat(
        [(grad_of(p) - g).flatten() for p, g in zip(model.parameters(), grads, strict=True)]
    )
    assert applied.std().item() == pytest.approx(math.sqrt(0.3), rel=0.1)
    assert noisy.t == 1


def test_grad_scaler_with_unscale_and_clipping_recipe() -> None:
    model, noisy, x = amp_setup(seed=12)
    grads = clean_grads(model, x, max_norm=0.01)
    expected = [g + e for g, e in zip(grads, reference_noise(12), strict=True)]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)

    scaler.scale(model(x).square().mean()).backward()
    scaler.unscale_(noisy)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.01)
    scaler.step(noisy)  # must not unscale a second time
    for p, want in zip(model.parameters(), expected, strict=True):
        assert torch.equal(grad_of(p), want)


def test_steps_skipped_by_grad_scaler_neither_advance_t_nor_draw() -> None:
    model, noisy, x = amp_setup(seed=13)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaler.scale(model(x).square().mean()).backward()
    scaler.step(noisy)
    scaler.update()
    before = noisy.state_dict()["gradient_noise"]

    noisy.zero_grad()
    scaler.scale(model(x).square().mean()).backward()
    grad_of(model.weight)[0, 0] = float("inf")
    assert scaler.step(noisy) is None
    scaler.update()
    after = noisy.state_dict()["gradient_noise"]

    assert noisy.t == after["t"] == before["t"] == 1
    assert before["generators"].keys() == after["generators"].keys() == {"cpu"}
    assert torch.equal(before["generators"]["cpu"], after["generators"]["cpu"])
    assert scaler.get_scale() == 2.0**15


# -- behaving as an Optimizer --------------------------------------------------------------


def test_lr_scheduler_acts_on_the_wrapped_optimizer_without_warnings() -> None:
    model = mlp(0)
    sgd = torch.optim.SGD(model.parameters(), lr=0.4)
    noisy = GradientNoise(sgd, eta=0.3, seed=0)
    assert noisy.param_groups is sgd.param_groups
    assert noisy.state is sgd.state and noisy.defaults is sgd.defaults

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler = torch.optim.lr_scheduler.StepLR(noisy, step_size=1, gamma=0.5)
        for batch in batches(3):
            train(model, noisy, iter([batch]))
            scheduler.step()
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.05)

    # The scheduler's order check still works through the wrapper: it can fail.
    fresh = GradientNoise(torch.optim.SGD(model.parameters(), lr=0.4), eta=0.3, seed=0)
    late = torch.optim.lr_scheduler.StepLR(fresh, step_size=1)
    with pytest.warns(UserWarning, match="optimizer.step()"):
        late.step()


def test_step_hooks_run_and_closure_losses_are_returned() -> None:
    model = mlp(0)
    noisy = GradientNoise(torch.optim.SGD(model.parameters(), lr=0.1), eta=0.3, seed=0)
    calls: list[int] = []
    noisy.register_step_pre_hook(lambda opt, args, kwargs: calls.append(opt.t))
    x, y = next(batches(1))

    def closure() -> float:
        noisy.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss.item()

    closure()
    first_weight = model.get_parameter("0.weight")
    clean = grad_of(first_weight).clone()
    loss = noisy.step(closure)
    assert loss == pytest.approx(nn.functional.cross_entropy(mlp(0)(x), y).item())
    assert not torch.equal(grad_of(first_weight), clean)  # noise added after the closure ran
    assert calls == [0] and noisy.t == 1


def test_sparse_gradients_are_refused() -> None:
    embedding = nn.Embedding(10, 3, sparse=True)
    noisy = GradientNoise(torch.optim.SGD(embedding.parameters(), lr=0.1), eta=0.3, seed=0)
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        noisy.step()


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"eta": -1.0}, "eta=-1.0"),
        ({"eta": float("nan")}, "eta=nan"),
        ({"eta": float("inf")}, "eta=inf"),
        ({"eta": 0.3, "gamma": -0.5}, "gamma=-0.5"),
        ({"eta": 0.3, "gamma": float("inf")}, "gamma=inf"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(
    kwargs: dict[str, Any], shown: str
) -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match=re.escape(shown)):
        GradientNoise(optimizer, **kwargs)


def test_schedule_keyword_and_exposed_state() -> None:
    param = nn.Parameter(torch.zeros(2))
    schedule = ConstantSchedule(0.5)
    noisy = GradientNoise(torch.optim.SGD([param], lr=0.1), schedule=schedule, seed=0)
    assert noisy.schedule is schedule and noisy.t == 0
    assert GradientNoise(torch.optim.SGD([param], lr=0.1), 0.3, seed=0).schedule == (
        PolynomialSchedule(0.3, 0.55)
    )
    with pytest.raises(ValueError, match="either"):
        GradientNoise(torch.optim.SGD([param], lr=0.1), 0.3, schedule=schedule)


# -- schedules -----------------------------------------------------------------------------


def test_schedules_scalar_list_and_numpy() -> None:
    poly = PolynomialSchedule(0.3, 0.55)
    assert poly.variance(0) == 0.3
    assert poly.std(9) == pytest.approx(math.sqrt(0.3 / 10**0.55))
    assert poly.variance([0, 99]) == [0.3, pytest.approx(0.3 / 100**0.55)]
    ts = np.arange(1000)
    np.testing.assert_allclose(poly.variance(ts), 0.3 / (1.0 + ts) ** 0.55)
    np.testing.assert_allclose(poly.std(ts), np.sqrt(0.3 / (1.0 + ts) ** 0.55))
    constant = ConstantSchedule(1.0)
    assert constant.variance([0, 5]) == [1.0, 1.0]
    np.testing.assert_array_equal(constant.std(ts), np.ones(1000))
    with pytest.raises(ValueError, match="t=-1"):
        poly.variance(-1)


def test_make_schedule() -> None:
    assert make_schedule("polynomial", 1.0, 0.55) == PolynomialSchedule(1.0, 0.55)
    assert make_schedule("constant", 1.0, 0.55) == ConstantSchedule(1.0)
    with pytest.raises(ValueError, match="'sawtooth'.*polynomial, constant, exponential"):
        make_schedule("sawtooth", 1.0, 0.55)
    with pytest.raises(ValueError, match="eta=-0.1"):
        make_schedule("constant", -0.1, 0.55)


def test_schedules_import_without_torch() -> None:
    code = (
        "import sys, search_spaces.schedules as s; s.PolynomialSchedule(0.3).std([0, 1]); "
        "assert 'torch' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
