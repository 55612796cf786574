"""Low-bit matrix products on the CPU: where a decoding step's bytes are, what the roofline
predicts for 16-, 8- and 4-bit weights, and PyTorch's int4/int8 weight-only kernels timed
against float32 (chapter "Quantizing a small language model", § "Where the bytes are").

Generating one token reads every weight once and does two FLOPs with it (a multiply and an
add), so at batch 1 a transformer's step is a stack of matrix–vector products whose time is
set by how fast the weights arrive, not by arithmetic. The roofline model (Williams, Waterman
and Patterson 2009) says it in one line: time ≈ max(bytes / bandwidth, FLOPs / peak).

- `GPTShape`, `block_parameters`, `decode_bytes_per_token`: the bytes and FLOPs of one step;
- `roofline_time`, `roofline_speedup`: the model's prediction;
- `Int4Linear` (`torch.ops.aten._weight_int4pack_mm_for_cpu`, groups of 32 with a scale and
  a zero each) and `Int8Linear` (`torch._weight_int8pack_mm`, one scale per output row);
- `cache_sizes`, `last_level_cache_bytes`: where the weights can come from;
- `matvec_speedup`, `matvec_sweep`, `kernel_benchmark`: the measurement, cycling through a
  stack of distinct layers so that a working set larger than the caches really comes from
  memory, as a real model's decoding does.
"""

from __future__ import annotations

import copy
import math
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.quantization import calc_qparams, quantize

__all__ = [
    "DecodeBytes",
    "GPTShape",
    "Int4Linear",
    "Int4Weights",
    "Int8Linear",
    "MatvecTiming",
    "block_parameters",
    "cache_sizes",
    "decode_bytes_per_token",
    "int4_available",
    "int4_group_quantize",
    "int8_available",
    "kernel_benchmark",
    "last_level_cache_bytes",
    "matvec_speedup",
    "matvec_sweep",
    "roofline_speedup",
    "roofline_time",
]

_GROUP_SIZES = (32, 64, 128, 256)  # what _weight_int4pack_mm_for_cpu accepts
_ACTIVATION_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
_MAX_STACK_BYTES = 2**30  # the timing helpers allocate at most about this much float32


# --------------------------------------------------------------------------- the bytes


def block_parameters(d: int) -> int:
    """Parameters of one GPT block of width d: 12d² + 13d.

    qkv 3d² + 3d, attention proj d² + d, MLP fc 4d² + 4d, MLP proj 4d² + d, two LayerNorms
    2 · 2d; the 12d² are the Linear layers' weights, the 13d their biases and the norms
    (chapter "Quantizing a small language model", § "Where the bytes are").
    """
    d = check.integer(d, "d", 1)
    return 12 * d * d + 13 * d


@dataclass(frozen=True)
class GPTShape:
    """The sizes that decide a GPT's bytes per token: width d, blocks, heads, vocabulary,
    context (the `minicompress.models.TinyGPT` layout: untied head, learned positions)."""

    d: int
    layers: int
    heads: int
    vocab: int
    context: int

    def __post_init__(self) -> None:
        for name in ("d", "layers", "heads", "vocab", "context"):
            check.integer(getattr(self, name), name, 1)
        if self.d % self.heads:
            raise ValueError(f"d ({self.d}) must be divisible by heads ({self.heads})")

    @classmethod
    def of(cls, model: nn.Module) -> GPTShape:
        """The shape of a `TinyGPT` (read from its layers, not assumed)."""
        check.module(model)
        try:
            vocab, d = model.tok_emb.weight.shape
            return cls(d=d, layers=len(model.blocks), heads=model.blocks[0].attn.heads,
                       vocab=vocab, context=model.context)  # fmt: skip
        except AttributeError as error:
            raise TypeError(f"model must be a TinyGPT-like module: {error}") from None

    @property
    def parameters(self) -> int:
        """layers · (12d² + 13d) + d · vocab (head) + (vocab + context) · d (embeddings) + 2d."""
        d = self.d
        return (self.layers * block_parameters(d) + d * self.vocab
                + (self.vocab + self.context) * d + 2 * d)  # fmt: skip

    @property
    def linear_weights(self) -> int:
        """The weights of the blocks' Linear layers (the ones a chapter quantizes), 12d² each."""
        return self.layers * 12 * self.d * self.d


