"""Lossless coding of the index streams: Huffman codes and sparse (relative-index) storage.

Chapter "Weight sharing and Huffman coding" derives each piece:

- entropy H = −Σ p_i log2 p_i, the least average number of bits per symbol (`entropy`);
- Huffman's construction: repeatedly merge the two least frequent subtrees; the code is
  prefix-free and optimal, and its average length L satisfies H ≤ L < H + 1
  (`huffman_code`, `expected_length`, `is_prefix_free`);
- canonical codes: code words are fixed by their lengths alone (`canonical_code`), so a
  file stores one length per symbol, and decoding needs no tree;
- sparse positions as relative indices, gaps of at most 2^b stored in b bits, with a
  filler zero whenever a gap is longer (`relative_index_encode`, Deep Compression §3,
  Fig. 2); compressed sparse rows (`to_csr`, `from_csr`).

Encoding and decoding are vectorised with numpy. Encoding writes every symbol's code
word into a bit array at its cumulative offset (`np.repeat`, `np.packbits`). Decoding
reads, at *every* bit position, the next L_max bits and finds the code word starting there
from the canonical tables (one `searchsorted`); the code word starts that are real form
the chain 0 → 0 + ℓ(0) → …, which is followed for all symbols at once by pointer doubling.

References: Huffman (1952); Shannon (1948); Schwartz & Kallick (1964) for canonical codes;
Han, Mao, Dally (2016), *Deep Compression*, §3–4.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from minicompress import _validate as check

__all__ = [
    "MAX_CODE_LENGTH",
    "HuffmanEncoded",
    "canonical_code",
    "code_lengths",
    "entropy",
    "expected_length",
    "from_csr",
    "huffman_code",
    "huffman_decode",
    "huffman_encode",
    "is_prefix_free",
    "relative_index_decode",
    "relative_index_encode",
    "to_csr",
]

MAX_CODE_LENGTH = 57  # a 64-bit window read at any bit offset holds 64 − 7 whole bits


# ---- frequencies, entropy -----------------------------------------------------------------


def _as_array(symbols: object) -> np.ndarray | None:
    """The symbols as a numeric numpy array, or None if they are general Python objects."""
    if isinstance(symbols, torch.Tensor):
        return symbols.detach().cpu().numpy().ravel()
    if isinstance(symbols, np.ndarray):
        return symbols.ravel() if symbols.dtype.kind in "iuf" else None
    if isinstance(symbols, list | tuple | range):
        if all(type(s) is int for s in symbols):  # the common case: cluster indices
            return np.asarray(symbols, dtype=np.int64) if symbols else np.zeros(0, np.int64)
    return None


def _check_frequencies(frequencies: object) -> dict[Hashable, float]:
    if not isinstance(frequencies, Mapping):
        raise TypeError(
            f"frequencies must be a mapping symbol -> count (dict, Counter), "
            f"got {type(frequencies).__name__}"
        )
    checked = {}
    for symbol, f in frequencies.items():
        if isinstance(f, bool) or not isinstance(f, int | float | np.integer | np.floating):
            raise TypeError(f"the frequency of {symbol!r} must be a number, got {f!r}")
        if not math.isfinite(f) or f < 0:
            raise ValueError(f"frequencies must be finite and >= 0; {symbol!r} has {f}")
        if f > 0:
            checked[symbol] = f
    if not checked:
        raise ValueError("no symbol has a positive frequency: there is nothing to code")
    return checked


def _count(symbols: object) -> dict[Hashable, int]:
    """Symbol → number of occurrences, for a sequence, array or tensor of symbols."""
    array = _as_array(symbols)
    if array is not None:
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError("symbols contain NaN or inf")
        values, counts = np.unique(array, return_counts=True)
        return dict(zip(values.tolist(), counts.tolist(), strict=True))
    if not isinstance(symbols, Iterable) or isinstance(symbols, str | bytes):
        raise TypeError(f"symbols must be a sequence, array or tensor, got {type(symbols)}")
    counts = dict(Counter(symbols))
    if any(isinstance(s, float) and math.isnan(s) for s in counts):  # NaN != NaN: no symbol
        raise ValueError("symbols contain NaN")
    return counts


def entropy(data: Mapping | Iterable) -> float:
    """Shannon entropy H = −Σ p_i log2 p_i in bits per symbol (§ "Huffman coding").

    ``data`` is either a mapping symbol → frequency (counts or probabilities, normalised
    here) or the symbols themselves (a sequence, numpy array or tensor), which are counted.
    """
    if isinstance(data, Mapping):
        frequencies = _check_frequencies(data)
    else:
        frequencies = _count(data)
        if not frequencies:
            raise ValueError("no symbols given: the entropy of nothing is undefined")
    f = np.array(list(frequencies.values()), dtype=np.float64)
    p = f / f.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns −0.0 into 0.0


# ---- Huffman codes --------------------------------------------------------------------------


def _order_key(symbols: list) -> dict[Hashable, int]:
    """A deterministic rank for every symbol: sorted order if comparable, else given order."""
    try:
        ordered = sorted(symbols)
    except TypeError:
        ordered = list(symbols)
    return {s: i for i, s in enumerate(ordered)}


def code_lengths(frequencies: Mapping[Hashable, float]) -> dict[Hashable, int]:
    """The code word length of each symbol in a Huffman tree (§ "Huffman coding").

    Put every symbol in a priority queue as a one-leaf tree weighted by its frequency;
    merge the two lightest trees until one is left; a symbol's length is its leaf's depth.
    Ties are broken by the symbols' sorted order, then by creation order, so the result is
    deterministic. A single symbol gets length 0 (nothing needs to be sent but the count).
    Symbols of frequency 0 get no code.
    """
    frequencies = _check_frequencies(frequencies)
    rank = _order_key(list(frequencies))
    # heap entries: (weight, tie-break, symbols in the subtree); merging deepens them all
    heap = [(f, rank[s], [s]) for s, f in frequencies.items()]
    heapq.heapify(heap)
    lengths = dict.fromkeys(frequencies, 0)
    counter = len(heap)
    while len(heap) > 1:
        f1, _, left = heapq.heappop(heap)
        f2, _, right = heapq.heappop(heap)
        for s in left:
            lengths[s] += 1
        for s in right:
            lengths[s] += 1
        heapq.heappush(heap, (f1 + f2, counter, left + right if len(left) >= len(right)
                              else right + left))  # fmt: skip
        counter += 1
    return lengths


def canonical_code(lengths: Mapping[Hashable, int]) -> dict[Hashable, str]:
    """The canonical prefix code with the given code word lengths (§ "Huffman coding").

    Sort symbols by (length, symbol); the first gets ``0…0``; each next code word is the
    previous one plus 1, shifted left by the increase in length. Any lengths satisfying
    Kraft's inequality Σ 2^−ℓ ≤ 1 give a prefix-free code; only the lengths need storing.
    """
    if not isinstance(lengths, Mapping) or not lengths:
        raise TypeError("lengths must be a non-empty mapping symbol -> code length")
    for s, n in lengths.items():
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"code lengths must be integers >= 0; {s!r} has {n!r}")
        if n > MAX_CODE_LENGTH:
            raise ValueError(f"code length {n} of {s!r} exceeds the {MAX_CODE_LENGTH} supported")
    if len(lengths) == 1:
        (s, n), = lengths.items()  # fmt: skip
        return {s: "0" * n}
    if min(lengths.values()) == 0:
        raise ValueError("a length-0 code word is possible only when there is one symbol")
    if sum(2.0 ** -int(n) for n in lengths.values()) > 1 + 1e-12:
        raise ValueError("the lengths violate Kraft's inequality Σ 2^-l <= 1: no prefix code")
    rank = _order_key(list(lengths))
    order = sorted(lengths, key=lambda s: (lengths[s], rank[s]))
    code, value, previous = {}, 0, int(lengths[order[0]])
    for i, s in enumerate(order):
        n = int(lengths[s])
        if i:
            value = (value + 1) << (n - previous)
        code[s] = format(value, f"0{n}b")
        previous = n
    return code


def huffman_code(frequencies: Mapping[Hashable, float]) -> dict[Hashable, str]:
    """An optimal prefix code for ``frequencies``: symbol → code word ("0"/"1" string).

    The lengths are those of Huffman's tree (`code_lengths`), the words the canonical ones
    with those lengths (`canonical_code`): same average length, and a stored table of one
    length per symbol. One symbol gets the empty word ""; symbols of frequency 0 no word.
    """
    return canonical_code(code_lengths(frequencies))


def expected_length(code: Mapping[Hashable, str], frequencies: Mapping[Hashable, float]) -> float:
    """Average code word length L = Σ p_i ℓ_i in bits per symbol."""
    frequencies = _check_frequencies(frequencies)
    missing = [s for s in frequencies if s not in code]
    if missing:
        raise ValueError(f"symbol {missing[0]!r} has no code word")
    total = sum(frequencies.values())
    return sum(f * len(code[s]) for s, f in frequencies.items()) / total


def is_prefix_free(code: Mapping[Hashable, str]) -> bool:
    """True if no code word is a prefix of another (then a bit stream decodes uniquely).

    In sorted order a word that is a prefix of others comes right before one of them, so
    checking neighbours suffices.
    """
    words = sorted(code.values())
    return all(not b.startswith(a) for a, b in zip(words, words[1:], strict=False))


def _check_code(code: object) -> dict[Hashable, str]:
    if not isinstance(code, Mapping) or not code:
        raise TypeError("code must be a non-empty mapping symbol -> code word string")
    for s, word in code.items():
        if not isinstance(word, str) or set(word) - {"0", "1"}:
            raise ValueError(f"code words must be strings of 0 and 1; {s!r} has {word!r}")
    if not is_prefix_free(code):
        raise ValueError("the code is not prefix-free: some code word is a prefix of another")
    if len(code) > 1 and any(not w for w in code.values()):
        raise ValueError("an empty code word is allowed only for a single-symbol code")
    return dict(code)


@dataclass(frozen=True)
class HuffmanEncoded:
    """A Huffman-coded stream: ``data`` holds ``n_bits`` bits (MSB first, zero-padded to a
    byte), which decode with the canonical ``code`` to ``n_symbols`` symbols."""

    data: bytes
    n_bits: int
    n_symbols: int
    code: dict

    @property
    def lengths(self) -> dict[Hashable, int]:
        """The code word length of each symbol, all a file needs to store to rebuild ``code``."""
        return {s: len(w) for s, w in self.code.items()}


class _Tables:
    """A canonical code as arrays: symbols in canonical order, lengths, code values."""

    def __init__(self, code: Mapping[Hashable, str]) -> None:
        code = _check_code(code)
        lengths = {s: len(w) for s, w in code.items()}
        if max(lengths.values()) > MAX_CODE_LENGTH:
            raise ValueError(f"code words longer than {MAX_CODE_LENGTH} bits are not supported")
        canonical = canonical_code(lengths)
        self.code = canonical
        self.symbols = list(canonical)  # canonical order
        self.lengths = np.array([len(canonical[s]) for s in self.symbols], dtype=np.int64)
        self.values = np.array([int(canonical[s] or "0", 2) for s in self.symbols], np.uint64)
        self.numeric = None
        try:
            array = np.asarray(self.symbols)
            if array.dtype.kind in "iuf" and array.ndim == 1:
                self.numeric = array
        except (ValueError, TypeError):
            pass

    def ids(self, symbols: object) -> np.ndarray:
        """Each symbol's position in the canonical order; an unknown symbol is an error."""
        array = _as_array(symbols)
        if array is not None and self.numeric is not None:
            order = np.argsort(self.numeric, kind="stable")
            keys = self.numeric[order]
            where = np.searchsorted(keys, array).clip(0, len(keys) - 1)
            found = keys[where] == array
            if not found.all():
                bad = array[~found][0].item()
                raise ValueError(f"symbol {bad!r} has no code word (the code covers "
                                 f"{len(keys)} symbols)")  # fmt: skip
            return order[where]
        index = {s: i for i, s in enumerate(self.symbols)}
        try:
            return np.fromiter((index[s] for s in symbols), dtype=np.int64)
        except KeyError as err:
            raise ValueError(f"symbol {err.args[0]!r} has no code word") from None


