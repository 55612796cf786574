"""Quantization: store and compute with b-bit integers through the affine map r = S(q − Z).

Chapter "Quantization" derives each piece:

- `calc_qparams`: the scale S and integer zero point Z from [min, max] (asymmetric, 0
  always inside the range so it is exactly representable) or from ``max|r|`` (symmetric),
  per tensor or per channel (``axis``);
- `quantize` / `dequantize`: q = clamp(round(r / S) + Z, qmin, qmax) and r̂ = S(q − Z);
  inside the range the error ``|r − r̂|`` is at most S/2;
- `fake_quantize`: r̂ in the forward pass with the straight-through estimator in the
  backward pass (gradient 1 inside the range, 0 where clamped) — Bengio et al. 2013;
- `quantize_multiplier`: the fixed-point form m = m0 · 2^−(31 + shift) of a real
  multiplier, as integer-only inference requires (Jacob et al. 2018);
- `QuantizedLinear`: that inference for one layer, and `int16_pair_dot`, the accumulator
  of x86 AVX2 int8 kernels, whose pairs of products saturate to int16.

Rounding is half to even, and r / S is computed as r · (1/S) in float32, exactly as
PyTorch's ``quantize_per_tensor``/``fake_quantize_per_tensor_affine`` do, so results agree
with PyTorch's to the bit (tested).

References: Jacob et al. (2018); Krishnamoorthi (2018); Nagel et al. (2021);
Bengio, Léonard, Courville (2013).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minicompress import _validate as check

__all__ = [
    "QParams",
    "QuantizedLinear",
    "activation_qparams",
    "calc_qparams",
    "calibrate",
    "dequantize",
    "fake_quantize",
    "int16_pair_dot",
    "integer_range",
    "mse_clip_range",
    "packed_bytes",
    "post_training_quantize",
    "prepare_qat",
    "quantize",
    "quantize_multiplier",
    "requantize",
]


@dataclass(frozen=True)
class QParams:
    """The parameters of an affine quantizer r = S(q − Z), q ∈ [qmin, qmax].

    ``scale`` (float32) and ``zero_point`` (int64) are 0-d tensors for per-tensor
    quantization, or 1-d with one entry per slice along ``axis`` for per-channel.
    Checked on creation: every S finite and > 0, every Z an integer in [qmin, qmax], and
    [qmin, qmax] holding at most 2^bits integers (S = 0 or NaN would make every r̂ wrong).
    """

    scale: Tensor
    zero_point: Tensor
    bits: int
    qmin: int
    qmax: int
    axis: int | None = None

    def __post_init__(self) -> None:
        check.integer(self.bits, "bits", 1, 32)
        check.integer(self.qmin, "qmin")
        check.integer(self.qmax, "qmax")
        if not self.qmin < self.qmax or self.qmax - self.qmin >= 2**self.bits:
            raise ValueError(f"[qmin, qmax] = [{self.qmin}, {self.qmax}] must be a non-empty "
                             f"range of at most 2^bits = {2**self.bits} integers")  # fmt: skip
        if self.axis is not None:
            check.integer(self.axis, "axis", 0)
        want = 0 if self.axis is None else 1
        scale = check.float_tensor(self.scale, "scale", why="S must be finite and > 0")
        if scale.ndim != want or (scale <= 0).any():
            raise ValueError(f"scale must be a {want}-d tensor of numbers > 0 (axis "
                             f"{self.axis}), got {scale.tolist()}")  # fmt: skip
        z = self.zero_point
        if not isinstance(z, Tensor) or z.is_floating_point() or z.dtype == torch.bool:
            raise TypeError(f"zero_point must be an integer tensor, got {check.describe(z)}")
        if z.shape != scale.shape:
            raise ValueError(f"zero_point has shape {tuple(z.shape)}, scale {tuple(scale.shape)}")
        if int(z.min()) < self.qmin or int(z.max()) > self.qmax:
            raise ValueError(f"zero_point must lie in [qmin, qmax] = [{self.qmin}, {self.qmax}], "
                             f"got {z.tolist()}")  # fmt: skip

    def _shaped(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Scale and zero point broadcastable against ``x`` (reshaped along ``axis``)."""
        if self.axis is None:
            return self.scale, self.zero_point
        shape = [1] * x.ndim
        shape[self.axis] = -1
        return self.scale.view(shape), self.zero_point.view(shape)


