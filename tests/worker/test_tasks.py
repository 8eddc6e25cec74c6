"""The trainers' contract: validation, reporting, seeding, divergence, and what they learn."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import time
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from search_spaces import DEEP_MLP, QUADRATIC, DeepMLPConfig, TaskConfigError, derived_seed
from worker.tasks import TrainerImportError, deep_mlp, load_trainer, quadratic, warm_up
from worker.tasks.deep_mlp import build_model, build_optimizer, evaluate, load_split, train

SMALL = {"depth": 3, "width": 16, "epochs": 2}
RESULT_KEYS = {*DEEP_MLP.metrics, "steps", "epochs", "diverged"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def mlp_config(config: dict[str, Any]) -> DeepMLPConfig:
    cfg = DEEP_MLP.validate_config(config)
    assert isinstance(cfg, DeepMLPConfig)
    return cfg


def n_train_batches(config: dict[str, Any]) -> int:
    cfg = mlp_config(config)
    return math.ceil(len(load_split(cfg).x_train) / cfg.batch_size)


# -- deep_mlp ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "bad_key"),
    [({"widht": 5}, "widht"), ({"depth": 0}, "depth"), ({"activation": "selu"}, "activation")],
)
def test_bad_config_names_the_key(config: dict[str, Any], bad_key: str) -> None:
    with pytest.raises(TaskConfigError, match=bad_key):
        train(config, eta=0.0, gamma=0.55)


@pytest.mark.parametrize(("eta", "gamma", "name"), [(-1.0, 0.55, "eta"), (0.1, math.inf, "gamma")])
def test_bad_noise_parameters_are_rejected(eta: float, gamma: float, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        train(SMALL, eta=eta, gamma=gamma)


def test_reports_every_epoch_with_all_metrics() -> None:
    calls: list[tuple[int, dict[str, float]]] = []
    config = {**SMALL, "epochs": 3}
    result = train(config, eta=0.1, gamma=0.55, report=lambda e, m: calls.append((e, m)))
    assert [epoch for epoch, _ in calls] == [1, 2, 3]
    diagnostics = {"noise_grad_ratio", "noise_grad_ratio_layers"}
    assert all(set(metrics) == {*DEEP_MLP.metrics, "steps", *diagnostics} for _, metrics in calls)
    assert set(result) == RESULT_KEYS
    assert result["epochs"] == 3 and result["diverged"] is False
    assert result["steps"] == 3 * n_train_batches(config)
    # Each epoch's point carries the optimizer steps reached by then.
    assert [m["steps"] for _, m in calls] == [e * n_train_batches(config) for e in (1, 2, 3)]
    last = {k: v for k, v in calls[-1][1].items() if k not in diagnostics}
    assert {k: result[k] for k in (*DEEP_MLP.metrics, "steps")} == last
    assert all(0.0 <= result[k] <= 1.0 for k in ("train_accuracy", "val_accuracy"))


def test_exception_from_report_propagates_and_stops_training() -> None:
    class Pruned(Exception):
        pass

    epochs: list[int] = []

    def report(epoch: int, metrics: dict[str, float]) -> None:
        epochs.append(epoch)
        if epoch == 2:
            raise Pruned

    with pytest.raises(Pruned):
        train({**SMALL, "epochs": 5}, eta=0.0, gamma=0.55, report=report)
    assert epochs == [1, 2]


def test_same_seed_same_run_other_seed_other_run() -> None:
    a = train({**SMALL, "seed": 7}, eta=0.3, gamma=0.55)
    b = train({**SMALL, "seed": 7}, eta=0.3, gamma=0.55)
    c = train({**SMALL, "seed": 8}, eta=0.3, gamma=0.55)
    assert a == b
    assert a["val_loss"] != c["val_loss"]


def test_eta_zero_is_exactly_plain_sgd() -> None:
    config = {**SMALL, "seed": 3}
    cfg = mlp_config(config)
    split = load_split(cfg)
    x, y = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    model = build_model(cfg, x.shape[1], torch.Generator().manual_seed(derived_seed(3, "init")))
    sgd = build_optimizer(cfg, list(model.parameters()))
    order = torch.Generator().manual_seed(derived_seed(3, "order"))
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=order)
        for idx in perm.split(cfg.batch_size):
            sgd.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            sgd.step()
    val_loss, val_acc = evaluate(
        model, torch.from_numpy(split.x_val), torch.from_numpy(split.y_val)
    )

    result = train(config, eta=0.0, gamma=0.55)
    assert (result["val_loss"], result["val_accuracy"]) == (val_loss, val_acc)
    assert train(config, eta=0.01, gamma=0.55)["val_loss"] != val_loss


def test_nan_loss_ends_run_as_diverged_without_raising() -> None:
    calls: list[dict[str, float]] = []
    # Noise of std 1e15 blows the activations of a few layers past float32's range.
    result = train(
        {**SMALL, "depth": 4, "epochs": 5},
        eta=1e30,
        gamma=0.55,
        report=lambda e, m: calls.append(m),
    )
    assert result["diverged"] is True
    assert result["epochs"] == 1 and len(calls) == 1
    assert math.isnan(result["train_loss"]) and math.isnan(result["val_loss"])
    assert isinstance(result["val_accuracy"], float)


def test_clipping_comes_before_the_noise() -> None:
    config = {**SMALL, "epochs": 1, "clip": 1e-9, "seed": 1}
    cfg = mlp_config(config)
    split = load_split(cfg)
    model = build_model(cfg, 64, torch.Generator().manual_seed(derived_seed(1, "init")))
    initial_loss, _ = evaluate(model, torch.from_numpy(split.x_val), torch.from_numpy(split.y_val))
    # Clipped to nothing, the gradients move nothing; noise added after the clip still does.
    assert train(config, eta=0.0, gamma=0.55)["val_loss"] == pytest.approx(initial_loss, abs=1e-6)
    assert abs(train(config, eta=1.0, gamma=0.55)["val_loss"] - initial_loss) > 1e-3


def test_simple_init_deep_net_without_noise_stays_at_chance() -> None:
    result = train({"depth": 20, "epochs": 5}, eta=0.0, gamma=0.55)
    # 10 classes: vanishing signal through 20 layers of std-0.1 weights leaves it guessing.
    assert result["val_accuracy"] < 0.2


def test_good_init_learns_digits_far_above_chance() -> None:
    config = {"depth": 4, "width": 64, "init": "good", "lr": 0.1, "epochs": 8, "seed": 0}
    # Measured 0.88-0.94 over seeds 0-2; chance is 0.10 on 396 validation digits.
    assert train(config, eta=0.0, gamma=0.55)["val_accuracy"] > 0.7


@pytest.mark.parametrize(
    "overrides",
    [
        {"optimizer": "momentum"},
        {"optimizer": "adam", "lr": 1e-3},
        {"activation": "tanh", "init": "good"},
        {"activation": "sigmoid", "init": "good"},
        {"activation": "gelu", "init": "good"},
        {"depth": 1},
    ],
)
def test_every_option_trains(overrides: dict[str, Any]) -> None:
    result = train({**SMALL, "epochs": 1, **overrides}, eta=0.01, gamma=0.55)
    assert result["diverged"] is False and math.isfinite(result["val_loss"])


def test_depth_counts_linear_layers_and_simple_init_is_std_point_one() -> None:
    cfg = mlp_config({})
    model = build_model(cfg, 64, torch.Generator().manual_seed(0))
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 20
    assert (linears[0].in_features, linears[-1].out_features) == (64, 10)
    weights = torch.cat([m.weight.flatten() for m in linears[1:-1]])
    assert weights.std().item() == pytest.approx(0.1, rel=0.02)  # 45,000 draws
    assert all(not m.bias.any() for m in linears)


# -- quadratic --------------------------------------------------------------------------


def test_quadratic_is_deterministic_and_reports_a_decreasing_curve() -> None:
    calls: list[tuple[int, float]] = []
    config = {"epochs": 4, "seed": 2}
    result = quadratic.train(
        config, eta=0.1, gamma=0.4, report=lambda e, m: calls.append((e, m["loss"]))
    )
    assert [e for e, _ in calls] == [1, 2, 3, 4]
    losses = [loss for _, loss in calls]
    assert losses == sorted(losses, reverse=True) and losses[-1] == result["loss"]
    assert result == {"loss": result["loss"], "steps": 4, "epochs": 4, "diverged": False}
    assert quadratic.train(config, eta=0.1, gamma=0.4) == result
    assert quadratic.train({**config, "seed": 3}, eta=0.1, gamma=0.4)["loss"] != result["loss"]


def test_quadratic_minimum_is_at_eta_point_three_gamma_point_five_five() -> None:
    grid = [(10 ** (k / 10), g / 20) for k in range(-30, 11) for g in range(0, 21)]
    best = min(grid, key=lambda p: quadratic.train({"epochs": 1}, eta=p[0], gamma=p[1])["loss"])
    assert best[0] == pytest.approx(0.3, rel=0.3) and best[1] == pytest.approx(0.55, abs=0.05)


def test_quadratic_diverge_eta() -> None:
    calls: list[tuple[int, dict[str, float]]] = []
    config = {"epochs": 5, "diverge_eta": 0.5}
    result = quadratic.train(config, eta=0.5, gamma=0.55, report=lambda e, m: calls.append((e, m)))
    assert result["diverged"] is True and result["epochs"] == 1 and math.isnan(result["loss"])
    assert len(calls) == 1 and calls[0][0] == 1 and math.isnan(calls[0][1]["loss"])
    assert quadratic.train(config, eta=0.49, gamma=0.55)["diverged"] is False


def test_quadratic_sleeps_each_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(quadratic.time, "sleep", slept.append)
    quadratic.train({"epochs": 3, "sleep_s": 0.25}, eta=0.3, gamma=0.55)
    assert slept == [0.25, 0.25, 0.25]


def test_quadratic_rejects_bad_config() -> None:
    with pytest.raises(TaskConfigError, match="depth"):
        quadratic.train({"depth": 3}, eta=0.3, gamma=0.55)


def test_quadratic_imports_without_torch() -> None:
    code = "import sys, worker.tasks.quadratic; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- load_trainer -----------------------------------------------------------------------


def test_load_trainer_by_name_and_definition() -> None:
    assert load_trainer("deep_mlp") is deep_mlp.train
    assert load_trainer(QUADRATIC) is quadratic.train


def test_load_trainer_refuses_unregistered_tasks() -> None:
    with pytest.raises(TaskConfigError, match="nope"):
        load_trainer("nope")
    rogue = dataclasses.replace(QUADRATIC, trainer="os:system")
    with pytest.raises(TaskConfigError, match="not the registered one"):
        load_trainer(rogue)


@pytest.mark.parametrize(
    ("trainer", "message"),
    [("no_such_module_xyz:train", "no_such_module_xyz"), ("worker.tasks.quadratic:nope", "nope")],
)
def test_load_trainer_import_errors_are_clear(
    monkeypatch: pytest.MonkeyPatch, trainer: str, message: str
) -> None:
    broken = dataclasses.replace(QUADRATIC, trainer=trainer)
    monkeypatch.setattr("worker.tasks.get_task_definition", lambda name: broken)
    with pytest.raises(TrainerImportError, match=message):
        load_trainer("quadratic")


WARM_UPS: list[str] = []


def _record_warm_up() -> None:
    WARM_UPS.append("warmed")
    time.sleep(0.05)


def _failing_warm_up() -> None:
    raise RuntimeError("no GPU here")


def test_a_task_warms_up_once_per_process_and_a_failing_warm_up_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = dataclasses.replace(QUADRATIC, name="warm", warm_up=f"{__name__}:_record_warm_up")
    assert warm_up(task) >= 0.05  # the claim leaves these seconds out of its latency
    assert warm_up(task) < 0.05 and WARM_UPS == ["warmed"]
    assert warm_up(QUADRATIC) == 0.0  # no warm-up declared
    failing = dataclasses.replace(QUADRATIC, name="cold", warm_up=f"{__name__}:_failing_warm_up")
    warm_up(failing)
    assert "no GPU here" in caplog.text