def huffman_encode(symbols: Iterable, code: Mapping[Hashable, str] | None = None) -> HuffmanEncoded:
    """Encode ``symbols`` (sequence, numpy array or tensor) into a `HuffmanEncoded`.

    Without ``code``, the Huffman code of the symbols' own frequencies is used. A given code
    must be prefix-free and contain every symbol; the stream is written with the canonical
    code of the same lengths (the same size; `huffman_code` already returns canonical codes).
    Vectorised: code word ℓ_i bits long starts at bit Σ_{j<i} ℓ_j (§ "Huffman coding").
    """
    if _as_array(symbols) is None and isinstance(symbols, Iterable):
        symbols = list(symbols)  # a generator is read twice below (count, then encode)
    if code is None:
        counts = _count(symbols)
        if not counts:
            raise ValueError("no symbols to encode and no code given")
        code = huffman_code(counts)
    tables = _Tables(code)
    ids = tables.ids(symbols)
    n = len(ids)
    lengths = tables.lengths[ids]  # (n,)
    total = int(lengths.sum())
    if total == 0:
        return HuffmanEncoded(b"", 0, n, tables.code)
    ends = np.cumsum(lengths)  # bit after each code word
    words = np.repeat(tables.values[ids], lengths)  # (total,): each bit's code word
    shifts = np.repeat(ends - 1, lengths) - np.arange(total)  # bit's place in its word
    bits = ((words >> shifts.astype(np.uint64)) & np.uint64(1)).astype(np.uint8)
    return HuffmanEncoded(np.packbits(bits).tobytes(), total, n, tables.code)


