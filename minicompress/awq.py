"""AWQ: scale up the weights of the input channels that see large activations, then round.

Chapter "Quantizing a small language model", § "Outliers: AWQ and SmoothQuant": rounding
error in weight column j is multiplied by activation channel j, so protect the columns of
large activations. With ``s_j = mean_n |X_nj|^α`` (normalised so that max(s)·min(s) = 1, as
in the authors' code), AWQ (Lin et al. 2024) quantizes

    W' = Q(W diag(s)) · diag(s)⁻¹,

which is what a model computes when diag(s)⁻¹ is folded into the operation before the
Linear (a LayerNorm's γ and β, the previous Linear's rows, or a scaled activation). The
exponent α is searched on a grid to minimise ‖XWᵀ − XW'ᵀ‖²/N on calibration inputs. We
emulate W' in float and skip AWQ's second search (the clipping range of each group).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.calibration import block_linears, hessian, layer_inputs
from minicompress.gptq import MAX_BITS, round_to_nearest

__all__ = ["ALPHAS", "AWQSearch", "awq_model", "awq_scales", "awq_search", "awq_weight"]

ALPHAS: tuple[float, ...] = tuple(i / 20 for i in range(21))
"""The exponents searched, 0, 0.05, …, 1 (α = 0 is plain rounding)."""


def awq_scales(x: Tensor, alpha: float) -> Tensor:
    """``s_j = mean_n |X_nj|^α``, divided by √(max(s)·min(s)) (chapter "Quantizing a small
    language model", § "Outliers: AWQ and SmoothQuant"); X is (N, in), s is (in,) float32."""
    x = check.float_tensor(x, "x")
    if x.dim() != 2:
        raise ValueError(f"x must be a 2-D (N, in) matrix, got shape {tuple(x.shape)}")
    alpha = check.number(alpha, "alpha", 0.0, 1.0)
    s = x.detach().abs().double().mean(0).clamp(min=1e-8) ** alpha
    return (s / (s.max() * s.min()).sqrt()).float()


def awq_weight(w: Tensor, scale: Tensor, bits: int, group_size: int | None = 32) -> Tensor:
    """W' = Q(W diag(s)) diag(s)⁻¹ with Q = `minicompress.gptq.round_to_nearest` (chapter
    "Quantizing a small language model", § "Outliers: AWQ and SmoothQuant")."""
    w = check.float_tensor(w, "w")
    scale = check.float_tensor(scale, "scale")
    if w.dim() != 2 or scale.shape != (w.shape[1],):
        raise ValueError(f"scale must have shape ({w.shape[-1]},) for w of shape "
                         f"{tuple(w.shape)}, got {tuple(scale.shape)}")  # fmt: skip
    scale = scale.to(w.dtype)
    return round_to_nearest(w * scale, bits, group_size) / scale


@dataclass(frozen=True)
class AWQSearch:
    """The result of `awq_search`: the best exponent, its scales and weights, and the
    objective ‖XWᵀ − XW'ᵀ‖²/N at every exponent tried."""

    alpha: float
    scale: Tensor
    weight: Tensor
    alphas: tuple[float, ...]
    errors: tuple[float, ...]


def awq_search(
    w: Tensor, x: Tensor, bits: int = 4, group_size: int | None = 32,
    alphas: Sequence[float] = ALPHAS,
) -> AWQSearch:  # fmt: skip
    """Try every α in ``alphas`` and keep the one whose W' = Q(W diag(s)) diag(s)⁻¹,
    s = `awq_scales` (X, α), minimises ‖XWᵀ − XW'ᵀ‖²/N (chapter "Quantizing a small language
    model", § "Outliers: AWQ and SmoothQuant"). Ties go to the smaller α."""
    w = check.float_tensor(w, "w")
    check.bits(bits, 2, MAX_BITS)
    alphas = tuple(check.number(a, "alphas[i]", 0.0, 1.0) for a in alphas)
    if not alphas:
        raise ValueError("alphas is empty")
    h = hessian(x)  # ‖XΔWᵀ‖²/N = tr(ΔW H ΔWᵀ)/2: one (in × in) product instead of N rows
    best, errors = None, []
    for alpha in alphas:
        scale = awq_scales(x, alpha)
        candidate = awq_weight(w.detach(), scale, bits, group_size)
        delta = candidate.detach().double() - w.detach().double()
        errors.append(float(((delta @ h) * delta).sum()) / 2)
        if best is None or errors[-1] < best[0]:
            best = (errors[-1], alpha, scale, candidate)
    return AWQSearch(best[1], best[2], best[3], alphas, tuple(errors))


def awq_model(
    model: nn.Module, calibration_tokens: Tensor, bits: int = 4, group_size: int | None = 32,
    alphas: Sequence[float] = ALPHAS, max_rows: int | None = None,
) -> nn.Module:  # fmt: skip
    """A deep copy of ``model`` whose block Linears hold AWQ's W' (`awq_search` per layer)
    (chapter "Quantizing a small language model", § "Outliers: AWQ and SmoothQuant").

    Every layer's inputs come from the float model in one pass, as in AWQ's search (which
    looks at unquantized activations); biases, embeddings, LayerNorms and ``head`` stay
    in float."""
    check.bits(bits, 2, MAX_BITS)
    inputs = layer_inputs(model, calibration_tokens, max_rows=max_rows)
    out = copy.deepcopy(model)
    for name, linear in block_linears(out).items():
        result = awq_search(linear.weight, inputs[name], bits, group_size, alphas)
        with torch.no_grad():
            linear.weight.copy_(result.weight)
    return out
