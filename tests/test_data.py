"""minicompress.data: idx parsing, validation, search order, and the real files."""

from __future__ import annotations

import gzip
import struct
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
        fashion_mnist("test", root=isolated / "nowhere")
    message = str(err.value)
    for place in data.search_paths(isolated / "nowhere"):
        assert str(place) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "download=True" in message


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
