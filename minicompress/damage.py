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

import math
from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.lm import BitsPerChar, window_bits

__all__ = ["Recovery", "bits_deltas", "damage_recovered"]


def _summary(values: Tensor) -> BitsPerChar:
    n = len(values)
    se = float(values.std() / math.sqrt(n)) if n > 1 else float("nan")
    return BitsPerChar(float(values.mean()), se, n)


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
        name: _summary(window_bits(check.module(m, f"models[{name!r}]"), tokens,
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


def damage_recovered(
    float_model: nn.Module, rounded: nn.Module, method: nn.Module, tokens: Tensor,
    max_windows: int | None = None,
) -> Recovery:  # fmt: skip
    """recovered = 1 − Δ_method / Δ_rounding, with Δ = bits/char − float's bits/char on the
    same windows of ``tokens`` (chapter "Quantizing a small language model", § "GPTQ")."""
    base = window_bits(check.module(float_model, "float_model"), tokens, max_windows=max_windows)
    r = window_bits(check.module(rounded, "rounded"), tokens, max_windows=max_windows) - base
    m = window_bits(check.module(method, "method"), tokens, max_windows=max_windows) - base
    rounding, ours = _summary(r), _summary(m)
    if not rounding.mean > 0:
        raise ValueError(f"rounding costs {rounding.mean:+.4f} bits/char: there is no damage "
                         "to recover")  # fmt: skip
    return Recovery(rounding, ours, _summary(r - m), 1.0 - ours.mean / rounding.mean)