@dataclass(frozen=True)
class DecodeBytes:
    """Bytes read and FLOPs done to generate one token (per step, for the whole batch)."""

    weights: float
    kv_cache: float
    activations: float
    flops: float

    @property
    def total(self) -> float:
        """weights + KV cache + activations."""
        return self.weights + self.kv_cache + self.activations

    @property
    def intensity(self) -> float:
        """Arithmetic intensity in FLOPs per byte, flops / total."""
        return self.flops / self.total


def decode_bytes_per_token(
    shape: GPTShape | nn.Module,
    position: int,
    *,
    weight_bits: float = 32,
    kv_bits: float = 32,
    other_bits: float = 32,
    activation_bits: float = 32,
    batch: int = 1,
) -> DecodeBytes:
    """What one decoding step reads when ``position`` tokens are already cached.

    - weights: the blocks' Linear weights, 12d² · layers at ``weight_bits`` (a fraction such
      as 5 counts group scales), plus everything kept in float at ``other_bits``: biases and
      LayerNorms (13d per block, 2d final), the head d · vocab, one row of each embedding.
      Read once per step whatever the batch;
    - KV cache: 2 · layers · d · position values at ``kv_bits``, per sequence of the batch;
    - activations: per block the Linear layers' inputs and outputs, (d + 3d) + (d + d) +
      (d + 4d) + (4d + d) = 16d values, and h · position attention scores, plus the head's
      vocab logits, per sequence, at ``activation_bits``;
    - FLOPs: 2 per weight of the Linear layers and head (one multiply-accumulate each) and
      2 · 2 · d · position per block for QKᵀ and the weighted sum of V, per sequence.

    (chapter "Quantizing a small language model", § "Where the bytes are").
    """
    if isinstance(shape, nn.Module):
        shape = GPTShape.of(shape)
    if not isinstance(shape, GPTShape):
        raise TypeError(f"shape must be a GPTShape or a TinyGPT, got {type(shape).__name__}")
    position = check.integer(position, "position", 0)
    batch = check.integer(batch, "batch", 1)
    for name, value in (
        ("weight_bits", weight_bits),
        ("kv_bits", kv_bits),
        ("other_bits", other_bits),
        ("activation_bits", activation_bits),
    ):
        check.number(value, name, 0.0, 64.0, low_open=True)  # fmt: skip
    d, layers = shape.d, shape.layers
    other = layers * 13 * d + 2 * d + d * shape.vocab + 2 * d
    weights = shape.linear_weights * weight_bits / 8 + other * other_bits / 8
    kv = batch * 2 * layers * d * position * kv_bits / 8
    values = layers * (16 * d + shape.heads * position) + shape.vocab
    activations = batch * values * activation_bits / 8
    flops = batch * (2 * (shape.linear_weights + d * shape.vocab) + layers * 4 * d * position)
    return DecodeBytes(weights, kv, activations, flops)


# ------------------------------------------------------------------------- the roofline


def roofline_time(bytes_moved: float, flops: float, bandwidth: float, peak: float) -> float:
    """Roofline estimate of a kernel's time: max(bytes / bandwidth, FLOPs / peak) (Williams
    et al. 2009), in seconds for bytes/s and FLOP/s. The kernel is memory-bound when its
    arithmetic intensity FLOPs / bytes is below the ridge point peak / bandwidth
    (chapter "Quantizing a small language model", § "Where the bytes are").
    """
    check.number(bytes_moved, "bytes_moved", 0.0)
    check.number(flops, "flops", 0.0)
    check.number(bandwidth, "bandwidth", 0.0, low_open=True)
    check.number(peak, "peak", 0.0, low_open=True)
    return max(bytes_moved / bandwidth, flops / peak)


