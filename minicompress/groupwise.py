"""Per-group weight quantization: one scale (and zero point) per g consecutive weights.

A weight matrix W (out, in) is cut along its input dimension into groups of g weights;
each group gets its own affine quantizer r = S(q − Z), computed exactly as
`minicompress.quantization.calc_qparams` computes a per-channel one (each group is treated
as a channel). Small groups follow the local range of the weights, so rounding costs less,
but every group stores its scale (16 bits as float16) and, when asymmetric, its b-bit zero
point: b + (16 + b)/g bits per weight, derived in chapter "Quantizing a small language
model", § "Quantizing in groups". `pack_groups` writes the real bytes (two 4-bit codes per
byte), so the formula can be checked against a byte count.

`quantize_model_weights` is the model-level hook the chapter's other methods (GPTQ, AWQ,
number formats) use too: a copy of the model whose block Linear weights are replaced.

References: Frantar et al. (2023) and Lin et al. (2024) use g = 128 on large models;
Dettmers & Zettlemoyer (2023) measure the size/accuracy trade-off of the group size.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.calibration import block_linears
from minicompress.checkpoint import pack_nibbles, unpack_nibbles
from minicompress.quantization import calc_qparams, integer_range, quantize

__all__ = [
    "GroupQuantized",
    "bits_per_weight",
    "block_linear_names",
    "dequantize_groups",
    "fake_quantize_groups",
    "pack_groups",
    "packed_bytes",
    "quantize_groups",
    "quantize_model_weights",
    "unpack_groups",
]


@dataclass(frozen=True)
class GroupQuantized:
    """A weight matrix quantized in groups along its input dimension.

    ``q``: codes (out, in), uint8 in [0, 2^b − 1] (asymmetric) or int8 in
    [−2^(b−1), 2^(b−1) − 1] (symmetric); ``scale``: float32 (out, in/g); ``zero``: the
    integer zero points (out, in/g) as int64, or None when symmetric (Z = 0).
    """

    q: Tensor
    scale: Tensor
    zero: Tensor | None
    shape: tuple[int, int]
    bits: int
    group_size: int

    @property
    def symmetric(self) -> bool:
        """True when there are no zero points (signed codes, Z = 0)."""
        return self.zero is None


def _check_weight(w: object, group_size: int) -> Tensor:
    w = check.float_tensor(w, "w", why="a quantization range must be finite")
    if w.ndim != 2:
        raise ValueError(f"w must be a 2-D weight matrix (out, in), got shape {tuple(w.shape)}")
    check.integer(group_size, "group_size", 1)
    if w.shape[1] % group_size:
        raise ValueError(f"group_size {group_size} must divide the input dimension "
                         f"{w.shape[1]} of w")  # fmt: skip
    return w


def quantize_groups(
    w: Tensor, bits: int, group_size: int, symmetric: bool = False
) -> GroupQuantized:
    """Quantize W (out, in) with one quantizer per group of ``group_size`` consecutive inputs.

    Group k of row i holds W[i, kg : (k+1)g]; its S and Z are `calc_qparams` of those g
    values (asymmetric: S = (max − min)/(2^b − 1) with 0 inside [min, max]; symmetric:
    ``S = max|w|/(2^(b−1) − 1)``, Z = 0), and q = clamp(round(w/S) + Z, qmin, qmax). With
    g = in this is per-row (per-output-channel) quantization.
    (chapter "Quantizing a small language model", § "Quantizing in groups")
    """
    w = _check_weight(w, group_size)
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be a bool, got {type(symmetric).__name__}")
    out, n_in = w.shape
    groups = w.detach().float().reshape(-1, group_size)  # (out · in/g, g): a group per row
    qp = calc_qparams(groups, bits, symmetric=symmetric, axis=0)
    q = quantize(groups, qp).reshape(out, n_in)
    scale = qp.scale.reshape(out, n_in // group_size)
    zero = None if symmetric else qp.zero_point.reshape(out, n_in // group_size)
    return GroupQuantized(q, scale, zero, (out, n_in), bits, group_size)


def dequantize_groups(gq: GroupQuantized) -> Tensor:
    """Ŵ = S_group (q − Z_group), float32 of shape (out, in).
    (chapter "Quantizing a small language model", § "Quantizing in groups")
    """
    if not isinstance(gq, GroupQuantized):
        raise TypeError(f"gq must be a GroupQuantized, got {type(gq).__name__}")
    q = gq.q.to(torch.int64).reshape(*gq.scale.shape, gq.group_size)  # (out, in/g, g)
    zero = 0 if gq.zero is None else gq.zero.to(torch.int64)[..., None]
    return ((q - zero).float() * gq.scale.float()[..., None]).reshape(gq.shape)


def fake_quantize_groups(w: Tensor, bits: int, group_size: int, symmetric: bool = False) -> Tensor:
    """Ŵ = dequantize(quantize(W)): the weights a group-quantized model computes with,
    in the dtype of ``w``. Error ``|w − ŵ| ≤ S/2`` per group (no clipping: the range covers
    the group).
    (chapter "Quantizing a small language model", § "Quantizing in groups")
    """
    return dequantize_groups(quantize_groups(w, bits, group_size, symmetric)).to(w.dtype)


def bits_per_weight(
    bits: int, group_size: int, scale_bits: int = 16, zero_bits: int | None = None
) -> float:
    """Storage per weight: b + (scale_bits + zero_bits)/g.

    Each group of g weights stores g codes of b bits, one scale and one zero point.
    ``zero_bits=None`` means a b-bit integer zero point (what `pack_groups` stores for an
    asymmetric quantizer); pass 0 for symmetric quantization (4 + 16/32 = 4.5 bits at
    b = 4, g = 32) and 16 for a float16 zero (b + 32/g). MXFP4 is ``bits_per_weight(4, 32,
    scale_bits=8, zero_bits=0)`` = 4.25.
    (chapter "Quantizing a small language model", § "Quantizing in groups")
    """
    check.integer(bits, "bits", 1, 32)
    check.integer(group_size, "group_size", 1)
    check.integer(scale_bits, "scale_bits", 0)
    zero_bits = bits if zero_bits is None else check.integer(zero_bits, "zero_bits", 0)
    return bits + (scale_bits + zero_bits) / group_size


def _pack_bits(codes: Tensor, bits: int) -> Tensor:
    """Unsigned b-bit codes (any shape) → a uint8 bitstream of ⌈n·b/8⌉ bytes.

    b = 4 uses `pack_nibbles` (code j in the low nibble of byte j/2 when j is even);
    other widths write code j's bit k at stream position j·b + k (least significant first).
    """
    flat = codes.flatten().to(torch.int64)
    if bits == 4:
        return pack_nibbles((flat - 8).to(torch.int8))
    if bits == 8:
        return flat.to(torch.uint8)
    stream = (flat[:, None] >> torch.arange(bits)) & 1  # (n, b), least significant bit first
    stream = torch.nn.functional.pad(stream.flatten(), (0, -stream.numel() % 8)).view(-1, 8)
    return (stream << torch.arange(8)).sum(1).to(torch.uint8)


def _unpack_bits(packed: Tensor, bits: int, n: int) -> Tensor:
    """The inverse of `_pack_bits`: n unsigned codes as int64."""
    if bits == 4:
        return unpack_nibbles(packed, n).to(torch.int64) + 8
    if bits == 8:
        return packed[:n].to(torch.int64)
    stream = ((packed.to(torch.int64)[:, None] >> torch.arange(8)) & 1).flatten()
    return (stream[: n * bits].view(n, bits) << torch.arange(bits)).sum(1)


def pack_groups(gq: GroupQuantized) -> dict[str, Tensor]:
    """The bytes a file would hold: ``codes`` (b-bit codes packed into uint8, two per byte at
    b = 4 via `pack_nibbles`), ``scale`` (float16, out × in/g) and, when asymmetric, ``zero``
    (b-bit zero points packed the same way); ``header`` (int64: out, in, bits, g, symmetric)
    says how to read them. Signed codes are stored offset by 2^(b−1), as unsigned.
    The payload is n·b/8 + (n/g)·(16 + b)/8 bytes for n weights (rounded up to whole bytes),
    i.e. `bits_per_weight` · n / 8.
    (chapter "Quantizing a small language model", § "Quantizing in groups")
    """
    if not isinstance(gq, GroupQuantized):
        raise TypeError(f"gq must be a GroupQuantized, got {type(gq).__name__}")
    if gq.bits > 8:
        raise ValueError(f"pack_groups packs codes of at most 8 bits, got bits = {gq.bits}")
    offset = -integer_range(gq.bits, signed=gq.symmetric)[0]  # 2^(b−1) if signed, else 0
    packed = {
        "codes": _pack_bits(gq.q.to(torch.int64) + offset, gq.bits),
        "scale": gq.scale.to(torch.float16),
    }
    if gq.zero is not None:
        packed["zero"] = _pack_bits(gq.zero, gq.bits)
    out, n_in = gq.shape
    packed["header"] = torch.tensor([out, n_in, gq.bits, gq.group_size, int(gq.symmetric)])
    return packed


def unpack_groups(packed: Mapping[str, Tensor]) -> GroupQuantized:
    """The inverse of `pack_groups`. Codes and zero points come back exactly; the scales
    are the float16-rounded ones the file holds.
    (chapter "Quantizing a small language model", § "Quantizing in groups")
    """
    if not isinstance(packed, Mapping) or "header" not in packed or "codes" not in packed:
        raise TypeError("packed must be a dict made by pack_groups (with 'header' and 'codes')")
    out, n_in, bits, group_size, symmetric = (int(v) for v in packed["header"])
    signed = bool(symmetric)
    lo, _ = integer_range(bits, signed=signed)
    q = (_unpack_bits(packed["codes"], bits, out * n_in) + lo).view(out, n_in)
    q = q.to(torch.int8 if signed else torch.uint8)
    zero = None
    if not signed:
        zero = _unpack_bits(packed["zero"], bits, out * n_in // group_size)
        zero = zero.view(out, n_in // group_size)
    scale = packed["scale"].float()
    return GroupQuantized(q, scale, zero, (out, n_in), bits, group_size)


def packed_bytes(packed: Mapping[str, Tensor]) -> int:
    """Bytes of a `pack_groups` payload: codes + scales + zero points (the small header,
    which a file would write once per matrix, is not counted).
    (chapter "Quantizing a small language model", § "Quantizing in groups")
    """
    if not isinstance(packed, Mapping) or "codes" not in packed:
        raise TypeError("packed must be a dict made by pack_groups")
    return sum(t.numel() * t.element_size() for k, t in packed.items() if k != "header")


def block_linear_names(model: nn.Module) -> list[str]:
    """Qualified names of the nn.Linear modules inside ``model.blocks`` (a TinyGPT's 4 per
    block: attn.qkv, attn.proj, mlp.fc, mlp.proj), in model order: the keys of
    `minicompress.calibration.block_linears`.
    (chapter "Quantizing a small language model", § "Quantizing in groups")
    """
    return list(block_linears(model))


def quantize_model_weights(
    model: nn.Module,
    quantizer: Callable[[Tensor], Tensor],
    include: Iterable[str] | None = None,
) -> nn.Module:
    """A deep copy of ``model`` whose Linear weights W are replaced by ``quantizer(W)``.

    ``include`` names the nn.Linear modules to change (qualified names, e.g.
    ``"blocks.0.attn.qkv"``); by default every Linear inside the transformer blocks
    (`block_linear_names`). Embeddings, LayerNorms, biases and the output layer ``head``
    stay float unless ``include`` names ``head``. The original model is not touched.
    ``quantizer`` maps a weight (out, in) to a tensor of the same shape, e.g.
    ``lambda w: fake_quantize_groups(w, 4, 32)``.
    (chapter "Quantizing a small language model", § "Quantizing in groups")
    """
    check.module(model)
    if not callable(quantizer):
        raise TypeError(f"quantizer must be callable, got {type(quantizer).__name__}")
    if isinstance(include, str):
        raise TypeError("include must be an iterable of module names, not one str")
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    names = block_linear_names(model) if include is None else list(include)
    unknown = [n for n in names if n not in linears]
    if unknown:
        raise ValueError(f"include names modules that are not nn.Linear in the model: {unknown}")
    if not names:
        raise ValueError("no Linear layer to quantize (model has no `blocks`; pass include=)")
    copied = copy.deepcopy(model)
    modules = dict(copied.named_modules())
    with torch.no_grad():
        for name in names:
            weight = modules[name].weight
            new = quantizer(weight.detach().clone())
            if not isinstance(new, Tensor) or new.shape != weight.shape:
                got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
                raise ValueError(f"quantizer returned {got} for {name}, whose weight has "
                                 f"shape {tuple(weight.shape)}")  # fmt: skip
            weight.copy_(new)
    return copied
