"""The checkpoint file format: what goes in comes out, and nothing in it can run code."""

from __future__ import annotations

import json
import math

import pytest
import torch

from worker import checkpoint_format
from worker.noise import GradientNoise


def _round_trip(state: dict) -> dict:
    return checkpoint_format.loads(b"".join(checkpoint_format.dumps(state)))


def test_tensors_and_plain_values_come_back_as_they_went_in() -> None:
    generator = torch.Generator().manual_seed(7)
    state = {
        "weights": torch.randn(5, 3),
        "transposed": torch.arange(6.0).view(2, 3).t(),  # not contiguous
        "half": torch.ones(4, dtype=torch.bfloat16),  # a dtype numpy lacks
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.empty(0, 4),
        "flags": torch.tensor([True, False]),
        "generator": generator.get_state(),
        "optimizer": {"state": {0: {"momentum_buffer": torch.ones(2)}}, "param_groups": []},
        "pair": (1, "two", None),
        "curve": [{"epoch": 1, "loss": float("nan"), "acc": 0.1 + 0.2}],
        "__tensor__": 3,  # a plain key that happens to be one of the format's tags
        "lookalike": {"__tuple__": [1]},
    }
    back = _round_trip(state)
    assert back.keys() == state.keys()
    for key in ("weights", "transposed", "half", "scalar", "empty", "flags", "generator"):
        assert back[key].dtype == state[key].dtype and torch.equal(back[key], state[key]), key
    assert torch.equal(back["optimizer"]["state"][0]["momentum_buffer"], torch.ones(2))
    assert back["pair"] == (1, "two", None) and back["__tensor__"] == 3
    assert back["lookalike"] == {"__tuple__": [1]}
    assert math.isnan(back["curve"][0]["loss"]) and back["curve"][0]["acc"] == 0.1 + 0.2
    restored = torch.Generator()
    restored.set_state(back["generator"])
    assert torch.equal(torch.rand(3, generator=restored), torch.rand(3, generator=generator))


def test_an_optimizer_with_its_noise_resumes_from_the_format() -> None:
    weight = torch.nn.Parameter(torch.ones(3))
    noisy = GradientNoise(torch.optim.SGD([weight], lr=0.1, momentum=0.9), 1.0, 0.55, seed=1)
    for _ in range(3):
        weight.grad = torch.ones(3)
        noisy.step()
    other = torch.nn.Parameter(weight.detach().clone())
    again = GradientNoise(torch.optim.SGD([other], lr=0.1, momentum=0.9), 1.0, 0.55, seed=2)
    again.load_state_dict(_round_trip({"optimizer": noisy.state_dict()})["optimizer"])
    weight.grad, other.grad = torch.ones(3), torch.ones(3)
    noisy.step()
    again.step()
    assert torch.equal(weight, other)  # same momentum, same step count, same noise stream


def test_a_checkpoint_cannot_name_anything_but_a_dtype() -> None:
    header = json.dumps({"structure": {"__tensor__": 0}, "layout": [["load", [1]]]}).encode()
    data = checkpoint_format.MAGIC + len(header).to_bytes(8, "little") + header + b"\0" * 8
    with pytest.raises(ValueError, match="unknown dtype"):
        checkpoint_format.loads(data)


def test_a_truncated_checkpoint_is_refused() -> None:
    data = b"".join(checkpoint_format.dumps({"w": torch.ones(10)}))
    with pytest.raises(ValueError, match="truncated"):
        checkpoint_format.loads(data[:-4])


def test_objects_the_format_cannot_hold_are_refused_when_saving() -> None:
    with pytest.raises(TypeError, match="not object"):
        checkpoint_format.dumps({"thing": object()})