_TABLE_BITS = 20  # decode through a 2^L-entry table up to this longest code word
_BLOCK_LEVELS = 6  # pointer doubling up to jumps of 2^6 = 64 symbols


def _chain(jump: np.ndarray, n: int, total: int) -> np.ndarray:
    """Positions of the first ``n`` links of 0 → jump[0] → jump[jump[0]] → … .

    ``jump[p]`` is where the code word starting at bit p ends. Squaring the map
    (jump ← jump[jump]) ``_BLOCK_LEVELS`` times gives 64-symbol jumps; the starts of the
    64-symbol blocks are then followed one by one, and the symbols inside all blocks in
    parallel, 64 vectorised steps.
    """
    dtype = np.int32 if total < 2**31 else np.int64
    jump = np.append(jump, total).astype(dtype)  # the end maps to itself
    block = 1 << _BLOCK_LEVELS
    far = jump
    for _ in range(_BLOCK_LEVELS):
        far = far[far]
    n_blocks = -(-n // block)
    starts = np.zeros(n_blocks, dtype=dtype)
    position = 0
    for b in range(1, n_blocks):  # one step per 64 symbols
        position = far[position]
        starts[b] = position
    links = np.empty((n_blocks, block), dtype=dtype)  # (block, symbol within block)
    links[:, 0] = starts
    for r in range(1, block):
        links[:, r] = jump[links[:, r - 1]]
    links = links.ravel()[:n]
    if (links >= total).any():
        raise ValueError("corrupt stream: the bits end before the stated symbol count")
    return links


def _decode_ids(encoded: HuffmanEncoded, tables: _Tables) -> np.ndarray:
    """Canonical-order ids of the symbols in ``encoded`` (§ "Huffman coding")."""
    n, total = encoded.n_symbols, encoded.n_bits
    max_len = int(tables.lengths.max())
    if max_len == 0:
        if total:
            raise ValueError("corrupt stream: a one-symbol code carries no bits")
        return np.zeros(n, dtype=np.int64)
    if n == 0:
        if total:
            raise ValueError("corrupt stream: bits but no symbols")
        return np.zeros(0, dtype=np.int64)
    n_bytes = (total + 7) // 8
    if len(encoded.data) != n_bytes:
        raise ValueError(f"corrupt stream: {len(encoded.data)} bytes for {total} bits")
    buf = np.concatenate([np.frombuffer(encoded.data, np.uint8), np.zeros(8, np.uint8)])
    words = np.zeros(n_bytes, dtype=np.uint64)  # big-endian 64-bit word at each byte
    for j in range(8):
        words |= buf[j : j + n_bytes].astype(np.uint64) << np.uint64(56 - 8 * j)
    p = np.arange(total, dtype=np.int64)
    window = (words[p >> 3] << (p & 7).astype(np.uint64)) >> np.uint64(64 - max_len)
    # canonical tables: code words of length ℓ, left-justified to max_len bits, fill the
    # interval [first_ℓ, limit_ℓ); intervals increase with ℓ
    present = np.unique(tables.lengths)
    first_index = np.searchsorted(tables.lengths, present)  # canonical order sorts by length
    count = np.searchsorted(tables.lengths, present, side="right") - first_index
    first_value = tables.values[first_index]
    limit = (first_value + count.astype(np.uint64)) << (max_len - present).astype(np.uint64)
    if max_len <= _TABLE_BITS:  # a direct table: every window → the code word it starts with
        table = np.repeat(np.arange(len(tables.symbols)), 1 << (max_len - tables.lengths))
        table = np.append(table, len(tables.symbols))  # windows no code word matches
        symbol = table[window.astype(np.int64).clip(max=len(table) - 1)]
        valid = symbol < len(tables.symbols)
        length = np.append(tables.lengths, 1)[symbol]
    else:
        which = np.searchsorted(limit, window, side="right")  # length class at each bit
        valid = which < len(present)
        which = which.clip(0, len(present) - 1)
        length = present[which]
        symbol = first_index[which] + (
            (window >> (max_len - length).astype(np.uint64)) - first_value[which]
        ).astype(np.int64)
    start = _chain(np.minimum(p + length, total), n, total)
    last = start[-1]
    if not valid[start].all() or last + length[last] != total:
        raise ValueError("corrupt stream: the bits do not decode to the stated symbol count")
    ids = symbol[start]
    if (ids >= len(tables.symbols)).any():
        raise ValueError("corrupt stream: a bit pattern matches no code word")
    return ids


def huffman_decode(encoded: HuffmanEncoded, *, as_array: bool = False) -> list | np.ndarray:
    """The symbols of ``encoded``, exactly as encoded: ``huffman_decode(huffman_encode(s))``
    equals ``list(s)``. With ``as_array=True``, a numpy array (numeric symbols only)."""
    if not isinstance(encoded, HuffmanEncoded):
        raise TypeError(f"encoded must be a HuffmanEncoded, got {type(encoded).__name__}")
    for name in ("n_bits", "n_symbols"):
        value = getattr(encoded, name)
        check.integer(value, name, 0)
    tables = _Tables(encoded.code)
    ids = _decode_ids(encoded, tables)
    if tables.numeric is not None:
        out = tables.numeric[ids]
        return out if as_array else out.tolist()
    if as_array:
        raise TypeError("as_array=True needs numeric symbols")
    return [tables.symbols[i] for i in ids.tolist()]


# ---- sparse positions ----------------------------------------------------------------------


def _check_index_bits(index_bits: object) -> int:
    return check.bits(index_bits, 1, 16, "index_bits")


def relative_index_encode(values: object, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Store the non-zeros of a flat array as (gap, value) pairs (§ "Where the kept weights are").

    Entry i sits g_i = p_i − p_{i−1} positions after the previous one (p_{−1} = −1) and
    stores g_i − 1 in ``index_bits`` (d) bits, so gaps up to 2^d fit. A longer gap is
    bridged by filler entries of value 0, each 2^d further on (Deep Compression Fig. 2).
    Returns ``(gaps, entries)``: int64 stored gaps in [0, 2^d − 1] and the entries' values
    (0 for fillers), one per stored entry; with k centroids stored as 1 + index, the
    entries have k + 1 symbols.
    """
    b = _check_index_bits(index_bits)
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values
    array = np.asarray(array)
    if array.ndim != 1:
        raise ValueError(f"values must be 1-D (flatten the weight first), got shape {array.shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError("values contain NaN or inf")
    positions = np.flatnonzero(array)
    span = 2**b
    d = np.diff(positions, prepend=-1)  # ≥ 1
    fillers = (d - 1) // span  # fillers needed before each entry
    per_entry = fillers + 1
    real = np.cumsum(per_entry) - 1  # where each real entry lands among all entries
    gaps = np.full(int(per_entry.sum()), span - 1, dtype=np.int64)
    gaps[real] = d - fillers * span - 1
    entries = np.zeros(len(gaps), dtype=array.dtype)
    entries[real] = array[positions]
    return gaps, entries


def relative_index_decode(gaps: object, entries: object, length: int) -> np.ndarray:
    """The flat array of ``length`` that `relative_index_encode` stored: positions are
    p_i = Σ_{j≤i} (gap_j + 1) − 1; fillers write their value 0."""
    gaps, entries = np.asarray(gaps), np.asarray(entries)
    check.integer(length, "length", 0)
    if gaps.ndim != 1 or gaps.shape != entries.shape:
        raise ValueError("gaps and entries must be 1-D and of the same length")
    if len(gaps) and (gaps.dtype.kind not in "iu" or gaps.min() < 0):
        raise ValueError("gaps must be non-negative integers")
    positions = np.cumsum(gaps.astype(np.int64) + 1) - 1
    if len(positions) and positions[-1] >= length:
        raise ValueError(f"the gaps reach position {positions[-1]}, past length {length}")
    out = np.zeros(length, dtype=entries.dtype)
    out[positions] = entries
    return out


def to_csr(matrix: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compressed sparse rows of a 2-D array: (values, column indices, row pointers).

    Row r's non-zeros are ``values[ptr[r]:ptr[r+1]]`` at columns ``cols[ptr[r]:ptr[r+1]]``:
    2a + n + 1 numbers for a non-zeros in n rows (§ "Where the kept weights are").
    """
    array = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else matrix
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"CSR needs a 2-D matrix, got shape {array.shape}")
    rows, cols = np.nonzero(array)  # row-major order
    pointers = np.zeros(array.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=array.shape[0]), out=pointers[1:])
    return array[rows, cols], cols.astype(np.int64), pointers


