"""Quantization lab checkers: the reference passes; errata 1–3 and common slips are rejected
with messages that say what is wrong."""

from __future__ import annotations

import pytest
import torch

from minicompress.labs import LabCheckError
from minicompress.labs.quantization import check_calc_qparams, check_dequantize, check_quantize


def calc_ok(x, bits):
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = (hi - lo) / (2**bits - 1)
    zero_point = int(min(max(0 - round(lo / scale), 0), 2**bits - 1))
    return scale, zero_point


def quantize_ok(x, scale, zero_point, bits):
    return torch.clamp(
        torch.round(x * (1.0 / torch.tensor(scale))) + zero_point, 0, 2**bits - 1
    ).to(torch.uint8 if bits <= 8 else torch.int32)


def dequantize_ok(q, scale, zero_point):
    return (q.to(torch.int64) - zero_point).float() * scale


# ---- wrong versions -----------------------------------------------------------------------


def calc_two_to_the_b(x, bits):
    lo, hi = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = (hi - lo) / 2**bits
    return scale, int(round(-lo / scale))


def calc_seed_004(x, bits):  # erratum 3: (max|w| − min|w|) / 2^q
    return (x.abs().max().item() - x.abs().min().item()) / 2**bits, 0


def calc_float_zero_point(x, bits):
    scale, _ = calc_ok(x, bits)
    lo = min(x.min().item(), 0.0)
    return scale, -lo / scale + 0.37  # not an integer


def calc_without_zero_in_range(x, bits):
    lo, hi = x.min().item(), x.max().item()
    scale = (hi - lo) / (2**bits - 1)
    return scale, int(round(-lo / scale))


def quantize_round_only(x, scale, zero_point, bits):  # erratum 1
    return torch.round(x).to(torch.int64)


def quantize_round_255(x, scale, zero_point, bits):  # erratum 1, seed 001's code
    return (torch.round(x) * 255).to(torch.int64)


def quantize_seed_000(x, scale, zero_point, bits):  # erratum 2: floor(w · 2^b / max(w))
    return torch.floor(x * 2**bits / x.max()).to(torch.int64)


def quantize_floor(x, scale, zero_point, bits):
    return torch.clamp(torch.floor(x / scale) + zero_point, 0, 2**bits - 1).to(torch.int64)


def quantize_no_clamp_float(x, scale, zero_point, bits):
    return torch.round(x / scale) + zero_point


def dequantize_never_multiplies_back(q, scale, zero_point):  # erratum 3's code
    return q.float()


def dequantize_forgets_zero_point(q, scale, zero_point):
    return q.float() * scale


def not_written(*args):
    raise NotImplementedError()


def test_reference_versions_pass(capsys):
    check_calc_qparams(calc_ok)
    check_quantize(quantize_ok)
    check_dequantize(dequantize_ok)
    assert capsys.readouterr().out.count("✓") == 3


@pytest.mark.parametrize(
    ("checker", "wrong", "message"),
    [
        (check_calc_qparams, calc_two_to_the_b, "2\\^b − 1 = 255 steps"),
        (check_calc_qparams, calc_seed_004, "erratum 3"),
        (check_calc_qparams, calc_float_zero_point, "not an integer"),
        (check_calc_qparams, calc_without_zero_in_range, "include 0"),
        (check_calc_qparams, not_written, "not written yet"),
        (check_quantize, quantize_round_only, "erratum 1"),
        (check_quantize, quantize_round_255, "erratum 1"),
        (check_quantize, quantize_seed_000, "erratum 2"),
        (check_quantize, quantize_floor, "truncate"),
        (check_quantize, quantize_no_clamp_float, "integers"),
        (check_quantize, not_written, "not written yet"),
        (check_dequantize, dequantize_never_multiplies_back, "erratum 3"),
        (check_dequantize, dequantize_forgets_zero_point, "zero point"),
        (check_dequantize, not_written, "not written yet"),
    ],
)
def test_checkers_reject_wrong_versions_saying_why(checker, wrong, message):
    with pytest.raises(LabCheckError, match=message):
        checker(wrong)
