"""Checkers for the quantization lab: each tests a student's function against
`minicompress.quantization` on randomized inputs and raises `LabCheckError` saying what is
wrong, naming the source blog posts' mistakes (course errata 1–3) when it sees them.

The lab's functions use plain numbers rather than `QParams`, asymmetric 8-bit by default:

- ``calc_qparams(x, bits) -> (scale: float, zero_point: int)``
- ``quantize(x, scale, zero_point, bits) -> integer tensor``
- ``dequantize(q, scale, zero_point) -> float tensor``
- ``symmetric_scale(x, bits) -> float``: S = max|x| / (2^(b−1) − 1), Z = 0;
- ``per_channel_scales(w, bits) -> tensor``: one symmetric scale per output channel (row);
- ``quantize_multiplier(m) -> (m0, n)``: M = 2^−n · M0, m0 = round(M0 · 2^31) ∈ [2^30, 2^31);
- ``fake_quantize(x, scale, zero_point, bits) -> tensor``: S(q − Z) forward, the
  straight-through estimator backward.

Every checker also sends values outside the calibrated range, and fails a function that
modifies its inputs. With ``seed=grading_seed()`` the graders draw hidden cases.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minicompress import quantization as reference
from minicompress.labs import LabCheckError, _call, _unchanged

__all__ = [
    "check_calc_qparams",
    "check_dequantize",
    "check_fake_quantize",
    "check_per_channel_scales",
    "check_quantize",
    "check_quantize_multiplier",
    "check_symmetric_scale",
]


def _cases(seed: int) -> list[tuple[Tensor, int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(500, generator=g) * 0.1, 8),  # weights in (-1, 1), centred
        (torch.rand(300, generator=g) * 6.0, 8),  # non-negative, like activations
        (torch.randn(400, generator=g) * 2.0 - 3.0, 8),  # mostly negative
        (torch.randn(200, generator=g), 4),
    ]


def _beyond(x: Tensor, seed: int) -> Tensor:
    """``x`` and values up to 50 % beyond its range on both sides: inputs seen after
    calibration are not always inside the calibrated range."""
    g = torch.Generator().manual_seed(seed + 1)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    width = hi - lo
    outside = torch.cat([lo - torch.rand(20, generator=g) * width / 2,
                         hi + torch.rand(20, generator=g) * width / 2])  # fmt: skip
    return torch.cat([x, outside])


def _reference(x: Tensor, bits: int) -> reference.QParams:
    return reference.calc_qparams(x, bits=bits)


def _number(value: object, where: str, what: str) -> float:
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LabCheckError(f"{where}: {what} must be a number, got {type(value).__name__}.")
    return float(value)


def check_calc_qparams(fn: Callable[[Tensor, int], tuple], seed: int = 0) -> None:
    """Check ``fn(x, bits) -> (scale, zero_point)`` for asymmetric unsigned quantization."""
    for x, bits in _cases(seed):
        where = f"calc_qparams(x in [{x.min():.3f}, {x.max():.3f}], bits={bits})"
        original = x.clone()
        result = _call(fn, where, x, bits)
        _unchanged({"x": original}, {"x": x}, where)
        if not isinstance(result, tuple) or len(result) != 2:
            raise LabCheckError(f"{where} must return a tuple (scale, zero_point).")
        scale = _number(result[0], where, "the scale")
        zero_point = _number(result[1], where, "the zero point")
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


def _quantize_mistakes(x: Tensor, scale: float, zero_point: int, bits: int) -> list:
    """What the common wrong versions of quantize return, with what to tell the student."""
    qmax = 2**bits - 1
    dtype = torch.uint8 if bits <= 8 else torch.int32
    scaled = torch.round(x * (1.0 / scale))
    return [
        (torch.clamp(scaled, 0, qmax), "forgot the zero point: q = clamp(round(x / S) **+ Z**, "
         f"0, {qmax}); without + Z every negative value is clamped to 0"),
        ((scaled + zero_point).to(dtype).to(torch.int64), "converts to an integer type before "
         f"clamping: a value such as {qmax + 1} wraps around (uint8: 256 → 0, −1 → 255) "
         "instead of saturating. Clamp to [qmin, qmax] first, then convert"),
        (torch.clamp(scaled + zero_point, 0, qmax + 1).to(dtype).to(torch.int64),
         f"clamps to [0, 2^b] = [0, {qmax + 1}]: the largest b-bit integer is 2^b − 1 = {qmax}"),
        (torch.clamp(torch.floor(x / scale) + zero_point, 0, qmax), "truncates (floor) instead "
         "of rounding, which biases every value down by half a step on average; use "
         "torch.round (course erratum 2)"),
    ]  # fmt: skip


def check_quantize(fn: Callable[[Tensor, float, int, int], Tensor], seed: int = 0) -> None:
    """Check ``fn(x, scale, zero_point, bits) -> integer tensor``: clamp(round(x/S) + Z),
    including values outside the range the scale was calibrated on."""
    for calibration, bits in _cases(seed):
        qp = _reference(calibration, bits)
        x = _beyond(calibration, seed)
        scale, zero_point = float(qp.scale), int(qp.zero_point)
        where = f"quantize(x, scale={scale:.4g}, zero_point={zero_point}, bits={bits})"
        original = x.clone()
        q = _call(fn, where, x, scale, zero_point, bits)
        _unchanged({"x": original}, {"x": x}, where)
        if not isinstance(q, Tensor):
            raise LabCheckError(f"{where} must return a tensor, got {type(q).__name__}.")
        if q.is_floating_point() or q.dtype == torch.bool:
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
        if torch.equal(got, expected):
            continue
        if torch.equal(got, torch.round(x).to(torch.int64)) or torch.equal(
            got, (torch.round(x) * 255).to(torch.int64)
        ):
            raise LabCheckError(
                f"{where}: this is round(w) (perhaps times 255), with no scale: weights in "
                "(−1, 1) all become 0 or ±1. Divide by the scale first (course erratum 1)."
            )
        for value, hint in _quantize_mistakes(x, scale, zero_point, bits):
            if torch.equal(got, value.to(torch.int64)):
                raise LabCheckError(f"{where}: your quantize {hint}.")
        if int(got.min()) < 0 or int(got.max()) > 2**bits - 1:
            raise LabCheckError(
                f"{where}: values from {int(got.min())} to {int(got.max())} do not fit in "
                f"[0, {2**bits - 1}]; some inputs lie outside the calibrated range. Clamp to "
                "[qmin, qmax] (course erratum 2: floor(w·2^b/max w) reaches 2^b and goes "
                "negative)."
            )
        wrong = int((got != expected).sum())
        i = int((got != expected).nonzero()[0])
        raise LabCheckError(
            f"{where}: {wrong} of {x.numel()} values differ, e.g. x = {float(x[i]):.5f} gave "
            f"{int(got[i])}, expected clamp(round(x / S) + Z) = {int(expected[i])}."
        )
    print(f"✓ quantize passed {len(_cases(seed))} randomized checks (values beyond the range too)")


def check_dequantize(fn: Callable[[Tensor, float, int], Tensor], seed: int = 0) -> None:
    """Check ``fn(q, scale, zero_point) -> float tensor``: S(q − Z), with q given as uint8."""
    for x, bits in _cases(seed):
        qp = _reference(x, bits)
        q = reference.quantize(_beyond(x, seed), qp)  # uint8, from 0 to 2^b − 1
        scale, zero_point = float(qp.scale), int(qp.zero_point)
        where = f"dequantize(q: {q.dtype}, scale={scale:.4g}, zero_point={zero_point})"
        original = q.clone()
        r = _call(fn, where, q, scale, zero_point)
        _unchanged({"q": original}, {"q": q}, where)
        if not isinstance(r, Tensor) or not r.is_floating_point():
            raise LabCheckError(f"{where} must return a floating-point tensor.")
        expected = reference.dequantize(q, qp)
        if r.shape == expected.shape and torch.allclose(r.float(), expected, rtol=1e-5,
                                                        atol=1e-7):  # fmt: skip
            continue
        qf = q.to(torch.float32)
        wrapped = (q - zero_point).to(torch.float32) * scale  # uint8 arithmetic wraps mod 256
        if r.shape != expected.shape:
            raise LabCheckError(f"{where} returned shape {tuple(r.shape)}, expected "
                                f"{tuple(expected.shape)}.")  # fmt: skip
        if torch.allclose(r.float(), wrapped, rtol=1e-5, atol=1e-7):
            raise LabCheckError(
                f"{where}: q − Z computed in uint8 wraps around: 3 − {zero_point} gives "
                f"{(3 - zero_point) % 256}, not {3 - zero_point}. Convert q to a signed or float "
                "type first: S * (q.to(torch.int64) − Z) or S * (q.float() − Z)."
            )
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


def _scale_hint(got: float, x: Tensor, bits: int) -> str:
    """Name the mistake behind a wrong symmetric scale of ``x``, if it is a known one."""
    amax, half = float(x.abs().max()), 2 ** (bits - 1)
    known = [
        (amax / half, f"divides by 2^(b−1) = {half}: the largest signed b-bit integer is "
         f"2^(b−1) − 1 = {half - 1}, so max|x| would map to {half} and be clipped"),
        (amax / (2**bits - 1), f"divides by 2^b − 1 = {2**bits - 1}, the unsigned range: a "
         f"symmetric (signed) quantizer uses [−{half - 1}, {half - 1}]"),
        (amax / (half - 0.5), "divides by (qmax − qmin)/2 = 2^(b−1) − ½, PyTorch's symmetric "
         "observer, which clips max|x| by half a step; use 2^(b−1) − 1"),
        (float(x.max()) / (half - 1), "uses max(x), not max|x|: a negative weight larger in "
         "magnitude than every positive one would be clipped (course erratum 2)"),
        (float(x.max()) / 2**bits, "is max(w)/2^b, the seed posts' formula: it ignores negative "
         "values and divides by the wrong count (course erratum 2)"),
        ((amax - float(x.abs().min())) / 2**bits, "is (max|w| − min|w|)/2^b: that mixes up the "
         "range with the step (course erratum 3)"),
    ]  # fmt: skip
    for value, hint in known:
        if abs(got - value) <= 1e-6 * abs(value):
            return f" Your scale {hint}."
    return ""


def _symmetric_cases(seed: int) -> list[tuple[Tensor, int]]:
    g = torch.Generator().manual_seed(seed + 2)
    negative_heavy = torch.randn(300, generator=g) * 0.1
    negative_heavy[7] = -3 * float(negative_heavy.abs().max())  # max|x| is a negative value
    return [
        (torch.randn(500, generator=g) * 0.1, 8),
        (negative_heavy, 8),
        (torch.randn(64, 20, generator=g) * 0.5 + 0.2, 4),
        (torch.randn(50, generator=g), 3),
    ]


def check_symmetric_scale(fn: Callable[[Tensor, int], float], seed: int = 0) -> None:
    """Check ``fn(x, bits) -> S`` for symmetric signed quantization: S = max|x| / (2^(b−1) − 1)."""
    cases = _symmetric_cases(seed)
    for x, bits in cases:
        where = f"symmetric_scale(x with max|x| = {float(x.abs().max()):.4g}, bits={bits})"
        original = x.clone()
        got = _number(_call(fn, where, x, bits), where, "the scale")
        _unchanged({"x": original}, {"x": x}, where)
        expected = float(reference.calc_qparams(x, bits=bits, symmetric=True).scale)
        if abs(got - expected) > 1e-6 * expected:
            raise LabCheckError(
                f"{where} = {got:.6g}, expected max|x| / (2^(b−1) − 1) = {expected:.6g}."
                + _scale_hint(got, x, bits)
            )
    print(f"✓ symmetric_scale passed {len(cases)} randomized checks")


def check_per_channel_scales(fn: Callable[[Tensor, int], Tensor], seed: int = 0) -> None:
    """Check ``fn(w, bits) -> scales``: one symmetric scale per output channel (row of a
    Linear weight, axis 0), ``S_c = max_j |w_cj| / (2^(b−1) − 1)``."""
    g = torch.Generator().manual_seed(seed + 3)
    rows = torch.logspace(-2, 0, 12)[torch.randperm(12, generator=g)]
    cases = [(torch.randn(12, 30, generator=g) * rows[:, None], 8),
             (torch.randn(20, 10, generator=g) * 0.1, 4),
             (torch.randn(5, 40, generator=g) - 0.5, 8)]  # fmt: skip
    for w, bits in cases:
        where = f"per_channel_scales(w of shape {tuple(w.shape)}, bits={bits})"
        original = w.clone()
        scales = _call(fn, where, w, bits)
        _unchanged({"w": original}, {"w": w}, where)
        expected = reference.calc_qparams(w, bits=bits, symmetric=True, axis=0).scale
        if isinstance(scales, int | float) or (isinstance(scales, Tensor) and scales.numel() == 1):
            raise LabCheckError(
                f"{where} returned one number: that is a per-tensor scale. Compute one scale "
                f"per output channel, a tensor of {w.shape[0]} values (max over each row)."
            )
        if not isinstance(scales, Tensor) or not scales.is_floating_point():
            raise LabCheckError(f"{where} must return a float tensor of {w.shape[0]} scales.")
        scales = scales.reshape(-1) if scales.numel() == w.shape[0] else scales
        if scales.shape == (w.shape[1],):
            raise LabCheckError(
                f"{where} returned {w.shape[1]} scales, one per *column* (input): a Linear "
                f"weight's output channels are its rows, axis 0 ({w.shape[0]} scales)."
            )
        if scales.shape != expected.shape:
            raise LabCheckError(f"{where} returned shape {tuple(scales.shape)}, expected "
                                f"({w.shape[0]},), one scale per row.")  # fmt: skip
        if not torch.allclose(scales.float(), expected, rtol=1e-6):
            c = int((~torch.isclose(scales.float(), expected, rtol=1e-6)).nonzero()[0])
            raise LabCheckError(
                f"{where}: the scale of channel {c} is {float(scales[c]):.6g}, expected "
                f"max|w_c| / (2^(b−1) − 1) = {float(expected[c]):.6g}."
                + _scale_hint(float(scales[c]), w[c], bits)
            )
    print(f"✓ per_channel_scales passed {len(cases)} randomized checks")


def check_quantize_multiplier(fn: Callable[[float], tuple], seed: int = 0) -> None:
    """Check ``fn(m) -> (m0, n)``: M = 2^−n · M0 with M0 ∈ [0.5, 1) stored as the integer
    m0 = round(M0 · 2^31) ∈ [2^30, 2^31), so M ≈ m0 · 2^−(31 + n)."""
    g = torch.Generator().manual_seed(seed + 4)
    ms = [
        0.0027,
        0.5,
        0.75,
        3.0e-5,
        *(torch.rand(5, generator=g, dtype=torch.float64) ** 4).tolist(),
        1 - 2**-40,
    ]
    for m in ms:
        where = f"quantize_multiplier({m!r})"
        result = _call(fn, where, m)
        if not isinstance(result, tuple) or len(result) != 2:
            raise LabCheckError(f"{where} must return a tuple (m0, n) of two ints.")
        m0, n = result
        if isinstance(m0, Tensor) and m0.numel() == 1:
            m0 = m0.item()
        if isinstance(m0, float) and 0.5 <= m0 < 1:
            raise LabCheckError(
                f"{where}: m0 = {m0} is M0 as a real number; integer-only inference stores it "
                "as the 31-bit fixed-point integer m0 = round(M0 · 2^31)."
            )
        if not isinstance(m0, int) or not isinstance(n, int) or isinstance(m0 | n, bool):
            raise LabCheckError(f"{where} must return two Python ints, got "
                                f"({type(m0).__name__}, {type(n).__name__}).")  # fmt: skip
        want_m0, want_n = reference.quantize_multiplier(m)
        if (m0, n) == (want_m0, want_n):
            continue
        if (m0, n) == (want_m0, -want_n):
            hint = " The sign of n is flipped: M = 2^−n · M0, so for M < 1, n is positive."
        elif m0 == 2**31:
            hint = (" m0 = 2^31 does not fit in an int32: when M0 · 2^31 rounds up to 2^31, "
                    "halve it and decrease n by one.")  # fmt: skip
        elif not 2**30 <= m0 < 2**31:
            hint = (
                f" m0 = {m0} is outside [2^30, 2^31): normalise first, M0 = M · 2^n ∈ "
                "[0.5, 1) (math.frexp does it), so that m0 keeps 31 significant bits."
            )
        elif (n == want_n and abs(m0 - want_m0) == 1) or (m0, n) == (2**31 - 1, want_n - 1):
            hint = " Round M0 · 2^31 to the nearest integer; int() truncates."
        else:
            hint = ""
        raise LabCheckError(f"{where} = ({m0}, {n}), expected ({want_m0}, {want_n}): "
                            f"M = m0 · 2^−(31 + n).{hint}")  # fmt: skip
    print(f"✓ quantize_multiplier passed {len(ms)} checks")


def check_fake_quantize(fn: Callable[[Tensor, float, int, int], Tensor], seed: int = 0) -> None:
    """Check ``fn(x, scale, zero_point, bits)``: forward S(clamp(round(x/S) + Z) − Z); backward
    the straight-through estimator (gradient 1 inside the range, 0 where clamped)."""
    for calibration, bits in _cases(seed):
        qp = _reference(calibration, bits)
        x = _beyond(calibration, seed)
        scale, zero_point = float(qp.scale), int(qp.zero_point)
        where = f"fake_quantize(x, scale={scale:.4g}, zero_point={zero_point}, bits={bits})"
        leaf = x.clone().requires_grad_()
        out = _call(fn, where, leaf, scale, zero_point, bits)
        if not isinstance(out, Tensor) or not out.is_floating_point() or out.shape != x.shape:
            raise LabCheckError(f"{where} must return a float tensor of x's shape.")
        expected = reference.fake_quantize(x, qp)
        if not torch.allclose(out.detach(), expected, rtol=1e-5, atol=1e-6):
            if torch.allclose(out.detach(), torch.round(x)):
                raise LabCheckError(
                    f"{where}: this is round(x), with no scale (course erratum 1): divide by "
                    "S, round, clamp, and multiply back."
                )
            raise LabCheckError(
                f"{where}: the forward values differ from S(clamp(round(x/S) + Z, 0, "
                f"{2**bits - 1}) − Z) by up to {float((out.detach() - expected).abs().max()):.4g}."
            )
        if not out.requires_grad:
            raise LabCheckError(
                f"{where}: no gradient reaches x (the output is detached from it): training "
                "through the quantizer needs the straight-through estimator, e.g. "
                "x + (x_hat − x).detach()."
            )
        (grad,) = torch.autograd.grad(out.sum(), leaf, allow_unused=True)
        grad = torch.zeros_like(x) if grad is None else grad
        ref_leaf = x.clone().requires_grad_()
        (want,) = torch.autograd.grad(reference.fake_quantize(ref_leaf, qp).sum(), ref_leaf)
        if torch.equal(grad, want):
            continue
        if not grad.any():
            raise LabCheckError(
                f"{where}: the gradient is 0 everywhere: round() has derivative 0, so without "
                "the straight-through estimator nothing trains. Pass the gradient through: "
                "x + (x_hat − x).detach()."
            )
        if torch.equal(grad, torch.ones_like(x)):
            raise LabCheckError(
                f"{where}: the gradient is 1 everywhere, also for the inputs that were clamped. "
                "The straight-through estimator passes the gradient only inside the range "
                "(where clamp did nothing) and gives 0 where a value was clipped."
            )
        raise LabCheckError(f"{where}: the gradient differs from the straight-through "
                            "estimator's (1 inside the range, 0 where clamped).")  # fmt: skip
    print(f"✓ fake_quantize passed {len(_cases(seed))} randomized checks (value and gradient)")