def roofline_speedup(
    weight_bits: float,
    *,
    base_bits: float = 32,
    batch: int = 1,
    bandwidth: float | None = None,
    peak: float | None = None,
) -> float:
    """Predicted speed-up of a weight-only low-bit matrix product over ``base_bits`` weights.

    A layer with n weights at b bits per weight, applied to ``batch`` vectors, moves n · b / 8
    bytes and does 2 · batch · n FLOPs (activations are negligible beside the weights at small
    batch), so ``t_base / t_low`` = roofline_time(n · base / 8, 2Bn) / roofline_time(n · b / 8,
    2Bn). Without ``bandwidth`` and ``peak`` both are taken memory-bound and the speed-up is
    the ratio of bytes, base_bits / weight_bits: 2 for 16-bit, 4 for 8-bit and 32 / 5 = 6.4
    for int4 in groups of 32 with a 16-bit scale and zero per group (4 + 32/32 bits). The
    low-bit kernel's cost of unpacking is not in this model: the measurement shows it
    (chapter "Quantizing a small language model", § "Where the bytes are").
    """
    weight_bits = check.number(weight_bits, "weight_bits", 0.0, 64.0, low_open=True)
    base_bits = check.number(base_bits, "base_bits", 0.0, 64.0, low_open=True)
    batch = check.integer(batch, "batch", 1)
    if (bandwidth is None) != (peak is None):
        raise ValueError("give both bandwidth and peak, or neither (memory-bound)")
    if bandwidth is None:
        return base_bits / weight_bits
    n = 1.0  # the ratio does not depend on the layer's size
    flops = 2.0 * batch * n
    return (roofline_time(n * base_bits / 8, flops, bandwidth, peak)
            / roofline_time(n * weight_bits / 8, flops, bandwidth, peak))  # fmt: skip


# ------------------------------------------------------------------------ the kernels


def int4_available() -> bool:
    """Whether this PyTorch has the CPU int4 weight-only kernels."""
    return hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(
        torch.ops.aten, "_convert_weight_to_int4pack_for_cpu"
    )


def int8_available() -> bool:
    """Whether this PyTorch has the CPU int8 weight-only kernel ``torch._weight_int8pack_mm``."""
    return hasattr(torch, "_weight_int8pack_mm")


def _require(available: bool, what: str) -> None:
    if not available:
        raise RuntimeError(f"this PyTorch ({torch.__version__}) has no {what} CPU kernel")


def _activation_dtype(dtype: object) -> torch.dtype:
    if dtype not in _ACTIVATION_DTYPES:
        raise ValueError(f"dtype must be torch.bfloat16, torch.float16 or torch.float32, "
                         f"got {dtype}")  # fmt: skip
    return dtype


def _weight(weight: object) -> Tensor:
    weight = check.float_tensor(weight, "weight")
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape "
                         f"{tuple(weight.shape)}")  # fmt: skip
    return weight.detach().float()