def _check_bits(bits: int, symmetric: bool) -> int:
    kind = "symmetric" if symmetric else "asymmetric"
    return check.bits(bits, 2 if symmetric else 1, 16, what=f" for {kind} quantization")


_FINITE = "a quantization range must be finite"


def integer_range(bits: int, signed: bool) -> tuple[int, int]:
    """[qmin, qmax]: [0, 2^b − 1] unsigned, [−2^(b−1), 2^(b−1) − 1] signed."""
    check.integer(bits, "bits", 1, 32)
    if not isinstance(signed, bool):
        raise TypeError(f"signed must be a bool, got {type(signed).__name__}")
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def calc_qparams(
    x: Tensor, bits: int = 8, symmetric: bool = False, axis: int | None = None
) -> QParams:
    """Scale and zero point covering the values of ``x`` (§ "The affine map and its parameters").

    Asymmetric (unsigned integers, q ∈ [0, 2^b − 1]): extend [min, max] to contain 0, then
    ``S = (max − min) / (qmax − qmin)`` and ``Z = qmin − round(min / S)`` (clamped to the
    range), which is exactly PyTorch's ``MinMaxObserver`` for ``quint8``.

    Symmetric (signed integers, q ∈ [−2^(b−1), 2^(b−1) − 1]): ``Z = 0`` and
    ``S = max|x| / (2^(b−1) − 1)``, so ``±max|x|`` map to ±qmax and nothing is clipped.
    (PyTorch's symmetric observer divides by (qmax − qmin)/2 = 127.5 instead and clips
    ``max|x|`` by half a step.)

    ``axis=None`` gives one (S, Z) for the tensor; ``axis=k`` one per slice along
    dimension k (per-channel: ``axis=0`` for a weight's output channels).
    """
    x = check.float_tensor(x, "x", why=_FINITE)
    _check_bits(bits, symmetric)
    axis = check.axis(axis, x.ndim)
    x = x.detach().float()
    if axis is None:
        lo, hi = x.min(), x.max()
    else:
        flat = x.movedim(axis, 0).reshape(x.shape[axis], -1)  # (C, everything else)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)  # 0 must be representable
    eps = torch.finfo(torch.float32).eps  # a constant tensor would give S = 0: avoid it
    qmin, qmax = integer_range(bits, signed=symmetric)
    if symmetric:
        scale = torch.clamp(torch.maximum(-lo, hi) / qmax, min=eps)
        zero_point = torch.zeros_like(scale, dtype=torch.int64)
    else:
        scale = torch.clamp((hi - lo) / (qmax - qmin), min=eps)
        # hi − lo overflows float32 beyond 3.4e38; the quotient itself may still fit
        wide = ((hi.double() - lo.double()) / (qmax - qmin)).float()
        scale = torch.where(torch.isfinite(scale), scale, wide)
        zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax).to(torch.int64)
    ends = (torch.tensor([qmin, qmax]).view(2, *[1] * scale.ndim) - zero_point) * scale
    if not torch.isfinite(scale).all() or not torch.isfinite(ends).all():
        raise ValueError(f"x spans too wide a range for {bits}-bit quantization: the grid "
                         "S(q − Z) would reach beyond float32's ±3.4e38")  # fmt: skip
    return QParams(scale, zero_point, bits, qmin, qmax, axis)


