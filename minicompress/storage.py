"""A real file for a Deep-Compressed model: pruned, shared and Huffman-coded weights.

Chapter "Weight sharing and Huffman coding", § "The whole pipeline, written to a file". The
size the chapter reports is the length of this file, not a formula. Layout (little-endian)::

    magic b"MCDC" | version u16 | tensor count u32
    per tensor:
        name length u16 | name (UTF-8) | kind u8 | ndim u8
        | shape u32 × ndim
        kind 0 (dense, e.g. a bias): float32 × numel
        kind 1 (shared weight):
            index bits b u8 | codebook size k u32 | codebook float32 × k
            values stream (0 = filler, 1 + j = centroid j; alphabet k + 1)
            gaps stream (relative indices d − 1 in [0, 2^b);
                         alphabet 2^b)
        stream: symbol count u32 | alphabet size u32
                | code length u8 × alphabet
                | bit count u64 | ceil(bits / 8) bytes
    SHA-256 (32 bytes) of everything before it
        (version 1 ended with a CRC-32 u32; still read)

Huffman codes are canonical, so a code is stored as one length per symbol (0: unused).
Loading checks the magic, version and checksum, then every declared count and shape
against the bytes present (and the model's shapes) before it allocates or decodes
anything, and never unpickles. The checksum inside the file detects accidents, not
deliberate edits (an editor recomputes it): for those, pass a SHA-256 kept elsewhere to
`load` (`file_sha256`).

References: Han, Mao, Dally (2016), *Deep Compression*, §3–4.
"""

from __future__ import annotations

import hashlib
import lzma
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.coding import (
    MAX_CODE_LENGTH,
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

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "compare_general_purpose",
    "file_sha256",
    "inspect",
    "load",
    "read",
    "save",
]

MAGIC = b"MCDC"
FORMAT_VERSION = 2
_DENSE, _SHARED = 0, 1
_MAX_NDIM = 8
_TRAILERS = {  # version -> (checksum name, checksum of the bytes before it)
    1: ("CRC-32", lambda b: struct.pack("<I", zlib.crc32(b))),
    2: ("SHA-256", lambda b: hashlib.sha256(b).digest()),
}


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
    check.module(model)
    state = model.state_dict()
    if not isinstance(shared, Mapping):
        raise TypeError(
            f"shared must be a mapping name -> SharedLayer, got {type(shared).__name__}"
        )
    unknown = set(shared) - set(state)
    if unknown:
        raise ValueError(f"shared names {sorted(unknown)} are not in the model's state dict")
    for name, layer in shared.items():
        if not isinstance(layer, SharedLayer):
            raise TypeError(f"shared[{name!r}] must be a SharedLayer, got {type(layer).__name__}")
        if not torch.isfinite(layer.codebook).all():
            raise ValueError(f"shared[{name!r}]'s codebook contains NaN or inf")
        if not 1 <= len(layer.codebook) <= 2**16:
            raise ValueError(f"shared[{name!r}] has {len(layer.codebook)} clusters; 1..65536 fit")
    if isinstance(index_bits, Mapping) and set(index_bits) != set(shared):
        missing, extra = set(shared) - set(index_bits), set(index_bits) - set(shared)
        raise ValueError(f"index_bits must name exactly the shared weights: missing "
                         f"{sorted(missing)}, not shared {sorted(extra)}")  # fmt: skip
    body = bytearray(MAGIC + struct.pack("<HI", FORMAT_VERSION, len(state)))
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            raise TypeError(f"{name!r} is {tensor.dtype}: only floating-point state is stored")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name!r} contains NaN or inf: the reader would refuse the file")
        if tensor.ndim > _MAX_NDIM or any(n >= 2**32 for n in tensor.shape):
            raise ValueError(f"{name!r} has shape {tuple(tensor.shape)}: the format stores at "
                             f"most {_MAX_NDIM} dimensions below 2^32")  # fmt: skip
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
        check.bits(bits, 1, 16, f"index_bits for {name!r}", " (or 'auto')")
        body += _shared_payload(layer, bits)
    body += _TRAILERS[FORMAT_VERSION][1](bytes(body))
    Path(path).write_bytes(bytes(body))
    return len(body)


# ---- reading -------------------------------------------------------------------------------
#
# Reading is two passes. The first walks the headers and checks every declared count and
# shape against the bytes present (and against the model, for `load`) without allocating
# anything larger than the file; only then does the second decode.


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


@dataclass
class _Stream:
    symbols: int
    alphabet: int
    lengths: bytes
    bits: int
    data: bytes


