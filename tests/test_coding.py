"""minicompress.coding: Huffman codes prefix-free and optimal (against an independent heapq
construction), H ≤ L < H + 1, exact round trips; relative indices with fillers; CSR against
scipy.sparse."""

from __future__ import annotations

import heapq
import math
from collections import Counter

import numpy as np
import pytest
import scipy.sparse
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.coding import (
    HuffmanEncoded,
    canonical_code,
    entropy,
    expected_length,
    from_csr,
    huffman_code,
    huffman_decode,
    huffman_encode,
    is_prefix_free,
    relative_index_decode,
    relative_index_encode,
    to_csr,
)


def reference_cost(frequencies: dict) -> float:
    """Σ f·ℓ of an optimal code, by the textbook identity: the sum of all merged weights."""
    heap = list(frequencies.values())
    heapq.heapify(heap)
    cost = 0.0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


frequency_maps = st.dictionaries(
    st.integers(0, 300), st.integers(1, 10_000), min_size=1, max_size=60
)


@settings(max_examples=150, deadline=None)
@given(frequencies=frequency_maps)
def test_code_is_prefix_free_optimal_and_within_one_bit_of_entropy(frequencies):
    code = huffman_code(frequencies)
    assert set(code) == set(frequencies)
    assert is_prefix_free(code)
    total = sum(frequencies.values())
    length = expected_length(code, frequencies)
    assert math.isclose(length * total, reference_cost(frequencies), rel_tol=1e-12)
    h = entropy(frequencies)
    assert h - 1e-9 <= length
    if len(frequencies) > 1:
        assert length < h + 1
        assert sum(2.0 ** -len(w) for w in code.values()) == pytest.approx(1.0)  # complete


def test_prefix_free_checker_catches_a_prefix():
    assert not is_prefix_free({"a": "0", "b": "01", "c": "11"})
    assert is_prefix_free({"a": "0", "b": "10", "c": "11"})


def test_canonical_code_depends_only_on_lengths_and_is_deterministic():
    code = canonical_code({"a": 2, "b": 1, "c": 3, "d": 3})
    assert code == {"b": "0", "a": "10", "c": "110", "d": "111"}
    assert huffman_code({1: 5, 2: 5, 3: 5, 4: 5}) == {1: "00", 2: "01", 3: "10", 4: "11"}


def test_single_symbol_costs_no_bits_and_round_trips():
    assert huffman_code({"x": 7}) == {"x": ""}
    encoded = huffman_encode(["x"] * 5)
    assert encoded.n_bits == 0 and huffman_decode(encoded) == ["x"] * 5
    assert entropy(["x"] * 5) == 0.0


def test_entropy_of_known_distributions():
    assert entropy({0: 1, 1: 1}) == pytest.approx(1.0)
    assert entropy({i: 1 for i in range(8)}) == pytest.approx(3.0)
    assert entropy([0, 0, 0, 1]) == pytest.approx(
        -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    )
    assert entropy(torch.tensor([3, 3, 4, 4])) == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(symbols=st.lists(st.integers(-5, 40), min_size=0, max_size=500))
def test_round_trip_is_exact(symbols):
    if not symbols:
        code = {0: "0", 1: "1"}
        assert huffman_decode(huffman_encode(symbols, code)) == []
        return
    encoded = huffman_encode(symbols)
    assert huffman_decode(encoded) == symbols
    counts = Counter(symbols)
    assert encoded.n_bits == sum(counts[s] * len(w) for s, w in encoded.code.items())
    assert len(encoded.data) == (encoded.n_bits + 7) // 8


@settings(max_examples=15, deadline=None)
@given(text=st.text(alphabet="abcdefgh é✓", min_size=1, max_size=200))
def test_round_trip_of_general_symbols(text):
    assert "".join(huffman_decode(huffman_encode(list(text)))) == text


def test_round_trip_of_a_long_skewed_stream_with_long_code_words():
    rng = np.random.default_rng(0)
    # Fibonacci frequencies force code words longer than the 20-bit direct table
    fib = [1, 1]
    while len(fib) < 26:
        fib.append(fib[-1] + fib[-2])
    frequencies = dict(enumerate(fib))
    code = huffman_code(frequencies)
    assert max(len(w) for w in code.values()) > 20
    symbols = rng.integers(0, 26, size=20_000)
    assert huffman_decode(huffman_encode(symbols, code)) == symbols.tolist()
    skewed = rng.geometric(0.2, size=200_000)
    assert huffman_decode(huffman_encode(skewed), as_array=True).tolist() == skewed.tolist()


