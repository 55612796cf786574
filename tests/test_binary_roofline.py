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


def test_has_avx512_vpopcntdq_reads_the_cpu_flags(monkeypatch):
    from minicompress import binary_roofline, measure

    monkeypatch.setattr(measure, "_cpu", lambda: ("x", {"avx2", "avx512_vpopcntdq"}))
    assert binary_roofline.has_avx512_vpopcntdq() is True
    assert binary_roofline.word_rate() == AVX512_VPOPCNTDQ
    monkeypatch.setattr(measure, "_cpu", lambda: ("x", set()))  # macOS: no /proc/cpuinfo
    assert binary_roofline.has_avx512_vpopcntdq() is False
    assert binary_roofline.word_rate() == SCALAR_POPCNT


def test_measured_rates_are_in_sane_ranges():
    pytest.importorskip("numba")
    from minicompress.binary_roofline import MachineRates, measure_rates

    rates = measure_rates()
    assert isinstance(rates, MachineRates)
    assert sorted(vars(rates)) == ["ghz", "l2_copy_gb_s", "l2_read_gb_s"]
    assert all(isinstance(v, float) and math.isfinite(v) for v in vars(rates).values())
    assert 0.3 < rates.ghz < 8  # any CPU core since 2005; a loaded one still ticks
    assert 1 < rates.l2_read_gb_s < 5000 and 0.5 < rates.l2_copy_gb_s < 5000
    assert rates.bytes_per_cycle == pytest.approx(rates.l2_read_gb_s / rates.ghz)
    assert 0.3 < rates.bytes_per_cycle < 1000  # a few to a few hundred bytes per cycle


def test_kernel_us_times_every_kernel_and_none_beats_the_memory_bound():
    numba = pytest.importorskip("numba")
    from minicompress.binary_roofline import kernel_us, measure_rates, word_rate

    g = torch.Generator().manual_seed(0)
    a = pack_bits(binarize(torch.randn(1, 1024, generator=g)))
    b = pack_bits(binarize(torch.randn(1024, 1024, generator=g)))
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        times = {
            name: kernel_us(name, a, w, 1024, reps=5, repeats=30)
            for name, w in (("numba", b), ("blocked", b), ("word_major", b.T.contiguous()))
        }
    finally:
        numba.set_num_threads(threads)
    rates = measure_rates()
    limit = xnor_roofline(1024, 1024, 1, word_rate(), rates.bytes_per_cycle, rates.ghz)
    assert all(0 < t < 1e4 for t in times.values())
    # the memory bound is measured and binds every kernel, up to the rates' noise (the
    # compute bound rests on an assumed word rate, which a CPU may exceed)
    assert min(times.values()) > 0.8 * 1e6 * limit.memory_s


def test_kernel_us_bad_input():
    pytest.importorskip("numba")
    from minicompress.binary_roofline import kernel_us

    a = pack_bits(binarize(torch.ones(1, 64)))
    with pytest.raises(ValueError, match="name must be one of"):
        kernel_us("fast", a, a, 64)
    with pytest.raises(ValueError, match="reps must be an int >= 1"):
        kernel_us("numba", a, a, 64, reps=0)
    with pytest.raises(ValueError):  # the public function's own checks
        kernel_us("numba", a, pack_bits(binarize(torch.ones(1, 128))), 64)
