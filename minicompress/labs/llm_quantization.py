"""Checkers for the LLM quantization lab (chapter "Quantizing a small language model"): each
tests a student's function against the reference implementation below on randomized inputs
and raises `LabCheckError` naming the mistake it recognises.

The lab's functions, for a weight matrix W of shape (out, in) (a `torch.nn.Linear` weight):

- ``quantize_groups(w, bits, group_size, clip=1.0) -> (q, scale, zero)``: asymmetric b-bit
  quantization with one scale and one zero point per *group* of ``group_size`` consecutive
  inputs of a row (W reshaped to (out, in/g, g)). Per group, the range [min, max] is
  extended to contain 0 and multiplied by ``clip``; then S = (max − min)/(2^b − 1),
  Z = −round(min / S) and q = clamp(round(w / S) + Z, 0, 2^b − 1). Returns q (out, in) as
  uint8, scale (out, in/g) float32, zero (out, in/g) uint8 — exactly
  `minicompress.quantization.calc_qparams` / `quantize` applied group by group;
- ``dequantize_groups(q, scale, zero) -> w_hat``: ŵ = S(q − Z), each group's S and Z
  repeated over its g inputs, float32 (out, in);
- ``pack_int4(q) -> bytes`` and ``unpack_int4(packed) -> q``: two 4-bit codes (0 … 15) per
  byte along each row, the **even** index in the **low** nibble (bits 0–3) and the odd one
  in the high nibble (bits 4–7): byte j = q[2j] | q[2j+1] << 4, the order of
  `minicompress.checkpoint.pack_nibbles` (which stores signed codes, q + 8). Formats
  differ here: llama.cpp's ``Q4_0`` pairs q[j] with q[j + 16] inside a block of 32;
- ``smoothquant_scales(x, w, alpha) -> s``: SmoothQuant's per-input-channel scales
  ``s_j = max|X_j|^α / max|W_j|^(1−α)``, X (N, in) activations, W (out, in) (Xiao et al.
  2023);
- ``smooth(x, w, s) -> (x_smooth, w_smooth)``: X diag(s)⁻¹ and W diag(s), so that
  X Wᵀ = (X diag(s)⁻¹)(W diag(s))ᵀ exactly in real arithmetic.

Every checker fails a function that modifies its inputs. With ``seed=grading_seed()`` the
graders draw hidden cases (other shapes, bit widths, group sizes and α).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minicompress import _validate as check
from minicompress import quantization as Q
from minicompress.checkpoint import pack_nibbles, unpack_nibbles
from minicompress.labs import LabCheckError, _call, _unchanged

__all__ = [
    "check_dequantize_groups",
    "check_pack_int4",
    "check_quantize_groups",
    "check_smooth",
    "check_smoothquant_scales",
    "check_unpack_int4",
    "dequantize_groups",
    "pack_int4",
    "quantize_groups",
    "smooth",
    "smoothquant_scales",
    "unpack_int4",
]


# ---- the reference ---------------------------------------------------------------------------


def _check_weight(w: object, name: str = "w") -> Tensor:
    w = check.float_tensor(w, name, why="a quantization range must be finite")
    if w.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (out, in) weight, got shape {tuple(w.shape)}")
    return w


def quantize_groups(
    w: Tensor, bits: int, group_size: int, clip: float = 1.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Asymmetric b-bit quantization of ``w`` (out, in) in groups of ``group_size``
    consecutive inputs of a row (chapter "Quantizing a small language model", section
    "Quantizing in groups").

    Per group: lo = clip · min(min w, 0), hi = clip · max(max w, 0), S = (hi − lo)/(2^b − 1),
    Z = −round(lo / S), q = clamp(round(w / S) + Z, 0, 2^b − 1) (half to even).
    Returns ``(q, scale, zero)``: uint8 (out, in), float32 (out, in/g), uint8 (out, in/g).
    """
    w = _check_weight(w)
    bits = check.integer(bits, "bits", 1, 8)
    g = check.integer(group_size, "group_size", 1)
    clip = check.number(clip, "clip", 0.0, 1.0)
    if clip <= 0:
        raise ValueError(f"clip must be in (0, 1], got {clip}")
    out, n = w.shape
    if n % g:
        raise ValueError(f"group_size = {g} must divide the input dimension {n}")
    groups = w.detach().float().reshape(out * (n // g), g)  # row-major: runs of g inputs
    qp = Q.calc_qparams(clip * groups if clip != 1 else groups, bits, axis=0)
    q = Q.quantize(groups, qp)
    return (
        q.reshape(out, n).to(torch.uint8),
        qp.scale.reshape(out, n // g),
        qp.zero_point.reshape(out, n // g).to(torch.uint8),
    )


def _expand(t: Tensor, g: int) -> Tensor:
    return t.repeat_interleave(g, dim=1)


def dequantize_groups(q: Tensor, scale: Tensor, zero: Tensor) -> Tensor:
    """ŵ = S(q − Z), each group's scale and zero point repeated over its g inputs, where
    g = q.shape[1] / scale.shape[1]; float32 (out, in) (chapter "Quantizing a small
    language model", section "Quantizing in groups")."""
    if not isinstance(q, Tensor) or q.is_floating_point() or q.ndim != 2:
        raise TypeError(f"q must be a 2-D integer tensor, got {check.describe(q)}")
    scale = check.float_tensor(scale, "scale")
    if scale.ndim != 2 or scale.shape[0] != q.shape[0] or q.shape[1] % scale.shape[1]:
        raise ValueError(f"scale has shape {tuple(scale.shape)}; q {tuple(q.shape)} needs "
                         "(out, in / group_size)")  # fmt: skip
    if not isinstance(zero, Tensor) or zero.shape != scale.shape:
        raise ValueError("zero must be a tensor of the same shape as scale")
    g = q.shape[1] // scale.shape[1]
    codes = q.to(torch.int64) - _expand(zero.to(torch.int64), g)
    return codes.float() * _expand(scale.float(), g)


def pack_int4(q: Tensor) -> Tensor:
    """Two 4-bit codes (0 … 15) per byte along the last dimension: byte j = q[2j] |
    q[2j+1] << 4 (even index in the low nibble). q (..., n), n even → uint8 (..., n/2).
    The same bytes as `minicompress.checkpoint.pack_nibbles` of the signed codes q − 8."""
    if not isinstance(q, Tensor) or q.is_floating_point() or q.dtype == torch.bool:
        raise TypeError(f"q must be an integer tensor, got {check.describe(q)}")
    if q.ndim == 0 or q.shape[-1] % 2:
        raise ValueError(f"q must have an even last dimension, got shape {tuple(q.shape)}")
    if q.numel() and (int(q.min()) < 0 or int(q.max()) > 15):
        raise ValueError("q must hold 4-bit codes in [0, 15]")
    return pack_nibbles((q.to(torch.int16) - 8).to(torch.int8))


def unpack_int4(packed: Tensor) -> Tensor:
    """The inverse of `pack_int4`: uint8 (..., m) → uint8 codes (..., 2m), low nibble first."""
    if not isinstance(packed, Tensor) or packed.dtype != torch.uint8 or packed.ndim == 0:
        raise TypeError(f"packed must be a uint8 tensor, got {check.describe(packed)}")
    codes = unpack_nibbles(packed, 2 * packed.shape[-1])
    return (codes.to(torch.int16) + 8).to(torch.uint8)


def _check_pair(x: object, w: object) -> tuple[Tensor, Tensor]:
    x = check.float_tensor(x, "x")
    w = check.float_tensor(w, "w")
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"x (N, in) and w (out, in) must share in; got {tuple(x.shape)} and "
                         f"{tuple(w.shape)}")  # fmt: skip
    return x, w


def smoothquant_scales(x: Tensor, w: Tensor, alpha: float = 0.5) -> Tensor:
    """SmoothQuant's scale per input channel j (Xiao et al. 2023; chapter "Quantizing a small
    language model", section "Outliers: AWQ and SmoothQuant"):
    ``s_j = max_n |X_nj|^α / max_o |W_oj|^(1−α)``, for X (N, in) and W (out, in). Shape
    (in,).
    A channel whose maximum is 0 would give s_j = 0 or ∞: clamped to [1e-5, 1e5]."""
    x, w = _check_pair(x, w)
    alpha = check.number(alpha, "alpha", 0.0, 1.0)
    ax, aw = x.detach().abs().amax(dim=0), w.detach().abs().amax(dim=0)
    return (ax.pow(alpha) / aw.pow(1 - alpha)).clamp(1e-5, 1e5)


def smooth(x: Tensor, w: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
    """(X diag(s)⁻¹, W diag(s)): column j of X divided by s_j, column j of W multiplied by
    it, so X Wᵀ is unchanged (chapter "Quantizing a small language model", section
    "Outliers: AWQ and SmoothQuant")."""
    x, w = _check_pair(x, w)
    s = check.float_tensor(s, "s")
    if s.shape != (x.shape[1],) or (s <= 0).any():
        raise ValueError(f"s must hold {x.shape[1]} positive scales, got shape {tuple(s.shape)}")
    return x / s, w * s


# ---- shared helpers --------------------------------------------------------------------------


def _tensor(value: object, where: str, what: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise LabCheckError(f"{where}: {what} must be a tensor, got {type(value).__name__}.")
    return value


def _same(a: Tensor, b: Tensor, rtol: float = 1e-5, atol: float = 0.0) -> bool:
    """Same shape and values (NaN equal to NaN), for comparing with a candidate mistake."""
    if a.shape != b.shape:
        return False
    a, b = a.double(), b.double()
    return bool(torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))


def _near_tie(v: Tensor) -> Tensor:
    """Where v is within 1e-3 of a half-integer: w / S and w · (1/S) may round either way."""
    return ((v - v.floor()) - 0.5).abs() < 1e-3


def _shape(t: tuple[int, ...] | torch.Size) -> str:
    return "(" + ", ".join(str(int(d)) for d in t) + ")"


# ---- 1. quantize_groups ----------------------------------------------------------------------


def _group_cases(seed: int) -> list[tuple[str, Tensor, int, int, float]]:
    """(what, w, bits, group_size, clip). Each case makes a particular slip show: rows of
    different magnitude (per-row vs per-group), a square weight and one with in = g² (groups
    along the wrong axis or strided give the right shapes), all-positive groups (the range
    not extended to 0), clip < 1 (clamping)."""
    gen = torch.Generator().manual_seed(seed)

    def pick(*options):
        return options[int(torch.randint(len(options), (1,), generator=gen))]

    def draw(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=gen))

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen)

    g1, b1 = pick(16, 32), pick(4, 3)
    out1, ng1 = draw(6, 20), draw(2, 4)
    # row magnitudes spread over 2 decades, and inside a row one group 10x larger
    rows = torch.logspace(-2, 0, out1)[torch.randperm(out1, generator=gen)]
    typical = randn(out1, ng1 * g1) * rows[:, None]
    typical[:, :g1] *= 10
    g2 = pick(8, 16)
    square = randn(g2 * 3, g2 * 3) * 0.05
    square[:, g2 : 2 * g2] *= 4
    g3 = pick(4, 8)
    strided = randn(draw(3, 9), g3 * g3) * torch.linspace(0.1, 3.0, g3 * g3)
    g4 = pick(8, 16)
    positive = randn(draw(3, 8), 4 * g4).abs() * 0.02 + 0.05  # every group in (0, ∞)
    g5 = pick(16, 32)
    clipped = randn(draw(4, 12), 2 * g5) * 0.1
    return [
        ("square", square, pick(4, 5), g2, 1.0),
        ("typical", typical, b1, g1, 1.0),
        ("in = g^2", strided, pick(3, 4), g3, 1.0),
        ("all positive", positive, 4, g4, 1.0),
        ("clipped", clipped, pick(4, 3), g5, pick(0.8, 0.75, 0.9)),
        ("8-bit", randn(draw(2, 6), 128) * 0.3 - 0.1, 8, pick(32, 64), 1.0),
        ("2-bit", randn(draw(2, 6), 64), 2, 32, 1.0),
    ]


def _qparams(lo: Tensor, hi: Tensor, bits: int, extend: bool = True) -> tuple[Tensor, Tensor]:
    """(S, Z) of `calc_qparams` for given per-group ranges; ``extend=False`` skips the
    extension to 0 (Z then clamped to the code range)."""
    if extend:
        lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)
    levels = 2**bits - 1
    scale = torch.clamp((hi - lo) / levels, min=torch.finfo(torch.float32).eps)
    zero = torch.clamp(-torch.round(lo / scale), 0, levels)
    return scale, zero


def _ranges(w: Tensor, g: int, layout: str) -> tuple[Tensor, Tensor]:
    """Per-group min and max for a grouping ``layout``: "groups" (the right one, (out, in/g)),
    "row", "tensor" (both broadcast to (out, in/g)), "transposed" (groups of g outputs in a
    column: (in, out/g)), "strided" (group k = inputs k, k + in/g, …: (out, in/g))."""
    out, n = w.shape
    if layout == "groups":
        v = w.reshape(out, n // g, g)
        return v.amin(-1), v.amax(-1)
    if layout == "row":
        return (w.amin(1, keepdim=True).expand(out, n // g),
                w.amax(1, keepdim=True).expand(out, n // g))  # fmt: skip
    if layout == "tensor":
        return w.min().expand(out, n // g), w.max().expand(out, n // g)
    if layout == "transposed":
        v = w.t().reshape(n, out // g, g)
        return v.amin(-1), v.amax(-1)
    if layout == "strided":
        v = w.reshape(out, g, n // g)
        return v.amin(1), v.amax(1)
    raise ValueError(layout)


def _shape_hint(got: tuple[int, ...], w: Tensor, g: int, what: str) -> str:
    """Why ``what`` (scale or zero) has shape ``got`` instead of (out, in/g)."""
    out, n = w.shape
    per = "scale" if what == "scale" else "zero point"
    if len(got) == 0 or (len(got) <= 2 and torch.Size(got).numel() == 1):
        return (f" That is one {per} for the whole tensor (per-tensor); group quantization has "
                f"one per group of g consecutive inputs of each row.")  # fmt: skip
    if tuple(got) in ((out,), (out, 1)):
        return (f" That is one {per} per row (per output channel): each row has in/g = "
                f"{n // g} groups, and each group needs its own {per}.")  # fmt: skip
    if tuple(got) == (out, n // g, 1):
        return " Drop the last dimension of the reduction (keepdim=False)."
    if out % g == 0 and tuple(got) in ((n, out // g), (out // g, n)):
        return (" Your groups run along the output dimension (down the columns of W). A group "
                "is g consecutive *inputs* of one row: w.reshape(out, in // g, g).")  # fmt: skip
    if tuple(got) == (out, g):
        return (" You reduced over the wrong dimension of w.reshape(out, in // g, g): the "
                "group's g values are along the last dimension.")  # fmt: skip
    return ""


def _scale_mistakes(w: Tensor, bits: int, g: int, clip: float) -> list[tuple[Tensor, str]]:
    out, n = w.shape
    levels = 2**bits - 1
    lo, hi = _ranges(w, g, "groups")
    lo0, hi0 = lo.clamp(max=0.0), hi.clamp(min=0.0)
    peak = torch.maximum(-lo, hi)
    mistakes = [
        (clip * (hi0 - lo0) / 2**bits, f"divides the range by 2^b = {2**bits}: the codes 0 … "
         f"2^b − 1 make 2^b − 1 = {levels} steps, so S = (max − min)/(2^b − 1) (off by one)"),
        (clip * peak / levels, "takes the scale from max|w| (a symmetric scale): asymmetric "
         f"quantization spreads its {levels} steps over the group's [min, max], "
         "S = (max − min)/(2^b − 1), and the zero point shifts the grid"),
        (clip * peak / max(2 ** (bits - 1) - 1, 1), "takes the symmetric scale max|w|/(2^(b−1) − "
         "1): this lab's quantizer is asymmetric, S = (max − min)/(2^b − 1) with a zero point"),
        (2 * clip * peak / levels, "takes the scale from 2·max|w| (a symmetric range ±max|w|): "
         "use the group's own [min, max], S = (max − min)/(2^b − 1)"),
        (clip * (hi - lo) / levels, "did not extend the range to contain 0: with min = "
         "min(min w, 0) and max = max(max w, 0), the real value 0 is exactly a code (here some "
         "groups are all positive)"),
    ]  # fmt: skip
    if clip != 1:
        mistakes.append(((hi0 - lo0) / levels, f"ignores clip = {clip}: the range is "
                         "clip · [min, max] (values outside it are then clamped)"))  # fmt: skip
    for layout, why in (
        ("row", "uses one scale per row (per output channel), repeated for every group: each group "
                "of g inputs needs its own range, that is the point of groups"),
        ("tensor", "uses one scale for the whole tensor: each group of g inputs of a row needs its "
                   "own range"),
        ("strided", "groups the inputs k, k + in/g, k + 2·in/g, … (strided: reduced over dim 1 of "
                    "w.reshape(out, g, in // g)); a group is g *consecutive* inputs, "
                    "w.reshape(out, in // g, g), reduced over the last dimension"),
        ("transposed", "groups g consecutive *outputs* (down a column of W); a group is g "
                       "consecutive inputs of one row, w.reshape(out, in // g, g)"),
    ):  # fmt: skip
        if layout == "transposed" and out % g:
            continue
        a, b = _ranges(w, g, layout)
        mistakes.append((_qparams(clip * a, clip * b, bits)[0], why))
    return mistakes


def _zero_mistakes(
    w: Tensor, bits: int, g: int, clip: float, scale: Tensor
) -> list[tuple[Tensor, str]]:
    lo, _ = _ranges(w, g, "groups")
    lo0 = clip * lo.clamp(max=0.0)
    row_lo = clip * _ranges(w, g, "row")[0].clamp(max=0.0)
    levels = 2**bits - 1
    row_min = ("computes each group's zero point from the *row's* minimum: one zero point per "
               "row only fits the group holding the row's minimum. Use each group's own min: "
               "Z = −round(min_group / S_group)")  # fmt: skip
    return [
        (torch.zeros_like(scale), "forgot the zero point: Z = 0 puts the code 0 at the real 0, "
         "so every negative weight clamps to 0. Z = −round(min / S) for each group"),
        (torch.full_like(scale, 2 ** (bits - 1)), f"uses the fixed zero point 2^(b−1) = "
         f"{2 ** (bits - 1)} (the middle code, a symmetric grid): each group has its own "
         "Z = −round(min / S)"),
        (torch.round(lo0 / scale), "has the sign of the zero point flipped: "
         "Z = −round(min / S), which is ≥ 0 because min ≤ 0"),
        (torch.clamp(-torch.round(row_lo / scale), 0, levels), row_min),
        (-torch.round(row_lo / scale), row_min),
        (torch.clamp(-torch.floor(lo0 / scale), 0, levels), "rounds the zero point up (ceil of "
         "−min/S); round to the nearest integer: Z = −round(min / S)"),
        (torch.clamp(-torch.ceil(lo0 / scale), 0, levels), "truncates the zero point (floor of "
         "−min/S); round to the nearest integer: Z = −round(min / S)"),
    ]  # fmt: skip


def _code_mistakes(
    w: Tensor, bits: int, g: int, scale: Tensor, zero: Tensor
) -> list[tuple[Tensor, str]]:
    levels = 2**bits - 1
    s, z = _expand(scale.double(), g), _expand(zero.double(), g)
    scaled = torch.round(w.double() / s)
    return [
        (scaled + z, f"does not clamp: with clip < 1 the values beyond clip · [min, max] give "
         f"codes below 0 or above 2^b − 1 = {levels}; clamp to [0, 2^b − 1] before converting"),
        ((scaled + z).to(torch.int64).to(torch.uint8).double(), "converts to uint8 without "
         "clamping: −1 wraps around to 255 (and 256 to 0) instead of saturating; clamp to "
         "[0, 2^b − 1] first, then convert"),
        (torch.clamp((scaled + z).to(torch.int64).to(torch.uint8).double(), 0, levels),
         "converts to uint8 before clamping: −1 wraps around to 255, which then clamps to "
         f"{levels} (the top of the range instead of the bottom); clamp first, then convert"),
        (torch.clamp(scaled + z, 0, levels + 1), f"clamps to [0, 2^b] = [0, {levels + 1}]: the "
         f"largest b-bit code is 2^b − 1 = {levels}"),
        (torch.clamp(scaled, 0, levels), "leaves out the zero point: q = clamp(round(w / S) + Z, "
         "0, 2^b − 1); without + Z every negative weight clamps to 0"),
        (torch.clamp(scaled - z, 0, levels), "subtracts the zero point: q = clamp(round(w / S) "
         "**+** Z, 0, 2^b − 1) (dequantizing subtracts it)"),
        (torch.clamp(torch.floor(w.double() / s) + z, 0, levels), "truncates (floor) instead of "
         "rounding, which biases every weight down by half a step on average: torch.round"),
    ]  # fmt: skip


def _integers(t: Tensor, where: str, what: str) -> Tensor:
    if t.dtype == torch.bool:
        raise LabCheckError(f"{where}: {what} is a bool tensor; it must hold integer codes.")
    if t.is_floating_point():
        bad = ~torch.isfinite(t) | (t != t.round())
        if bad.any():
            v = float(t[bad].flatten()[0])
            raise LabCheckError(
                f"{where}: {what} holds non-integers (e.g. {v:.4g}). Codes and zero points are "
                "integers (round them), so that the real 0 is a code exactly."
            )
    return t.double()


def _first_difference(got: Tensor, want: Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in (got != want).nonzero()[0])


def check_quantize_groups(fn: Callable[..., tuple], seed: int = 0) -> None:
    """Check ``fn(w, bits, group_size, clip=1.0) -> (q, scale, zero)`` against
    `quantize_groups`, naming the usual slips: no zero point per group (one per row or per
    tensor, or none), groups along the wrong axis or strided, the scale from ``max|w|`` or
    divided by 2^b, the range not extended to 0, clip ignored, no clamping."""
    cases = _group_cases(seed)
    for what, w, bits, g, clip in cases:
        out, n = w.shape
        extra = f", clip={clip}" if clip != 1 else ""
        where = f"quantize_groups(w {_shape(w.shape)} [{what}], bits={bits}, group_size={g}{extra})"
        given = w.clone()
        kwargs = {"clip": clip} if clip != 1 else {}
        result = _call(fn, where, given, bits, g, **kwargs)
        _unchanged({"w": w}, {"w": given}, where)
        if not isinstance(result, tuple | list) or len(result) != 3:
            raise LabCheckError(f"{where} must return a tuple (q, scale, zero).")
        q, scale, zero = (_tensor(v, where, k) for v, k in zip(result, ("q", "scale", "zero"),
                                                                strict=True))  # fmt: skip
        want_q, want_s, want_z = quantize_groups(w, bits, g, clip)
        for t, name in ((scale, "scale"), (zero, "zero")):
            if t.shape != want_s.shape:
                raise LabCheckError(
                    f"{where}: {name} has shape {_shape(t.shape)}, expected (out, in/g) = "
                    f"{_shape(want_s.shape)}.{_shape_hint(tuple(t.shape), w, g, name)}"
                )
        if q.shape != want_q.shape:
            hint = ""
            if q.shape == (out, n // g, g):
                hint = " Return q in the weight's shape: q.reshape(out, in)."
            raise LabCheckError(f"{where}: q has shape {_shape(q.shape)}, expected "
                                f"{_shape(want_q.shape)}.{hint}")  # fmt: skip
        if not scale.is_floating_point():
            raise LabCheckError(f"{where}: scale must be a floating-point tensor, got "
                                f"{scale.dtype}.")  # fmt: skip
        if q.is_floating_point():
            raise LabCheckError(
                f"{where}: q is a {q.dtype} tensor. Codes are integers: convert with "
                ".to(torch.uint8) after rounding and clamping (4-bit codes fit a byte)."
            )
        zero_d = _integers(zero, where, "zero")
        q_d = _integers(q, where, "q")
        # 1. the scales
        if not _same(scale.float(), want_s, rtol=1e-5, atol=1e-12):
            for value, why in _scale_mistakes(w, bits, g, clip):
                if _same(scale.float(), value.float(), rtol=1e-5, atol=1e-12):
                    raise LabCheckError(f"{where}: your quantize_groups {why}.")
            i = _first_difference(scale.float(), want_s)
            raise LabCheckError(
                f"{where}: scale{list(i)} = {float(scale[i]):.6g}, expected S = (max − min)/"
                f"(2^b − 1) = {float(want_s[i]):.6g} for group {i[1]} of row {i[0]} (inputs "
                f"{i[1] * g} … {i[1] * g + g - 1}), its range extended to contain 0"
                + (" and multiplied by clip." if clip != 1 else ".")
            )
        # 2. the zero points (a tie in −min/S may round either way)
        lo = clip * _ranges(w, g, "groups")[0].clamp(max=0.0)
        tie = _near_tie(-lo.double() / scale.double())
        ok = (zero_d == want_z.double()) | (tie & ((zero_d - want_z.double()).abs() <= 1))
        if not ok.all():
            for value, why in _zero_mistakes(w, bits, g, clip, want_s):
                if torch.equal(zero_d, value.double()):
                    raise LabCheckError(f"{where}: your quantize_groups {why}.")
            if (zero_d == zero_d.flatten()[0]).all():
                raise LabCheckError(
                    f"{where}: every group has the same zero point, {float(zero_d[0, 0]):g}: "
                    "one zero point for the whole tensor (per-tensor) only fits the group "
                    "holding its minimum. Each group needs its own, Z = −round(min_group / "
                    "S_group)."
                )
            if (zero_d == zero_d[:, :1]).all():
                raise LabCheckError(
                    f"{where}: every group of a row has the same zero point: one zero point "
                    "per row only fits the group holding the row's minimum. Each group needs "
                    "its own, Z = −round(min_group / S_group)."
                )
            i = tuple(int(k) for k in (~ok).nonzero()[0])
            raise LabCheckError(
                f"{where}: zero{list(i)} = {float(zero_d[i]):g}, expected Z = −round(min / S) "
                f"= {int(want_z[i])} for group {i[1]} of row {i[0]}."
            )
        # 3. the codes, with the student's own (checked) scales and zero points
        s_full, z_full = _expand(scale.double(), g), _expand(zero_d, g)
        unrounded = w.double() / s_full
        expected = torch.clamp(torch.round(unrounded) + z_full, 0, 2**bits - 1)
        tie = _near_tie(unrounded) | _near_tie(w.double() * (1.0 / s_full))
        ok = (q_d == expected) | (tie & ((q_d - expected).abs() <= 1))
        if not ok.all():
            for value, why in _code_mistakes(w, bits, g, scale.float(), zero_d):
                if torch.equal(q_d, value):
                    raise LabCheckError(f"{where}: your quantize_groups {why}.")
            if int(q_d.min()) < 0 or int(q_d.max()) > 2**bits - 1:
                raise LabCheckError(
                    f"{where}: codes from {int(q_d.min())} to {int(q_d.max())} do not fit in "
                    f"[0, 2^b − 1] = [0, {2**bits - 1}]: clamp before converting."
                )
            i = tuple(int(k) for k in (~ok).nonzero()[0])
            raise LabCheckError(
                f"{where}: {int((~ok).sum())} of {q.numel()} codes differ, e.g. w{list(i)} = "
                f"{float(w[i]):.5f} gave {int(q_d[i])}, expected clamp(round(w / S) + Z, 0, "
                f"2^b − 1) = {int(expected[i])} with its group's S and Z."
            )
    print(f"✓ quantize_groups passed {len(cases)} randomized checks")


# ---- 2. dequantize_groups --------------------------------------------------------------------


def _dequantize_cases(seed: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    out = []
    for _, w, bits, g, clip in _group_cases(seed + 7):
        out.append(quantize_groups(w, bits, g, clip))
    return out


def check_dequantize_groups(fn: Callable[[Tensor, Tensor, Tensor], Tensor], seed: int = 0) -> None:
    """Check ``fn(q, scale, zero) -> w_hat`` (q and zero uint8, as `quantize_groups` returns
    them): S(q − Z) with each group's S and Z repeated over its g inputs."""
    cases = _dequantize_cases(seed)
    for q, scale, zero in cases:
        out, n = q.shape
        g = n // scale.shape[1]
        where = (f"dequantize_groups(q {_shape(q.shape)} uint8, scale {_shape(scale.shape)}, "
                 f"zero {_shape(zero.shape)} uint8)")  # fmt: skip
        given = {"q": q.clone(), "scale": scale.clone(), "zero": zero.clone()}
        got = _call(fn, where, given["q"], given["scale"], given["zero"])
        _unchanged({"q": q, "scale": scale, "zero": zero}, given, where)
        got = _tensor(got, where, "the result")
        want = dequantize_groups(q, scale, zero)
        if got.shape != want.shape:
            hint = (
                " Return ŵ in the weight's shape: reshape(out, in)."
                if got.numel() == n * out
                else ""
            )
            raise LabCheckError(f"{where} returned shape {_shape(got.shape)}, expected "
                                f"{_shape(want.shape)}.{hint}")  # fmt: skip
        if not got.is_floating_point():
            raise LabCheckError(f"{where} returned a {got.dtype} tensor; ŵ = S(q − Z) is real: "
                                "convert q − Z to float before multiplying by S.")  # fmt: skip
        atol = 1e-4 * float(scale.max())  # S q − S Z cancels: a few ulps of S · 2^b
        if _same(got, want, rtol=1e-5, atol=atol):
            continue
        s, z = _expand(scale, g), _expand(zero.to(torch.int64), g)
        qi = q.to(torch.int64)
        mistakes = [
            (((q - _expand(zero, g)).float()) * s, "computes q − Z in uint8, which wraps around "
             "(3 − 5 = 254, not −2): convert to a signed type first, q.long() − zero.long() (or "
             ".float())"),
            (qi.float() * s, "forgot the zero point: ŵ = S(q − Z)"),
            ((qi + z).float() * s, "adds the zero point: ŵ = S(q **−** Z)"),
            ((qi - z).float() / s, "divides by the scale: ŵ = S · (q − Z)"),
            ((qi - zero.to(torch.int64).repeat(1, g)).float() * scale.repeat(1, g),
             "tiles the groups' scales and zero points (.repeat(1, g) gives S₀, S₁, …, S₀, S₁, "
             "…): each one must be repeated g times in place, S₀ × g, S₁ × g, …: "
             "repeat_interleave(g, dim=1)"),
            ((qi - z).float() * scale.repeat(1, g), "tiles the scales (.repeat(1, g) gives S₀, "
             "S₁, …, S₀, S₁, …): repeat each g times in place, scale.repeat_interleave(g, dim=1)"),
            ((qi - zero.to(torch.int64).repeat(1, g)).float() * s, "tiles the zero points "
             "(.repeat(1, g)): repeat each g times in place, zero.repeat_interleave(g, dim=1)"),
        ]  # fmt: skip
        for value, why in mistakes:
            if _same(got, value, rtol=1e-5, atol=atol):
                raise LabCheckError(f"{where}: your dequantize_groups {why}.")
        i = _first_difference(got, want)
        raise LabCheckError(
            f"{where}: ŵ{list(i)} = {float(got[i]):.6g}, expected S(q − Z) = {float(want[i]):.6g}"
            f" (q = {int(q[i])}, group {i[1] // g}: S = {float(scale[i[0], i[1] // g]):.5g}, "
            f"Z = {int(zero[i[0], i[1] // g])})."
        )
    print(f"✓ dequantize_groups passed {len(cases)} randomized checks")


# ---- 3. pack_int4 / unpack_int4 --------------------------------------------------------------


def _codes(seed: int) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def codes(*shape: int) -> Tensor:
        return torch.randint(0, 16, shape, generator=gen, dtype=torch.uint8)

    rows = 2 * int(torch.randint(2, 5, (1,), generator=gen))
    return [
        codes(rows, 2 * int(torch.randint(8, 40, (1,), generator=gen))),
        codes(1, 2),
        codes(2 * rows, 10),
        torch.tensor([[0, 15, 15, 0, 1, 2, 14, 15]], dtype=torch.uint8),  # every nibble's edge
        codes(rows, 64),
    ]


def check_pack_int4(fn: Callable[[Tensor], Tensor], seed: int = 0) -> None:
    """Check ``fn(q) -> packed`` for q (out, in) uint8 codes 0 … 15, in even: uint8
    (out, in/2), byte j = q[2j] | q[2j+1] << 4 (even index in the low nibble)."""
    cases = _codes(seed)
    for q in cases:
        out, n = q.shape
        where = f"pack_int4(q {_shape(q.shape)})"
        given = q.clone()
        got = _tensor(_call(fn, where, given), where, "the result")
        _unchanged({"q": q}, {"q": given}, where)
        want = pack_int4(q)
        if got.shape != want.shape:
            hint = ""
            if tuple(got.shape) == (out // 2, n) and out % 2 == 0:
                hint = (" You paired the codes of neighbouring rows (along dim 0); pairs "
                        "are neighbours along the last dimension, q[:, 0::2] and "
                        "q[:, 1::2].")  # fmt: skip
            elif got.shape == q.shape:
                hint = " Nothing was packed: two 4-bit codes go into each byte."
            raise LabCheckError(f"{where} returned shape {_shape(got.shape)}, expected "
                                f"(out, in/2) = {_shape(want.shape)}.{hint}")  # fmt: skip
        if got.dtype != torch.uint8:
            if not got.is_floating_point() and torch.equal(got.to(torch.int64), want.long()):
                raise LabCheckError(
                    f"{where}: the right values, but as {got.dtype}, which takes "
                    f"{got.element_size()} bytes per element: packing is only worth it as "
                    "bytes, .to(torch.uint8)."
                )
            raise LabCheckError(f"{where} must return a uint8 tensor (one byte per two "
                                f"codes), got {got.dtype}.")  # fmt: skip
        if torch.equal(got, want):
            continue
        lo, hi = q[:, 0::2], q[:, 1::2]
        first, second = q[:, : n // 2], q[:, n // 2 :]
        mistakes = [
            (hi | (lo << 4), "packs the nibbles in the wrong order: the even index q[2j] goes in "
             "the LOW nibble (bits 0–3), the odd one q[2j+1] in the HIGH nibble (bits 4–7): "
             "byte j = q[2j] | q[2j+1] << 4"),
            (first | (second << 4), "pairs q[j] with q[j + in/2] (the first half with the "
             "second, as llama.cpp's Q4_0 does inside each block of 32): in this lab the two "
             "codes of a byte are neighbours, q[2j] (low nibble) and q[2j+1] (high nibble)"),
            (second | (first << 4), "pairs q[j + in/2] with q[j] (the halves, swapped): the two "
             "codes of a byte are neighbours, q[2j] (low nibble) and q[2j+1] (high nibble)"),
            (lo, "loses the high nibble (a shift by 8 or more overflows the byte): byte j = q[2j] "
             "| q[2j+1] << 4"),
            (lo | hi, "ORs the codes without shifting: byte j = q[2j] | q[2j+1] **<< 4**"),
        ]  # fmt: skip
        for value, why in mistakes:
            if torch.equal(got, value):
                raise LabCheckError(f"{where}: your pack_int4 {why}.")
        i = _first_difference(got, want)
        raise LabCheckError(
            f"{where}: byte{list(i)} = {int(got[i])}, expected q[2j] | q[2j+1] << 4 = "
            f"{int(lo[i])} | {int(hi[i])} << 4 = {int(want[i])}."
        )
    print(f"✓ pack_int4 passed {len(cases)} randomized checks")


def check_unpack_int4(fn: Callable[[Tensor], Tensor], seed: int = 0) -> None:
    """Check ``fn(packed) -> q`` for packed (out, m) uint8: integer codes (out, 2m) in
    0 … 15, q[2j] = byte j & 0xF (low nibble), q[2j+1] = byte j >> 4."""
    cases = [pack_int4(q) for q in _codes(seed + 1)]
    gen = torch.Generator().manual_seed(seed)
    cases.append(torch.randint(128, 256, (3, 6), generator=gen, dtype=torch.uint8))
    for packed in cases:
        out, m = packed.shape
        where = f"unpack_int4(packed {_shape(packed.shape)} uint8)"
        given = packed.clone()
        got = _tensor(_call(fn, where, given), where, "the result")
        _unchanged({"packed": packed}, {"packed": given}, where)
        want = unpack_int4(packed)
        low, high = packed & 15, packed >> 4
        if got.shape != want.shape:
            hint = ""
            if tuple(got.shape) == (out, m, 2):
                hint = " Flatten the pairs into one row: .reshape(out, 2m) (or .flatten(-2))."
            elif tuple(got.shape) in ((2 * out, m), (2, out, m)):
                hint = (" You stacked the nibbles along the rows; interleave them along the last "
                        "dimension: torch.stack((low, high), dim=-1).flatten(-2).")  # fmt: skip
            raise LabCheckError(f"{where} returned shape {_shape(got.shape)}, expected "
                                f"(out, 2m) = {_shape(want.shape)}.{hint}")  # fmt: skip
        if got.is_floating_point() or got.dtype == torch.bool:
            raise LabCheckError(f"{where} returned a {got.dtype} tensor; codes are integers "
                                "(uint8).")  # fmt: skip
        g64 = got.to(torch.int64)
        if torch.equal(g64, want.long()):
            continue

        def inter(a: Tensor, b: Tensor) -> Tensor:
            return torch.stack((a.long(), b.long()), dim=-1).flatten(-2)

        mistakes = [
            (inter(high, low), "unpacks the nibbles in the wrong order: the LOW nibble (byte & "
             "0xF) is the even code q[2j], the high nibble (byte >> 4) the odd one q[2j+1]"),
            (inter(packed, high), "does not mask the high nibble off the low code: byte j itself "
             "is q[2j] + 16·q[2j+1]; q[2j] = byte & 0xF (15)"),
            (inter(low, packed & 0xF0), "keeps the high nibble in place (byte & 0xF0 is 16·q[2j+1])"
             ": shift it down, q[2j+1] = byte >> 4"),
            (inter(low, packed.view(torch.int8) >> 4), "shifts a signed int8 byte: >> copies "
             "the sign bit, so bytes ≥ 128 give negative codes. Shift the uint8 byte, or mask "
             "after shifting: (byte >> 4) & 0xF"),
            (torch.cat((low.long(), high.long()), dim=-1), "puts all the low nibbles first, then "
             "all the high ones: interleave them, torch.stack((low, high), dim=-1).flatten(-2)"),
            (torch.cat((high.long(), low.long()), dim=-1), "puts all the high nibbles first, then "
             "all the low ones: interleave them, low first, torch.stack((low, high), "
             "dim=-1).flatten(-2)"),
            (unpack_nibbles(packed, 2 * m).long(), "returns signed codes −8 … 7: that is "
             "minicompress.checkpoint.unpack_nibbles's convention (it stores q + 8). This lab's "
             "codes are unsigned 0 … 15: low = byte & 0xF, high = byte >> 4"),
        ]  # fmt: skip
        for value, why in mistakes:
            if torch.equal(g64, value):
                raise LabCheckError(f"{where}: your unpack_int4 {why}.")
        i = _first_difference(g64, want.long())
        raise LabCheckError(
            f"{where}: q{list(i)} = {int(g64[i])}, expected {int(want[i])} (byte "
            f"{int(packed[i[0], i[1] // 2])}: low nibble {int(low[i[0], i[1] // 2])} → q[2j], "
            f"high nibble {int(high[i[0], i[1] // 2])} → q[2j+1])."
        )
    print(f"✓ unpack_int4 passed {len(cases)} randomized checks")


# ---- 4. SmoothQuant --------------------------------------------------------------------------


def _smooth_cases(seed: int) -> list[tuple[Tensor, Tensor, float]]:
    """(x, w, alpha): activations with a few outlier channels (some negative: max|X|, not
    max X), weights of another spread; a square W and N = in so that a max over the wrong
    axis gives the right shape; α ≠ 0.5 first (at 0.5, α on the wrong side equals 1/s)."""
    gen = torch.Generator().manual_seed(seed)

    def pick(*options):
        return options[int(torch.randint(len(options), (1,), generator=gen))]

    def case(n: int, d: int, out: int, alpha: float) -> tuple[Tensor, Tensor, float]:
        x = torch.randn(n, d, generator=gen)
        channels = torch.randperm(d, generator=gen)[:3]
        x[:, channels] *= torch.tensor([25.0, -30.0, 40.0])  # outliers
        c = int(channels[1])
        x[:, c] = -(x[:, c].abs() + 0.2)  # all negative: max X_j < 0 < max|X_j|
        w = torch.randn(out, d, generator=gen) * torch.logspace(-1.5, 0, d)[torch.randperm(
            d, generator=gen)]  # fmt: skip
        return x, w, alpha

    d = pick(16, 24)
    return [
        case(d, d, d, pick(0.75, 0.8, 0.65)),  # square W, N = in
        case(3 * d, d, 2 * d, pick(0.6, 0.7)),
        case(2 * d, 2 * d, d, 0.5),
        case(pick(20, 40), pick(8, 12), pick(32, 48), pick(0.3, 0.35, 0.85)),
    ]


def _where_smooth(x: Tensor, w: Tensor, alpha: float) -> str:
    return f"smoothquant_scales(x {_shape(x.shape)}, w {_shape(w.shape)}, alpha={alpha})"


def check_smoothquant_scales(fn: Callable[[Tensor, Tensor, float], Tensor], seed: int = 0) -> None:
    """Check ``fn(x, w, alpha) -> s`` (in,): ``s_j = max|X_j|^α / max|W_j|^(1−α)``, naming α on
    the wrong side, the inverse, a max over the wrong axis, max without abs, mean for max."""
    cases = _smooth_cases(seed)
    for x, w, alpha in cases:
        (n, d), out = x.shape, w.shape[0]
        where = _where_smooth(x, w, alpha)
        given = {"x": x.clone(), "w": w.clone()}
        got = _tensor(_call(fn, where, given["x"], given["w"], alpha), where, "s")
        _unchanged({"x": x, "w": w}, given, where)
        want = smoothquant_scales(x, w, alpha)
        if got.shape != want.shape:
            hint = ""
            if tuple(got.shape) in ((1, d), (d, 1)):
                hint = " Return a 1-D tensor, one scale per input channel (no keepdim)."
            elif tuple(got.shape) == (n,):
                hint = (" That is one value per row of X (a max over dim=1, per token): "
                        "channel j is column j of X, max over the N rows, "
                        "x.abs().amax(dim=0).")  # fmt: skip
            elif tuple(got.shape) == (out,):
                hint = (" That is one value per output channel (a max over dim=1 of W): input "
                        "channel j is column j of W (out, in), w.abs().amax(dim=0).")  # fmt: skip
            raise LabCheckError(f"{where} returned shape {_shape(got.shape)}, expected one scale "
                                f"per input channel, ({d},).{hint}")  # fmt: skip
        if not got.is_floating_point():
            raise LabCheckError(f"{where} returned a {got.dtype} tensor; scales are real.")
        if _same(got, want, rtol=1e-4):
            continue
        a = alpha
        ax, aw = x.abs().amax(0), w.abs().amax(0)
        mistakes = [
            (aw.pow(a) / ax.pow(1 - a), "applies α to the wrong side: s_j = max|X_j|^α / "
             "max|W_j|^(1−α). α is the share of the activations' range moved into the weights "
             "(α = 1 moves all of it: s_j = max|X_j|)"),
            (aw.pow(1 - a) / ax.pow(a), "returns 1/s: s_j = max|X_j|^α / max|W_j|^(1−α) is large "
             "where X has an outlier, so that X diag(s)⁻¹ shrinks it"),
            (ax.pow(a) * aw.pow(1 - a), "multiplies by max|W_j|^(1−α): s_j = max|X_j|^α "
             "**/** max|W_j|^(1−α)"),
            (ax.pow(a) / aw.pow(a), "raises max|W_j| to α: its exponent is 1 − α, "
             "s_j = max|X_j|^α / max|W_j|^(1−α)"),
            (ax.pow(1 - a) / aw.pow(1 - a), "raises max|X_j| to 1 − α: its exponent is α, "
             "s_j = max|X_j|^α / max|W_j|^(1−α)"),
            (x.amax(0).pow(a) / aw.pow(1 - a), "takes max X_j without the absolute value: a "
             "negative outlier counts as much as a positive one, max|X_j| = "
             "x.abs().amax(dim=0)"),
            (x.amax(0).pow(a) / w.amax(0).pow(1 - a), "takes max X_j and max W_j without the "
             "absolute value: negative values count too, x.abs().amax(dim=0)"),
            (ax.pow(a) / w.amax(0).pow(1 - a), "takes max W_j without the absolute value: "
             "w.abs().amax(dim=0)"),
            (x.abs().mean(0).pow(a) / w.abs().mean(0).pow(1 - a), "uses the mean of |X_j| and "
             "|W_j|: SmoothQuant equalises the *maxima* (the ranges a quantizer must cover)"),
            (x.abs().mean(0).pow(a) / aw.pow(1 - a), "uses the mean of |X_j|: SmoothQuant takes "
             "the maximum, max|X_j| (the range an activation quantizer must cover)"),
        ]  # fmt: skip
        if n == d:
            mistakes.append((x.abs().amax(1).pow(a) / aw.pow(1 - a), "takes the max of X over "
                             "the wrong axis (over each row, a token): channel j is column j of "
                             "X (N, in), max over the N rows, x.abs().amax(dim=0)"))  # fmt: skip
        if out == d:
            mistakes.append((ax.pow(a) / w.abs().amax(1).pow(1 - a), "takes the max of W over "
                             "the wrong axis (over each row, an output channel): input channel j "
                             "is column j of W (out, in), w.abs().amax(dim=0)"))  # fmt: skip
        if n == d and out == d:
            mistakes.append(
                (
                    x.abs().amax(1).pow(a) / w.abs().amax(1).pow(1 - a),
                    "takes the "
                    "maxima over the wrong axis (dim=1, rows): input channel j is "
                    "column j of X (N, in) and of W (out, in), .abs().amax(dim=0)",
                )
            )
        for value, why in mistakes:
            if _same(got, value, rtol=1e-4):
                raise LabCheckError(f"{where}: your smoothquant_scales {why}.")
        j = int((~torch.isclose(got.double(), want.double(), rtol=1e-4)).nonzero()[0])
        raise LabCheckError(
            f"{where}: s[{j}] = {float(got[j]):.6g}, expected max|X_j|^α / max|W_j|^(1−α) = "
            f"{float(ax[j]):.4g}^{alpha} / {float(aw[j]):.4g}^{1 - alpha:.2g} = "
            f"{float(want[j]):.6g}."
        )
    print(f"✓ smoothquant_scales passed {len(cases)} randomized checks")


def check_smooth(fn: Callable[[Tensor, Tensor, Tensor], tuple], seed: int = 0) -> None:
    """Check ``fn(x, w, s) -> (x_smooth, w_smooth)``: X diag(s)⁻¹ and W diag(s) (columns
    scaled), so that the product X Wᵀ is unchanged; naming W divided instead of multiplied,
    rows scaled instead of columns, one side left out."""
    cases = _smooth_cases(seed + 3)
    for x, w, alpha in cases:
        (n, d), out = x.shape, w.shape[0]
        s = smoothquant_scales(x, w, alpha)
        where = f"smooth(x {_shape(x.shape)}, w {_shape(w.shape)}, s {_shape(s.shape)})"
        given = {"x": x.clone(), "w": w.clone(), "s": s.clone()}
        result = _call(fn, where, given["x"], given["w"], given["s"])
        _unchanged({"x": x, "w": w, "s": s}, given, where)
        if not isinstance(result, tuple | list) or len(result) != 2:
            raise LabCheckError(f"{where} must return a tuple (x_smooth, w_smooth).")
        xs, ws = (_tensor(v, where, k) for v, k in zip(result, ("x_smooth", "w_smooth"),
                                                       strict=True))  # fmt: skip
        want_x, want_w = smooth(x, w, s)
        if xs.shape != x.shape or ws.shape != w.shape:
            hint = ""
            if xs.shape == w.shape and ws.shape == x.shape:
                hint = " Return them in the order (x_smooth, w_smooth)."
            raise LabCheckError(f"{where}: got shapes {_shape(xs.shape)} and {_shape(ws.shape)}"
                                f", expected x's {_shape(x.shape)} and w's {_shape(w.shape)}."
                                f"{hint}")  # fmt: skip
        if _same(xs, want_x, rtol=1e-5) and _same(ws, want_w, rtol=1e-5):
            continue
        product = torch.allclose(xs.double() @ ws.double().T, x.double() @ w.double().T,
                                 rtol=1e-4, atol=1e-5)  # fmt: skip
        changed = "" if product else " (the product X Wᵀ changed)"
        mistakes = [
            ((want_w, want_x), "returns (w_smooth, x_smooth): the order is (x_smooth, "
             "w_smooth)"),
            ((x * s, w / s), "divides W by s and multiplies X: the product is unchanged, but that "
             "moves the outliers' range *into* the activations, the opposite of smoothing. "
             "SmoothQuant divides X by s (X diag(s)⁻¹) and multiplies W (W diag(s))"),
            ((x / s, w / s), f"divides W by s{changed}: W diag(s) *multiplies* column j of W by "
             "s_j, making up for X's column j divided by s_j"),
            ((x * s, w * s), f"multiplies X by s{changed}: X diag(s)⁻¹ *divides* column j of X "
             "by s_j"),
            ((x, w * s), f"leaves X unscaled{changed}: both sides change, X diag(s)⁻¹ and "
             "W diag(s)"),
            ((x / s, w), f"leaves W unscaled{changed}: both sides change, X diag(s)⁻¹ and "
             "W diag(s)"),
        ]  # fmt: skip
        if out == d:
            mistakes.append(((x / s, w * s[:, None]), f"scales the rows of W{changed}: s_j "
                             "belongs to input channel j, which is column j of W (out, in): "
                             "w * s (broadcast over the last dimension)"))  # fmt: skip
        if n == d:
            mistakes.append(((x / s[:, None], w * s), f"scales the rows of X{changed}: s_j "
                             "belongs to channel j, column j of X (N, in): x / s"))  # fmt: skip
        for (vx, vw), why in mistakes:
            if _same(xs, vx, rtol=1e-5) and _same(ws, vw, rtol=1e-5):
                raise LabCheckError(f"{where}: your smooth {why}.")
        if not product:
            raise LabCheckError(f"{where}: the product X Wᵀ changed; X diag(s)⁻¹ (x / s) and "
                                "W diag(s) (w * s) keep it.")  # fmt: skip
        raise LabCheckError(f"{where}: expected (x / s, w * s): column j of X divided by s_j, "
                            "column j of W multiplied by it.")  # fmt: skip
    print(f"✓ smooth passed {len(cases)} randomized checks")
