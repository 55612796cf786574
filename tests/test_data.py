"""minicompress.data: idx parsing, validation, search order, and the real files."""

from __future__ import annotations

import gzip
import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minicompress import data
from minicompress.data import DataNotFoundError, fashion_mnist, read_idx, search_paths


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding of a uint8 array: magic 0x0000 08 ndim, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_split(folder: Path, split: str, n: int, gz: bool = True, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    stems = data._FILES[split][:2]
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in zip(stems, (images, labels), strict=True):
        raw = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)


@pytest.fixture
def small_counts(monkeypatch):
    """Pretend the splits have 12 / 5 examples, so fake data sets stay tiny."""
    monkeypatch.setattr(
        data, "_FILES", {k: (*v[:2], {"train": 12, "test": 5}[k]) for k, v in data._FILES.items()}
    )
    data._load_uint8.cache_clear()
    yield
    data._load_uint8.cache_clear()


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No $MINICOMPRESS_DATA, an empty user cache, and no Debian folder: only `root` counts."""
    monkeypatch.delenv("MINICOMPRESS_DATA", raising=False)
    monkeypatch.setattr(data, "_user_cache", lambda: tmp_path / "cache")
    real = data.search_paths

    def without_system(root=None, dataset="fashion-mnist"):
        return [p for p in real(root, dataset) if not str(p).startswith("/usr/share")]

    monkeypatch.setattr(data, "search_paths", without_system)
    data._load_uint8.cache_clear()
    yield tmp_path
    data._load_uint8.cache_clear()


def test_read_idx_round_trips_an_array(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)


@settings(max_examples=50, deadline=None)
@given(
    array=arrays(np.uint8, st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)),
    gz=st.booleans(),
)
def test_read_idx_round_trips_any_uint8_array(tmp_path_factory, array, gz):
    path = tmp_path_factory.mktemp("idx") / ("x.gz" if gz else "x")
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    np.testing.assert_array_equal(read_idx(path), array)
    # and any truncation of the data is caught, never returned as a shorter array
    path.write_bytes(raw[:-1] if not gz else gzip.compress(raw[:-1]))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 3) + b"abc", "magic"),
        (b"\x00\x00\x0d\x01" + struct.pack(">I", 3) + b"abc", "element type"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 3), "header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc", "truncated"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"abc", "truncated or corrupt"),
    ],
)
def test_read_idx_rejects_bad_files_naming_them(tmp_path, payload, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_truncated_gzip_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((100, 28, 28), np.uint8)))[:-40])
    with pytest.raises(ValueError, match="corrupt or truncated") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_loads_from_root_gz_and_raw(isolated, small_counts):
    write_split(isolated / "gz", "train", 12, gz=True)
    write_split(isolated / "raw", "train", 12, gz=False)
    for sub in ("gz", "raw"):
        images, labels = fashion_mnist("train", root=isolated / sub)
        assert images.shape == (12, 1, 28, 28) and images.dtype == torch.float32
        assert labels.shape == (12,) and labels.dtype == torch.int64
        assert 0.0 <= images.min() and images.max() <= 1.0


def test_accepts_torchvision_layout_and_env_var(isolated, small_counts, monkeypatch):
    write_split(isolated / "tv" / "FashionMNIST" / "raw", "test", 5, gz=False)
    assert fashion_mnist("test", root=isolated / "tv")[0].shape == (5, 1, 28, 28)
    monkeypatch.setenv("MINICOMPRESS_DATA", str(isolated / "tv"))
    data._load_uint8.cache_clear()
    assert fashion_mnist("test")[1].shape == (5,)


def test_root_is_searched_before_the_environment(isolated, small_counts, monkeypatch):
    write_split(isolated / "first", "test", 5, seed=1)
    write_split(isolated / "second", "test", 5, seed=2)
    monkeypatch.setenv("MINICOMPRESS_DATA", str(isolated / "second"))
    first = fashion_mnist("test", root=isolated / "first")[0]
    from_env = fashion_mnist("test")[0]
    assert not torch.equal(first, from_env)
    assert search_paths(isolated / "first")[0] == isolated / "first"


def test_wrong_count_is_rejected(isolated, small_counts):
    write_split(isolated / "d", "test", 7)
    with pytest.raises(ValueError, match="expected shape \\(5, 28, 28\\)"):
        fashion_mnist("test", root=isolated / "d")


def test_labels_out_of_range_are_rejected(isolated, small_counts):
    write_split(isolated / "d", "test", 5)
    bad = idx_bytes(np.array([0, 1, 2, 3, 12], np.uint8))
    (isolated / "d" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bad))
    with pytest.raises(ValueError, match="0..9"):
        fashion_mnist("test", root=isolated / "d")


def test_missing_data_lists_every_place_and_both_remedies(isolated, small_counts):
    with pytest.raises(DataNotFoundError) as err:
        fashion_mnist("test")
    message = str(err.value)
    for place in data.search_paths():
        assert str(place) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download=True" in message


def test_a_given_root_without_the_data_is_an_error_not_a_fall_back(isolated, small_counts):
    write_split(isolated / "cache", "test", 5)  # a copy the loader must not silently use
    with pytest.raises(DataNotFoundError) as err:
        fashion_mnist("test", root=isolated / "nowhere")
    message = str(err.value)
    assert "root=" in message and "t10k-images-idx3-ubyte" in message
    for place in data.search_paths(isolated / "nowhere")[:3]:
        assert str(place) in message
    assert str(isolated / "cache") not in message
    assert fashion_mnist("test")[0].shape == (5, 1, 28, 28)  # without root, the cache is used


def test_environment_without_the_data_is_an_error(isolated, small_counts, monkeypatch):
    write_split(isolated / "cache", "test", 5)
    (isolated / "empty").mkdir()
    monkeypatch.setenv("MINICOMPRESS_DATA", str(isolated / "empty"))
    with pytest.raises(DataNotFoundError, match=r"\$MINICOMPRESS_DATA"):
        fashion_mnist("test")


@pytest.mark.parametrize("keep", [0, 1])
def test_images_and_labels_come_from_the_same_folder(isolated, small_counts, keep):
    write_split(isolated / "cache", "test", 5)
    write_split(isolated / "half", "test", 5)
    stems = data._FILES["test"][:2]
    (isolated / "half" / f"{stems[1 - keep]}.gz").unlink()
    with pytest.raises(DataNotFoundError, match=f"but not {stems[1 - keep]}"):
        fashion_mnist("test", root=isolated / "half")


def test_cache_follows_file_changes_and_the_environment(isolated, small_counts, monkeypatch):
    write_split(isolated / "a", "test", 5, seed=1)
    write_split(isolated / "b", "test", 5, seed=2)
    monkeypatch.setenv("MINICOMPRESS_DATA", str(isolated / "a"))
    from_a = fashion_mnist("test")[0]
    monkeypatch.setenv("MINICOMPRESS_DATA", str(isolated / "b"))
    from_b = fashion_mnist("test")[0]
    assert not torch.equal(from_a, from_b)
    write_split(isolated / "b", "test", 5, seed=1)  # same path, new content
    for stem in data._FILES["test"][:2]:
        os.utime(isolated / "b" / f"{stem}.gz", ns=(1, 1))  # an mtime the cache has not seen
    assert torch.equal(fashion_mnist("test")[0], from_a)


def test_gzip_is_streamed_and_bounded_by_the_header(tmp_path):
    path = tmp_path / "bomb-idx.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8)) + bytes(16 << 20), 1))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="longer"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20  # 16 MiB inflated: never held
    big = tmp_path / "big-idx.gz"
    big.write_bytes(gzip.compress(idx_bytes(np.zeros((7, 28, 28), np.uint8))))
    with pytest.raises(ValueError, match=r"expected shape \(5, 28, 28\)"):
        read_idx(big, shape=(5, 28, 28))


def test_corrupt_deflate_stream_is_a_value_error(tmp_path):
    raw = gzip.compress(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    damaged = bytearray(gzip.compress(idx_bytes(np.zeros(5000, np.uint8)) + raw))
    for at in range(20, 60):
        damaged[at] ^= 0xFF
    path = tmp_path / "bad-idx.gz"
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="corrupt") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_devices_are_refused():
    with pytest.raises(ValueError, match="not a regular file"):
        read_idx("/dev/zero")


def test_returned_tensors_are_fresh_copies(isolated, small_counts):
    write_split(isolated / "d", "test", 5)
    images, labels = fashion_mnist("test", root=isolated / "d")
    images.zero_()
    labels.zero_()
    again, labels_again = fashion_mnist("test", root=isolated / "d")
    assert again.abs().sum() > 0 and labels_again.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"split": "validation"}, ValueError),
        ({"split": "test", "download": "yes"}, TypeError),
    ],
)
def test_bad_arguments(kwargs, error):
    with pytest.raises(error):
        fashion_mnist(**kwargs)


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="fashion-mnist"):
        search_paths(None, "cifar10")


def test_real_test_split_is_complete(test_split):
    images, labels = test_split
    assert images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(labels).tolist() == [1000] * 10  # Fashion-MNIST's test set is balanced


def test_cli_reports_missing_data(isolated, small_counts, capsys):
    assert data.main(["--root", str(isolated / "nowhere")]) == 1
    assert "not found" in capsys.readouterr().err
