"""Checkers for the quantization lab: each tests a student's function against
`minicompress.quantization` on randomized inputs and raises `LabCheckError` saying what is
wrong, naming the source blog posts' mistakes (course errata 1–3) when it sees them.

The lab's functions use plain numbers rather than `QParams`, asymmetric 8-bit by default:

- ``calc_qparams(x, bits) -> (scale: float, zero_point: int)``
- ``quantize(x, scale, zero_point, bits) -> integer tensor``
- ``dequantize(q, scale, zero_point) -> float tensor``
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minicompress import quantization as reference
from minicompress.labs import LabCheckError, _call

__all__ = ["check_calc_qparams", "check_dequantize", "check_quantize"]


def _cases(seed: int) -> list[tuple[Tensor, int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(500, generator=g) * 0.1, 8),  # weights in (-1, 1), centred
        (torch.rand(300, generator=g) * 6.0, 8),  # non-negative, like activations
        (torch.randn(400, generator=g) * 2.0 - 3.0, 8),  # mostly negative
        (torch.randn(200, generator=g), 4),
    ]


def _reference(x: Tensor, bits: int) -> reference.QParams:
    return reference.calc_qparams(x, bits=bits)


def check_calc_qparams(fn: Callable[[Tensor, int], tuple], seed: int = 0) -> None:
    """Check ``fn(x, bits) -> (scale, zero_point)`` for asymmetric unsigned quantization."""
    for x, bits in _cases(seed):
        where = f"calc_qparams(x in [{x.min():.3f}, {x.max():.3f}], bits={bits})"
        result = _call(fn, where, x.clone(), bits)
        if not isinstance(result, tuple) or len(result) != 2:
            raise LabCheckError(f"{where} must return a tuple (scale, zero_point).")
        scale, zero_point = (float(v) for v in result)
        qp = _reference(x, bits)
        levels = 2**bits - 1
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        if scale <= 0:
            raise LabCheckError(f"{where}: the scale must be positive, got {scale}.")
        if zero_point != round(zero_point):
            raise LabCheckError(
                f"{where}: the zero point {zero_point} is not an integer. Z must be an integer "
                "so that the real value 0 is represented exactly (padding, ReLU outputs)."
            )
        if abs(scale - float(qp.scale)) > 1e-6 * float(qp.scale):
            hint = ""
            if abs(scale - (hi - lo) / 2**bits) < 1e-9 + 1e-6 * scale:
                hint = f" Divide the range by qmax − qmin = 2^b − 1 = {levels} steps, not 2^b."
            elif abs(scale - (float(x.abs().max()) - float(x.abs().min())) / 2**bits) < 1e-6:
                hint = (" (max|w| − min|w|)/2^b ignores the sign of the weights and mixes up the "
                        "range with the step (course erratum 3).")  # fmt: skip
            elif abs(scale - float(x.max()) / 2**bits) < 1e-6 * abs(scale) + 1e-12:
                hint = " max(w) is not the range: negative values need room too (course erratum 2)."
            elif abs(scale - (float(x.max()) - float(x.min())) / levels) < 1e-6 * scale:
                hint = " Extend [min, max] to include 0 first, so that 0 is representable."
            raise LabCheckError(
                f"{where}: scale {scale:.6g}, expected (max − min)/(2^b − 1) = "
                f"{float(qp.scale):.6g} with the range extended to contain 0.{hint}"
            )
        if int(zero_point) != int(qp.zero_point):
            raise LabCheckError(
                f"{where}: zero point {int(zero_point)}, expected Z = qmin − round(min / S) = "
                f"{int(qp.zero_point)} (clamped to [0, {levels}])."
            )
    print(f"✓ calc_qparams passed {len(_cases(seed))} randomized checks")


def check_quantize(fn: Callable[[Tensor, float, int, int], Tensor], seed: int = 0) -> None:
    """Check ``fn(x, scale, zero_point, bits) -> integer tensor``: clamp(round(x/S) + Z)."""
    for x, bits in _cases(seed):
        qp = _reference(x, bits)
        scale, zero_point = float(qp.scale), int(qp.zero_point)
        where = f"quantize(x, scale={scale:.4g}, zero_point={zero_point}, bits={bits})"
        q = _call(fn, where, x.clone(), scale, zero_point, bits)
        if not isinstance(q, Tensor):
            raise LabCheckError(f"{where} must return a tensor, got {type(q).__name__}.")
        if q.is_floating_point():
            raise LabCheckError(
                f"{where} returned a {q.dtype} tensor. Quantized values are integers: convert "
                "with .to(torch.uint8) (or another integer dtype) after rounding and clamping."
            )
        if q.shape != x.shape:
            raise LabCheckError(
                f"{where} returned shape {tuple(q.shape)}, expected {tuple(x.shape)}."
            )
        expected = reference.quantize(x, qp).to(torch.int64)
        got = q.to(torch.int64)
        if torch.equal(got, torch.round(x).to(torch.int64)) or torch.equal(
            got, (torch.round(x) * 255).to(torch.int64)
        ):
            raise LabCheckError(
                f"{where}: this is round(w) (perhaps times 255), with no scale: weights in "
                "(−1, 1) all become 0 or ±1. Divide by the scale first (course erratum 1)."
            )
        if int(got.min()) < 0 or int(got.max()) > 2**bits - 1:
            raise LabCheckError(
                f"{where}: values from {int(got.min())} to {int(got.max())} do not fit in "
                f"[0, {2**bits - 1}]. Clamp to [qmin, qmax] (course erratum 2: floor(w·2^b/max w) "
                "reaches 2^b and goes negative)."
            )
        floor = torch.clamp(torch.floor(x / scale) + zero_point, 0, 2**bits - 1).to(torch.int64)
        if not torch.equal(got, expected) and torch.equal(got, floor):
            raise LabCheckError(
                f"{where}: you truncate (floor) instead of rounding, which biases every value "
                "down by half a step on average; use torch.round (course erratum 2)."
            )
        wrong = int((got != expected).sum())
        if wrong:
            i = int((got != expected).nonzero()[0])
            raise LabCheckError(
                f"{where}: {wrong} of {x.numel()} values differ, e.g. x = {float(x[i]):.5f} gave "
                f"{int(got[i])}, expected clamp(round(x / S) + Z) = {int(expected[i])}."
            )
    print(f"✓ quantize passed {len(_cases(seed))} randomized checks")


def check_dequantize(fn: Callable[[Tensor, float, int], Tensor], seed: int = 0) -> None:
    """Check ``fn(q, scale, zero_point) -> float tensor``: S(q − Z)."""
    for x, bits in _cases(seed):
        qp = _reference(x, bits)
        q = reference.quantize(x, qp)
        scale, zero_point = float(qp.scale), int(qp.zero_point)
        where = f"dequantize(q, scale={scale:.4g}, zero_point={zero_point})"
        r = _call(fn, where, q.clone(), scale, zero_point)
        if not isinstance(r, Tensor) or not r.is_floating_point():
            raise LabCheckError(f"{where} must return a floating-point tensor.")
        expected = reference.dequantize(q, qp)
        if torch.allclose(r.float(), expected, rtol=1e-5, atol=1e-7):
            continue
        qf = q.to(torch.float32)
        if torch.allclose(r.float(), qf, atol=1e-6) or torch.allclose(
            r.float(), qf - zero_point, atol=1e-6
        ):
            raise LabCheckError(
                f"{where} returned the integers themselves: the layer's outputs would be off by "
                f"the scale. Multiply back: r = S(q − Z) (course erratum 3)."
            )
        if torch.allclose(r.float(), scale * qf, rtol=1e-5):
            raise LabCheckError(f"{where}: subtract the zero point before scaling: r = S(q − Z).")
        raise LabCheckError(f"{where}: values differ from S(q − Z) by up to "
                            f"{float((r.float() - expected).abs().max()):.4g}.")  # fmt: skip
    print(f"✓ dequantize passed {len(_cases(seed))} randomized checks")
