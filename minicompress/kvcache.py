"""The KV cache: what decoding keeps per token, and quantizing it.

A decoder generating token t attends to the keys and values of every earlier token; it
keeps them (the KV cache) instead of recomputing them. Per token and per layer that is a
key and a value vector of width d (all heads together), so the cache grows by

    2 · layers · d · bits / 8   bytes per token

(`cache_bytes_per_token`), which at long contexts rivals the weights. Chapter "Quantizing a
small language model", § "The KV cache" derives it and measures what rounding the cache
costs. `kv_quantizer` rounds each token's key (and value) per head — a group of d/h numbers
with its own asymmetric scale and zero point, as `minicompress.groupwise` does for weights —
and `quantized_kv_cache` installs it on a model for the duration of a ``with`` block.

References: Liu et al. (2024, KIVI: keys per channel, values per token) and Hooper et al.
(2024, KVQuant) study finer schemes; per-token groups are the simplest baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.groupwise import fake_quantize_groups

__all__ = ["cache_bytes_per_token", "kv_quantizer", "quantize_kv", "quantized_kv_cache"]


def cache_bytes_per_token(layers: int, d: int, bits: float) -> float:
    """Bytes the KV cache grows by per token: 2 · layers · d · bits / 8.

    2 for a key and a value, each of width d (heads × head width) in every layer. ``bits``
    may be fractional to include per-group scales (e.g. 4 + 32/16 for 4-bit codes with a
    float16 scale and zero per 16 numbers).
    (chapter "Quantizing a small language model", § "The KV cache")
    """
    check.integer(layers, "layers", 1)
    check.integer(d, "d", 1)
    bits = check.number(bits, "bits", 0.0, low_open=True)
    return 2 * layers * d * bits / 8


def quantize_kv(x: Tensor, bits: int) -> Tensor:
    """Keys or values (B, h, T, d/h) rounded to ``bits``-bit integers and back, with one
    asymmetric scale and zero point per token and head (a group along the last dimension):
    x̂ = S(clamp(round(x/S) + Z) − Z), S = (max − min)/(2^b − 1) over the d/h numbers.
    (chapter "Quantizing a small language model", § "The KV cache")
    """
    x = check.float_tensor(x, "x", why="keys and values must be finite")
    check.bits(bits, 2, 8, what=" for a KV cache")
    if x.ndim < 2:
        raise ValueError(f"x must have a head dimension last, got shape {tuple(x.shape)}")
    width = x.shape[-1]
    return fake_quantize_groups(x.reshape(-1, width), bits, width).reshape(x.shape)


def kv_quantizer(bits: int) -> Callable[[Tensor], Tensor]:
    """The function x ↦ `quantize_kv`(x, bits), to set as a block's ``attn.kv_quantizer``.
    (chapter "Quantizing a small language model", § "The KV cache")
    """
    check.bits(bits, 2, 8, what=" for a KV cache")

    def quantizer(x: Tensor) -> Tensor:
        return quantize_kv(x, bits)

    quantizer.bits = bits  # so a reader (or a test) can see what is installed
    return quantizer


@contextmanager
def quantized_kv_cache(model: nn.Module, bits: int) -> Iterator[nn.Module]:
    """Within the ``with`` block, every attention module of ``model`` (anything with a
    ``kv_quantizer`` attribute, e.g. TinyGPT's ``blocks[i].attn``) rounds its keys and values
    to ``bits`` bits (`kv_quantizer`); on exit, even by an exception, each gets back the
    quantizer it had before. Yields the model itself (changed in place, no copy).
    (chapter "Quantizing a small language model", § "The KV cache")
    """
    check.module(model)
    quantizer = kv_quantizer(bits)
    attention = [m for m in model.modules() if hasattr(m, "kv_quantizer")]
    if not attention:
        raise ValueError("model has no attention module with a `kv_quantizer` attribute")
    before = [m.kv_quantizer for m in attention]
    try:
        for m in attention:
            m.kv_quantizer = quantizer
        yield model
    finally:
        for m, old in zip(attention, before, strict=True):
            m.kv_quantizer = old
