"""Binarization lab checkers: the reference passes; erratum 8 and common slips are rejected
with messages that say what is wrong."""

from __future__ import annotations

import pytest
import torch

from minicompress.labs import LabCheckError
from minicompress.labs.binarization import (
    check_binarize,
    check_popcount_dot,
    check_xnor_scale,
    pack_int,
)


def binarize_ok(w):
    return torch.where(w >= 0, 1.0, -1.0)


def xnor_scale_ok(w):
    return w.abs().mean()


def popcount_dot_ok(a, b, n):
    return 2 * (~(a ^ b) & ((1 << n) - 1)).bit_count() - n


def popcount_dot_xor_ok(a, b, n):  # the equivalent n − 2·popcount(a ⊕ b)
    return n - 2 * (a ^ b).bit_count()


# ---- wrong versions -----------------------------------------------------------------------


def binarize_seed_formula(w):  # erratum 8, as the seed writes it
    return torch.sign(w) * 2 ** (torch.sign(w) * torch.floor(torch.log2(w.abs())))


def binarize_seed_code(w):  # erratum 8, as the seed's code does it (round)
    return torch.sign(w) * 2 ** torch.round(torch.log2(torch.abs(w)))


def binarize_torch_sign(w):
    return torch.sign(w)


def binarize_bits(w):
    return w >= 0


def binarize_scaled(w):
    return torch.where(w >= 0, 1.0, -1.0) * w.abs().mean()


def binarize_flipped(w):
    return torch.where(w >= 0, -1.0, 1.0)


def binarize_wrong_shape(w):
    return torch.where(w >= 0, 1.0, -1.0).flatten()


def scale_max(w):
    return w.abs().max()


def scale_mean_signed(w):
    return w.mean()


def scale_sum(w):
    return w.abs().sum()


def scale_rms(w):
    return w.pow(2).mean().sqrt()


def scale_per_row(w):
    return w.abs().mean(dim=-1)


def dot_popcount_only(a, b, n):
    return (~(a ^ b) & ((1 << n) - 1)).bit_count()


def dot_forgets_minus_n(a, b, n):
    return 2 * (~(a ^ b) & ((1 << n) - 1)).bit_count()


def dot_xor_instead_of_xnor(a, b, n):
    return 2 * (a ^ b).bit_count() - n


def dot_unmasked(a, b, n):
    return 2 * (~(a ^ b)).bit_count() - n


def dot_masks_whole_words(a, b, n):
    words = -(-n // 64)
    return 2 * (~(a ^ b) & ((1 << (64 * words)) - 1)).bit_count() - n


def dot_float(a, b, n):
    return float(popcount_dot_ok(a, b, n))


# ---- the tests ----------------------------------------------------------------------------


def test_reference_solutions_pass(capsys):
    check_binarize(binarize_ok)
    check_xnor_scale(xnor_scale_ok)
    check_xnor_scale(lambda w: float(w.abs().mean()))
    check_popcount_dot(popcount_dot_ok)
    check_popcount_dot(popcount_dot_xor_ok)
    assert capsys.readouterr().out.count("✓") == 5


@pytest.mark.parametrize("seed", [1, 2])
def test_reference_solutions_pass_other_seeds(seed):
    check_binarize(binarize_ok, seed=seed)
    check_xnor_scale(xnor_scale_ok, seed=seed)
    check_popcount_dot(popcount_dot_ok, seed=seed)


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (binarize_seed_formula, r"erratum 8"),
        (binarize_seed_code, r"erratum 8"),
        (binarize_torch_sign, r"maps 0 to 0"),
        (binarize_bits, r"0/1 mask is the \*stored bit\*"),
        (binarize_scaled, r"multiplied by a scale"),
        (binarize_flipped, r"signs are flipped"),
        (binarize_wrong_shape, r"returned shape"),
    ],
)
def test_binarize_mistakes_are_rejected(fn, message):
    with pytest.raises(LabCheckError, match=message):
        check_binarize(fn)


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (scale_max, r"max\|w\| is the scale that avoids clipping"),
        (scale_mean_signed, r"positive and negative weights cancel"),
        (scale_sum, r"divide by the number of weights"),
        (scale_rms, r"root mean square"),
        (scale_per_row, r"must return one number"),
    ],
)
def test_xnor_scale_mistakes_are_rejected(fn, message):
    with pytest.raises(LabCheckError, match=message):
        check_xnor_scale(fn)


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (dot_popcount_only, r"x·y = 2·popcount − n"),
        (dot_forgets_minus_n, r"you forgot the − n"),
        (dot_xor_instead_of_xnor, r"sign is flipped"),
        (dot_unmasked, r"is negative"),
        (dot_masks_whole_words, r"counted the padding"),
        (dot_float, r"must return an int"),
    ],
)
def test_popcount_dot_mistakes_are_rejected(fn, message):
    with pytest.raises(LabCheckError, match=message):
        check_popcount_dot(fn)


def test_unwritten_function_says_so():
    def stub(*args):
        raise NotImplementedError()

    for check in (check_binarize, check_xnor_scale, check_popcount_dot):
        with pytest.raises(LabCheckError, match="not written yet"):
            check(stub)


def test_pack_int_orders_bits_like_pack_bits():
    from minicompress.binarization import pack_bits

    x = torch.tensor([1.0, -1.0, 1.0, 1.0])
    assert pack_int(x) == 0b1101 == pack_bits(x).item()
    with pytest.raises(ValueError, match="±1"):
        pack_int(torch.tensor([0.0, 1.0]))