def from_csr(
    values: object, columns: object, pointers: object, shape: tuple[int, int]
) -> np.ndarray:
    """The dense matrix of a CSR triple (inverse of `to_csr`)."""
    values, columns, pointers = np.asarray(values), np.asarray(columns), np.asarray(pointers)
    if not isinstance(shape, tuple | list) or len(shape) != 2:
        raise TypeError(f"shape must be a pair (rows, columns), got {shape!r}")
    for name, n in zip(("rows", "columns"), shape, strict=True):
        check.integer(n, f"shape's {name}", 0)
    for name, array in (("columns", columns), ("pointers", pointers)):
        if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
            raise TypeError(f"{name} must be a 1-D array of integers, got {array.dtype} "
                            f"{array.shape}")  # fmt: skip
    if len(shape) != 2 or len(pointers) != shape[0] + 1 or len(values) != len(columns):
        raise ValueError("inconsistent CSR arrays for the given shape")
    if len(columns) and (columns.min() < 0 or columns.max() >= shape[1]):
        raise ValueError(f"column indices must lie in [0, {shape[1]})")
    if pointers[0] != 0 or pointers[-1] != len(values) or (np.diff(pointers) < 0).any():
        raise ValueError("row pointers must rise from 0 to the number of values")
    out = np.zeros(shape, dtype=values.dtype)
    rows = np.repeat(np.arange(shape[0]), np.diff(pointers))
    flat = rows.astype(np.int64) * shape[1] + columns
    if len(np.unique(flat)) != len(flat):  # the dense write below would keep only the last
        raise ValueError("duplicate column index within a row: each entry must appear once")
    out[rows, columns] = values
    return out
