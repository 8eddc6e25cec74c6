"""Datasets: the IDX reader, MNIST discovery and errors, the digits split, offline download."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from worker import data
from worker.data import DatasetError, load_digits_split, load_mnist, read_idx


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write an IDX file the way MNIST's are laid out (big-endian header, then the data)."""
    codes = {np.dtype("uint8"): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    array = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(struct.pack(">I", n) for n in array.shape)
    payload = header + array.tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def write_mnist(root: Path, n_train: int = 30, n_test: int = 12, gz: bool = True) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels)


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_read_idx_round_trips_raw_and_gzipped(tmp_path: Path, name: str) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / name, images)), images)
    floats = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)
    assert np.array_equal(read_idx(write_idx(tmp_path / f"f-{name}", floats)), floats)


def test_read_idx_rejects_garbage_and_truncation(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"\x12\x34\x56\x78 not idx")
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    good = write_idx(tmp_path / "good", np.zeros((4, 5), dtype=np.uint8))
    (tmp_path / "short").write_bytes(good.read_bytes()[:-3])
    with pytest.raises(DatasetError, match="expected"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_scales_pixels_and_uses_t10k_for_validation(tmp_path: Path, gz: bool) -> None:
    write_mnist(tmp_path, gz=gz)
    split = load_mnist(tmp_path)
    assert split.x_train.shape == (30, 784) and split.x_val.shape == (12, 784)
    assert split.x_train.dtype == np.float32 and split.y_train.dtype == np.int64
    assert split.x_train.min() >= 0.0 and split.x_train.max() <= 1.0
    raw = read_idx(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    assert np.allclose(split.x_train[0], raw[0].reshape(-1) / 255.0)
    assert split.y_val.tolist() == [i % 10 for i in range(12)]


def test_load_mnist_reads_the_env_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mnist(tmp_path / "env", n_train=10)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env"))
    assert data.default_data_dir() == tmp_path / "env"
    assert load_mnist().x_train.shape == (10, 784)


def test_missing_mnist_file_is_named_with_the_fix(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError) as info:
        load_mnist(tmp_path)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte" in message and str(tmp_path) in message
    assert "noisetune data download mnist" in message


def test_mismatched_mnist_files_are_reported(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(7, dtype=np.uint8))
    with pytest.raises(DatasetError, match="disagree"):
        load_mnist(tmp_path)


def test_digits_split_is_stratified_seeded_and_scaled() -> None:
    a, b, c = (load_digits_split(0.22, s) for s in (5, 5, 6))
    assert len(a.x_val) == 396 and len(a.x_train) == 1797 - 396
    assert np.array_equal(a.y_val, b.y_val) and not np.array_equal(a.y_val, c.y_val)
    counts = np.bincount(a.y_val, minlength=10)
    assert counts.min() >= 38 and counts.max() <= 41  # ~22% of each class's ~180 images
    assert a.x_train.dtype == np.float32 and a.x_train.min() >= 0.0 and a.x_train.max() == 1.0


def test_download_fails_with_a_message_when_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "MNIST_MIRRORS", ("http://127.0.0.1:9/",))  # nothing listens
    with pytest.raises(DatasetError, match="could not download train-images"):
        data.download_mnist(tmp_path / "out", timeout=5)


def test_download_checks_sums_and_writes_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    write_mnist(mirror, n_train=5, n_test=3)
    files = {}
    for name in data.MNIST_FILES:
        payload = (mirror / f"{name}.gz").read_bytes()
        files[name] = (hashlib.md5(payload).hexdigest(), len(payload))
    monkeypatch.setattr(data, "MNIST_MIRRORS", ("http://127.0.0.1:9/", mirror.as_uri() + "/"))
    monkeypatch.setattr(data, "MNIST_FILES", files)
    written = data.download_mnist(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(f"{n}.gz" for n in files)
    assert load_mnist(tmp_path / "out").x_train.shape == (5, 784)

    # A mirror serving other bytes than the known checksum is refused, nothing is written.
    bad = {**files, "train-images-idx3-ubyte": ("0" * 32, files["train-images-idx3-ubyte"][1])}
    monkeypatch.setattr(data, "MNIST_FILES", bad)
    with pytest.raises(DatasetError, match="checksum"):
        data.download_mnist(tmp_path / "other")
    assert not list((tmp_path / "other").iterdir())


def test_deep_mlp_trains_on_mnist_files(tmp_path: Path) -> None:
    from worker.tasks.deep_mlp import train

    write_mnist(tmp_path)
    config = {"dataset": "mnist", "data_dir": str(tmp_path), "depth": 2, "width": 8}
    result = train({**config, "epochs": 2, "batch_size": 8}, eta=0.01, gamma=0.55)
    assert result["steps"] == 2 * 4 and result["diverged"] is False  # ceil(30 / 8) per epoch
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        train({**config, "data_dir": str(tmp_path / "empty")}, eta=0.0, gamma=0.55)


def test_read_idx_reads_up_to_the_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    path = write_idx(tmp_path / "x-idx3-ubyte.gz", images)
    size = 4 + 4 * 3 + images.size  # header and pixels, decompressed
    monkeypatch.setattr(data, "MAX_IDX_BYTES", size)
    assert np.array_equal(read_idx(path), images)
    monkeypatch.setattr(data, "MAX_IDX_BYTES", size - 1)
    with pytest.raises(ValueError, match=f"{path.name} holds more than {size - 1:,} bytes"):
        read_idx(path)


def test_a_gzip_bomb_stops_at_the_cap_without_decompressing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tracemalloc

    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    header = bytes([0, 0, 0x08, 1]) + struct.pack(">I", 64 * 2**20)
    bomb.write_bytes(gzip.compress(header + bytes(64 * 2**20), compresslevel=1))
    assert bomb.stat().st_size < 2**20  # 64 MiB of zeros in well under 1 MiB
    monkeypatch.setattr(data, "MAX_IDX_BYTES", 2**20)
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="once decompressed"):
            read_idx(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # read in chunks up to the 1 MiB cap, never the 64 MiB
