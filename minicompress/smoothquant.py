"""SmoothQuant: move the activations' outliers into the weights, then quantize both to 8 bits.

Chapter "Quantizing a small language model", § "Outliers: AWQ and SmoothQuant". Per-tensor
8-bit activations spend their 255 levels on the largest channel; weights are easy.
SmoothQuant (Xiao et al. 2023) divides input channel j by

    ``s_j = max|X_j|^α / max|W_j|^(1−α)``

and multiplies weight column j by it: XWᵀ = (X diag(s)⁻¹)(W diag(s))ᵀ exactly in real
arithmetic. Where a LayerNorm feeds the Linear (``ln1 → attn.qkv``, ``ln2 → mlp.fc``),
diag(s)⁻¹ folds into its γ and β at no cost (`smooth_model`); the other Linears are
quantized without smoothing, as in the paper.

W8A8 emulation (`W8A8Linear`, `w8a8_model`): weights symmetric int8 per output channel,
activations symmetric int8 per tensor with a *static* scale ``max|X|/127`` taken from the
calibration text (values beyond it are clipped); both are fake-quantized and the product
is computed in float.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.calibration import block_linears, layer_inputs
from minicompress.outliers import layernorm_linear_pairs, rescale_channels
from minicompress.quantization import calc_qparams, dequantize, quantize

__all__ = ["W8A8Linear", "smooth_model", "smooth_scales", "w8a8_model"]


def smooth_scales(x_absmax: Tensor, w: Tensor, alpha: float = 0.5) -> Tensor:
    """``s_j = max|X_j|^α / max_i |W_ij|^(1−α)`` (chapter "Quantizing a small language model",
    § "Outliers: AWQ and SmoothQuant").

    ``x_absmax`` (in,) is the per-channel ``max |X_j|`` over calibration inputs, ``w`` (out, in)
    the weight. α = 0.5 balances the two: afterwards ``max|X_j/s_j| = max|W_j s_j|``. Both
    maxima are clamped to at least 1e-5, as in the authors' code."""
    x_absmax = check.float_tensor(x_absmax, "x_absmax")
    w = check.float_tensor(w, "w")
    if w.dim() != 2 or x_absmax.shape != (w.shape[1],):
        raise ValueError(f"x_absmax must have shape (in,) = ({w.shape[-1]},) for w of shape "
                         f"{tuple(w.shape)}, got {tuple(x_absmax.shape)}")  # fmt: skip
    alpha = check.number(alpha, "alpha", 0.0, 1.0)
    a = x_absmax.detach().double().abs().clamp(min=1e-5)
    b = w.detach().double().abs().amax(0).clamp(min=1e-5)
    return (a**alpha / b ** (1 - alpha)).float()


def smooth_model(model: nn.Module, calibration_tokens: Tensor, alpha: float = 0.5) -> nn.Module:
    """A deep copy of ``model`` computing the same function, in which every LayerNorm→Linear
    pair (``ln1 → attn.qkv``, ``ln2 → mlp.fc``) carries SmoothQuant's scales: γ, β ← γ/s,
    β/s and W ← W diag(s) with s = `smooth_scales` (chapter "Quantizing a small language
    model", § "Outliers: AWQ and SmoothQuant")."""
    check.number(alpha, "alpha", 0.0, 1.0)
    names = {id(m): n for n, m in block_linears(model).items()}
    inputs = layer_inputs(model, calibration_tokens)
    out = copy.deepcopy(model)
    for (ln, linear), (_, original) in zip(
        layernorm_linear_pairs(out), layernorm_linear_pairs(model), strict=True
    ):
        x_absmax = inputs[names[id(original)]].abs().amax(0)
        rescale_channels(ln, linear, 1.0 / smooth_scales(x_absmax, linear.weight, alpha))
    return out


class W8A8Linear(nn.Module):
    """A Linear with 8-bit weights (symmetric, per output channel) and 8-bit inputs
    (symmetric, per tensor, static scale) (chapter "Quantizing a small language model",
    § "Outliers: AWQ and SmoothQuant").

    y = Q_a(x) Q_w(W)ᵀ + b, where Q_w rounds row i of W to S_i · [−128, 127] with
    ``S_i = max_j |W_ij| / 127`` and Q_a rounds x to S_a · [−128, 127] with S_a = ``act_absmax``
    / 127 (clipping beyond). Both are emulated in float.
    """

    def __init__(self, linear: nn.Linear, act_absmax: float, bits: int = 8):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
        act_absmax = check.number(act_absmax, "act_absmax", 0.0, low_open=True)
        self.bits = check.bits(bits, 2, 16)
        weight = linear.weight.detach().float()
        qp = calc_qparams(weight, self.bits, symmetric=True, axis=0)
        self.weight = nn.Parameter(dequantize(quantize(weight, qp), qp), requires_grad=False)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.act_qparams = calc_qparams(
            torch.tensor([-act_absmax, act_absmax]), self.bits, symmetric=True
        )

    def forward(self, x: Tensor) -> Tensor:
        x_hat = dequantize(quantize(x, self.act_qparams), self.act_qparams).to(x.dtype)
        return F.linear(x_hat, self.weight, self.bias)


def w8a8_model(
    model: nn.Module, calibration_tokens: Tensor, alpha: float | None = None, bits: int = 8
) -> nn.Module:  # fmt: skip
    """A deep copy of ``model`` in which every block Linear is a `W8A8Linear`, after
    SmoothQuant's `smooth_model` with exponent ``alpha`` (None: no smoothing) (chapter
    "Quantizing a small language model", § "Outliers: AWQ and SmoothQuant").

    Each layer's static activation scale is the ``max |X|`` of its inputs on the calibration
    tokens, measured in the (smoothed) float model."""
    check.module(model)
    check.bits(bits, 2, 16)
    if alpha is not None:
        model = smooth_model(model, calibration_tokens, alpha)
    inputs = layer_inputs(model, calibration_tokens)
    out = copy.deepcopy(model)
    for name, linear in block_linears(out).items():
        parent_name, _, child = name.rpartition(".")
        wrapped = W8A8Linear(linear, max(float(inputs[name].abs().max()), 1e-8), bits)
        setattr(out.get_submodule(parent_name), child, wrapped)
    return out
