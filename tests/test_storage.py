"""minicompress.storage: a pruned, shared, Huffman-coded model written to a file and read
back computes exactly the same outputs; truncated, altered or foreign files are refused."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from minicompress import storage
from minicompress.models import LeNet5, LeNet300100
from minicompress.pruning import apply_masks, layer_masks
from minicompress.sharing import share_weights


def compressed(model, sparsity: float = 0.9, bits: int = 4):
    torch.manual_seed(0)
    masks = layer_masks(model, sparsity, scope="global")
    apply_masks(model, masks)
    return share_weights(model, bits, masks=masks)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = LeNet300100()
    shared = compressed(model)
    path = tmp_path_factory.mktemp("file") / "lenet300.mcdc"
    size = storage.save(path, model, shared, index_bits=5)
    return model, shared, path, size


def test_reloaded_model_computes_exactly_the_same_outputs(saved):
    model, _, path, size = saved
    assert path.stat().st_size == size
    torch.manual_seed(1)
    fresh = storage.load(path, LeNet300100())
    x = torch.rand(64, 1, 28, 28)
    assert torch.equal(fresh(x), model(x))
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name


def test_file_is_much_smaller_than_dense_float32(saved):
    model, _, _, size = saved
    dense = 4 * sum(p.numel() for p in model.parameters())
    assert dense / size > 15  # 10 % kept, 4-bit indices


def test_inspect_reports_the_streams(saved):
    model, shared, path, size = saved
    info = storage.inspect(path)
    fc1 = info["fc1.weight"]
    assert fc1["kept"] == int(shared["fc1.weight"].mask.sum())
    assert fc1["index_bits"] == 5 and fc1["clusters"] == 16
    assert fc1["entries"] == fc1["kept"] + fc1["fillers"]
    assert info["fc1.bias"]["bytes"] == 4 * 300
    assert sum(e["bytes"] for e in info.values()) < size


def test_conv_model_round_trips_with_auto_index_bits(tmp_path):
    torch.manual_seed(0)
    model = LeNet5()
    shared = compressed(model, sparsity=0.8, bits=5)
    path = tmp_path / "lenet5.mcdc"
    storage.save(path, model, shared, index_bits="auto")
    x = torch.rand(8, 1, 28, 28)
    assert torch.equal(storage.load(path, LeNet5())(x), model(x))


def test_truncated_file_is_refused(saved, tmp_path):
    data = saved[2].read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 12):
        path = tmp_path / f"cut{cut}"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated|altered|magic"):
            storage.load(path, LeNet300100())


def test_altered_file_is_refused(saved, tmp_path):
    data = bytearray(saved[2].read_bytes())
    data[len(data) // 3] ^= 0x10
    path = tmp_path / "altered"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        storage.load(path, LeNet300100())


def test_foreign_and_future_files_are_refused(saved, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(LeNet300100().state_dict(), path)
    with pytest.raises(ValueError, match="not a minicompress file"):
        storage.load(path, LeNet300100())
    data = bytearray(saved[2].read_bytes()[:-4])
    data[4:6] = struct.pack("<H", 99)
    path.write_bytes(bytes(data) + struct.pack("<I", zlib.crc32(bytes(data))))
    with pytest.raises(ValueError, match="version 99"):
        storage.load(path, LeNet300100())


def test_corruption_behind_a_valid_checksum_is_still_refused(saved, tmp_path):
    data = bytearray(saved[2].read_bytes()[:-4])
    data = data[:-7]  # drop part of the last stream, then re-sign
    path = tmp_path / "resigned"
    path.write_bytes(bytes(data) + struct.pack("<I", zlib.crc32(bytes(data))))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        storage.read(path)


def test_wrong_architecture_is_refused(saved):
    with pytest.raises(ValueError, match="the model has"):
        storage.load(saved[2], LeNet5())


def test_unshared_weights_are_refused(tmp_path):
    model = LeNet300100()
    shared = compressed(model)
    with torch.no_grad():
        model.fc1.weight.add_(0.01)
    with pytest.raises(ValueError, match="codebook"):
        storage.save(tmp_path / "x", model, shared)


def test_loading_never_unpickles(saved, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    storage.load(saved[2], LeNet300100())


def test_general_purpose_comparison_is_honest():
    rng = np.random.default_rng(0)
    symbols = rng.choice(16, size=20_000, p=np.linspace(1, 16, 16)[::-1] / 136)
    sizes = storage.compare_general_purpose(symbols, 16)
    assert sizes["fixed_width"] == 10_000
    assert sizes["huffman"] < sizes["fixed_width"]
    assert sizes["zlib"] == len(zlib.compress(symbols.astype(np.uint8).tobytes(), 9))
    assert sizes["lzma"] > 0


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda p: storage.save(p, "model", {}), TypeError, "Module"),
        (lambda p: storage.save(p, LeNet300100(), {"fc9.weight": None}), ValueError, "fc9"),
        (lambda p: storage.load(p, LeNet300100()), FileNotFoundError, "missing"),
        (lambda p: storage.compare_general_purpose([], 4), ValueError, "no symbols"),
        (lambda p: storage.compare_general_purpose([5], 4), ValueError, r"\[0, 4\)"),
    ],
)  # fmt: skip
def test_bad_input_is_rejected_clearly(call, error, match, tmp_path):
    with pytest.raises(error, match=match):
        call(tmp_path / "missing.mcdc")