def mse_clip_range(
    x: Tensor, bits: int, symmetric: bool = True, steps: int = 100
) -> tuple[float, float]:
    """The clipping range [lo, hi] that minimises the quantization MSE of ``x``
    (§ "Clipping vs. rounding").

    Shrinking the range from [min, max] to ``f · [min, max]`` makes the step S smaller
    (rounding error S²/12 falls as f²) but clips the values outside (error grows with
    what lies beyond). The best of ``steps`` fractions f ∈ (0, 1] is returned; for
    ``symmetric`` the range is ±f·max|x|. This is the "MSE" observer of Nagel et al. (2021).
    Tensors of more than 10^5 values are judged on a fixed random sample of 10^5.
    """
    x = check.float_tensor(x, "x", why=_FINITE).detach().float().flatten()
    _check_bits(bits, symmetric)
    check.integer(steps, "steps", 1)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    if symmetric:
        lo, hi = -max(-lo, hi), max(-lo, hi)
    if x.numel() > 100_000:  # the MSE of a random sample of 10^5 values is plenty to rank ranges
        x = x[torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0))[:100_000]]
    fractions = torch.linspace(1.0, 1.0 / steps, steps)
    errors = []
    for chunk in fractions.split(20):  # candidate ranges as "channels": (F, 2) -> F quantizers
        qp = calc_qparams(torch.stack([chunk * lo, chunk * hi], 1), bits, symmetric, axis=0)
        grid = x.expand(len(chunk), -1)  # (F, n)
        errors.append(((dequantize(quantize(grid, qp), qp) - grid) ** 2).mean(1))
    f = float(fractions[int(torch.argmin(torch.cat(errors)))])
    return f * lo, f * hi


def _check_qparams(qp: object, x: Tensor) -> QParams:
    if not isinstance(qp, QParams):
        raise TypeError(f"qp must be a QParams, got {type(qp).__name__}")
    if qp.axis is not None:
        if qp.axis >= x.ndim:
            raise ValueError(f"qp.axis = {qp.axis} but the tensor has {x.ndim} dimensions")
        if x.shape[qp.axis] != qp.scale.numel():
            raise ValueError(
                f"qp has {qp.scale.numel()} channels but the tensor has {x.shape[qp.axis]} "
                f"along axis {qp.axis}"
            )
    return qp


