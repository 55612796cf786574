"""Pruning a language model in one shot: magnitude and Wanda scores, per-row masks.

Chapter "Pruning, adapting and distilling a small language model", section "Magnitude and
Wanda", derives each piece:

- magnitude pruning scores a weight by ``|W_ij|`` (`magnitude_scores`), as chapter 2 did;
- Wanda (Sun et al. 2024) scores it by the change of output i when W_ij is zeroed: on
  inputs X (N, in) output i moves by ``−W_ij·X[:, j]``, of norm ``|W_ij|·‖X[:, j]‖₂``
  (`wanda_scores`), so a small weight on a large input channel is kept;
- both compare weights within each output row (`row_mask`), as Wanda does, so every
  output keeps the same share of its inputs; 2:4 patterns come from
  `minicompress.semistructured.nm_mask` on the same scores;
- the model-level loop over the block Linears (`prune_model`, with SparseGPT from
  `minicompress.sparsegpt` as the third method) and the share of zeros (`sparsity_of`).

No weight is updated by magnitude or Wanda: a pruned weight is set to 0, the rest kept.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.calibration import block_linears, hessian, layer_inputs
from minicompress.semistructured import nm_mask

__all__ = [
    "METHODS",
    "magnitude_scores",
    "prune_model",
    "row_mask",
    "sparsity_of",
    "wanda_scores",
]

METHODS = ("magnitude", "wanda", "sparsegpt")
"""The methods `prune_model` knows."""


def _check_weight(w: object) -> Tensor:
    w = check.float_tensor(w, "w", inf=True, why="magnitudes of NaN cannot be ranked")
    if w.dim() != 2:
        raise ValueError(f"w must be a 2-D (out, in) weight matrix, got shape {tuple(w.shape)}")
    return w.detach()


def magnitude_scores(w: Tensor) -> Tensor:
    """``|W_ij|``: what zeroing W_ij changes the weights by (chapter "Pruning, adapting and
    distilling a small language model", section "Magnitude and Wanda")."""
    return _check_weight(w).abs()


def wanda_scores(w: Tensor, x: Tensor) -> Tensor:
    """``|W_ij|·‖X[:, j]‖₂`` for weights W (out, in) and the layer's inputs X (N, in) (Sun et al.
    2024; chapter "Pruning, adapting and distilling a small language model", section
    "Magnitude and Wanda").

    Output i on the N inputs is ``X W[i, :]ᵀ``; zeroing W_ij changes it by ``−W_ij X[:, j]``,
    a vector of norm ``|W_ij|·‖X[:, j]‖₂``. Scaling input channel j up by c and ``W[:, j]``
    down by c leaves the scores (and the function) unchanged, where ``|W|`` alone would
    fall by c.
    """
    w = _check_weight(w)
    x = check.float_tensor(x, "x")
    if x.dim() != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"x must be (N, {w.shape[1]}) inputs of the layer, got shape "
                         f"{tuple(x.shape)}")  # fmt: skip
    # the norm in float32 at least: a half-precision sum of squares overflows to inf
    work = torch.promote_types(w.dtype, torch.float32)
    return w.abs().to(work) * torch.linalg.vector_norm(x.detach().to(work), dim=0)


def row_mask(scores: Tensor, sparsity: float) -> Tensor:
    """Keep the largest ``scores`` in each output row, pruning round(sparsity · in) per row
    (chapter "Pruning, adapting and distilling a small language model", section
    "Magnitude and Wanda").

    ``scores`` (out, in). Returns a bool mask, True where kept; ties are pruned in
    position order. Comparing within a row (as Wanda does) gives every output the same
    share of its inputs, where a threshold over the whole matrix could empty a row.
    """
    scores = check.float_tensor(scores, "scores", inf=True, why="NaN cannot be ranked")
    if scores.dim() != 2:
        raise ValueError(f"scores must be a 2-D (out, in) matrix, got shape "
                         f"{tuple(scores.shape)}")  # fmt: skip
    k = round(check.probability(sparsity, "sparsity") * scores.shape[1])  # half to even
    order = torch.sort(scores.detach(), dim=1, stable=True).indices[:, :k]  # smallest first
    return torch.ones_like(scores, dtype=torch.bool).scatter_(1, order, False)


