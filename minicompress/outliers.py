"""Activation outliers made to order: a rescaling that leaves the model's function unchanged.

A LayerNorm's output channel j is γ_j·n_j + β_j; the Linear after it reads it through its
weight column W[:, j]. Multiplying γ_j and β_j by c and dividing W[:, j] by c changes
nothing the model computes (W diag(1/c) · diag(c) y = W y), but the Linear's input channel
j is now c times larger. Large language models grow such channels by themselves (Dettmers
et al. 2022); this module plants them in the tiny GPT so that the chapter can show what
they do to quantization (chapter "Quantizing a small language model",
§ "Outliers: AWQ and SmoothQuant"). SmoothQuant uses the same rescaling the other way round.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from minicompress import _validate as check

__all__ = ["add_activation_outliers", "layernorm_linear_pairs", "rescale_channels"]


def layernorm_linear_pairs(model: nn.Module) -> list[tuple[nn.LayerNorm, nn.Linear]]:
    """The (LayerNorm, Linear) pairs of each block, ``(ln1, attn.qkv)`` and ``(ln2, mlp.fc)``,
    in which a per-channel scale can move from one to the other exactly (chapter
    "Quantizing a small language model", § "Outliers: AWQ and SmoothQuant")."""
    blocks = getattr(check.module(model), "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError("model must have a `blocks` ModuleList of transformer blocks "
                        "(e.g. a TinyGPT)")  # fmt: skip
    return [pair for b in blocks for pair in ((b.ln1, b.attn.qkv), (b.ln2, b.mlp.fc))]


@torch.no_grad()
def rescale_channels(layernorm: nn.LayerNorm, linear: nn.Linear, scale: Tensor) -> None:
    """In place: γ ← γ·s, β ← β·s, W ← W diag(s)⁻¹, which leaves linear(layernorm(x))
    unchanged and multiplies the Linear's input channel j by s_j (chapter "Quantizing a
    small language model", § "Outliers: AWQ and SmoothQuant")."""
    if not isinstance(layernorm, nn.LayerNorm) or layernorm.weight is None:
        raise TypeError("layernorm must be an nn.LayerNorm with an affine weight")
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
    scale = check.float_tensor(scale, "scale")
    if scale.shape != layernorm.weight.shape or scale.shape != (linear.in_features,):
        raise ValueError(f"scale must have shape ({linear.in_features},) like the LayerNorm "
                         f"and the Linear's input, got {tuple(scale.shape)}")  # fmt: skip
    if not (scale > 0).all():
        raise ValueError("scale must be positive")
    layernorm.weight.mul_(scale.to(layernorm.weight.dtype))
    if layernorm.bias is not None:
        layernorm.bias.mul_(scale.to(layernorm.bias.dtype))
    linear.weight.div_(scale.to(linear.weight.dtype))


def add_activation_outliers(
    model: nn.Module, channels: Sequence[int] = (7, 23, 41), factor: float = 30.0
) -> nn.Module:
    """A deep copy of ``model`` computing the same function, in which the inputs of every
    ``attn.qkv`` and ``mlp.fc`` are ``factor`` times larger in ``channels`` (chapter
    "Quantizing a small language model", § "Outliers: AWQ and SmoothQuant").

    For each (ln, Linear) pair of `layernorm_linear_pairs`: γ_j, β_j ← c·γ_j, c·β_j and
    W[:, j] ← W[:, j]/c for j in ``channels`` (`rescale_channels`). The outputs equal the
    original's up to float rounding.
    """
    factor = check.number(factor, "factor", 0.0, low_open=True)
    if isinstance(channels, int | str) or not isinstance(channels, Sequence):
        raise TypeError("channels must be a sequence of ints")
    out = copy.deepcopy(check.module(model))
    for layernorm, linear in layernorm_linear_pairs(out):
        width = linear.in_features
        scale = torch.ones(width)
        for j in channels:
            scale[check.integer(j, "channels[i]", 0, width - 1)] = factor
        rescale_channels(layernorm, linear, scale)
    return out
