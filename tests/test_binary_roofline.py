"""minicompress.binary_roofline: bytes and words against a brute-force count of what a
packed binary product reads and computes, the two bounds, the word rates, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from minicompress.binarization import binarize, pack_bits
from minicompress.binary_roofline import (
    AVX512_VPOPCNTDQ,
    SCALAR_POPCNT,
    popcount_words_per_cycle,
    xnor_roofline,
)


def _brute_force(m: int, n: int, batch: int) -> tuple[int, int]:
    """Bytes of the packed operands as tensors, and the words a naive triple loop xors."""
    g = torch.Generator().manual_seed(m * 1000 + n)
    a = pack_bits(binarize(torch.randn(batch, n, generator=g)))
    b = pack_bits(binarize(torch.randn(m, n, generator=g)))
    nbytes = a.numel() * a.element_size() + b.numel() * b.element_size()
    words = 0
    for i in range(batch):
        for j in range(m):
            words += (a[i] ^ b[j]).numel()  # one xor, popcount and add per word pair
    return nbytes, words


@pytest.mark.parametrize(("m", "n", "batch"), [(1, 1, 1), (3, 64, 2), (5, 65, 1), (7, 200, 3)])
def test_bytes_and_words_match_a_brute_force_count(m, n, batch):
    r = xnor_roofline(m, n, batch, 1.0, 1.0, 1.0)
    assert (r.bytes_read, r.words) == _brute_force(m, n, batch)


def test_1024_layer_reads_128_kib_of_weights_and_16384_words_at_batch_1():
    r = xnor_roofline(1024, 1024, 1, 1.0, 1.0, 1.0)
    assert r.bytes_read == 128 * 1024 + 128
    assert r.words == 1024 * 16


def test_bounds_are_counts_over_rates_and_the_larger_wins():
    r = xnor_roofline(1024, 1024, 1, word_popcounts_per_cycle=8.0, bytes_per_cycle=32.0, ghz=2.0)
    assert r.memory_s == pytest.approx((128 * 1024 + 128) / (32 * 2e9))
    assert r.compute_s == pytest.approx(16384 / (8 * 2e9))
    assert r.seconds == max(r.memory_s, r.compute_s) and r.bound == "memory"
    slow = xnor_roofline(1024, 1024, 64, SCALAR_POPCNT, 32.0, 2.0)
    assert slow.bound == "compute" and slow.seconds == slow.compute_s
    assert slow.to_dict()["seconds"] == slow.seconds and slow.to_dict()["words"] == 64 * 16384


def test_word_rates_scalar_one_avx512_sixteen_thirds():
    assert SCALAR_POPCNT == 1.0
    assert AVX512_VPOPCNTDQ == pytest.approx(16 / 3)
    assert popcount_words_per_cycle(8, 1.0, 6.0) == 8.0  # popcount-limited once ALUs suffice
    assert math.isclose(popcount_words_per_cycle(1, 2.0, 3.0), 1.0)  # ALU-limited


def test_bad_input():
    with pytest.raises(ValueError, match="m must be an int >= 1"):
        xnor_roofline(0, 64, 1, 1.0, 1.0, 1.0)
    with pytest.raises(TypeError, match="n must be an int"):
        xnor_roofline(4, 64.0, 1, 1.0, 1.0, 1.0)
    with pytest.raises(TypeError, match="batch must be an int"):
        xnor_roofline(4, 64, True, 1.0, 1.0, 1.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ghz must be"):
            xnor_roofline(4, 64, 1, 1.0, 1.0, bad)
        with pytest.raises(ValueError, match="bytes_per_cycle must be"):
            xnor_roofline(4, 64, 1, 1.0, bad, 1.0)
        with pytest.raises(ValueError, match="word_popcounts_per_cycle must be"):
            xnor_roofline(4, 64, 1, bad, 1.0, 1.0)
    with pytest.raises(ValueError, match="lanes must be an int >= 1"):
        popcount_words_per_cycle(0, 1.0, 1.0)
    with pytest.raises(ValueError, match="alu_ops_per_cycle must be"):
        popcount_words_per_cycle(1, 1.0, 0.0)
