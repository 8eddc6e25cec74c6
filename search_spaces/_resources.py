"""What one trial of a task needs: memory and time, estimated from its config alone.

Plain arithmetic with no torch, so the service can turn away a study that no worker could
train before any worker tries. Estimates count what grows with the config (the model, its
optimizer state, activations, the dataset), not the fixed cost of a Python process with
torch loaded.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from search_spaces._tasks import BinaryArithConfig, DeepMLPConfig, TaskConfig

FLOAT32_BYTES = 4
INT64_BYTES = 8
DEEP_MLP_CLASSES = 10
# dataset -> (inputs per sample, samples in all, training samples or None for a split).
# digits is split by val_fraction (worker.data.load_digits_split); MNIST trains on its
# 60,000 training images and validates on the 10,000 test images.
DEEP_MLP_DATASETS: dict[str, tuple[int, int, int | None]] = {
    "digits": (64, 1797, None),
    "mnist": (784, 70_000, 60_000),
}
# Per layer and sample, autograd keeps up to two tensors for backward (the activation's
# output, which is the next layer's input, and for gelu its input too); backward makes the
# gradients one layer at a time, two tensors of the widest layer at once.
SAVED_PER_LAYER = 2
GRADIENTS_IN_FLIGHT = 2
# worker.tasks.deep_mlp evaluates in chunks of this many samples, under inference mode
# (no graph kept: about two layer outputs alive at a time).
EVAL_CHUNK = 8192
# Per parameter, besides the optimizer's state: weights, gradients and the noise buffer
# that GradientNoise draws into.
COPIES_PER_PARAMETER = 3
OPTIMIZER_STATE_COPIES = {"sgd": 0, "momentum": 1, "adam": 2}


@dataclass(frozen=True)
class ResourceEstimate:
    """What one trial needs: peak memory in bytes, and wall time in seconds when known."""

    memory_bytes: int
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.memory_bytes < 0:
            raise ValueError(f"memory_bytes must be >= 0, got {self.memory_bytes}")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds >= 0):
            raise ValueError(f"seconds must be finite and >= 0 or None, got {self.seconds}")


def deep_mlp_parameters(n_inputs: int, width: int, depth: int) -> int:
    """Weights and biases of deep_mlp's `depth` Linear layers (see worker.tasks.deep_mlp)."""
    sizes = [n_inputs] + [width] * (depth - 1) + [DEEP_MLP_CLASSES]
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in itertools.pairwise(sizes))


def deep_mlp_resources(config: TaskConfig) -> ResourceEstimate:
    """Peak memory of one deep_mlp trial in float32: model, optimizer, activations, data."""
    cfg = cast("DeepMLPConfig", config)
    n_inputs, n_samples, n_train = DEEP_MLP_DATASETS[cfg.dataset]
    if n_train is None:
        n_train = n_samples - math.ceil(n_samples * cfg.val_fraction)
    n_val = n_samples - n_train

    params = deep_mlp_parameters(n_inputs, cfg.width, cfg.depth)
    copies = COPIES_PER_PARAMETER + OPTIMIZER_STATE_COPIES[cfg.optimizer]
    model = copies * params * FLOAT32_BYTES

    # Outputs of every layer for one sample; a minibatch holds at most the training set.
    units = cfg.width * (cfg.depth - 1) + DEEP_MLP_CLASSES
    batch = min(cfg.batch_size, n_train)
    widest = max(n_inputs, cfg.width)
    training = (SAVED_PER_LAYER * units + GRADIENTS_IN_FLIGHT * widest) * batch * FLOAT32_BYTES
    evaluation = 2 * min(EVAL_CHUNK, n_val) * widest * FLOAT32_BYTES
    activations = max(training, evaluation)

    sample = n_inputs * FLOAT32_BYTES + INT64_BYTES  # pixels and label
    # The whole dataset, plus the training set gathered in a new order once per epoch.
    data = (n_samples + n_train) * sample
    return ResourceEstimate(memory_bytes=model + activations + data, seconds=None)


def human_bytes(n: float) -> str:
    """Bytes in binary units with three significant figures: 12.3 GiB, 512 MiB, 8 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            break
        n /= 1024
    if unit == "B" or float(n).is_integer():
        return f"{int(n)} {unit}"
    return f"{n:.3g} {unit}"


# worker.tasks.binary_arith evaluates the test set in chunks of this many examples.
BINARY_ARITH_EVAL_CHUNK = 256
# Per CGRU step, position and channel, what autograd keeps for backward: the two gathered
# neighbourhoods (3 x kernel rows channels each) and about a dozen gate-sized tensors.
BINARY_ARITH_SAVED_PER_STEP = 12


def binary_arith_parameters(channels: int, width: int) -> int:
    """Entries of worker.tasks.binary_arith_model's parameters (its init_parameters)."""
    fan_in = 3 * (3 if width > 1 else 1) * channels
    return 4 * channels + (fan_in + 1) * 3 * channels + (channels + 1) * 2


def binary_arith_resources(config: TaskConfig) -> ResourceEstimate:
    """Peak memory of one binary_arith trial in float32: model, optimizer, activations, data."""
    cfg = cast("BinaryArithConfig", config)
    rows = 3 if cfg.width > 1 else 1
    params = binary_arith_parameters(cfg.channels, cfg.width)
    model = (COPIES_PER_PARAMETER + OPTIMIZER_STATE_COPIES[cfg.optimizer]) * params

    # Training keeps every one of its `length` steps for backward.
    length = cfg.length(cfg.train_bits)
    per_step = (2 * 3 * rows + BINARY_ARITH_SAVED_PER_STEP) * cfg.channels * cfg.width * length
    training = per_step * length * cfg.batch_size
    # Evaluation keeps no graph: a few grid-sized tensors of one chunk at a time.
    test_length = cfg.length(cfg.test_bits)
    chunk = min(cfg.test_size, BINARY_ARITH_EVAL_CHUNK)
    evaluation = 2 * (3 * rows + 3) * cfg.channels * cfg.width * test_length * chunk
    floats = model + max(training, evaluation)
    data = 2 * cfg.test_size * test_length * INT64_BYTES  # the test set's symbols and answers
    return ResourceEstimate(memory_bytes=floats * FLOAT32_BYTES + data, seconds=None)
