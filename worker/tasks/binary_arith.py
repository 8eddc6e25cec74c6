"""The paper's restart experiment: binary arithmetic learned by a small Neural GPU.

A model (binary_arith_model) learns to add (or multiply) numbers of ``train_bits`` bits and
is tested on numbers of ``test_bits`` bits: it only passes if it learned a rule that holds
for longer numbers, which some random restarts find and others do not (the paper counts
the restarts whose test error falls under 1, 2, 3 and 5%).

An epoch is ``steps_per_epoch`` optimizer steps, each on ``batch_size`` fresh examples; at
its end the test set is evaluated. One step: mean cross-entropy over every answer bit ->
backward (of that mean, or of the sum over the batch's bits with ``loss: sum``) ->
GradientNoise.step(), which clips the gradients' total norm to ``clip`` and adds
N(0, sigma_t^2) per entry in the order its placement says (the paper's: clip, then noise),
then updates. ``test_error`` is the fraction of wrong answer bits on the test set,
``test_sequence_error`` the fraction of test answers with any wrong bit; ``train_error`` and
``train_loss`` average the epoch's training batches.

Seeds: init, training examples, test set and noise each use ``derived_seed(seed, <part>)``
with their own generator; no global RNG is touched. A non-finite training loss (checked
once per epoch) reports that epoch with NaN loss and ends the run with ``diverged: True``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional as F

from search_spaces import BINARY_ARITH, BinaryArithConfig, NoiseSetup, derived_seed
from search_spaces._resources import BINARY_ARITH_EVAL_CHUNK
from worker.noise import GradientNoise
from worker.noise_ratio import RATIO_EVERY, ratio_point
from worker.tasks.base import Report, check_noise, final_result, resolve_device, validate
from worker.tasks.binary_arith_data import draw_examples
from worker.tasks.binary_arith_model import LAYERS, BinaryArithNet, stacked_logits

__all__ = ["Examples", "config_of", "held_out_examples", "train"]

Examples = tuple[torch.Tensor, torch.Tensor]


def config_of(config: dict[str, Any]) -> BinaryArithConfig:
    cfg = validate(BINARY_ARITH, config)
    assert isinstance(cfg, BinaryArithConfig)
    return cfg


def init_generator(cfg: BinaryArithConfig) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(cfg.seed, "init"))


def train_generator(cfg: BinaryArithConfig) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(cfg.seed, "train_examples"))


def held_out_examples(cfg: BinaryArithConfig) -> Examples:
    """The run's test examples (symbols, answers), drawn once from its seed."""
    generator = torch.Generator().manual_seed(derived_seed(cfg.seed, "test_examples"))
    length = cfg.length(cfg.test_bits)
    return draw_examples(generator, cfg.test_size, cfg.test_bits, cfg.operation, length)


def train_batch(cfg: BinaryArithConfig, generator: torch.Generator) -> Examples:
    length = cfg.length(cfg.train_bits)
    return draw_examples(generator, cfg.batch_size, cfg.train_bits, cfg.operation, length)


