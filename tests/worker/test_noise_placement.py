"""GradientNoise's families, window, placement around clipping and relative scale."""

from __future__ import annotations

import math

import pytest
import torch

from search_spaces.schedules import make_schedule
from worker.noise import GradientNoise


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(40, 30, generator=g)),
        torch.nn.Parameter(torch.randn(30, generator=g)),
    ]


def _set_grads(params: list[torch.nn.Parameter], scale: float = 1.0) -> None:
    g = torch.Generator().manual_seed(99)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * scale


def test_eta_zero_and_steps_outside_the_window_are_the_bare_optimizer_with_clipping() -> None:
    bare, noisy = _params(), _params()
    opt = torch.optim.SGD(bare, lr=0.1, momentum=0.9)
    schedule = make_schedule("cosine", 0.5, horizon=1000, window=3)
    wrapped = GradientNoise(torch.optim.SGD(noisy, lr=0.1, momentum=0.9), schedule=schedule,
                            seed=1, max_grad_norm=1.0, placement="before_clip")  # fmt: skip
    for _ in range(3):  # inside the window: noise makes the gradients differ
        _set_grads(bare, 5.0)
        _set_grads(noisy, 5.0)
        torch.nn.utils.clip_grad_norm_(bare, 1.0)
        opt.step()
        wrapped.step()
        assert not all(torch.equal(a.grad, b.grad) for a, b in zip(bare, noisy, strict=True))  # type: ignore[arg-type]
    for _ in range(3):  # past it, nothing is drawn: the clipped gradients are the bare ones
        _set_grads(bare, 5.0)
        _set_grads(noisy, 5.0)
        torch.nn.utils.clip_grad_norm_(bare, 1.0)
        opt.step()
        wrapped.step()
        assert all(torch.equal(a.grad, b.grad) for a, b in zip(bare, noisy, strict=True))  # type: ignore[arg-type]
    # eta 0 with clipping inside step() is the bare optimizer clipped before it, bit for bit.
    zero = GradientNoise(torch.optim.SGD(_params(), lr=0.1), 0.0, seed=1, max_grad_norm=1.0)
    plain = torch.optim.SGD(ref := _params(), lr=0.1)
    for _ in range(3):
        _set_grads(zero.param_groups[0]["params"], 5.0)
        _set_grads(ref, 5.0)
        torch.nn.utils.clip_grad_norm_(ref, 1.0)
        zero.step()
        plain.step()
    assert all(torch.equal(a, b) for a, b in zip(zero.param_groups[0]["params"], ref, strict=True))


@pytest.mark.parametrize("placement", ["after_clip", "before_clip"])
def test_noise_lands_on_the_chosen_side_of_clipping(placement: str) -> None:
    params = _params()
    noisy = GradientNoise(torch.optim.SGD(params, lr=1.0), 4.0, 0.55, seed=5,
                          max_grad_norm=1.0, placement=placement)  # fmt: skip
    _set_grads(params, 3.0)
    # The same draws, added to copies by a noise-only wrapper with the same seed.
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    probe = GradientNoise(torch.optim.SGD(copies, lr=0.0), 4.0, 0.55, seed=5)
    for c, p in zip(copies, params, strict=True):
        assert p.grad is not None
        c.grad = p.grad.clone()
    if placement == "after_clip":
        torch.nn.utils.clip_grad_norm_(copies, 1.0)
    probe.step()  # adds the noise; lr 0 leaves the copies
    if placement == "before_clip":
        torch.nn.utils.clip_grad_norm_(copies, 1.0)
    noisy.step()  # clips and adds noise in place, in .grad
    for p, c in zip(params, copies, strict=True):
        assert p.grad is not None and c.grad is not None and torch.equal(p.grad, c.grad)
    norms = [torch.linalg.vector_norm(c.grad) for c in copies if c.grad is not None]
    total = torch.linalg.vector_norm(torch.stack(norms))
    if placement == "before_clip":
        assert total <= 1.0 + 1e-5  # clipped with its noise
    else:
        assert total > 5.0  # noise of variance 4 per entry over 1,230 entries


