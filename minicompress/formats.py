"""Low-precision number formats: FP8 (E4M3, E5M2), FP4 (E2M1), and the block formats built
on FP4 — MXFP4 and NVFP4 — emulated exactly in float32/float64.

A float format with e exponent bits, m mantissa bits and bias β holds, for a code
(sign s, exponent field E, mantissa field M),

    (−1)^s · 2^(E − β) · (1 + M/2^m)     when E ≥ 1 (normal),
    (−1)^s · 2^(1 − β) · (M/2^m)         when E = 0 (subnormal),

so between 2^k and 2^(k+1) the step is 2^(k − m), and below the smallest normal 2^(1 − β)
the step stays 2^(1 − β − m). Rounding a real x to the format is rounding x/step to the
nearest integer, ties to even, with the step of x's binade: `round_to_format`. Chapter
"Quantizing a small language model", § "Number formats: FP8, MXFP4, NVFP4" derives it.

- E4M3 ("fn": finite, no infinities) spends the all-ones exponent on numbers: its largest
  value is 1.75 · 2^8 = 448, and only S.1111.111 is NaN. Out-of-range values saturate to
  ±448, as PyTorch's CPU cast ``x.to(torch.float8_e4m3fn)`` does (±inf included).
- E5M2 is IEEE-like: largest 1.75 · 2^15 = 57344; beyond it values round to ±inf
  (ties to even: ``|x| ≥ 61440`` becomes inf), as ``torch.float8_e5m2`` does.
- E2M1 (FP4) holds ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}; the block formats saturate to ±6.
- MXFP4 (OCP Microscaling spec v1.0): blocks of 32 share a power-of-two scale stored as
  E8M0, X = 2^(⌊log₂ amax⌋ − 2) (2 = the largest exponent of E2M1), each element is
  E2M1(x / X). 4 + 8/32 = 4.25 bits per weight.
- NVFP4 (NVIDIA Blackwell): blocks of 16 share an E4M3 scale ≈ amax/6, on top of one
  float32 scale per tensor that brings the block scales into E4M3's range.
  4 + 8/16 = 4.5 bits per weight (plus 32 bits per tensor).

References: Micikevicius et al. (2022) for FP8; Rouhani et al. (2023) and the OCP MX
specification v1.0 for MXFP4; NVIDIA (2025) for NVFP4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from minicompress import _validate as check

__all__ = [
    "E2M1",
    "E4M3",
    "E5M2",
    "FloatFormat",
    "decode",
    "fake_quantize_fp8",
    "fake_quantize_mxfp4",
    "fake_quantize_nvfp4",
    "mx_scale",
    "round_to_format",
]


@dataclass(frozen=True)
class FloatFormat:
    """A small float format: ``exponent_bits`` e, ``mantissa_bits`` m, ``bias`` β, the largest
    finite value ``max``, and what happens beyond it: ``overflow="saturate"`` (clamp to
    ±max) or ``"inf"`` (IEEE: round to ±inf). ``nan_codes`` says which magnitude codes
    (the 7 or e+m low bits) are NaN: "top" (only all ones, E4M3fn), "ieee" (exponent all
    ones and mantissa ≠ 0, E5M2) or "none" (E2M1)."""

    name: str
    exponent_bits: int
    mantissa_bits: int
    bias: int
    max: float
    overflow: str
    nan_codes: str

    @property
    def min_normal(self) -> float:
        """The smallest normal magnitude, 2^(1 − β)."""
        return 2.0 ** (1 - self.bias)

    @property
    def min_subnormal(self) -> float:
        """The smallest positive value, 2^(1 − β − m), and the step of the subnormals."""
        return 2.0 ** (1 - self.bias - self.mantissa_bits)


E4M3 = FloatFormat("e4m3fn", 4, 3, 7, 448.0, "saturate", "top")
E5M2 = FloatFormat("e5m2", 5, 2, 15, 57344.0, "inf", "ieee")
E2M1 = FloatFormat("e2m1", 2, 1, 1, 6.0, "saturate", "none")


def _check_format(fmt: object) -> FloatFormat:
    if not isinstance(fmt, FloatFormat):
        raise TypeError(f"fmt must be a FloatFormat (E4M3, E5M2, E2M1), got {type(fmt).__name__}")
    return fmt


def decode(codes: Tensor, fmt: FloatFormat) -> Tensor:
    """The value of each code (an integer tensor of bit patterns, sign bit = bit e + m)
    from the bit layout: (−1)^s 2^(E−β)(1 + M/2^m) if E ≥ 1, (−1)^s 2^(1−β) M/2^m if E = 0.
    Returns float32; NaN codes give NaN, E5M2's inf codes ±inf.
    (chapter "Quantizing a small language model", § "Number formats: FP8, MXFP4, NVFP4")
    """
    fmt = _check_format(fmt)
    if not isinstance(codes, Tensor) or codes.is_floating_point() or codes.dtype == torch.bool:
        raise TypeError(f"codes must be an integer tensor, got {check.describe(codes)}")
    e, m = fmt.exponent_bits, fmt.mantissa_bits
    c = codes.to(torch.int64)
    if c.numel() and (int(c.min()) < 0 or int(c.max()) >= 2 ** (1 + e + m)):
        raise ValueError(f"codes must be in 0..{2 ** (1 + e + m) - 1} for {fmt.name}")
    sign = torch.where((c >> (e + m)) & 1 == 1, -1.0, 1.0).double()
    exponent, mantissa = (c >> m) & (2**e - 1), c & (2**m - 1)
    normal = 2.0 ** (exponent - fmt.bias).double() * (1 + mantissa / 2**m)
    subnormal = fmt.min_normal * (mantissa / 2**m).double()
    value = sign * torch.where(exponent > 0, normal, subnormal)
    top = exponent == 2**e - 1
    if fmt.nan_codes == "top":
        value = torch.where(top & (mantissa == 2**m - 1), float("nan"), value)
    elif fmt.nan_codes == "ieee":
        value = torch.where(
            top, torch.where(mantissa == 0, sign * float("inf"), float("nan")), value
        )
    return value.float()


def round_to_format(x: Tensor, fmt: FloatFormat) -> Tensor:
    """x rounded to the nearest value of ``fmt``, ties to even, as float32.

    With ``k = max(⌊log₂|x|⌋, 1 − β)`` (the binade, or the subnormal range), the step is
    2^(k − m) and x̂ = step · round_half_even(x / step); then ``|x̂| > max`` saturates to ±max
    or becomes ±inf (``fmt.overflow``). The sign of zero is kept (−1e−10 → −0). Computed in
    float64, where every step of the format and every float32 input are exact, so the
    result equals ``x.to(torch.float8_e4m3fn).float()`` (and ``float8_e5m2``) bit for bit.
    (chapter "Quantizing a small language model", § "Number formats: FP8, MXFP4, NVFP4")
    """
    fmt = _check_format(fmt)
    x = check.float_tensor(x, "x", empty=True, nan=True, inf=True)
    xd = x.double()
    _, exp2 = torch.frexp(xd)  # |x| = f · 2^exp2 with f ∈ [0.5, 1): ⌊log₂|x|⌋ = exp2 − 1
    k = torch.clamp(exp2 - 1, min=1 - fmt.bias)
    step = torch.ldexp(torch.ones_like(xd), k - fmt.mantissa_bits)
    y = torch.round(xd / step) * step  # torch.round: half to even
    too_big = y.abs() > fmt.max
    if fmt.overflow == "saturate":
        y = torch.where(too_big, torch.copysign(torch.full_like(y, fmt.max), xd), y)
    else:
        y = torch.where(too_big, torch.copysign(torch.full_like(y, float("inf")), xd), y)
    y = torch.where(torch.isnan(xd), xd, y)
    return y.float()


def fake_quantize_fp8(w: Tensor, fmt: FloatFormat = E4M3) -> Tensor:
    """FP8 with one float32 scale per tensor: s = amax/max_fmt, ŵ = s · fmt(w / s).

    The scale maps the largest ``|w|`` onto the format's largest value (448 for E4M3), the
    usual recipe for FP8 weights. 8 bits per weight (+ 32 per tensor).
    (chapter "Quantizing a small language model", § "Number formats: FP8, MXFP4, NVFP4")
    """
    w = check.float_tensor(w, "w", why="a scale must be finite")
    fmt = _check_format(fmt)
    amax = w.detach().abs().max().float()
    if amax == 0:
        return torch.zeros_like(w)
    scale = amax / fmt.max
    return (round_to_format(w.float() / scale, fmt) * scale).to(w.dtype)


def _blocks(w: Tensor, block_size: int) -> Tensor:
    w = check.float_tensor(w, "w", why="a block scale must be finite")
    check.integer(block_size, "block_size", 1)
    if w.ndim == 0 or w.shape[-1] % block_size:
        raise ValueError(f"block_size {block_size} must divide the last dimension of w, "
                         f"shape {tuple(w.shape)}")  # fmt: skip
    return w.detach().float().reshape(-1, block_size)  # (blocks, block_size)


def mx_scale(blocks: Tensor) -> Tensor:
    """The MX shared scale of each row of ``blocks``: X = 2^(⌊log₂ amax⌋ − 2), the exponent
    clamped to E8M0's [−127, 127] (a block of zeros gets 2^−127). Then amax/X ∈ [4, 8):
    values up to 6 are represented, those in (6, 8) saturate to 6 (OCP MX spec v1.0, § 6.3).
    Returns float32 (blocks, 1).
    (chapter "Quantizing a small language model", § "Number formats: FP8, MXFP4, NVFP4")
    """
    blocks = check.float_tensor(blocks, "blocks", why="a block scale must be finite")
    if blocks.ndim != 2:
        raise ValueError(f"blocks must be 2-D (blocks, block_size), got {tuple(blocks.shape)}")
    amax = blocks.abs().amax(dim=1, keepdim=True).double()
    _, exp2 = torch.frexp(amax)  # ⌊log₂ amax⌋ = exp2 − 1 (amax = 0 gives exp2 = 0)
    shared = torch.where(amax > 0, exp2 - 1 - 2, torch.full_like(exp2, -127))
    return torch.ldexp(torch.ones_like(amax), shared.clamp(-127, 127)).float()


def fake_quantize_mxfp4(w: Tensor, block_size: int = 32) -> Tensor:
    """MXFP4: ŵ = X_b · E2M1(w / X_b) per block of ``block_size`` (32 in the spec) along the
    last dimension, X_b = `mx_scale` of the block. 4 + 8/32 = 4.25 bits per weight.
    (chapter "Quantizing a small language model", § "Number formats: FP8, MXFP4, NVFP4")
    """
    blocks = _blocks(w, block_size)
    scale = mx_scale(blocks)
    out = round_to_format(blocks / scale, E2M1) * scale
    return out.reshape(w.shape).to(w.dtype)


def fake_quantize_nvfp4(w: Tensor, block_size: int = 16) -> Tensor:
    """NVFP4: a float32 scale per tensor, S = amax(w) / (448 · 6), and per block of
    ``block_size`` (16) an E4M3 scale s_b = E4M3(amax_b / (6 S)); then
    ŵ = S s_b · E2M1(w / (S s_b)). The per-tensor S puts the block scales inside E4M3's
    range (the largest becomes 448). 4 + 8/16 = 4.5 bits per weight (+ 32 per tensor).
    (chapter "Quantizing a small language model", § "Number formats: FP8, MXFP4, NVFP4")
    """
    blocks = _blocks(w, block_size)
    amax = blocks.abs().max()
    if amax == 0:
        return torch.zeros_like(w)
    tensor_scale = amax / (E4M3.max * E2M1.max)
    block_amax = blocks.abs().amax(dim=1, keepdim=True)
    block_scale = round_to_format(block_amax / (E2M1.max * tensor_scale), E4M3)
    scale = block_scale * tensor_scale  # (blocks, 1); 0 for a block of zeros
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    out = torch.where(scale > 0, round_to_format(blocks / safe, E2M1) * scale, 0.0)
    return out.reshape(w.shape).to(w.dtype)
