"""What quantizing a language model costs, and how much of that cost a method wins back.

The cost of a quantized model is its bits per character minus the float model's, paired
window by window (`minicompress.lm.compare_bits`); `bits_deltas` scores the float model
once and every quantized model once against it. The share of rounding damage a method
removes is

    recovered = 1 − Δ_method / Δ_rounding,

1 when the method is as good as float, 0 when it is no better than rounding to nearest
(chapter "Quantizing a small language model", § "GPTQ").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.lm import BitsPerChar, summarize, window_bits

__all__ = ["Recovery", "bits_deltas", "damage_recovered", "paired", "recovered"]


def _bits(values: object, name: str) -> Tensor:
    values = check.float_tensor(values, name)
    if values.dim() != 1:
        raise ValueError(f"{name} must be 1-D bits/char per window (lm.window_bits), got "
                         f"shape {tuple(values.shape)}")  # fmt: skip
    return values


def paired(bits_a: Tensor, bits_b: Tensor) -> BitsPerChar:
    """Mean of a − b over windows, with the standard error of the differences, from the
    per-window bits/char of two models on the same windows (`minicompress.lm.window_bits`)
    (chapter "Quantizing a small language model", § "GPTQ"); what
    `minicompress.lm.compare_bits` computes, without scoring the models again."""
    bits_a, bits_b = _bits(bits_a, "bits_a"), _bits(bits_b, "bits_b")
    if bits_a.shape != bits_b.shape:
        raise ValueError(f"bits_a has {len(bits_a)} windows, bits_b {len(bits_b)}")
    return summarize(bits_a - bits_b)


def bits_deltas(
    reference: nn.Module, models: Mapping[str, nn.Module], tokens: Tensor,
    max_windows: int | None = None,
) -> dict[str, BitsPerChar]:  # fmt: skip
    """Δ bits/char of each of ``models`` minus ``reference``, paired over the same windows
    of ``tokens``, with the standard error of the per-window differences (chapter
    "Quantizing a small language model", § "GPTQ"). One scoring pass per model."""
    check.module(reference, "reference")
    if not isinstance(models, Mapping):
        raise TypeError(f"models must be a mapping name -> model, got {type(models).__name__}")
    base = window_bits(reference, tokens, max_windows=max_windows)
    return {
        name: summarize(window_bits(check.module(m, f"models[{name!r}]"), tokens,
                                   max_windows=max_windows) - base)
        for name, m in models.items()
    }  # fmt: skip


@dataclass(frozen=True)
class Recovery:
    """Rounding's and the method's Δ bits/char against float, the paired gain
    (rounding − method) and the share of the rounding damage removed."""

    rounding: BitsPerChar
    method: BitsPerChar
    gain: BitsPerChar
    recovered: float


def recovered(float_bits: Tensor, rounded_bits: Tensor, method_bits: Tensor) -> Recovery:
    """recovered = 1 − Δ_method / Δ_rounding, Δ = bits/char − float's bits/char, from the
    per-window bits/char of the three models on the same windows (`lm.window_bits`)
    (chapter "Quantizing a small language model", § "GPTQ")."""
    rounding = paired(rounded_bits, float_bits)
    method = paired(method_bits, float_bits)
    if not rounding.mean > 0:
        raise ValueError(f"rounding costs {rounding.mean:+.4f} bits/char: there is no damage "
                         "to recover")  # fmt: skip
    gain = paired(rounded_bits, method_bits)
    return Recovery(rounding, method, gain, 1.0 - method.mean / rounding.mean)


def damage_recovered(
    float_model: nn.Module, rounded: nn.Module, method: nn.Module, tokens: Tensor,
    max_windows: int | None = None,
) -> Recovery:  # fmt: skip
    """`recovered` for three models scored on the windows of ``tokens`` (chapter
    "Quantizing a small language model", § "GPTQ")."""
    scores = [
        window_bits(check.module(m, name), tokens, max_windows=max_windows)
        for m, name in ((float_model, "float_model"), (rounded, "rounded"), (method, "method"))
    ]
    return recovered(*scores)