@dataclass
class _Entry:
    name: str
    kind: int
    shape: tuple[int, ...]
    numel: int
    size: int  # bytes of the entry after its shape
    raw: bytes = b""  # dense: the float32 values; shared: the codebook
    index_bits: int = 0
    streams: tuple[_Stream, ...] = ()


def _stream_header(reader: _Reader, where: str, alphabet: int, most: int) -> _Stream:
    """A stream's header, its declared counts checked against the bytes and ``most``."""
    n_symbols, declared = reader.unpack("II")
    if declared != alphabet:
        raise ValueError(
            f"corrupt file: {where} declares an alphabet of {declared}, not {alphabet}"
        )
    lengths = reader.take(alphabet)
    (n_bits,) = reader.unpack("Q")
    data = reader.take((n_bits + 7) // 8)
    longest = max(n if n != 255 else 0 for n in lengths) if lengths else 0
    if any(MAX_CODE_LENGTH < n < 255 for n in lengths):
        raise ValueError(f"corrupt file: {where} has a code length over {MAX_CODE_LENGTH}")
    if n_symbols > most:
        raise ValueError(f"corrupt file: {where} declares {n_symbols} symbols for {most} weights")
    if (longest == 0 and n_bits) or (longest and n_symbols > n_bits):  # a symbol takes >= 1 bit
        raise ValueError(f"corrupt file: {where} declares {n_symbols} symbols in {n_bits} bits")
    return _Stream(n_symbols, alphabet, lengths, n_bits, data)


def _entry_header(reader: _Reader) -> _Entry:
    (name_length,) = reader.unpack("H")
    try:
        name = reader.take(name_length).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("corrupt file: a tensor name is not UTF-8") from None
    kind, ndim = reader.unpack("BB")
    if ndim > _MAX_NDIM:
        raise ValueError(f"corrupt file: {name!r} declares {ndim} dimensions (at most {_MAX_NDIM})")
    shape = reader.unpack(f"{ndim}I")
    numel, start = math.prod(shape), reader.at
    if kind == _DENSE:
        raw = reader.take(4 * numel)  # the bytes must be there before anything is allocated
        return _Entry(name, kind, shape, numel, reader.at - start, raw)
    if kind != _SHARED:
        raise ValueError(f"corrupt file: unknown entry kind {kind} for {name!r}")
    index_bits, k = reader.unpack("BI")
    if not 1 <= index_bits <= 16 or not 1 <= k <= 2**16:
        raise ValueError(f"corrupt file: {name!r} has index_bits {index_bits} and {k} clusters")
    codebook = reader.take(4 * k)
    values = _stream_header(reader, f"{name!r}'s values", k + 1, numel)
    gaps = _stream_header(reader, f"{name!r}'s gaps", 2**index_bits, numel)
    if values.symbols != gaps.symbols:
        raise ValueError(f"corrupt file: the streams of {name!r} do not match")
    return _Entry(name, kind, shape, numel, reader.at - start, codebook, index_bits, (values, gaps))


def _headers(data: bytes, path: object, sha256: str | None) -> list[_Entry]:
    """Check magic, version and checksum; return the entries' headers, nothing decoded."""
    if len(data) < len(MAGIC) + 6 or data[: len(MAGIC)] != MAGIC:
        raise ValueError(f"{path} is not a minicompress file (magic {MAGIC!r} missing)")
    (version,) = struct.unpack_from("<H", data, len(MAGIC))
    if version not in _TRAILERS:
        raise ValueError(f"{path} has format version {version}; this reader knows "
                         f"{sorted(_TRAILERS)}")  # fmt: skip
    check_name, digest = _TRAILERS[version]
    size = len(digest(b""))
    if len(data) < len(MAGIC) + 6 + size or digest(data[:-size]) != data[-size:]:
        raise ValueError(f"{path} is truncated or altered: its {check_name} checksum does not "
                         "match")  # fmt: skip
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise ValueError(f"{path} does not have the expected SHA-256: it was edited or replaced")
    reader = _Reader(data[:-size])
    reader.take(len(MAGIC) + 2)
    (count,) = reader.unpack("I")
    if 4 * count > len(reader.data):  # an entry takes at least 4 bytes
        raise ValueError(f"{path} is corrupt: {count} entries cannot fit in {len(data)} bytes")
    entries = [_entry_header(reader) for _ in range(count)]
    if reader.at != len(reader.data):
        raise ValueError(f"{path} is corrupt: {len(reader.data) - reader.at} bytes left over")
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"{path} is corrupt: a tensor name appears twice")
    return entries


