"""Checkers for the binarization lab: each tests a student's function against
`minicompress.binarization` on randomized inputs and raises `LabCheckError` saying what is
wrong, naming the source blog posts' mistake (course erratum 8) when it sees it.

The lab's functions:

- ``binarize(w) -> tensor``: sign(w) ∈ {−1, +1}, same shape and float dtype, sign(0) = +1;
- ``xnor_scale(w) -> float``: the optimal scale α* = mean|w| of W ≈ α·sign(W), per tensor;
- ``popcount_dot(a, b, n) -> int``: the dot product of two ±1 vectors of length n given as
  Python ints of bits (bit i is 1 where element i is +1; `pack_int`), through
  x·y = 2·popcount(xnor(a, b)) − n. Python's ``~`` gives a negative int, so the xnor must
  be masked to the n bits in use: ``~(a ^ b) & ((1 << n) − 1)``; ``int.bit_count()`` is
  the popcount.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from minicompress import binarization as reference
from minicompress.labs import LabCheckError, _call, _unchanged

__all__ = ["check_binarize", "check_popcount_dot", "check_xnor_scale", "pack_int"]


def pack_int(x: Tensor) -> int:
    """A 1-d ±1 tensor as one Python int: bit i is 1 where x_i = +1 (`pack_bits`' order)."""
    if not isinstance(x, Tensor) or x.ndim != 1 or not ((x == 1) | (x == -1)).all():
        raise ValueError("pack_int takes a 1-d tensor of ±1 values")
    return sum(1 << i for i, v in enumerate(x.tolist()) if v > 0)


def _weights(seed: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    with_zeros = torch.randn(200, generator=g) * 0.05
    with_zeros[::7] = 0.0  # exact zeros: sign(0) must still give a bit
    return [
        with_zeros,
        torch.randn(64, 30, generator=g) * 0.1 + 0.03,  # a layer's weight, mean not 0
        torch.rand(300, generator=g) * 0.2 - 0.15,  # mostly negative
        torch.randn(100, generator=g) * 3.0,  # large, some |w| > 1
    ]


def _seed_formulas(w: Tensor) -> list[Tensor]:
    """Erratum 8: the seed's formula (inner sign, floor), its code (round, no inner sign), and
    the formula with round."""
    s = torch.sign(w)
    log = torch.log2(w.abs())
    return [
        s * 2 ** (s * torch.floor(log)),
        s * 2 ** torch.round(log),
        s * 2 ** (s * torch.round(log)),
    ]


def check_binarize(fn: Callable[[Tensor], Tensor], seed: int = 0) -> None:
    """Check ``fn(w) -> tensor``: sign(w) with sign(0) = +1, as floats of w's shape."""
    for w in _weights(seed):
        where = f"binarize(w of shape {tuple(w.shape)})"
        original = w.clone()
        b = _call(fn, where, w)
        _unchanged({"w": original}, {"w": w}, where)
        if not isinstance(b, Tensor):
            raise LabCheckError(f"{where} must return a tensor, got {type(b).__name__}.")
        if b.shape != w.shape:
            raise LabCheckError(f"{where} returned shape {tuple(b.shape)}, expected "
                                f"{tuple(w.shape)}.")  # fmt: skip
        if not b.is_floating_point():
            hint = ""
            if b.dtype == torch.bool or set(b.unique().tolist()) <= {0, 1}:
                hint = " A 0/1 mask is the *stored bit*; the binary weight is 2·bit − 1 ∈ {−1, +1}."
            raise LabCheckError(
                f"{where} returned a {b.dtype} tensor; return ±1 as floats (the layer multiplies "
                f"them with float inputs), e.g. with torch.where(w >= 0, 1.0, -1.0).{hint}"
            )
        expected = reference.binarize(w)
        if torch.equal(b.to(expected.dtype), expected):
            continue
        nonzero = w != 0
        for seed_b in _seed_formulas(w):
            if torch.allclose(b[nonzero].float(), seed_b[nonzero].float()):
                raise LabCheckError(
                    f"{where}: this is the seed posts' sign(w)·2^(sign(w)·floor(log2|w|)) (or its "
                    "code's sign(w)·2^round(log2|w|)), which is not binarization: it keeps a "
                    "power of two per weight, many values, not one bit (and the formula's inner "
                    "sign flips the exponent of negative weights; course erratum 8). "
                    "Binarization is sign(w): every weight becomes −1 or +1."
                )
        if torch.equal(b, torch.sign(w)):
            raise LabCheckError(
                f"{where}: torch.sign maps 0 to 0, a third value that one bit cannot store. "
                "Send 0 to +1: torch.where(w >= 0, 1.0, -1.0)."
            )
        if torch.equal(b, -expected) or torch.equal(b, -torch.sign(w)):
            raise LabCheckError(f"{where}: the signs are flipped; positive weights must give +1.")
        if torch.allclose(b, expected * w.abs().mean()) or torch.allclose(
            b, expected * w.abs().max()
        ):
            raise LabCheckError(
                f"{where}: you multiplied by a scale. binarize returns ±1 only; the scale α is "
                "separate (xnor_scale), so the bits can be packed."
            )
        if not ((b == 1) | (b == -1)).all():
            bad = b[(b != 1) & (b != -1)][0].item()
            raise LabCheckError(f"{where}: every entry must be −1 or +1, found {bad}.")
        i = int((b.flatten() != expected.flatten()).nonzero()[0])
        raise LabCheckError(
            f"{where}: {int((b != expected).sum())} entries differ, e.g. w = "
            f"{float(w.flatten()[i]):.4g} gave {float(b.flatten()[i])}, expected "
            f"{float(expected.flatten()[i])}."
        )
    print(f"✓ binarize passed {len(_weights(seed))} randomized checks")


def check_xnor_scale(fn: Callable[[Tensor], float], seed: int = 0) -> None:
    """Check ``fn(w) -> α``: α* = ‖W‖₁ / n = mean|w|, the minimiser of ‖W − α·sign(W)‖²."""
    for w in _weights(seed):
        where = f"xnor_scale(w of shape {tuple(w.shape)})"
        original = w.clone()
        result = _call(fn, where, w)
        _unchanged({"w": original}, {"w": w}, where)
        try:
            alpha = float(result)
        except (TypeError, ValueError, RuntimeError):
            raise LabCheckError(
                f"{where} must return one number (a float or a 0-d tensor), got "
                f"{type(result).__name__}"
                + (f" of shape {tuple(result.shape)}" if isinstance(result, Tensor) else "")
                + ". The lab's α is per tensor: average over every entry."
            ) from None
        expected = float(reference.xnor_scale(w))
        if math.isclose(alpha, expected, rel_tol=1e-5):
            continue
        candidates = [
            (float(w.abs().max()), "max|w| is the scale that avoids clipping in int8 "
             "quantization; here nothing is clipped and the error ‖W − αB‖² is smallest at "
             "the mean of |w|, not its maximum"),
            (float(w.mean()), "mean(w) lets positive and negative weights cancel; average "
             "their magnitudes, |w|"),
            (float(w.abs().sum()), "that is ‖W‖₁; divide by the number of weights n"),
            (float(w.pow(2).mean().sqrt()), "the root mean square is not the minimiser: "
             "setting d/dα ‖W − α·sign(W)‖² = 0 gives α = Σ|w| / n"),
            (float(w.abs().median()), "the median of |w| minimises the L1 error, not the "
             "squared error ‖W − αB‖²"),
        ]  # fmt: skip
        for value, why in candidates:
            if math.isclose(alpha, value, rel_tol=1e-5):
                raise LabCheckError(f"{where} = {alpha:.5g}, expected mean|w| = {expected:.5g}: "
                                    f"{why}.")  # fmt: skip
        raise LabCheckError(f"{where} = {alpha:.5g}, expected α* = ‖W‖₁ / n = mean|w| = "
                            f"{expected:.5g}.")  # fmt: skip
    print(f"✓ xnor_scale passed {len(_weights(seed))} randomized checks")


def _dot_cases(seed: int) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    cases = []
    for n in (100, 200, 65, 64, 63, 8, 5, 1):  # long first: the hints are unambiguous there
        x = reference.binarize(torch.randn(n, generator=g))
        y = reference.binarize(torch.randn(n, generator=g))
        cases.append((x, y))
    ones = torch.ones(10)
    return [*cases, (ones, ones), (ones, -ones)]


def check_popcount_dot(fn: Callable[[int, int, int], int], seed: int = 0) -> None:
    """Check ``fn(a, b, n) -> int``: x·y from the bits of x and y as 2·popcount(xnor) − n."""
    cases = _dot_cases(seed)
    for x, y in cases:
        n, a, b = len(x), pack_int(x), pack_int(y)
        where = f"popcount_dot(a={a:#x}, b={b:#x}, n={n})"
        result = _call(fn, where, a, b, n)
        if isinstance(result, Tensor) and result.numel() == 1:
            result = result.item()
        if isinstance(result, bool) or not isinstance(result, int):
            raise LabCheckError(f"{where} must return an int (the dot product is an integer), "
                                f"got {type(result).__name__}.")  # fmt: skip
        expected = int(x @ y)
        if result == expected:
            continue
        agree = (n + expected) // 2  # popcount(xnor) over the n bits in use
        padded = 64 * math.ceil(n / 64)
        hints = {
            agree: "that is popcount(xnor(a, b)), the number of agreeing positions; each "
            "agreement adds +1 and each disagreement −1, so x·y = 2·popcount − n",
            2 * agree: "you forgot the − n: x·y = agreements − disagreements = 2·popcount − n",
            -expected: "the sign is flipped: 2·popcount(a ^ b) − n counts *disagreements*; "
            "use xnor, or n − 2·popcount(a ^ b)",
            n - agree: "that is popcount(a ^ b), the number of disagreeing positions",
            2 * (agree + padded - n) - n: "you counted the padding: mask the xnor to the n "
            "bits in use (& ((1 << n) − 1)), not to a whole 64-bit word",
            2 * ((a ^ b) + 1).bit_count() - n: "~(a ^ b) on a Python int is negative "
            "(−(a ^ b) − 1); mask it to n bits first: ~(a ^ b) & ((1 << n) − 1)",
        }
        hint = hints.get(result)
        raise LabCheckError(f"{where} = {result}, expected x·y = {expected}"
                            + (f": {hint}." if hint else "."))  # fmt: skip
    print(f"✓ popcount_dot passed {len(cases)} randomized checks")
