"""Datasets for the deep_mlp task: scikit-learn's digits and MNIST from IDX files.

Both come back as float32 pixels in [0, 1] (digits / 16, MNIST / 255) and int64 labels,
as numpy arrays; the trainer moves them to its device once.

MNIST is read from the four standard IDX files, gzipped (``.gz``) or not, in one
directory: the ``data_dir`` config key, else ``$NOISETUNE_DATA_DIR``, else
``~/.cache/noisetune/mnist``. ``noisetune data download mnist`` fetches them there.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR_ENV = "NOISETUNE_DATA_DIR"
MNIST_FILES = {
    # name: (md5 of the .gz file, size of the .gz file in bytes)
    "train-images-idx3-ubyte": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
    "train-labels-idx1-ubyte": ("d53e105ee54ea40749a09fcbcd1e9432", 28881),
    "t10k-images-idx3-ubyte": ("9fb629c4189551a2d022fa330f9573f3", 1648877),
    "t10k-labels-idx1-ubyte": ("ec29112dd5afa0611ce80d1b7f02629c", 4542),
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# The most bytes one IDX file may hold once decompressed (MNIST's largest holds 47 MB): a
# small gzip file can expand to gigabytes, so reading stops here instead.
MAX_IDX_BYTES = 256 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
# IDX type codes (third byte of the magic number) -> numpy big-endian dtypes.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetError(RuntimeError):
    """A dataset that cannot be found, read or fetched; the message says what to do."""


class DatasetTooLargeError(DatasetError, ValueError):
    """A data file that holds more than `MAX_IDX_BYTES` once decompressed."""


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def default_data_dir() -> Path:
    """``NOISETUNE_DATA_DIR``, else ~/.cache/noisetune/mnist (see worker.settings)."""
    from worker.settings import WorkerSettings

    return WorkerSettings().data_dir.expanduser()


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzipped if its name ends in .gz) into an array of its shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = _read_capped(f, path)
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DatasetError(f"{path}: expected {expected} bytes for shape {shape}, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _read_capped(f: io.BufferedIOBase, path: Path) -> bytes:
    """All of `f`, read a chunk at a time, or `DatasetTooLargeError` past `MAX_IDX_BYTES`."""
    chunks, total = [], 0
    while chunk := f.read(min(_READ_CHUNK, MAX_IDX_BYTES + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > MAX_IDX_BYTES:
            raise DatasetTooLargeError(
                f"{path} holds more than {MAX_IDX_BYTES:,} bytes once decompressed, the most "
                "an IDX file may hold here; it is not one of MNIST's files"
            )
    return b"".join(chunks)


def find_mnist_file(data_dir: Path, name: str) -> Path:
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"MNIST file {name} (or {name}.gz) not found in {data_dir}; fetch it with "
        f"`noisetune data download mnist --data-dir {data_dir}` or point the data_dir "
        f"config key or ${DATA_DIR_ENV} at a directory holding the four IDX files"
    )


def load_mnist(data_dir: str | Path | None = None) -> Split:
    """MNIST's 60,000 training and 10,000 test images (the test set is the validation set)."""
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    return _load_mnist(root.resolve())


@functools.lru_cache(maxsize=2)  # trials in one worker process reuse the decoded arrays
def _load_mnist(root: Path) -> Split:
    arrays = {name: read_idx(find_mnist_file(root, name)) for name in MNIST_FILES}
    parts = []
    for prefix in ("train", "t10k"):
        images = arrays[f"{prefix}-images-idx3-ubyte"]
        labels = arrays[f"{prefix}-labels-idx1-ubyte"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(
                f"MNIST {prefix} files in {root} disagree: images {images.shape}, "
                f"labels {labels.shape}"
            )
        pixels = images.reshape(len(images), -1).astype(np.float32) / 255.0
        parts.append((pixels, labels.astype(np.int64)))
    (x_train, y_train), (x_val, y_val) = parts
    return Split(x_train, y_train, x_val, y_val)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float32) / 16.0, bunch.target.astype(np.int64)


def load_digits_split(val_fraction: float, seed: int) -> Split:
    """scikit-learn's 1,797 8x8 digits, split stratified by class with ``seed``."""
    from sklearn.model_selection import train_test_split

    x, y = _digits()
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=val_fraction, stratify=y, random_state=seed
    )
    return Split(x_train, y_train, x_val, y_val)


def download_mnist(data_dir: str | Path | None = None, *, timeout: float = 30.0) -> list[Path]:
    """Fetch the four gzipped MNIST IDX files, trying each mirror, checking size and md5."""
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (md5, size) in MNIST_FILES.items():
        target = root / f"{name}.gz"
        if target.is_file() and _md5(target.read_bytes()) == md5:
            written.append(target)
            continue
        errors = []
        for mirror in MNIST_MIRRORS:
            url = mirror + target.name
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    payload = response.read()
            except (OSError, ValueError) as exc:  # URLError and socket errors are OSErrors
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
                continue
            if len(payload) != size or _md5(payload) != md5:
                errors.append(f"{url}: got {len(payload)} bytes with a wrong checksum")
                continue
            partial = target.with_name(target.name + ".part")
            partial.write_bytes(payload)
            partial.replace(target)  # never leave a half-written file under the real name
            written.append(target)
            break
        else:
            raise DatasetError(f"could not download {target.name}: " + "; ".join(errors))
    return written


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