def _check_target(sparsity: object, pattern: object) -> tuple[int, int] | None:
    if (sparsity is None) == (pattern is None):
        raise ValueError("give exactly one of sparsity (unstructured, per row) and pattern "
                         "(n, m), e.g. pattern=(2, 4)")  # fmt: skip
    if sparsity is not None:
        check.probability(sparsity, "sparsity")
        return None
    if not isinstance(pattern, tuple) or len(pattern) != 2:
        raise TypeError(f"pattern must be a tuple (n, m) such as (2, 4), got {pattern!r}")
    m = check.integer(pattern[1], "pattern's m", 2)
    return check.integer(pattern[0], "pattern's n", 1, m), m


def _mask(scores: Tensor, sparsity: float | None, pattern: tuple[int, int] | None) -> Tensor:
    return row_mask(scores, sparsity) if pattern is None else nm_mask(scores, *pattern)


def _check_prunable(model: nn.Module) -> None:
    """Refuse a model whose blocks hold weights `prune_model` would silently skip."""
    linears = block_linears(model)
    other = [f"blocks.{n}" for n, m in model.blocks.named_modules()
             if not isinstance(m, nn.Linear) and isinstance(getattr(m, "weight", None), Tensor)
             and m.weight.dim() == 2]  # fmt: skip
    if other:
        raise TypeError(f"{other[0]} is a {type(model.get_submodule(other[0])).__name__}, not "
                        "an nn.Linear: prune the float model first, then quantize it")  # fmt: skip
    if not linears:
        raise ValueError("model.blocks holds no nn.Linear to prune")


def prune_model(
    model: nn.Module, tokens: Tensor | None, method: str, sparsity: float | None = None,
    pattern: tuple[int, int] | None = None, max_rows: int | None = None,
    block_size: int = 128, damp: float = 0.01,
) -> nn.Module:  # fmt: skip
    """A deep copy of ``model`` whose block Linears are pruned by ``method`` (chapter
    "Pruning, adapting and distilling a small language model", sections "Magnitude and
    Wanda", "2:4 semi-structured sparsity" and "SparseGPT").

    ``method``: "magnitude" (scores ``|W|``, `row_mask` or `nm_mask`), "wanda" (scores
    ``|W|·‖X[:, j]‖``, the same masks) or "sparsegpt"
    (`minicompress.sparsegpt.sparsegpt_prune` with H = 2XᵀX/N, ``block_size`` and
    ``damp``). Give either ``sparsity`` (pruned share of each row) or ``pattern`` (n, m),
    e.g. (2, 4). The inputs X of every layer come from one
    `minicompress.calibration.layer_inputs` pass of the DENSE model on ``tokens`` (at most
    ``max_rows`` rows per layer), not from a copy whose earlier layers are already pruned
    (GPTQ's `minicompress.gptq.gptq_model` is sequential; the SparseGPT paper is too);
    magnitude needs no ``tokens`` (None). Biases, embeddings, LayerNorms and ``head`` are
    untouched.
    """
    check.module(model)
    check.choice(method, "method", METHODS)
    pattern = _check_target(sparsity, pattern)
    _check_prunable(model)
    if method == "magnitude":
        inputs = {}
    elif tokens is None:
        raise ValueError(f"method {method!r} needs calibration tokens; only 'magnitude' "
                         "works without them")  # fmt: skip
    else:
        inputs = layer_inputs(model, tokens, None, max_rows)
    out = copy.deepcopy(model)
    for name, linear in block_linears(out).items():
        w = linear.weight.detach()
        if method == "sparsegpt":
            # imported here: sparsegpt builds on row_mask of this module
            from minicompress.sparsegpt import sparsegpt_prune

            pruned = sparsegpt_prune(w, hessian(inputs[name]), sparsity, pattern, block_size,
                                     damp)  # fmt: skip
        else:
            scores = magnitude_scores(w) if method == "magnitude" else wanda_scores(w, inputs[name])
            pruned = torch.where(_mask(scores, sparsity, pattern), w, torch.zeros_like(w))
        with torch.no_grad():
            linear.weight.copy_(pruned)
    return out


def sparsity_of(model: nn.Module) -> float:
    """The share of zero weights over all block Linears of ``model`` (the layers
    `prune_model` prunes; biases, embeddings, LayerNorms and ``head`` not counted)
    (chapter "Pruning, adapting and distilling a small language model", section
    "Magnitude and Wanda")."""
    weights = [m.weight.detach() for m in block_linears(model).values()]
    if not weights:
        raise ValueError("model has no block Linears")
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