@dataclass(frozen=True)
class Int4Weights:
    """A weight (out, in) as 4-bit codes in groups of ``group_size`` along ``in``.

    ``codes`` int32 (out, in) in 0..15; ``scales_and_zeros`` (in / g, out, 2) in the
    activations' dtype, the layout PyTorch's CPU kernel reads: the weight is
    w = (q − 8) · scale + zero.
    """

    codes: Tensor
    scales_and_zeros: Tensor
    group_size: int

    def dequantize(self) -> Tensor:
        """The weight the kernel multiplies by, float32 (out, in): (q − 8) · scale + zero."""
        out, n_in = self.codes.shape
        g = self.group_size
        sz = self.scales_and_zeros.float().transpose(0, 1)  # (out, in / g, 2)
        q = self.codes.float().view(out, n_in // g, g)
        return ((q - 8) * sz[..., :1] + sz[..., 1:]).reshape(out, n_in)


def int4_group_quantize(
    weight: Tensor, group_size: int = 32, dtype: torch.dtype = torch.bfloat16
) -> Int4Weights:
    """Asymmetric 4-bit codes with one scale S and zero point Z per group of ``group_size``
    consecutive inputs, from `minicompress.quantization.calc_qparams` (w ≈ S · (q − Z),
    q ∈ 0..15), rewritten in PyTorch's int4 layout w = (q − 8) · S + zero with
    zero = S · (8 − Z), stored in ``dtype`` (the activations' dtype, as the kernel wants).

    Per weight that costs 4 + 2 · 16 / g bits with 16-bit scales: 5 for g = 32
    (chapter "Quantizing a small language model", § "Where the bytes are").
    """
    weight = _weight(weight)
    dtype = _activation_dtype(dtype)
    g = check.integer(group_size, "group_size")
    if g not in _GROUP_SIZES:
        raise ValueError(f"group_size must be one of 32, 64, 128, 256 (what PyTorch's int4 "
                         f"kernel accepts), got {g}")  # fmt: skip
    out, n_in = weight.shape
    if n_in % g:
        raise ValueError(f"in_features ({n_in}) must be divisible by group_size ({g})")
    if out % 16:
        raise ValueError(f"out_features ({out}) must be a multiple of 16 (PyTorch's int4 "
                         "packing works in blocks of 16 rows)")  # fmt: skip
    groups = weight.reshape(out * n_in // g, g)  # (out · in/g, g): one row per group
    qp = calc_qparams(groups, bits=4, symmetric=False, axis=0)
    codes = quantize(groups, qp).to(torch.int32).reshape(out, n_in)
    scale = qp.scale.reshape(out, n_in // g)
    zero = scale * (8 - qp.zero_point.reshape(out, n_in // g).float())
    sz = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(dtype)
    return Int4Weights(codes, sz, g)


class Int4Linear(nn.Module):
    """y = x Ŵᵀ + b with Ŵ in PyTorch's packed CPU int4 format (two codes per byte, groups
    of ``group_size`` with a scale and a zero each), computed by
    ``torch.ops.aten._weight_int4pack_mm_for_cpu``. Activations are cast to ``dtype``
    (bfloat16 by default: on x86 PyTorch 2.14's kernel is vectorized for 16-bit activations
    and many times slower with float32 ones); the output is cast back to the input's dtype.
    ``weight_bytes`` is what one product reads: packed codes plus scales and zeros
    (chapter "Quantizing a small language model", § "Where the bytes are").
    """

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None = None,
        *,
        group_size: int = 32,
        dtype: torch.dtype = torch.bfloat16,
    ):
        super().__init__()
        _require(int4_available(), "int4 (_weight_int4pack_mm_for_cpu)")
        q = int4_group_quantize(weight, group_size, dtype)
        self.out_features, self.in_features = q.codes.shape
        self.group_size, self.dtype = q.group_size, dtype
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.codes, 1)
        self.register_buffer("packed", packed)  # uint8 (out, in / 2)
        self.register_buffer("scales_and_zeros", q.scales_and_zeros)
        self.register_buffer("bias", None if bias is None else _bias(bias, self.out_features))

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> Int4Linear:
        """The int4 version of an ``nn.Linear`` (its bias kept in float)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        return cls(linear.weight, linear.bias, **kwargs)

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights a product reads, codes (in · out / 2) plus scales and zeros."""
        return _nbytes(self.packed) + _nbytes(self.scales_and_zeros)

    def forward(self, x: Tensor) -> Tensor:
        x2 = _rows(x, self.in_features).to(self.dtype)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x2, self.packed, self.group_size, self.scales_and_zeros
        )
        return _finish(y, self.bias, x)


class Int8Linear(nn.Module):
    """y = x Ŵᵀ + b with Ŵ = S_row · q, q int8 in [−127, 127], one symmetric scale per output
    row (`calc_qparams(weight, 8, symmetric=True, axis=0)`), computed by
    ``torch._weight_int8pack_mm`` with activations in ``dtype`` (bfloat16 by default, the
    vectorized path on x86); ``in_features`` must be a multiple of 16. ``weight_bytes`` =
    codes + one scale per row
    (chapter "Quantizing a small language model", § "Where the bytes are").
    """

    def __init__(self, weight: Tensor, bias: Tensor | None = None, *,
                 dtype: torch.dtype = torch.bfloat16):  # fmt: skip
        super().__init__()
        _require(int8_available(), "int8 (_weight_int8pack_mm)")
        weight = _weight(weight)
        self.dtype = _activation_dtype(dtype)
        self.out_features, self.in_features = weight.shape
        if self.in_features % 16:
            # PyTorch 2.14's AVX-512 kernel with bfloat16 activations reads past the end of a
            # row whose length is not a multiple of 16 and returns garbage (seen: errors of
            # 40 % to inf for in_features 8, 24, 40, 72); refuse rather than be wrong
            raise ValueError(f"in_features ({self.in_features}) must be a multiple of 16 "
                             "for PyTorch's int8 weight-only kernel")  # fmt: skip
        qp = calc_qparams(weight, bits=8, symmetric=True, axis=0)
        self.register_buffer("codes", quantize(weight, qp).to(torch.int8))
        self.register_buffer("scales", qp.scale.to(dtype))
        self.register_buffer("bias", None if bias is None else _bias(bias, self.out_features))

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> Int8Linear:
        """The int8 version of an ``nn.Linear`` (its bias kept in float)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        return cls(linear.weight, linear.bias, **kwargs)

    @property
    def weight_bytes(self) -> int:
        """Bytes of weights a product reads, codes (in · out) plus one scale per row."""
        return _nbytes(self.codes) + _nbytes(self.scales)

    def dequantized_weight(self) -> Tensor:
        """The weight the kernel multiplies by, float32 (out, in): S_row · q."""
        return self.codes.float() * self.scales.float()[:, None]

    def forward(self, x: Tensor) -> Tensor:
        x2 = _rows(x, self.in_features).to(self.dtype)
        return _finish(torch._weight_int8pack_mm(x2, self.codes, self.scales), self.bias, x)


def _bias(bias: object, out: int) -> Tensor:
    bias = check.float_tensor(bias, "bias")
    if bias.shape != (out,):
        raise ValueError(f"bias must have shape ({out},), got {tuple(bias.shape)}")
    return bias.detach().float().clone()


def _rows(x: object, n_in: int) -> Tensor:
    x = check.float_tensor(x, "x", nan=True, inf=True)
    if x.ndim == 0 or x.shape[-1] != n_in:
        raise ValueError(f"x must end in in_features = {n_in}, got shape {tuple(x.shape)}")
    return x.reshape(-1, n_in)


def _finish(y: Tensor, bias: Tensor | None, x: Tensor) -> Tensor:
    y = y.to(x.dtype)
    if bias is not None:
        y = y + bias.to(x.dtype)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


# --------------------------------------------------------------------------- the caches


def _size(text: str) -> int:
    """'32K', '1024K', '32768K', '2 MiB', '512' → bytes."""
    text = text.strip().replace("iB", "").replace(" ", "")
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def cache_sizes() -> dict[str, int]:
    """The data caches one core sees, in bytes, e.g. {"L1d": 32768, "L2": 1048576, "L3":
    33554432}: per instance (one core's L2, the L3 it shares), read on Linux from
    /sys/devices/system/cpu/cpu0/cache (what ``lscpu -C`` prints), on macOS from
    ``sysctl hw.l1dcachesize hw.l2cachesize hw.l3cachesize``; {} where neither answers
    (chapter "Quantizing a small language model", § "Where the bytes are").
    """
    sizes: dict[str, int] = {}
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(root.glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = _size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified") and size > 0:
            sizes[f"L{level}d" if kind == "Data" else f"L{level}"] = size
    if not sizes and platform.system() == "Darwin":
        for level, key in (("L1d", "hw.l1dcachesize"), ("L2", "hw.l2cachesize"),
                           ("L3", "hw.l3cachesize")):  # fmt: skip
            try:
                value = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True,
                                       timeout=5, check=True).stdout.strip()  # fmt: skip
                if int(value) > 0:
                    sizes[level] = int(value)
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
    return sizes


def last_level_cache_bytes() -> int | None:
    """Size in bytes of the largest cache level `cache_sizes` finds (L3 on most x86 CPUs),
    or None where the platform does not say
    (chapter "Quantizing a small language model", § "Where the bytes are").
    """
    sizes = cache_sizes()
    if not sizes:
        return None
    return sizes[max(sizes, key=lambda k: int(k[1]))]


# ---------------------------------------------------------------------------- the timing


@dataclass(frozen=True)
class MatvecTiming:
    """Times of one product y = x Wᵀ per layer, in ms: medians and quartiles per weight format
    ("float32", and "bfloat16", "int8", "int4" as measured), over passes through a stack of
    ``layers`` distinct layers whose float32 weights total ``working_set_bytes``."""

    out_features: int
    in_features: int
    batch: int
    layers: int
    working_set_bytes: int
    median_ms: dict[str, float]
    q1_ms: dict[str, float]
    q3_ms: dict[str, float]
    weight_bytes: dict[str, int]
    threads: int
    repeats: dict[str, int] = field(default_factory=dict)

    def speedup(self, fmt: str) -> float:
        """Median float32 time / median time of ``fmt`` (one run, same stack of layers)."""
        if fmt not in self.median_ms:
            raise ValueError(f"fmt must be one of {', '.join(self.median_ms)}, got {fmt!r}")
        return self.median_ms["float32"] / self.median_ms[fmt]

    def bandwidth(self, fmt: str) -> float:
        """Bytes of ``fmt``'s weights per second the product achieved: weight_bytes / median."""
        return self.weight_bytes[fmt] / (self.median_ms[fmt] * 1e-3)


_FORMATS = ("bfloat16", "int8", "int4")


def _stack(fmt: str, weight: Tensor, layers: int, dtype: torch.dtype) -> list[nn.Module | Tensor]:
    """``layers`` copies of ``weight`` in format ``fmt``, each in its own memory: converted
    once and cloned (a copy costs a memcpy, a conversion far more), since the values do not
    change the time and only the distinct addresses matter for the caches."""
    if fmt == "float32":
        one: nn.Module | Tensor = weight
    elif fmt == "bfloat16":
        one = weight.to(torch.bfloat16)
    elif fmt == "int8":
        one = Int8Linear(weight, dtype=dtype)
    else:
        one = Int4Linear(weight, dtype=dtype)
    if isinstance(one, Tensor):
        return [one] + [one.clone() for _ in range(layers - 1)]
    return [one] + [copy.deepcopy(one) for _ in range(layers - 1)]


def _pass(stack: Sequence[nn.Module | Tensor], x: Tensor) -> Callable[[], None]:
    """One pass: x times every layer of the stack (a weight tensor, or an int4/int8 module)."""

    def run() -> None:
        for layer in stack:
            layer(x) if isinstance(layer, nn.Module) else F.linear(x, layer)

    return run


def _interleaved(
    runs: dict[str, Callable[[], None]], warmup: int, repeats: int, max_seconds: float
) -> dict[str, list[float]]:
    """Seconds of timed calls of each run, the runs taking turns: in each round every run
    gets ``warmup`` untimed calls (so its own data sits in whatever cache can hold it) and
    one timed call, so a burst of load from elsewhere on the machine hits all runs alike.
    Stops after ``repeats`` rounds, or after three once ``max_seconds`` are spent."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    start = time.perf_counter()
    for i in range(repeats):
        for name, run in runs.items():
            for _ in range(warmup):
                run()
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
        if i >= 2 and time.perf_counter() - start > max_seconds:
            break
    return times


def matvec_speedup(
    out_features: int,
    in_features: int,
    batch: int = 1,
    *,
    stack_bytes: int | None = None,
    formats: Sequence[str] = ("int8", "int4"),
    dtype: torch.dtype = torch.bfloat16,
    warmup: int = 1,
    repeats: int = 15,
    max_seconds: float = 2.0,
    threads: int | None = 1,
    seed: int = 0,
) -> MatvecTiming:
    """Time x Wᵀ for float32 W and for the same W in each of ``formats`` ("bfloat16", "int8",
    "int4"), x of shape (batch, in_features).

    The layers are a stack of copies of one random (out, in) weight, each in its own memory,
    whose float32 bytes reach ``stack_bytes`` (one layer if None); one pass multiplies x by
    every layer of the stack in turn, so a stack larger than the last-level cache comes from
    memory on every pass, as a real model's weights do when it generates a token. Each
    low-bit format's stack holds the same layers, so its working set is its own, smaller,
    byte count. The formats take
    turns, pass by pass: in each of ``repeats`` rounds (fewer, at least three, once
    ``max_seconds`` are spent) each gets ``warmup`` untimed passes and one timed pass; the
    median and quartiles of its timed passes, divided by the number of layers, are its time,
    so `MatvecTiming.speedup` is a ratio of medians measured side by side in one run.
    ``threads`` sets ``torch.set_num_threads`` meanwhile (None keeps it). The low-bit
    formats take activations in ``dtype``; float32 takes float32 ones
    (chapter "Quantizing a small language model", § "Where the bytes are").
    """
    out_features = check.integer(out_features, "out_features", 1)
    in_features = check.integer(in_features, "in_features", 1)
    batch = check.integer(batch, "batch", 1)
    layer_bytes = 4 * out_features * in_features
    if stack_bytes is None:
        stack_bytes = layer_bytes
    stack_bytes = check.integer(stack_bytes, "stack_bytes", 1, _MAX_STACK_BYTES)
    formats = tuple(formats)
    for fmt in formats:
        check.choice(fmt, "formats entry", _FORMATS)
    dtype = _activation_dtype(dtype)
    check.integer(warmup, "warmup", 0)
    repeats = check.integer(repeats, "repeats", 1)
    check.number(max_seconds, "max_seconds", 0.0, low_open=True)
    if threads is not None:
        check.integer(threads, "threads", 1)
    layers = max(1, math.ceil(stack_bytes / layer_bytes))
    previous = torch.get_num_threads()
    medians, q1s, q3s, counts, nbytes = {}, {}, {}, {}, {}
    try:
        if threads is not None:  # also while building: packing is threaded too
            torch.set_num_threads(threads)
        used = torch.get_num_threads()
        generator = torch.Generator().manual_seed(seed)
        weight = torch.randn(out_features, in_features, generator=generator)
        x = torch.randn(batch, in_features, generator=generator)
        stacks = {f: _stack(f, weight / in_features**0.5, layers, dtype)
                  for f in ("float32", *formats)}  # fmt: skip
        runs = {}
        for fmt, stack in stacks.items():
            if fmt in ("float32", "bfloat16"):
                nbytes[fmt] = sum(_nbytes(w) for w in stack)
                runs[fmt] = _pass(stack, x.to(stack[0].dtype))
            else:
                nbytes[fmt] = sum(m.weight_bytes for m in stack)
                runs[fmt] = _pass(stack, x.to(dtype))
        with torch.inference_mode():
            seconds = _interleaved(runs, warmup, repeats, max_seconds)
        for fmt, ts in seconds.items():
            ms = [t * 1e3 / layers for t in ts]
            q1, median, q3 = statistics.quantiles(ms, n=4) if len(ms) > 1 else ms * 3
            medians[fmt], q1s[fmt], q3s[fmt], counts[fmt] = median, q1, q3, len(ms)
    finally:
        torch.set_num_threads(previous)
    per_layer = {f: b // layers for f, b in nbytes.items()}
    return MatvecTiming(out_features, in_features, batch, layers, layers * layer_bytes,
                        medians, q1s, q3s, per_layer, used, counts)  # fmt: skip


def matvec_sweep(
    out_features: int,
    in_features: int,
    max_stack_bytes: int,
    batch: int = 1,
    **kwargs,
) -> list[MatvecTiming]:
    """`matvec_speedup` for stacks of 1, 2, 4, … layers up to ``max_stack_bytes`` of float32
    weights (the last stack reaches it): the working set swept from one layer to beyond the
    caches. Keyword arguments go to `matvec_speedup`
    (chapter "Quantizing a small language model", § "Where the bytes are").
    """
    out_features = check.integer(out_features, "out_features", 1)
    in_features = check.integer(in_features, "in_features", 1)
    max_stack_bytes = check.integer(max_stack_bytes, "max_stack_bytes", 1, _MAX_STACK_BYTES)
    layer_bytes = 4 * out_features * in_features
    top = max(1, math.ceil(max_stack_bytes / layer_bytes))
    counts = sorted({min(2**k, top) for k in range(top.bit_length() + 1)})
    return [matvec_speedup(out_features, in_features, batch, stack_bytes=n * layer_bytes,
                           **kwargs) for n in counts]  # fmt: skip


def kernel_benchmark(features: int = 1024, *, threads: int | None = 1) -> dict:
    """The int4 kernel's headline figures for `benchmarks/llm_quantization.py`.

    ``int4_matvec_speedup_bs1``: float32 / int4 (bf16 activations, groups of 32) median time
    of a (features × features) matrix–vector product at batch 1 with float32 weights of
    2 × the last-level cache, capped at 1 GiB (256 MiB if the cache size is unknown);
    ``in_cache_speedup_bs1``: the same for one layer of at most a quarter of that cache;
    ``both_beyond_speedup_bs1``: the same with float32 weights of 2 · 6.4 × the cache (capped
    at 1 GiB), so that the int4 copy too is twice the cache (at 2 × the cache only float32
    comes from memory: the int4 copy, 6.4 times smaller, still fits);
    ``both_beyond_working_set_bytes``: that stack's float32 bytes;
    ``roofline_int4_bs1``: the memory-bound prediction, float32 bytes / int4 bytes
    (32 / 5 = 6.4, scales and zeros included); ``working_set_bytes``, ``llc_bytes``,
    ``threads``, and ``cpu_capability``, the kernels PyTorch runs ("AVX512", "AVX2",
    "DEFAULT" under ``ATEN_CPU_CAPABILITY=default``: there int4 is slower than float32)
    (chapter "Quantizing a small language model", § "Where the bytes are").
    """
    features = check.integer(features, "features", 32)
    if features % 32:
        raise ValueError(f"features must be a multiple of 32, got {features}")
    llc = last_level_cache_bytes()
    target = min(2 * llc, _MAX_STACK_BYTES) if llc else 256 * 2**20
    beyond = matvec_speedup(features, features, 1, stack_bytes=target, formats=("int4",),
                            threads=threads)  # fmt: skip
    small = features
    while llc and 4 * small * small > llc // 4 and small > 64:
        small //= 2
    inside = matvec_speedup(small, small, 1, formats=("int4",), threads=threads,
                            repeats=200, max_seconds=1.0)  # fmt: skip
    both_target = min(int(2 * 6.4 * llc), _MAX_STACK_BYTES) if llc else 256 * 2**20
    both = matvec_speedup(features, features, 1, stack_bytes=both_target, formats=("int4",),
                          threads=threads)  # fmt: skip
    int4_bits = 8 * beyond.weight_bytes["int4"] / (features * features)
    return {
        "int4_matvec_speedup_bs1": round(beyond.speedup("int4"), 2),
        "in_cache_speedup_bs1": round(inside.speedup("int4"), 2),
        "both_beyond_speedup_bs1": round(both.speedup("int4"), 2),
        "roofline_int4_bs1": round(roofline_speedup(int4_bits), 2),
        "working_set_bytes": beyond.working_set_bytes,
        "both_beyond_working_set_bytes": both.working_set_bytes,
        "llc_bytes": llc,
        "threads": beyond.threads,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
