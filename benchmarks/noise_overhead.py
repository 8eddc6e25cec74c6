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


def paper_mlp(device: torch.device) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(DEPTH):
        linear = nn.Linear(INPUTS if i == 0 else WIDTH, CLASSES if i == DEPTH - 1 else WIDTH)
        nn.init.normal_(linear.weight, std=0.1)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < DEPTH - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).to(device)


def make_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> Callable[[], None]:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    return step


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
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    x = torch.randn(BATCH, INPUTS, device=device)
    y = torch.randint(0, CLASSES, (BATCH,), device=device)

    steps: dict[str, Callable[[], None]] = {}
    configurations: list[tuple[str, dict[str, Any]]] = [
        ("bare", {}),
        ("noise foreach", {"foreach": True}),  # the paper's polynomial family
        ("noise loop", {"foreach": False}),
        ("relative", {"foreach": True, "scale": "relative"}),
        ("ratio every 8", {"foreach": True, "ratio_every": RATIO_EVERY}),  # as deep_mlp runs
    ]
    for name, options in configurations:
        model = paper_mlp(device)
        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        if name != "bare":
            optimizer = GradientNoise(optimizer, eta=args.eta, seed=0, **options)
        steps[name] = make_step(model, optimizer, x, y)

    n_params = sum(p.numel() for p in paper_mlp(torch.device("cpu")).parameters())
    print(
        f"torch {torch.__version__}, device={device}, threads={torch.get_num_threads()}, "
        f"params={n_params}, batch={BATCH}, eta={args.eta}, "
        f"blocks={args.repeats} x {args.block} steps per configuration"
    )
    for step in steps.values():  # warm-up: allocator, caches, lazily built noise buffers
        for _ in range(args.block):
            step()
    sync()

    names = list(steps)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            step = steps[name]
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.block):
                step()
            sync()
            wall[name].append((time.perf_counter() - start_wall) / args.block)
            cpu[name].append((time.process_time() - start_cpu) / args.block)

    # "paired" is the median over rounds of (this block / the bare block of the same round):
    # blocks of one round run back to back, so it cancels slow drifts in machine load.
    clocks = [("wall", wall)] + ([("cpu", cpu)] if device.type == "cpu" else [])
    for clock, per_step in clocks:
        bare = statistics.median(per_step["bare"])
        for name in names:
            median = statistics.median(per_step[name])
            paired = statistics.median(
                t / b for t, b in zip(per_step[name], per_step["bare"], strict=True)
            )
            print(
                f"{clock:>4} {name:>14}: {median * 1e6:8.1f} us/step   "
                f"ratio {median / bare:.3f}   paired ratio {paired:.3f}"
            )


if __name__ == "__main__":
    main()