def _storage_dtype(qmin: int, qmax: int) -> torch.dtype:
    """The smallest integer dtype that holds [qmin, qmax]."""
    if qmin >= 0 and qmax <= 255:
        return torch.uint8
    for dtype in (torch.int8, torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= qmin and qmax <= info.max:
            return dtype
    raise ValueError(f"no integer dtype holds [{qmin}, {qmax}]")


def _round_scaled(x: Tensor, qp: QParams) -> Tensor:
    """round(x / S) + Z as float, computed as PyTorch does: x · (1/S) in float32."""
    scale, zero_point = qp._shaped(x)
    return torch.round(x.float() * (1.0 / scale)) + zero_point


def quantize(x: Tensor, qp: QParams) -> Tensor:
    """q = clamp(round(x / S) + Z, qmin, qmax), as the smallest integer dtype that fits.

    Equal to ``torch.quantize_per_tensor(x, S, Z, quint8).int_repr()`` (and the per-channel
    version) for the same S and Z.
    """
    x = check.float_tensor(x, "x", why=_FINITE)
    qp = _check_qparams(qp, x)
    q = torch.clamp(_round_scaled(x, qp), qp.qmin, qp.qmax)
    return q.to(_storage_dtype(qp.qmin, qp.qmax))


def dequantize(q: Tensor, qp: QParams) -> Tensor:
    """r̂ = S(q − Z), in float32."""
    if not isinstance(q, Tensor) or q.is_floating_point() or q.dtype == torch.bool:
        kind = f"tensor of dtype {q.dtype}" if isinstance(q, Tensor) else type(q).__name__
        raise TypeError(f"q must be an integer tensor, got {kind}")
    qp = _check_qparams(qp, q)
    if q.numel() and (int(q.min()) < qp.qmin or int(q.max()) > qp.qmax):
        raise ValueError(f"q has values outside [{qp.qmin}, {qp.qmax}]")
    scale, zero_point = qp._shaped(q)
    return (q.to(torch.int64) - zero_point).float() * scale


def fake_quantize(x: Tensor, qp: QParams) -> Tensor:
    """Quantize then dequantize in one step, differentiably (§ "Quantization-aware training").

    Forward: S(clamp(round(x / S) + Z, qmin, qmax) − Z). Backward: the straight-through
    estimator, ∂out/∂x = 1 where x is inside the representable range and 0 where it was
    clamped. Forward and gradient equal ``torch.fake_quantize_per_tensor_affine`` (and
    ``..._per_channel_affine``).
    """
    x = check.float_tensor(x, "x", why=_FINITE)
    qp = _check_qparams(qp, x)
    unclamped = _round_scaled(x.detach(), qp)
    inside = (unclamped >= qp.qmin) & (unclamped <= qp.qmax)
    scale, zero_point = qp._shaped(x)
    out = (torch.clamp(unclamped, qp.qmin, qp.qmax) - zero_point) * scale
    # value: out; gradient: 1 where inside, 0 where clamped (x − x.detach() is 0 but not constant)
    return out.to(x.dtype) + (x - x.detach()) * inside


def quantize_multiplier(m: float) -> tuple[int, int]:
    """(m0, shift) with m0 an int32 in [2^30, 2^31) and m ≈ m0 · 2^−(31 + shift).

    Integer-only inference rescales an int32 accumulator by M = S1·S2/S3, a real number;
    writing M = 2^−n · M0 with M0 ∈ [0.5, 1) and storing M0 as a 31-bit fixed-point
    integer makes the rescale an integer multiply and a shift (Jacob et al. 2018, §2.2).
    The relative error is below 2^−31.
    """
    check.number(m, "m (the multiplier)", 0.0, low_open=True)
    mantissa, exponent = math.frexp(m)  # m = mantissa · 2^exponent, mantissa ∈ [0.5, 1)
    m0 = round(mantissa * 2**31)
    if m0 == 2**31:  # the mantissa rounded up to 1.0
        m0, exponent = m0 // 2, exponent + 1
    return m0, -exponent


def requantize(acc: Tensor, m0: Tensor, shift: Tensor) -> Tensor:
    """round(acc · m0 / 2^(31 + shift)) in integer arithmetic (int64), rounding halves up.

    The fixed-point rescale of an int32 accumulator by M = m0 · 2^−(31 + shift)
    (`quantize_multiplier`); ``m0`` and ``shift`` broadcast against ``acc``. ``acc`` must
    fit int32, ``m0`` lie in [0, 2^31) and ``shift`` be >= −30, so the product fits int64;
    a shift of 32 or more gives 0, as the exact rounding does.
    """
    for name, t in (("acc", acc), ("m0", m0), ("shift", shift)):
        if not isinstance(t, Tensor) or t.is_floating_point() or t.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, got {check.describe(t)}")
    limits = (("acc", acc, -(2**31), 2**31 - 1), ("m0", m0, 0, 2**31 - 1),
              ("shift", shift, -30, None))  # fmt: skip
    for name, t, low, high in limits:
        if t.numel() and (int(t.min()) < low or (high is not None and int(t.max()) > high)):
            raise ValueError(f"{name} must lie in [{low}, {high if high is not None else '∞'}], "
                             f"got values from {int(t.min())} to {int(t.max())}")  # fmt: skip
    # |acc · m0| < 2^62, so for 31 + shift >= 63 the rounded quotient is exactly 0; shifting an
    # int64 by 64 or more is undefined, hence the clamp
    total = 31 + shift.to(torch.int64)
    capped = total.clamp(max=62)
    half = torch.bitwise_left_shift(torch.ones_like(capped), capped - 1)
    out = torch.bitwise_right_shift(acc.to(torch.int64) * m0.to(torch.int64) + half, capped)
    return torch.where(total > 62, 0, out)


def int16_pair_dot(q_x: Tensor, q_w: Tensor) -> Tensor:
    """Σ_k q_x,k · q_w,ik as AVX2's ``vpmaddubsw`` computes it: pairs saturated to int16.

    The instruction multiplies uint8 × int8 and adds *adjacent* products into an int16 with
    saturation, sat16(q_x,2j q_w,2j + q_x,2j+1 q_w,2j+1); a second instruction sums those in
    int32. A pair can reach 2 · 255 · 127 = 64,770 > 2^15 − 1, so 8-bit inputs can saturate
    and 7-bit inputs (2 · 127 · 127 = 32,258) cannot (§ "Integer-only inference").
    ``q_x`` is uint8 of shape (N, K), ``q_w`` int8 of shape (M, K); returns int32 (N, M).
    VNNI's ``vpdpbusd`` and ARM's kernels accumulate in int32 and do not saturate.
    """
    if q_x.dtype != torch.uint8 or q_w.dtype != torch.int8:
        raise TypeError(
            f"int16_pair_dot takes uint8 q_x and int8 q_w, got {q_x.dtype}, {q_w.dtype}"
        )
    if q_x.ndim != 2 or q_w.ndim != 2 or q_x.shape[1] != q_w.shape[1]:
        raise ValueError(
            f"q_x (N, K) and q_w (M, K) must share K, got {tuple(q_x.shape)}, {tuple(q_w.shape)}"
        )
    x, w = q_x.to(torch.int32), q_w.to(torch.int32)
    acc = torch.zeros(x.shape[0], w.shape[0], dtype=torch.int32)
    for k in range(0, x.shape[1], 2):  # one pair of columns at a time: (N, 2) @ (2, M)
        acc += torch.clamp(x[:, k : k + 2] @ w[:, k : k + 2].T, -(2**15), 2**15 - 1)
    return acc


class QuantizedLinear(nn.Module):
    """A Linear layer computed with integers only (Jacob et al. 2018, § "Integer-only inference").

    uint8 input q_x (scale S_x, zero point Z_x) → uint8 output, with int8 weights (symmetric,
    per output channel by default, so Z_w = 0) and an int32 bias q_b = round(b / (S_x S_w)):

        acc = Σ_j (q_x,j − Z_x) · q_w,ij + q_b,i            (int32 accumulate)
        q_y = clamp(Z_y + requantize(acc, M_i), 0, 255),    M_i = S_x S_w,i / S_y

    Equal to PyTorch's int8 ``torch.ao.nn.quantized.Linear`` bit for bit on the qnnpack engine,
    and within one step on the x86 engine when the input has at most 7 bits or the CPU has
    VNNI (PyTorch keeps the bias in float and rescales in float with round-half-even; this layer
    rounds the bias to int32 and rescales in fixed point). With 8-bit inputs, the x86 engine's
    AVX2 kernel saturates pairs of products to int16; ``saturate_pairs=True`` computes the
    accumulator that way (`int16_pair_dot`) and then matches that kernel within one step.
    """

    def __init__(
        self,
        linear: nn.Linear,
        input_qp: QParams,
        output_qp: QParams,
        per_channel: bool = True,
        saturate_pairs: bool = False,
    ) -> None:
        super().__init__()
        self.saturate_pairs = bool(saturate_pairs)
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        for name, qp in (("input_qp", input_qp), ("output_qp", output_qp)):
            if not isinstance(qp, QParams) or qp.axis is not None or qp.qmin < 0 or qp.qmax > 255:
                raise ValueError(f"{name} must be per-tensor unsigned QParams of at most 8 bits")
        weight = linear.weight.detach().float()
        self.weight_qp = calc_qparams(
            weight, bits=8, symmetric=True, axis=0 if per_channel else None
        )
        self.input_qp, self.output_qp = input_qp, output_qp
        w_scale = self.weight_qp.scale.expand(weight.shape[0])  # (out,)
        bias = (
            linear.bias.detach().float() if linear.bias is not None else torch.zeros(len(w_scale))
        )
        multipliers = [
            quantize_multiplier(float(m)) for m in input_qp.scale * w_scale / output_qp.scale
        ]
        self.register_buffer("weight_q", quantize(weight, self.weight_qp))  # int8 (out, in)
        self.register_buffer(
            "bias_q", torch.round(bias / (input_qp.scale * w_scale)).to(torch.int32)
        )
        self.register_buffer("m0", torch.tensor([m for m, _ in multipliers], dtype=torch.int64))
        self.register_buffer("shift", torch.tensor([k for _, k in multipliers], dtype=torch.int64))

    def forward(self, q_x: Tensor) -> Tensor:
        if q_x.dtype != torch.uint8:
            raise TypeError(f"QuantizedLinear takes uint8 input (use quantize), got {q_x.dtype}")
        weight = self.weight_q.to(torch.int32)  # (out, in)
        z_x = self.input_qp.zero_point.to(torch.int32)
        if self.saturate_pairs:  # Σ (q_x − Z_x) q_w = Σ q_x q_w − Z_x Σ q_w, as fbgemm splits it
            acc = int16_pair_dot(q_x, self.weight_q) - z_x * weight.sum(1) + self.bias_q
        else:
            acc = (q_x.to(torch.int32) - z_x) @ weight.T + self.bias_q  # (N, out), int32
        q_y = requantize(acc, self.m0, self.shift) + self.output_qp.zero_point
        return torch.clamp(q_y, 0, 255).to(torch.uint8)


# ---- whole models: calibration, post-training quantization, quantization-aware training ----


def _quantizable(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)}


