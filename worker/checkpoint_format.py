"""How a checkpoint lies on disk: a JSON description, then every tensor's bytes in one block.

A checkpoint is small (the paper's network is 40 tensors and 210 KiB) but written after
every epoch, so what costs is per-object work: ``torch.save`` runs Python code for every
tensor and every plain value it pickles (3 ms a save on the paper's network, 8% of a
digits epoch). Here the state's structure is one JSON document, with each tensor replaced
by its place in one byte block that follows it (about a millisecond in all;
benchmarks/checkpoint_overhead.py). Reading parses JSON and copies bytes: nothing is ever
unpickled. Checkpoints written by ``torch.save`` (noisetune 0.2) are still read, with
``torch.load(weights_only=True)``.

Layout: ``MAGIC``, the JSON header's length (8 bytes, little-endian), the header
``{"structure": ..., "layout": [[dtype, shape], ...]}``, then the tensors' bytes in order.
The structure keeps what JSON alone would lose: tuples, and dicts with non-string keys
(an optimizer's state is keyed by parameter index).
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import torch

MAGIC = b"noisetune-checkpoint/2\n"
_LENGTH_BYTES = 8


def dumps(state: dict[str, Any]) -> list[bytes | memoryview]:
    """The checkpoint's bytes, as pieces to write one after the other (no copy of the
    tensors' bytes is made for CPU tensors)."""
    tensors: list[torch.Tensor] = []
    structure = _encode(state, tensors)
    layout = [[str(t.dtype).removeprefix("torch."), list(t.shape)] for t in tensors]
    header = json.dumps({"structure": structure, "layout": layout}).encode()
    pieces: list[bytes | memoryview] = [
        MAGIC,
        len(header).to_bytes(_LENGTH_BYTES, "little"),
        header,
    ]
    return pieces + [_tensor_bytes(t) for t in tensors]


def _tensor_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().cpu().contiguous()
    try:
        return flat.numpy().data
    except (TypeError, RuntimeError):  # a dtype numpy lacks (bfloat16, ...), or a conj view
        return flat.resolve_conj().resolve_neg().reshape(-1).view(torch.uint8).numpy().data


def loads(data: bytes) -> Any:
    """The state ``dumps`` was given (or what a 0.2 checkpoint held)."""
    if not data.startswith(MAGIC):
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    start = len(MAGIC) + _LENGTH_BYTES
    length = int.from_bytes(data[len(MAGIC) : start], "little")
    header = json.loads(data[start : start + length])
    block = memoryview(data)[start + length :]
    tensors, offset = [], 0
    for dtype_name, shape in header["layout"]:
        dtype = getattr(torch, str(dtype_name), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"checkpoint names an unknown dtype {dtype_name!r}")
        nbytes = math.prod(shape) * dtype.itemsize
        if offset + nbytes > len(block):
            raise ValueError("checkpoint is truncated")
        chunk = bytearray(block[offset : offset + nbytes])  # its own, writable memory
        offset += nbytes
        flat = torch.frombuffer(chunk, dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
        tensors.append(flat.reshape(shape))
    if offset != len(block):
        raise ValueError("checkpoint is truncated or has trailing bytes")
    return _decode(header["structure"], tensors)


# The structure in JSON: plain values, lists and dicts with string keys as they are;
# everything else as a one-key object whose key says what it is (TAGS). A dict of the
# user's that looks like one of those is itself wrapped as ``{"__dict__": ...}``.
TAGS = ("__tensor__", "__tuple__", "__items__", "__dict__")
_PLAIN = (type(None), bool, int, float, str)


def _encode(value: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided or value.is_quantized:
            raise TypeError(f"a checkpoint holds dense tensors only, not {value.layout} ones")
        tensors.append(value)
        return {"__tensor__": len(tensors) - 1}
    if isinstance(value, list):
        if all(type(v) in _PLAIN for v in value):  # numbers, say: as they are
            return value
        return [_encode(v, tensors) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, dict):
        if not all(type(k) is str for k in value):
            return {
                "__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]
            }
        if all(type(v) in _PLAIN for v in value.values()):  # a curve's point, say: fast
            encoded = value
        else:
            encoded = {k: _encode(v, tensors) for k, v in value.items()}
        return {"__dict__": encoded} if len(value) == 1 and next(iter(value)) in TAGS else encoded
    raise TypeError(
        f"a checkpoint holds tensors, numbers, strings, lists, tuples and dicts, "
        f"not {type(value).__name__}"
    )


def _decode(value: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and next(iter(value)) in TAGS:
        ((kind, inner),) = value.items()
        if kind == "__tensor__":
            return tensors[inner]
        if kind == "__tuple__":
            return tuple(_decode(v, tensors) for v in inner)
        if kind == "__items__":
            return {_decode(k, tensors): _decode(v, tensors) for k, v in inner}
        return {k: _decode(v, tensors) for k, v in inner.items()}
    return {k: _decode(v, tensors) for k, v in value.items()}