def _floats(raw: bytes, what: str) -> np.ndarray:
    values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.isfinite(values).all():
        raise ValueError(f"corrupt file: {what} holds NaN or inf")
    return values


def _decode_stream(stream: _Stream) -> np.ndarray:
    used = {s: (0 if n == 255 else n) for s, n in enumerate(stream.lengths) if n}
    if stream.symbols == 0:
        return np.zeros(0, dtype=np.int64)
    if not used:
        raise ValueError("corrupt file: a stream with symbols but no code")
    tables = _Tables(canonical_code(used))
    encoded = HuffmanEncoded(stream.data, stream.bits, stream.symbols, tables.code)
    return tables.numeric[_decode_ids(encoded, tables)].astype(np.int64)


def _stream_info(stream: _Stream) -> dict:
    size = 16 + stream.alphabet + len(stream.data)  # two u32, the lengths, a u64, the bits
    return {"symbols": stream.symbols, "alphabet": stream.alphabet, "bits": stream.bits,
            "table_bytes": stream.alphabet, "bytes": size}  # fmt: skip


def _decode(entry: _Entry, weights: bool) -> tuple[Tensor | None, dict]:
    """The entry's tensor (if ``weights``) and its facts for `inspect`."""
    info = {"kind": "dense" if entry.kind == _DENSE else "shared", "shape": entry.shape,
            "numel": entry.numel, "bytes": entry.size}  # fmt: skip
    if entry.kind == _DENSE:
        values = _floats(entry.raw, repr(entry.name)).reshape(entry.shape) if weights else None
        return (torch.from_numpy(values) if weights else None), info
    codebook = _floats(entry.raw, f"the codebook of {entry.name!r}")
    values, gaps = (_decode_stream(s) for s in entry.streams)
    if len(values) and values.max() > len(codebook):
        raise ValueError(f"corrupt file: the streams of {entry.name!r} do not match")
    info |= {"index_bits": entry.index_bits, "clusters": len(codebook),
             "kept": int((values > 0).sum()), "entries": len(values),
             "fillers": int((values == 0).sum()), "values": _stream_info(entry.streams[0]),
             "gaps": _stream_info(entry.streams[1]), "codebook_bytes": len(entry.raw)}  # fmt: skip
    # Fixed widths, for comparison: the entry stream has k + 1 symbols (0 is the filler), so
    # an entry needs ⌈log2(k + 1)⌉ bits, not log2 k; a gap needs index_bits.
    entry_bits = fixed_width(len(codebook) + 1)
    info |= {"entry_bits": entry_bits, "fixed_bits": len(values) * (entry_bits + entry.index_bits)
             + 32 * len(codebook)}  # fmt: skip
    positions = np.cumsum(gaps + 1) - 1  # checked before the dense array is allocated
    if len(positions) and positions[-1] >= entry.numel:
        raise ValueError(f"corrupt file: the gaps of {entry.name!r} run past its {entry.numel} "
                         "weights")  # fmt: skip
    if not weights:
        return None, info
    dense = relative_index_decode(gaps, values, entry.numel)  # 0 pruned, 1 + centroid kept
    weight = np.where(dense > 0, codebook[np.maximum(dense - 1, 0)], np.float32(0.0))
    return torch.from_numpy(weight.astype(np.float32).reshape(entry.shape)), info


def _parse(
    path: str | Path, max_elements: int | None, expected: Mapping[str, Tensor] | None = None,
    sha256: str | None = None, weights: bool = True,
) -> tuple[dict[str, Tensor], dict[str, dict]]:  # fmt: skip
    data = check.read_file(path)
    if sha256 is not None and not isinstance(sha256, str):
        raise TypeError(f"sha256 must be a hex string or None, got {type(sha256).__name__}")
    entries = _headers(data, path, sha256)
    if expected is not None:  # names and shapes must be the model's before anything is decoded
        names = [e.name for e in entries]
        if set(names) != set(expected):
            raise ValueError(f"the file holds {sorted(names)}, the model has {sorted(expected)}")
        for e in entries:
            if e.shape != tuple(expected[e.name].shape):
                raise ValueError(f"{e.name!r}: the file has shape {e.shape}, the model "
                                 f"{tuple(expected[e.name].shape)}")  # fmt: skip
    else:
        limit = _element_limit(len(data)) if max_elements is None else max_elements
        total = sum(e.numel for e in entries)
        if total > limit:
            raise ValueError(
                f"{path} declares {total} numbers, more than max_elements = {limit} allowed for "
                f"a file of {len(data)} bytes; pass a larger max_elements if you trust it, or "
                "use load(path, model), which checks the shapes against the model"
            )
    state, infos = {}, {}
    for e in entries:
        state[e.name], infos[e.name] = _decode(e, weights)
    return state, infos