def test_bits_match_the_code_words_in_order():
    code = {"a": "0", "b": "10", "c": "11"}
    encoded = huffman_encode(list("abcab"), code)
    assert encoded.n_bits == 8 and encoded.data == bytes([0b01011010])


def test_missing_symbol_is_a_clear_error():
    with pytest.raises(ValueError, match="symbol 7 has no code word"):
        huffman_encode([1, 2, 7], {1: "0", 2: "1"})
    with pytest.raises(ValueError, match="'z' has no code word"):
        huffman_encode(["a", "z"], {"a": "0", "b": "1"})


def test_corrupt_stream_is_refused():
    encoded = huffman_encode([0, 1, 2, 3, 0, 0, 0, 1] * 10)
    short = HuffmanEncoded(encoded.data, encoded.n_bits, encoded.n_symbols + 5, encoded.code)
    with pytest.raises(ValueError, match="corrupt"):
        huffman_decode(short)


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_relative_index_round_trip_with_fillers(bits):
    rng = np.random.default_rng(bits)
    dense = np.where(rng.random(5000) < 0.02, rng.integers(1, 9, 5000), 0)
    dense[4000:4900] = 0  # a gap longer than any index width
    gaps, entries = relative_index_encode(dense, bits)
    assert gaps.min() >= 0 and gaps.max() <= 2**bits - 1
    fillers = int((entries == 0).sum())
    expected = sum((d - 1) // 2**bits for d in np.diff(np.flatnonzero(dense), prepend=-1))
    assert fillers == expected and fillers > 0
    assert np.array_equal(relative_index_decode(gaps, entries, len(dense)), dense)


def test_relative_index_matches_the_paper_figure():
    # Deep Compression Fig. 2 style, 3 bits: a gap of 8 fits, a gap of 9 needs one filler
    dense = np.zeros(20, dtype=int)
    dense[[7, 16]] = [5, 6]  # gaps 8 and 9
    gaps, entries = relative_index_encode(dense, 3)
    assert gaps.tolist() == [7, 7, 0] and entries.tolist() == [5, 0, 6]


@pytest.mark.parametrize("seed", range(3))
def test_csr_equals_scipy(seed):
    rng = np.random.default_rng(seed)
    matrix = np.where(rng.random((30, 40)) < 0.1, rng.standard_normal((30, 40)), 0.0)
    values, columns, pointers = to_csr(matrix)
    reference = scipy.sparse.csr_matrix(matrix)
    assert np.array_equal(values, reference.data)
    assert np.array_equal(columns, reference.indices)
    assert np.array_equal(pointers, reference.indptr)
    assert np.array_equal(from_csr(values, columns, pointers, matrix.shape), matrix)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: huffman_code({}), ValueError, "nothing to code"),
        (lambda: huffman_code({"a": -1}), ValueError, ">= 0"),
        (lambda: huffman_code({"a": math.nan}), ValueError, "finite"),
        (lambda: huffman_code([1, 2]), TypeError, "mapping"),
        (lambda: huffman_encode([1, 2], {1: "0", 2: "01"}), ValueError, "prefix-free"),
        (lambda: huffman_encode([1], {1: "0a"}), ValueError, "0 and 1"),
        (lambda: huffman_encode([]), ValueError, "no symbols"),
        (lambda: huffman_decode(b"\x00"), TypeError, "HuffmanEncoded"),
        (lambda: canonical_code({"a": 1, "b": 1, "c": 1}), ValueError, "Kraft"),
        (lambda: entropy([]), ValueError, "no symbols"),
        (lambda: entropy(np.array([1.0, np.nan])), ValueError, "NaN"),
        (lambda: relative_index_encode(np.ones(4), 0), ValueError, "1..16"),
        (lambda: relative_index_encode(np.ones(4), 17), ValueError, "1..16"),
        (lambda: relative_index_encode(np.ones((2, 2)), 3), ValueError, "1-D"),
        (lambda: relative_index_decode([3], [1], 2), ValueError, "past length"),
        (lambda: to_csr(np.ones(3)), ValueError, "2-D"),
    ],
)  # fmt: skip
def test_bad_input_is_rejected_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()
