"""minicompress.storage: a pruned, shared, Huffman-coded model written to a file and read
back computes exactly the same outputs; truncated, altered or foreign files are refused."""

from __future__ import annotations

import hashlib
import math
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch

from minicompress import storage
from minicompress.models import LeNet5, LeNet300100
from minicompress.pruning import apply_masks, layer_masks
from minicompress.sharing import share_weights


def resign(body: bytes) -> bytes:
    """``body`` followed by its SHA-256: what an editor who knows the format writes."""
    return body + hashlib.sha256(body).digest()


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


def test_fixed_width_counts_the_filler_symbol(saved):
    _, _, path, _ = saved
    assert [storage.fixed_width(a) for a in (1, 2, 3, 16, 17, 33, 256, 257)] == [
        1, 1, 2, 4, 5, 6, 8, 9
    ]  # fmt: skip
    fc1 = storage.inspect(path)["fc1.weight"]
    assert fc1["entry_bits"] == 5  # 16 centroids + the filler = 17 symbols
    assert fc1["fixed_bits"] == fc1["entries"] * (5 + 5) + 32 * 16


def test_fixed_width_is_what_bit_packing_takes():
    rng = np.random.default_rng(0)
    for alphabet in (2, 5, 17, 64):
        symbols = rng.integers(0, alphabet, 1000)
        width = storage.fixed_width(alphabet)
        assert int(symbols.max()).bit_length() <= width  # every symbol fits
        packed = np.unpackbits(symbols[:, None].astype(">u2").view(np.uint8), axis=1)
        assert not packed[:, : 16 - width].any()
        assert storage.compare_general_purpose(symbols, alphabet)["fixed_width"] == (
            -(-1000 * width // 8)
        )


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
    data = bytearray(saved[2].read_bytes()[:-32])
    data = data[:-7]  # drop part of the last stream, then re-sign
    path = tmp_path / "resigned"
    path.write_bytes(resign(bytes(data)))
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


# ---- crafted files: bounded work, deliberate edits, inconsistent headers ---------------------


def stream(n_symbols: int, alphabet: int, lengths: dict[int, int], n_bits: int, data: bytes = b""):
    table = bytes(lengths.get(s, 0) for s in range(alphabet))
    return struct.pack("<II", n_symbols, alphabet) + table + struct.pack("<Q", n_bits) + data


def entry(name: str, shape: tuple[int, ...], payload: bytes, kind: int = 1) -> bytes:
    encoded = name.encode()
    head = struct.pack("<H", len(encoded)) + encoded
    return head + struct.pack(f"<BB{len(shape)}I", kind, len(shape), *shape) + payload


def crafted(*entries: bytes, version: int = 2) -> bytes:
    return resign(storage.MAGIC + struct.pack("<HI", version, len(entries)) + b"".join(entries))


def one_symbol_shared(shape: tuple[int, ...], n_symbols: int, index_bits: int = 1) -> bytes:
    """A shared weight whose two streams are one-symbol codes: zero bits for any count."""
    head = struct.pack("<BI", index_bits, 1) + struct.pack("<f", 0.5)
    values = stream(n_symbols, 2, {1: 255}, 0)
    gaps = stream(n_symbols, 2**index_bits, {0: 255}, 0)
    return head + values + gaps


def peak_bytes(call) -> int:
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("numel", [2**31, 2**40])
@pytest.mark.parametrize("kind", ["dense", "shared", "symbols"])
def test_declared_sizes_are_refused_before_allocating(tmp_path, numel, kind):
    side = math.isqrt(numel)
    shape = (side, numel // side)
    if kind == "dense":  # 4·numel bytes of floats declared, a few present
        data = crafted(entry("w", shape, b"\0" * 16, kind=0))
    elif kind == "shared":  # one kept weight in a huge shape
        data = crafted(entry("w", shape, one_symbol_shared(shape, 1)))
    else:  # a huge symbol count coded in zero bits
        data = crafted(entry("w", shape, one_symbol_shared(shape, min(numel, 2**32 - 1))))
    path = tmp_path / "bomb.mcdc"
    path.write_bytes(data)
    for call in (lambda: storage.read(path), lambda: storage.inspect(path),
                 lambda: storage.load(path, LeNet300100())):  # fmt: skip
        with pytest.raises(ValueError):
            call()
        assert peak_bytes(lambda c=call: pytest.raises(ValueError, c)) < 2**20


def test_symbol_count_cannot_exceed_the_bits_or_the_weights(tmp_path):
    path = tmp_path / "x.mcdc"
    head = struct.pack("<BI", 1, 1) + struct.pack("<f", 0.5)
    lying = stream(2**27, 2, {0: 1, 1: 1}, 8, b"\x55")  # 2^27 symbols in 8 bits
    path.write_bytes(crafted(entry("w", (4, 4), head + lying + lying)))
    with pytest.raises(ValueError, match="symbols"):
        storage.read(path)


def test_small_files_are_read_within_a_small_multiple_of_their_size(saved):
    path = saved[2]
    assert peak_bytes(lambda: storage.inspect(path)) < 2**20 + 1000 * path.stat().st_size


def test_devices_and_folders_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not a regular file"):
        storage.read("/dev/zero")
    with pytest.raises(ValueError, match="not a regular file"):
        storage.read(tmp_path)


def test_deliberate_edit_passes_the_inner_checksum_but_not_an_outer_sha256(saved, tmp_path):
    model, _, path, _ = saved
    trusted = storage.file_sha256(path)
    body = bytearray(path.read_bytes()[:-32])
    bias_at = body.index(b"fc3.bias") + len(b"fc3.bias") + 2 + 4  # kind, ndim, shape (10,)
    body[bias_at : bias_at + 4] = struct.pack("<f", 123.0)
    edited = tmp_path / "edited.mcdc"
    edited.write_bytes(resign(bytes(body)))
    assert storage.read(edited)["fc3.bias"][0] == 123.0  # an editor can recompute any checksum
    with pytest.raises(ValueError, match="expected SHA-256"):
        storage.load(edited, LeNet300100(), sha256=trusted)
    assert storage.load(path, LeNet300100(), sha256=trusted) is not None


def test_accidental_edits_are_caught_by_the_sha256(saved, tmp_path):
    data = saved[2].read_bytes()
    rng = np.random.default_rng(0)
    for i, at in enumerate(rng.integers(0, len(data), 20)):
        flipped = bytearray(data)
        flipped[at] ^= 1 << int(rng.integers(8))
        path = tmp_path / f"flip{i}.mcdc"
        path.write_bytes(bytes(flipped))
        with pytest.raises(ValueError):
            storage.read(path)


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ([entry("b", (2,), b"\0" * 8, 0), entry("b", (2,), b"\0" * 8, 0)], "twice"),
        ([entry("b", (2,), struct.pack("<2f", math.nan, math.nan), 0)], "NaN"),
        ([entry("b", (1,) * 9, b"\0" * 4, 0)], "dimensions"),
        ([entry("w", (4,), struct.pack("<BI", 0, 1) + one_symbol_shared((4,), 1)[5:])],
         "index_bits|clusters"),
        ([entry("w", (4,), one_symbol_shared((4,), 1, index_bits=2)[:9]
                + stream(1, 2, {1: 255}, 0) + stream(1, 2, {0: 255}, 0))], "alphabet"),
    ],
)  # fmt: skip
def test_inconsistent_headers_are_refused(tmp_path, entries, match):
    path = tmp_path / "x.mcdc"
    path.write_bytes(crafted(*entries))
    with pytest.raises(ValueError, match=match):
        storage.read(path)


def test_version_1_files_still_load(saved, tmp_path):
    model, _, path, _ = saved
    body = bytearray(path.read_bytes()[:-32])
    body[4:6] = struct.pack("<H", 1)
    old = tmp_path / "v1.mcdc"
    old.write_bytes(bytes(body) + struct.pack("<I", zlib.crc32(bytes(body))))
    reloaded = storage.load(old, LeNet300100())
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


def test_save_refuses_index_bits_missing_a_layer_and_non_finite_state(saved, tmp_path):
    model, shared, _, _ = saved
    with pytest.raises(ValueError, match="missing"):
        storage.save(tmp_path / "x", model, shared, index_bits={"fc1.weight": 5})
    broken = LeNet300100()
    with torch.no_grad():
        broken.fc3.bias.fill_(math.nan)
    with pytest.raises(ValueError, match="NaN"):
        storage.save(tmp_path / "y", broken, {})
