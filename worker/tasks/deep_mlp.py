"""The paper's deep fully-connected network, trained with annealed gradient noise.

``depth`` counts Linear layers: input -> width, (depth - 2) x width -> width, width -> 10,
with the activation between them (depth = 1 is a linear classifier). "simple" init draws
every weight from N(0, 0.1^2) with zero biases, the paper's poor initialisation; "zero" sets
every weight and bias to 0, the paper's other one (without noise only the last layer's bias
ever gets a gradient); "good" is He-normal for relu/gelu and Xavier-normal for tanh/sigmoid,
zero biases.

One optimizer step: backward -> GradientNoise.step(), which clips the gradients'
total norm to ``clip`` (if set) and adds N(0, sigma_t^2) per gradient entry (t = 0 at the
first step; the paper's sigma_t^2 = eta / (1 + t)^gamma, or any schedule of the trial's
``noise`` setup), in the order its placement says (the paper's: clip, then noise), then
updates. Where sigma_t^2 is 0 (eta 0, past a window) nothing is added. The data lives on
the device as tensors and each epoch is one seeded permutation sliced into minibatches
(the last one may be smaller).

Seeds: init, split, minibatch order and noise each use ``derived_seed(seed, <part>)``
with their own generator, so a run changes no global RNG or thread setting.
Divergence is checked once per epoch (no per-step host sync): a non-finite train or
validation loss reports that epoch (losses NaN) and ends the run with ``diverged: True``.
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from search_spaces import DEEP_MLP, DeepMLPConfig, NoiseSetup, derived_seed
from worker.data import Split, load_digits_split, load_mnist
from worker.noise import GradientNoise
from worker.noise_ratio import RATIO_EVERY, ratio_point
from worker.tasks.base import (
    Checkpoint,
    Report,
    check_noise,
    final_result,
    resolve_device,
    validate,
)

N_CLASSES = 10
SIMPLE_INIT_STD = 0.1
EVAL_CHUNK = 8192  # bounds evaluation memory for wide networks on MNIST

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}


def build_model(cfg: DeepMLPConfig, n_inputs: int, generator: torch.Generator) -> nn.Sequential:
    sizes = [n_inputs] + [cfg.width] * (cfg.depth - 1) + [N_CLASSES]
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        linear = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            if cfg.init == "simple":
                nn.init.normal_(linear.weight, 0.0, SIMPLE_INIT_STD, generator=generator)
            elif cfg.init == "zero":
                nn.init.zeros_(linear.weight)
            elif cfg.activation in ("relu", "gelu"):
                nn.init.kaiming_normal_(linear.weight, nonlinearity="relu", generator=generator)
            else:
                gain = nn.init.calculate_gain("tanh") if cfg.activation == "tanh" else 1.0
                nn.init.xavier_normal_(linear.weight, gain=gain, generator=generator)
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[cfg.activation]())
    return nn.Sequential(*layers)


def build_optimizer(cfg: DeepMLPConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    momentum = cfg.momentum if cfg.optimizer == "momentum" else 0.0
    return torch.optim.SGD(params, lr=cfg.lr, momentum=momentum)


def warm_up() -> None:
    """Pay the one-time costs of a first trial: sklearn's import (for digits) and the lazy
    import torch's first optimizer triggers, seconds each."""
    import sklearn.datasets  # noqa: F401

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def load_split(cfg: DeepMLPConfig) -> Split:
    if cfg.dataset == "mnist":
        return load_mnist(cfg.data_dir)
    return load_digits_split(cfg.val_fraction, derived_seed(cfg.seed, "split"))


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean loss and accuracy; a sample whose outputs are not finite counts as wrong."""
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, len(x), EVAL_CHUNK):
        logits = model(x[start : start + EVAL_CHUNK])
        labels = y[start : start + EVAL_CHUNK]
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        hit = (logits.argmax(1) == labels) & torch.isfinite(logits).all(1)
        correct += hit.sum()
    return loss_sum.item() / len(x), correct.item() / len(x)


def train(
    config: dict[str, Any],
    *,
    eta: float,
    gamma: float,
    device: str = "cpu",
    report: Report | None = None,
    progress: bool = False,
    checkpoint: Checkpoint | None = None,
    noise: NoiseSetup | None = None,
) -> dict[str, Any]:
    """Train the deep MLP with gradient noise (eta, gamma, or the whole `noise` setup,
    which wins when given); see the module doc and base.

    With a `checkpoint`, it resumes from the state it gives and saves one at every epoch
    end: the model, the optimizer with its noise (step count and generators), the data
    order's generator, the epoch and the steps. A resumed run on the CPU is the
    uninterrupted run, bit for bit.
    """
    cfg = validate(DEEP_MLP, config)
    assert isinstance(cfg, DeepMLPConfig)
    eta, gamma = check_noise(eta, gamma)
    dev = torch.device(resolve_device(device))

    split = load_split(cfg)
    x_train, y_train, x_val, y_val = (
        torch.from_numpy(np.ascontiguousarray(a)).to(dev)
        for a in (split.x_train, split.y_train, split.x_val, split.y_val)
    )
    init_gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "init"))
    model = build_model(cfg, x_train.shape[1], init_gen).to(dev)
    params = list(model.parameters())
    setup = noise if noise is not None else NoiseSetup(eta, gamma)
    # GradientNoise clips too, on the side of the noise that the setup's placement says.
    optimizer = GradientNoise(
        build_optimizer(cfg, params),
        schedule=setup.make_schedule(),
        seed=derived_seed(cfg.seed, "noise"),
        scale=setup.scale,
        max_grad_norm=cfg.clip,
        placement=setup.placement,
        ratio_every=RATIO_EVERY,
    )
    layers = [[2 * i, 2 * i + 1] for i in range(len(params) // 2)]  # each Linear's W and b
    order_gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "order"))
    n_train, batch = len(x_train), cfg.batch_size
    n_batches = math.ceil(n_train / batch)

    metrics: dict[str, float] = {}
    steps, epochs_done, diverged = 0, 0, False
    resumed = checkpoint.load() if checkpoint is not None else None
    if resumed is not None:
        if "model" not in resumed:
            raise ValueError("checkpoint is not deep_mlp's (a stacked member resumes in a stack)")
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        order_gen.set_state(resumed["order_generator"])
        steps, epochs_done = int(resumed["steps"]), int(resumed["epoch"])
        metrics = dict(resumed["metrics"])
    bar = _progress_bar(cfg.epochs) if progress else None
    try:
        for epoch in range(epochs_done + 1, cfg.epochs + 1):
            perm = torch.randperm(n_train, generator=order_gen).to(dev)
            # One gather per epoch; the minibatches are then views of it.
            xs, ys = x_train[perm].split(batch), y_train[perm].split(batch)
            loss_sum = torch.zeros((), device=dev)
            correct = torch.zeros((), dtype=torch.int64, device=dev)
            for xb, yb in zip(xs, ys, strict=True):
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()  # clips (cfg.clip) and adds the noise, then updates
                loss_sum += loss.detach()
                correct += (logits.argmax(1) == yb).sum()
            steps += n_batches
            epochs_done = epoch

            val_loss, val_accuracy = evaluate(model, x_val, y_val)
            train_loss = loss_sum.item() / n_batches
            diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
            nan = float("nan")
            metrics = {
                "train_loss": nan if diverged else train_loss,
                "train_accuracy": correct.item() / n_train,
                "val_loss": nan if diverged else val_loss,
                "val_accuracy": val_accuracy,
            }
            if bar is not None:
                bar.set_postfix(val_acc=f"{val_accuracy:.3f}", loss=f"{train_loss:.3g}")
                bar.update()
            if report is not None:
                report(epoch, {**metrics, "steps": steps, **ratio_point(optimizer.ratios, layers)})
            if diverged:
                break
            if checkpoint is not None:
                # Built only at the epochs that write (see Checkpoint.save).
                checkpoint.save(partial(_state, model, optimizer, order_gen, epoch, steps, metrics))
    finally:
        if bar is not None:
            bar.close()
    return final_result(metrics, steps=steps, epochs=epochs_done, diverged=diverged)


def _state(
    model: nn.Module,
    optimizer: GradientNoise,
    order_gen: torch.Generator,
    epoch: int,
    steps: int,
    metrics: dict[str, float],
) -> dict[str, Any]:
    """What a checkpoint keeps of a run after `epoch`."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "order_generator": order_gen.get_state(),
        "epoch": epoch,
        "steps": steps,
        "metrics": metrics,
    }


def _progress_bar(epochs: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=epochs, unit="epoch", desc="deep_mlp", dynamic_ncols=True, leave=True)