def member_losses(logits: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy over its answer bits: logits (K, n, length, 2) and
    answers (K, n, length) -> (K,). The lone run computes it too, as a stack of one."""
    flat = F.cross_entropy(logits.reshape(-1, 2), answers.reshape(-1), reduction="none")
    return flat.view(len(logits), -1).mean(1)


@torch.inference_mode()
def stacked_test_errors(
    params: list[torch.Tensor], symbols: torch.Tensor, answers: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's bit error and sequence error on its own test set: symbols and answers
    (K, n, length) -> two (K,) tensors. A bit whose logits are not finite counts as wrong."""
    wrong_bits = torch.zeros(len(params[0]), dtype=torch.int64, device=symbols.device)
    wrong_seqs = torch.zeros_like(wrong_bits)
    for start in range(0, symbols.shape[1], BINARY_ARITH_EVAL_CHUNK):
        chunk = slice(start, start + BINARY_ARITH_EVAL_CHUNK)
        logits = stacked_logits(params, symbols[:, chunk], width)
        wrong = (logits.argmax(-1) != answers[:, chunk]) | ~torch.isfinite(logits).all(-1)
        wrong_bits += wrong.sum((1, 2))
        wrong_seqs += wrong.any(2).sum(1)
    n, length = answers.shape[1:]
    return wrong_bits.double() / (n * length), wrong_seqs.double() / n


def build_optimizer(
    cfg: BinaryArithConfig, params: list[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    momentum = cfg.momentum if cfg.optimizer == "momentum" else 0.0
    return torch.optim.SGD(params, lr=cfg.lr, momentum=momentum)


def train(
    config: dict[str, Any],
    *,
    eta: float,
    gamma: float,
    device: str = "cpu",
    report: Report | None = None,
    progress: bool = False,
    noise: NoiseSetup | None = None,
) -> dict[str, Any]:
    """Train one model with gradient noise (eta, gamma, or the whole `noise` setup, which
    wins when given); see the module doc and worker.tasks.base."""
    cfg = config_of(config)
    eta, gamma = check_noise(eta, gamma)
    dev = torch.device(resolve_device(device))

    model = BinaryArithNet(cfg.channels, cfg.width, init_generator(cfg)).to(dev)
    setup = noise if noise is not None else NoiseSetup(eta, gamma)
    optimizer = GradientNoise(
        build_optimizer(cfg, list(model.parameters())),
        schedule=setup.make_schedule(),
        seed=derived_seed(cfg.seed, "noise"),
        scale=setup.scale,
        max_grad_norm=cfg.clip,
        placement=setup.placement,
        ratio_every=RATIO_EVERY,
    )
    examples = train_generator(cfg)
    test_symbols, test_answers = (t.to(dev) for t in held_out_examples(cfg))
    bar = _progress_bar(cfg.epochs) if progress else None
    metrics: dict[str, float] = {}
    steps, epochs_done, diverged = 0, 0, False
    try:
        for epoch in range(1, cfg.epochs + 1):
            loss_sum = torch.zeros((), device=dev)
            wrong = torch.zeros((), dtype=torch.int64, device=dev)
            for _ in range(cfg.steps_per_epoch):
                symbols, answers = (t.to(dev) for t in train_batch(cfg, examples))
                logits = model(symbols)
                loss = member_losses(logits[None], answers[None])[0]
                optimizer.zero_grad(set_to_none=True)
                (loss * cfg.loss_scale).backward()
                optimizer.step()  # clips (cfg.clip) and adds the noise, then updates
                loss_sum += loss.detach()
                wrong += (logits.argmax(-1) != answers).sum()
            steps += cfg.steps_per_epoch
            epochs_done = epoch

            params = [p.detach().unsqueeze(0) for p in model.parameters()]
            test_error, sequence_error = stacked_test_errors(
                params, test_symbols[None], test_answers[None], cfg.width
            )
            train_loss = loss_sum.item() / cfg.steps_per_epoch
            diverged = not math.isfinite(train_loss)
            seen = cfg.steps_per_epoch * cfg.batch_size * cfg.length(cfg.train_bits)
            metrics = {
                "train_loss": float("nan") if diverged else train_loss,
                "train_error": wrong.item() / seen,
                "test_error": test_error.item(),
                "test_sequence_error": sequence_error.item(),
            }
            if bar is not None:
                bar.set_postfix(test_error=f"{metrics['test_error']:.4f}", loss=f"{train_loss:.3g}")
                bar.update()
            if report is not None:
                report(epoch, {**metrics, "steps": steps, **ratio_point(optimizer.ratios, LAYERS)})
            if diverged:
                break
    finally:
        if bar is not None:
            bar.close()
    return final_result(metrics, steps=steps, epochs=epochs_done, diverged=diverged)


def _progress_bar(epochs: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=epochs, unit="epoch", desc="binary_arith", dynamic_ncols=True, leave=True)