@torch.no_grad()
def calibrate(
    model: nn.Module, images: Tensor, method: str = "minmax", percentile: float = 99.99,
    bits: int = 8, batch_size: int = 1000,
) -> dict[str, tuple[float, float]]:  # fmt: skip
    """The range [lo, hi] of the *input* of every Linear/Conv2d layer over ``images``.

    ``method="minmax"``: the smallest and largest value seen (PyTorch's MinMaxObserver).
    ``method="percentile"``: the ``100 − percentile`` and ``percentile`` percentiles, which
    ignore rare outliers at the price of clipping them (§ "Clipping vs. rounding").
    ``method="mse"``: the range that minimises the ``bits``-bit quantization MSE of the
    values seen (`mse_clip_range`, asymmetric).
    """
    check.module(model)
    check.choice(method, "method", ("minmax", "percentile", "mse"))
    check.number(percentile, "percentile", 50.0, 100.0, low_open=True)
    _check_bits(bits, symmetric=False)
    check.float_tensor(images, "images", why=_FINITE)
    check.integer(batch_size, "batch_size", 1)
    seen: dict[str, list[Tensor]] = {name: [] for name in _quantizable(model)}

    def hook(name: str):
        def record(_module: nn.Module, inputs: tuple) -> None:
            seen[name].append(inputs[0].detach().flatten())

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in _quantizable(model).items()]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            model(images[start : start + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    ranges = {}
    for name, chunks in seen.items():
        values = torch.cat(chunks)
        if method == "minmax":
            ranges[name] = (float(values.min()), float(values.max()))
            continue
        # a fixed random sample: torch.quantile refuses more than 2^24 values
        sample = values[
            torch.randint(len(values), (1_000_000,), generator=torch.Generator().manual_seed(0))
        ]
        if method == "mse":
            ranges[name] = mse_clip_range(sample, bits=bits, symmetric=False)
        else:
            q = torch.quantile(sample, torch.tensor([1 - percentile / 100, percentile / 100]))
            ranges[name] = (float(q[0]), float(q[1]))
    return ranges


def activation_qparams(lo: float, hi: float, bits: int = 8) -> QParams:
    """Asymmetric (unsigned) QParams for activations observed in [lo, hi]."""
    return calc_qparams(torch.tensor([lo, hi], dtype=torch.float32), bits=bits)


class _WeightFakeQuant(nn.Module):
    """A parametrization: the weight is seen through `fake_quantize` (symmetric, per channel)."""

    def __init__(self, bits: int, per_channel: bool) -> None:
        super().__init__()
        self.bits, self.axis = bits, 0 if per_channel else None

    def forward(self, weight: Tensor) -> Tensor:
        qp = calc_qparams(weight.detach(), bits=self.bits, symmetric=True, axis=self.axis)
        return fake_quantize(weight, qp)


def _add_input_fake_quant(model: nn.Module, ranges: dict, act_bits: int) -> None:
    for name, module in _quantizable(model).items():
        if name not in ranges:
            raise ValueError(f"no calibrated range for layer {name!r}; have {sorted(ranges)}")
        qp = activation_qparams(*ranges[name], bits=act_bits)
        module.register_forward_pre_hook(lambda _m, inputs, qp=qp: (fake_quantize(inputs[0], qp),))


def prepare_qat(
    model: nn.Module, ranges: dict[str, tuple[float, float]], weight_bits: int = 8,
    act_bits: int = 8, per_channel: bool = True,
) -> nn.Module:  # fmt: skip
    """A copy of ``model`` that trains *through* quantization (§ "Quantization-aware training").

    Every Linear/Conv2d weight is replaced, via ``torch.nn.utils.parametrize``, by its
    fake-quantized self (symmetric, ``weight_bits``, per output channel; the scale follows
    the weight as it trains), and every layer's input is fake-quantized (asymmetric,
    ``act_bits``) with the calibrated ``ranges`` (`calibrate`). Gradients pass with the
    straight-through estimator, so `minicompress.train.fit` trains it as usual.
    """
    import copy

    from torch.nn.utils import parametrize

    _check_bits(weight_bits, symmetric=True)
    _check_bits(act_bits, symmetric=False)
    qat = copy.deepcopy(model)
    for module in _quantizable(qat).values():
        parametrize.register_parametrization(
            module, "weight", _WeightFakeQuant(weight_bits, per_channel)
        )
    _add_input_fake_quant(qat, ranges, act_bits)
    return qat


def post_training_quantize(
    model: nn.Module, ranges: dict[str, tuple[float, float]], weight_bits: int = 8,
    act_bits: int = 8, per_channel: bool = True,
) -> nn.Module:  # fmt: skip
    """A copy of ``model`` that computes what its quantized version computes (simulated PTQ).

    Weights are quantized once (symmetric, ``weight_bits``, per output channel unless
    ``per_channel=False``) and stored dequantized; each Linear/Conv2d input is
    fake-quantized with the calibrated ``ranges``. Its accuracy is the quantized model's;
    its speed is not (see `QuantizedLinear` and PyTorch's int8 kernels for that).
    """
    import copy

    _check_bits(weight_bits, symmetric=True)
    _check_bits(act_bits, symmetric=False)
    ptq = copy.deepcopy(model)
    with torch.no_grad():
        for module in _quantizable(ptq).values():
            qp = calc_qparams(module.weight, bits=weight_bits, symmetric=True,
                              axis=0 if per_channel else None)  # fmt: skip
            module.weight.copy_(dequantize(quantize(module.weight, qp), qp))
    _add_input_fake_quant(ptq, ranges, act_bits)
    return ptq.eval()


def packed_bytes(model: nn.Module, weight_bits: int, per_channel: bool = True) -> int:
    """Bytes to store ``model`` with ``weight_bits``-bit weights packed densely
    (§ "Post-training quantization").

    Σ over Linear/Conv2d layers of ⌈n·b / 8⌉ (the weights) + 4 bytes per float32 scale
    (one per output channel, or one per layer) + 4 bytes per float32 bias; any other
    parameter or buffer is counted at its own size. Every number, no file format around
    them: compare `minicompress.measure.size_in_bits`, not ``torch.save`` sizes.
    """
    from minicompress.measure import size_in_bits

    check.module(model)
    _check_bits(weight_bits, symmetric=True)
    layers = _quantizable(model)
    total = 0
    for name, tensor in model.state_dict().items():
        layer, _, kind = name.rpartition(".")
        if layer in layers and kind == "weight":
            scales = tensor.shape[0] if per_channel else 1
            total += math.ceil(tensor.numel() * weight_bits / 8) + 4 * scales
        else:
            total += size_in_bits(tensor) // 8
    return total
