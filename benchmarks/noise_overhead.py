"""Time full training steps with and without GradientNoise, measured side by side.

The network is the paper's deep MLP: 20 Linear layers of width 50 with ReLU between,
64 inputs (8x8 digits), 10 outputs, weights N(0, 0.1^2), zero biases, batch 128, plain SGD
(lr 0.03). Inputs are random: the timing of a step does not depend on the values.

Configurations: bare SGD; the paper's polynomial noise on the foreach and the loop path;
the relative scale (noise times each tensor's gradient RMS); and the noise-to-gradient
ratio sampled every 8th step, as deep_mlp records it. They run in interleaved blocks (then
the next round in rotated order, ...), so drifts in machine load hit all of them alike;
per-step medians over the blocks are compared. On CPU the process CPU time per step is reported too:
it is less disturbed by other processes on a shared machine than wall-clock time.

    .venv/bin/python benchmarks/noise_overhead.py            # cuda if available, else cpu
    .venv/bin/python benchmarks/noise_overhead.py --device cpu --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from worker.noise import GradientNoise  # noqa: E402
from worker.noise_ratio import RATIO_EVERY  # noqa: E402

DEPTH, WIDTH, INPUTS, CLASSES, BATCH, LR = 20, 50, 64, 10, 128, 0.03


def mlp(
    device: torch.device,
    depth: int = DEPTH,
    width: int = WIDTH,
    inputs: int = INPUTS,
    init_std: float | None = 0.1,
) -> nn.Sequential:
    """`depth` Linear layers of `width` with ReLU between, `inputs` in and 10 out; weights
    N(0, init_std^2) with zero biases (the paper's simple init), or torch's default with None."""
    layers: list[nn.Module] = []
    for i in range(depth):
        linear = nn.Linear(inputs if i == 0 else width, CLASSES if i == depth - 1 else width)
        if init_std is not None:
            nn.init.normal_(linear.weight, std=init_std)
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < depth - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).to(device)


def paper_mlp(device: torch.device) -> nn.Sequential:
    return mlp(device)


def make_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> Callable[[], None]:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    return step


def configured_steps(
    build: Callable[[], nn.Module],
    configurations: list[tuple[str, dict[str, Any] | None]],
    x: torch.Tensor,
    y: torch.Tensor,
    eta: float,
) -> dict[str, Callable[[], None]]:
    """A training step per configuration, each on its own model from `build`: plain SGD,
    wrapped in GradientNoise with the configuration's options unless they are None."""
    steps: dict[str, Callable[[], None]] = {}
    for name, options in configurations:
        model = build()
        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        if options is not None:
            optimizer = GradientNoise(optimizer, eta=eta, seed=0, **options)
        steps[name] = make_step(model, optimizer, x, y)
    return steps


PerStep = dict[str, list[float]]  # configuration -> seconds per step, one entry per block


def time_blocks(
    steps: dict[str, Callable[[], None]],
    device: torch.device,
    block: int,
    repeats: int,
    deadline: float | None = None,
) -> tuple[PerStep, PerStep]:
    """Wall and process CPU seconds per step of each configuration, over `repeats` rounds of
    one block each, the order rotated every round (see the module doc). A block of each
    first warms up allocator, caches and lazily built noise buffers. With `deadline` (a
    time.monotonic() value) it stops after the first round that ends past it."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for step in steps.values():
        for _ in range(block):
            step()
    sync()
    names = list(steps)
    wall: PerStep = {name: [] for name in names}
    cpu: PerStep = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            step = steps[name]
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(block):
                step()
            sync()
            wall[name].append((time.perf_counter() - start_wall) / block)
            cpu[name].append((time.process_time() - start_cpu) / block)
        if deadline is not None and time.monotonic() > deadline:
            break
    return wall, cpu


def paired_ratio(per_step: PerStep, name: str, base: str = "bare") -> float:
    """The median over rounds of (this block / the `base` block of the same round): blocks
    of one round run back to back, so it cancels slow drifts in machine load."""
    return statistics.median(t / b for t, b in zip(per_step[name], per_step[base], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    # One thread by default: these 50x50 matmuls run faster single-threaded, and a worker
    # host runs one trial per core.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eta", type=float, default=0.3)
    parser.add_argument("--block", type=int, default=10, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=120, help="blocks per configuration")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(BATCH, INPUTS, device=device)
    y = torch.randint(0, CLASSES, (BATCH,), device=device)

    configurations: list[tuple[str, dict[str, Any] | None]] = [
        ("bare", None),
        ("noise foreach", {"foreach": True}),  # the paper's polynomial family
        ("noise loop", {"foreach": False}),
        ("relative", {"foreach": True, "scale": "relative"}),
        ("ratio every 8", {"foreach": True, "ratio_every": RATIO_EVERY}),  # as deep_mlp runs
    ]
    steps = configured_steps(lambda: paper_mlp(device), configurations, x, y, args.eta)

    n_params = sum(p.numel() for p in paper_mlp(torch.device("cpu")).parameters())
    print(
        f"torch {torch.__version__}, device={device}, threads={torch.get_num_threads()}, "
        f"params={n_params}, batch={BATCH}, eta={args.eta}, "
        f"blocks={args.repeats} x {args.block} steps per configuration"
    )
    wall, cpu = time_blocks(steps, device, args.block, args.repeats)

    clocks = [("wall", wall)] + ([("cpu", cpu)] if device.type == "cpu" else [])
    for clock, per_step in clocks:
        bare = statistics.median(per_step["bare"])
        for name in steps:
            median = statistics.median(per_step[name])
            print(
                f"{clock:>4} {name:>14}: {median * 1e6:8.1f} us/step   "
                f"ratio {median / bare:.3f}   paired ratio {paired_ratio(per_step, name):.3f}"
            )


if __name__ == "__main__":
    main()
