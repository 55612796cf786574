"""A real file for a Deep-Compressed model: pruned, shared and Huffman-coded weights.

Chapter "Weight sharing and Huffman coding", § "A compressed file". The size the chapter
reports is the length of this file, not a formula. Layout (little-endian)::

    magic b"MCDC" | version u16 | tensor count u32
    per tensor:
        name length u16 | name (UTF-8) | kind u8 | ndim u8 | shape u32 × ndim
        kind 0 (dense, e.g. a bias): float32 × numel
        kind 1 (shared weight):
            index bits b u8 | codebook size k u32 | codebook float32 × k
            values stream (0 = filler, 1 + j = centroid j; alphabet k + 1)
            gaps stream   (relative indices d − 1 in [0, 2^b); alphabet 2^b)
        stream: symbol count u32 | alphabet size u32 | code length u8 × alphabet
                | bit count u64 | ceil(bits / 8) bytes
    CRC-32 u32 of everything before it

Huffman codes are canonical, so a code is stored as one length per symbol (0: unused).
Loading checks the magic, version, every length, and the checksum, and never unpickles.

References: Han, Mao, Dally (2016), *Deep Compression*, §3–4.
"""

from __future__ import annotations

import lzma
import math
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from minicompress.coding import (
    HuffmanEncoded,
    _decode_ids,
    _Tables,
    canonical_code,
    huffman_code,
    huffman_encode,
    relative_index_decode,
    relative_index_encode,
)
from minicompress.sharing import SharedLayer

__all__ = ["FORMAT_VERSION", "MAGIC", "compare_general_purpose", "inspect", "load", "read", "save"]

MAGIC = b"MCDC"
FORMAT_VERSION = 1
_DENSE, _SHARED = 0, 1


# ---- writing -------------------------------------------------------------------------------


def _stream(symbols: np.ndarray, alphabet: int) -> tuple[bytes, HuffmanEncoded]:
    """Huffman-code ``symbols`` (ints in [0, alphabet)) and serialise the stream."""
    counts = np.bincount(symbols, minlength=alphabet)
    lengths = np.zeros(alphabet, dtype=np.uint8)
    if len(symbols):
        code = huffman_code({s: int(c) for s, c in enumerate(counts) if c})
        encoded = huffman_encode(symbols, code)
        for s, word in encoded.code.items():
            lengths[s] = len(word)
        # a one-symbol code has length 0; mark it used with a flag length of 255
        if len(encoded.code) == 1:
            lengths[next(iter(encoded.code))] = 255
    else:
        encoded = HuffmanEncoded(b"", 0, 0, {})
    head = struct.pack("<II", len(symbols), alphabet) + lengths.tobytes()
    return head + struct.pack("<Q", encoded.n_bits) + encoded.data, encoded


def _shared_payload(layer: SharedLayer, index_bits: int) -> bytes:
    k = len(layer.codebook)
    # dense symbols: 0 where pruned, 1 + centroid elsewhere; fillers get the 0 "value"
    dense = torch.where(layer.mask, layer.indices + 1, 0).flatten().numpy()
    gaps, values = relative_index_encode(dense, index_bits)
    head = (
        struct.pack("<BI", index_bits, k) + layer.codebook.float().numpy().astype("<f4").tobytes()
    )
    value_bytes, _ = _stream(values.astype(np.int64), k + 1)
    gap_bytes, _ = _stream(gaps, 2**index_bits)
    return head + value_bytes + gap_bytes


