"""The noise-to-gradient ratio: what it measures, and that measuring it changes nothing."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from search_spaces.schedules import make_schedule
from worker.noise import GradientNoise
from worker.noise_ratio import RATIO_KEY, RATIO_LAYERS_KEY
from worker.stacked import StackMember
from worker.tasks import deep_mlp
from worker.tasks.deep_mlp_stacked import train_stacked


def _model(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    weight, bias = torch.randn(30, 20, generator=g), torch.randn(30, generator=g)
    return [torch.nn.Parameter(weight), torch.nn.Parameter(bias)]


def _grads(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(30, 20, generator=g) * 0.1, torch.randn(30, generator=g)]


def test_the_ratio_is_the_noise_norm_over_the_gradient_norm() -> None:
    params = _model(0)
    noisy = GradientNoise(torch.optim.SGD(params, lr=1.0), schedule=make_schedule("constant", 0.04),
                          seed=1, ratio_every=2)  # fmt: skip
    expected_whole, expected_layers = [], []
    for step in range(4):
        grads = _grads(step)
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        noisy.step()
        if step % 2 == 0:  # sampled: steps 0 and 2
            noise = [p.grad - g for p, g in zip(params, grads, strict=True)]  # type: ignore[operator]
            norm = lambda ts: math.sqrt(sum(float(t.double().square().sum()) for t in ts))  # noqa: E731
            expected_whole.append(norm(noise) / norm(grads))
            expected_layers.append(
                [norm(noise[i : i + 1]) / norm(grads[i : i + 1]) for i in (0, 1)]
            )
    assert noisy.ratios is not None
    taken = noisy.ratios.take([[0], [1]])
    assert taken is not None
    whole, layers = taken
    assert whole[0] == pytest.approx(sum(expected_whole) / 2, rel=1e-5)
    for i in (0, 1):
        assert layers[i][0] == pytest.approx(sum(e[i] for e in expected_layers) / 2, rel=1e-5)
    assert noisy.ratios.take([[0]]) is None  # taken: it starts over


def test_measuring_the_ratio_changes_no_result_bit() -> None:
    runs = []
    for every in (None, 1):
        params = _model(3)
        noisy = GradientNoise(torch.optim.SGD(params, lr=0.1, momentum=0.9), 0.3, seed=2,
                              ratio_every=every, max_grad_norm=1.0)  # fmt: skip
        for step in range(5):
            for p, g in zip(params, _grads(step), strict=True):
                p.grad = g
            noisy.step()
        runs.append([p.detach().clone() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))


TINY = {"dataset": "digits", "depth": 4, "width": 16, "epochs": 2, "lr": 0.05, "seed": 1}


def test_deep_mlp_reports_the_ratio_per_epoch_and_layer_alone_and_stacked() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lone: list[dict[str, Any]] = []
        deep_mlp.train(TINY, eta=0.3, gamma=0.55, report=lambda e, m: lone.append(m))
        stacked: list[dict[str, Any]] = []
        quiet: list[dict[str, Any]] = []
        train_stacked([
            StackMember(TINY, 0.3, 0.55, report=lambda e, m: stacked.append(m)),
            StackMember({**TINY, "seed": 2}, 0.0, 0.55, report=lambda e, m: quiet.append(m)),
        ])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    for point in lone:
        assert point[RATIO_KEY] > 0 and len(point[RATIO_LAYERS_KEY]) == 4
    for a, b in zip(lone, stacked, strict=True):  # the same run, its norms batched
        assert b[RATIO_KEY] == pytest.approx(a[RATIO_KEY], rel=1e-4)
        assert b[RATIO_LAYERS_KEY] == pytest.approx(a[RATIO_LAYERS_KEY], rel=1e-4)
    assert all(p[RATIO_KEY] == 0.0 and set(p[RATIO_LAYERS_KEY]) == {0.0} for p in quiet)