def _element_limit(file_bytes: int) -> int:
    # Without a model, how many numbers may a file declare? A sparse layer stores far fewer
    # bytes than it has weights, so the limit is generous, but bounded by the file's size.
    return 2**20 + 64 * file_bytes


def read(
    path: str | Path, *, max_elements: int | None = None, sha256: str | None = None
) -> dict[str, Tensor]:
    """The state dict stored in ``path`` (float32 tensors), without a model.

    A file may declare at most ``max_elements`` numbers in all (default 2^20 + 64 per byte
    of the file), so that a small crafted file cannot make the reader allocate gigabytes.
    ``sha256``: the hex digest the file must have (see `load`).
    """
    if max_elements is not None:
        check.integer(max_elements, "max_elements", 0)
    return _parse(path, max_elements, sha256=sha256)[0]


def load(path: str | Path, model: nn.Module, *, sha256: str | None = None) -> nn.Module:
    """Fill ``model``'s parameters from the file at ``path`` and return it (in eval mode).

    The model must have the architecture that was saved: the same names and shapes, which
    are compared before anything is decoded. A truncated, damaged or foreign file raises
    ValueError; nothing is unpickled.

    The checksum stored in the file (SHA-256 from format version 2, CRC-32 in version 1)
    detects *accidents* only: whoever edits the file on purpose can recompute it. To detect
    deliberate edits, keep the file's SHA-256 somewhere the editor cannot reach (as the zoo
    does) and pass it as ``sha256``; `file_sha256` computes it.
    """
    check.module(model)
    expected = model.state_dict()
    state = _parse(path, None, expected, sha256)[0]
    model.load_state_dict(state)
    return model.eval()


def inspect(
    path: str | Path, *, max_elements: int | None = None, sha256: str | None = None
) -> dict[str, dict]:
    """Per-entry facts about the file: kind, shape, bytes; for a shared weight the weights
    kept, clusters, index bits, fillers, each stream's Huffman bits and table size, and
    ``fixed_bits``: the same entry at fixed widths (``entry_bits`` = ⌈log2(k + 1)⌉ per entry,
    ``index_bits`` per gap, 32 per centroid). Decodes the streams but not the weights;
    ``max_elements`` and ``sha256`` as in `read`."""
    if max_elements is not None:
        check.integer(max_elements, "max_elements", 0)
    return _parse(path, max_elements, sha256=sha256, weights=False)[1]


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of the file's bytes (hex), to keep apart from it and pass to `load`
    (§ "The whole pipeline, written to a file")."""
    return hashlib.sha256(check.read_file(path)).hexdigest()


def fixed_width(alphabet: int) -> int:
    """Bits per symbol of a fixed-width code for ``alphabet`` symbols: ⌈log2(alphabet)⌉, at
    least 1. The entries of a shared weight have k + 1 symbols (a filler and k centroids),
    so k = 16 clusters need 5 bits, not 4 (§ "Where the kept weights are")."""
    check.integer(alphabet, "alphabet", 1)
    return max(1, (alphabet - 1).bit_length())


def compare_general_purpose(symbols: object, alphabet: int) -> dict[str, int]:
    """Bytes for one symbol stream: fixed-width bit packing, Huffman, zlib and lzma.

    ``symbols`` are ints in [0, alphabet). zlib (level 9) and lzma (preset 9 | extreme) get
    the symbols one per byte (two if alphabet > 256), the form they compress best; the
    Huffman figure is the coded bits plus the stored length table. Header bytes of the
    general-purpose formats are included, as they would be in a file.
    """
    array = np.asarray(symbols, dtype=np.int64).ravel()
    check.integer(alphabet, "alphabet", 1)
    if len(array) == 0:
        raise ValueError("no symbols to compare")
    if array.min() < 0 or array.max() >= alphabet:
        raise ValueError(f"symbols must lie in [0, {alphabet})")
    raw = array.astype(np.uint8 if alphabet <= 256 else np.uint16).tobytes()
    width = fixed_width(alphabet)
    stream, _ = _stream(array, alphabet)
    return {
        "symbols": len(array),
        "fixed_width": math.ceil(len(array) * width / 8),
        "huffman": len(stream),
        "zlib": len(zlib.compress(raw, 9)),
        "lzma": len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)),
    }