def test_relative_scale_multiplies_each_tensors_noise_by_its_gradient_rms() -> None:
    big = torch.nn.Parameter(torch.zeros(200_000))
    small = torch.nn.Parameter(torch.zeros(200_000))
    constant = make_schedule("constant", 0.25)
    noisy = GradientNoise(torch.optim.SGD([big, small], lr=1.0), schedule=constant, seed=3,
                          scale="relative")  # fmt: skip
    big.grad = torch.full((200_000,), 10.0)
    small.grad = torch.full((200_000,), -0.1)
    noisy.step()
    # Each update is grad + noise with noise std sqrt(0.25) * rms: 5.0 and 0.05.
    for p, value, std in ((big, 10.0, 5.0), (small, -0.1, 0.05)):
        noise = -p.detach() - value
        # 200,000 draws: the sample std is within 1% of its own with overwhelming probability.
        assert noise.std().item() == pytest.approx(std, rel=0.01)
        assert abs(noise.mean().item()) < 5 * std / math.sqrt(200_000)


def test_bad_options_are_refused() -> None:
    params = _params()
    with pytest.raises(ValueError, match="scale must be one of absolute, relative"):
        GradientNoise(torch.optim.SGD(params, lr=0.1), 0.1, scale="percent")
    with pytest.raises(ValueError, match="placement must be one of after_clip, before_clip"):
        GradientNoise(torch.optim.SGD(params, lr=0.1), 0.1, placement="never")
    with pytest.raises(ValueError, match="max_grad_norm must be > 0"):
        GradientNoise(torch.optim.SGD(params, lr=0.1), 0.1, max_grad_norm=0.0)


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("constant", {}),
        ("exponential", {"half_life": 40}),
        ("cosine", {"horizon": 300}),
        ("linear", {"horizon": 300}),
        ("polynomial", {"window": 250}),
    ],
)
@pytest.mark.parametrize("t", [0, 37, 199])
def test_each_familys_empirical_variance_matches_its_formula(
    kind: str, options: dict, t: int
) -> None:
    from tests.worker.test_noise import Z, chi2_bounds

    n, eta = 100_000, 0.8
    schedule = make_schedule(kind, eta, 0.55, **options)
    param = torch.nn.Parameter(torch.zeros(n))
    noisy = GradientNoise(torch.optim.SGD([param], lr=0.0), schedule=schedule, seed=t)
    state = noisy.state_dict()
    state["gradient_noise"]["t"] = t  # jump to step t
    noisy.load_state_dict(state)
    param.grad = torch.zeros(n)
    noisy.step()
    sample = param.grad.double()
    variance = schedule.variance(t)
    assert variance > 0
    low, high = chi2_bounds(n)
    assert low <= sample.square().mean().item() / variance <= high
    assert abs(sample.mean().item()) <= Z * math.sqrt(variance / n)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_past_the_horizon_or_window_nothing_is_drawn(kind: str) -> None:
    param = torch.nn.Parameter(torch.zeros(1000))
    schedule = make_schedule(kind, 1.0, horizon=5, window=3)
    noisy = GradientNoise(torch.optim.SGD([param], lr=0.0), schedule=schedule, seed=0)
    state = noisy.state_dict()
    for t in (3, 5, 1000):
        state["gradient_noise"]["t"] = t
        noisy.load_state_dict(state)
        param.grad = torch.zeros(1000)
        noisy.step()
        assert torch.equal(param.grad, torch.zeros(1000))


def test_a_state_dict_resume_is_exact_for_any_setup() -> None:
    schedule = make_schedule("exponential", 0.5, half_life=3, window=5)
    options = {"schedule": schedule, "scale": "relative", "max_grad_norm": 2.0,
               "placement": "before_clip"}  # fmt: skip

    def run(params: list[torch.nn.Parameter], noisy: GradientNoise, steps: range) -> None:
        for step in steps:
            g = torch.Generator().manual_seed(step)
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            noisy.step()

    whole = _params()
    run(whole, GradientNoise(torch.optim.SGD(whole, lr=0.1, momentum=0.9), seed=4, **options),
        range(7))  # fmt: skip
    first = _params()
    noisy = GradientNoise(torch.optim.SGD(first, lr=0.1, momentum=0.9), seed=4, **options)
    run(first, noisy, range(3))
    state = noisy.state_dict()
    again = [torch.nn.Parameter(p.detach().clone()) for p in first]
    resumed = GradientNoise(torch.optim.SGD(again, lr=0.1, momentum=0.9), seed=99, **options)
    resumed.load_state_dict(state)
    run(again, resumed, range(3, 7))
    assert all(torch.equal(a, b) for a, b in zip(whole, again, strict=True))