def save(
    path: str | Path,
    model: nn.Module,
    shared: Mapping[str, SharedLayer],
    index_bits: int | str | Mapping[str, int | str] = 5,
) -> int:
    """Write ``model`` to ``path`` in the format above; return the file's size in bytes.

    Weights named in ``shared`` (from `minicompress.sharing.share_weights`) are stored as
    codebook + Huffman-coded centroid indices + Huffman-coded relative positions with
    ``index_bits`` each (one number, or per weight name; Deep Compression uses 8 for conv
    and 5 for fc layers; ``"auto"`` tries 1..12 and keeps the smallest). Every other
    entry of the state dict is stored as float32. The model's shared weights must equal
    codebook[indices] ⊙ mask (checked), so the file reloads into exactly the model that
    was evaluated.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    state = model.state_dict()
    unknown = set(shared) - set(state)
    if unknown:
        raise ValueError(f"shared names {sorted(unknown)} are not in the model's state dict")
    body = bytearray(MAGIC + struct.pack("<HI", FORMAT_VERSION, len(state)))
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            raise TypeError(f"{name!r} is {tensor.dtype}: only floating-point state is stored")
        encoded_name = name.encode("utf-8")
        body += struct.pack("<H", len(encoded_name)) + encoded_name
        kind = _SHARED if name in shared else _DENSE
        body += struct.pack(f"<BB{tensor.ndim}I", kind, tensor.ndim, *tensor.shape)
        if kind == _DENSE:
            body += tensor.detach().cpu().float().numpy().astype("<f4").tobytes()
            continue
        layer = shared[name]
        if layer.indices.shape != tensor.shape:
            raise ValueError(f"shared[{name!r}] has shape {tuple(layer.indices.shape)}, "
                             f"the model's tensor {tuple(tensor.shape)}")  # fmt: skip
        if not torch.equal(layer.weight(), tensor.detach().cpu().float()):
            raise ValueError(f"the model's {name!r} is not codebook[indices] ⊙ mask: share or "
                             "fine-tune it with minicompress.sharing first")  # fmt: skip
        bits = index_bits[name] if isinstance(index_bits, Mapping) else index_bits
        if bits == "auto":  # the width giving the smallest payload: fewer fillers vs. wider gaps
            body += min((_shared_payload(layer, b) for b in range(1, 13)), key=len)
            continue
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ValueError(
                f"index_bits for {name!r} must be an int in 1..16 or 'auto', got {bits!r}"
            )
        body += _shared_payload(layer, bits)
    body += struct.pack("<I", zlib.crc32(body))
    Path(path).write_bytes(bytes(body))
    return len(body)


# ---- reading -------------------------------------------------------------------------------


class _Reader:
    """Bounds-checked reads from the file's bytes; running past the end is a ValueError."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise ValueError("the file is truncated or corrupt: a field runs past its end")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def _read_stream(reader: _Reader) -> tuple[np.ndarray, dict]:
    n_symbols, alphabet = reader.unpack("II")
    lengths = np.frombuffer(reader.take(alphabet), dtype=np.uint8)
    (n_bits,) = reader.unpack("Q")
    data = reader.take((n_bits + 7) // 8)
    used = {s: (0 if n == 255 else int(n)) for s, n in enumerate(lengths.tolist()) if n}
    info = {"symbols": n_symbols, "alphabet": alphabet, "bits": n_bits,
            "table_bytes": alphabet, "bytes": 16 + alphabet + len(data)}  # fmt: skip
    if n_symbols == 0:
        return np.zeros(0, dtype=np.int64), info
    if not used:
        raise ValueError("corrupt file: a stream with symbols but no code")
    code = canonical_code(used)
    tables = _Tables(code)
    ids = _decode_ids(HuffmanEncoded(data, n_bits, n_symbols, code), tables)
    return tables.numeric[ids].astype(np.int64), info


def _read_entry(reader: _Reader) -> tuple[str, Tensor, dict]:
    (name_length,) = reader.unpack("H")
    try:
        name = reader.take(name_length).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("corrupt file: a tensor name is not UTF-8") from None
    kind, ndim = reader.unpack("BB")
    shape = reader.unpack(f"{ndim}I")
    numel = math.prod(shape)
    start = reader.at
    if kind == _DENSE:
        values = np.frombuffer(reader.take(4 * numel), dtype="<f4").astype(np.float32)
        info = {"kind": "dense", "shape": shape, "numel": numel}
        info["bytes"] = reader.at - start
        return name, torch.from_numpy(values.reshape(shape)), info
    if kind != _SHARED:
        raise ValueError(f"corrupt file: unknown entry kind {kind} for {name!r}")
    index_bits, k = reader.unpack("BI")
    codebook = np.frombuffer(reader.take(4 * k), dtype="<f4").astype(np.float32)
    values, value_info = _read_stream(reader)
    gaps, gap_info = _read_stream(reader)
    if len(values) != len(gaps) or (len(values) and values.max() > k):
        raise ValueError(f"corrupt file: the streams of {name!r} do not match")
    dense = relative_index_decode(gaps, values, numel)  # 0 pruned, 1 + centroid kept
    weight = np.where(dense > 0, codebook[np.maximum(dense - 1, 0)], np.float32(0.0))
    info = {"kind": "shared", "shape": shape, "numel": numel, "index_bits": index_bits,
            "clusters": k, "kept": int((dense > 0).sum()), "entries": len(values),
            "fillers": int((values == 0).sum()), "values": value_info, "gaps": gap_info,
            "codebook_bytes": 4 * k}  # fmt: skip
    info["bytes"] = reader.at - start
    return name, torch.from_numpy(weight.astype(np.float32).reshape(shape)), info


def _parse(path: str | Path) -> tuple[dict[str, Tensor], dict[str, dict]]:
    data = Path(path).read_bytes()
    if len(data) < len(MAGIC) + 10 or data[: len(MAGIC)] != MAGIC:
        raise ValueError(f"{path} is not a minicompress file (magic {MAGIC!r} missing)")
    (stored_crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != stored_crc:
        raise ValueError(f"{path} is truncated or altered: its CRC-32 checksum does not match")
    reader = _Reader(data[:-4])
    reader.take(len(MAGIC))
    version, count = reader.unpack("HI")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {version}; this reader knows "
                         f"{FORMAT_VERSION}")  # fmt: skip
    state, infos = {}, {}
    for _ in range(count):
        name, tensor, info = _read_entry(reader)
        state[name], infos[name] = tensor, info
    if reader.at != len(reader.data):
        raise ValueError(f"{path} is corrupt: {len(reader.data) - reader.at} bytes left over")
    return state, infos


def read(path: str | Path) -> dict[str, Tensor]:
    """The state dict stored in ``path`` (float32 tensors), without a model."""
    return _parse(path)[0]


def load(path: str | Path, model: nn.Module) -> nn.Module:
    """Fill ``model``'s parameters from the file at ``path`` and return it (in eval mode).

    The model must have the architecture that was saved: the same names and shapes. A
    truncated, altered or foreign file raises ValueError; nothing is unpickled.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    state = read(path)
    expected = model.state_dict()
    if set(state) != set(expected):
        raise ValueError(f"the file holds {sorted(state)}, the model has {sorted(expected)}")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(f"{name!r}: the file has shape {tuple(tensor.shape)}, "
                             f"the model {tuple(expected[name].shape)}")  # fmt: skip
    model.load_state_dict(state)
    return model.eval()


def inspect(path: str | Path) -> dict[str, dict]:
    """Per-entry facts about the file: kind, shape, bytes; for a shared weight the weights
    kept, clusters, index bits, fillers and each stream's Huffman bits and table size."""
    return _parse(path)[1]


def compare_general_purpose(symbols: object, alphabet: int) -> dict[str, int]:
    """Bytes for one symbol stream: fixed-width bit packing, Huffman, zlib and lzma.

    ``symbols`` are ints in [0, alphabet). zlib (level 9) and lzma (preset 9 | extreme) get
    the symbols one per byte (two if alphabet > 256), the form they compress best; the
    Huffman figure is the coded bits plus the stored length table. Header bytes of the
    general-purpose formats are included, as they would be in a file.
    """
    array = np.asarray(symbols, dtype=np.int64).ravel()
    if isinstance(alphabet, bool) or not isinstance(alphabet, int) or alphabet < 1:
        raise ValueError(f"alphabet must be an int >= 1, got {alphabet!r}")
    if len(array) == 0:
        raise ValueError("no symbols to compare")
    if array.min() < 0 or array.max() >= alphabet:
        raise ValueError(f"symbols must lie in [0, {alphabet})")
    raw = array.astype(np.uint8 if alphabet <= 256 else np.uint16).tobytes()
    width = max(1, math.ceil(math.log2(alphabet)))
    stream, _ = _stream(array, alphabet)
    return {
        "symbols": len(array),
        "fixed_width": math.ceil(len(array) * width / 8),
        "huffman": len(stream),
        "zlib": len(zlib.compress(raw, 9)),
        "lzma": len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)),
    }
