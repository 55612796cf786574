"""SparseGPT: prune a layer's weights column by column, correcting the columns not yet done.

Chapter "Pruning, adapting and distilling a small language model", section "SparseGPT",
derives it (Frantar & Alistarh 2023) as GPTQ with a different rounding: the layer-wise
objective ‖XWᵀ − XŴᵀ‖²/N is the same, and so is the Optimal Brain Surgeon step of chapter
"Quantizing a small language model", § "GPTQ", with target 0 instead of a grid point:
zeroing w_c moves the free weights of its row by −w_c/[H_F⁻¹]_cc · [H_F⁻¹]_{c,:} and costs
w_c²/(2[H_F⁻¹]_cc). So pruning runs through `minicompress.gptq.gptq_quantize` itself (one
implementation of the OBS step and of its Cholesky form), with a "quantizer" that leaves a
kept weight as it is and sets a pruned one to 0. What is new is the choice of the mask:

- it is made for a group of columns when the column loop reaches the group, from the
  group's weights as updated so far by the pruning of the columns before it;
- a weight's saliency is the OBS cost w_c²/[H_F⁻¹]_cc = w_c²/U_cc², with U the upper
  Cholesky factor of H_λ⁻¹ (`minicompress.gptq.inverse_hessian_factor`), because U_cc²
  is [H_F⁻¹]_cc when the columns are done in order (the reference code writes it
  W²/diag(Hinv)², Hinv being that factor);
- unstructured: each row prunes its lowest-saliency weights of every block of columns
  (`minicompress.wanda.row_mask`; the paper's code thresholds over the whole block);
  N:M: the n highest-saliency weights of every m columns are kept
  (`minicompress.semistructured.nm_mask`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from minicompress import _validate as check
from minicompress.gptq import GroupQuantizer, gptq_quantize, inverse_hessian_factor
from minicompress.semistructured import nm_mask
from minicompress.wanda import _check_target, row_mask

__all__ = ["sparsegpt_prune"]


def _block_width(columns: int, block_size: int) -> int:
    """The largest divisor of ``columns`` that is at most ``block_size``."""
    return max(d for d in range(1, min(block_size, columns) + 1) if columns % d == 0)


def _pruner(u_diag: Tensor, choose: Callable[[Tensor, int], Tensor]) -> GroupQuantizer:
    """The `GroupQuantizer` that zeroes the weights ``choose`` (saliency, first column) drops.

    `gptq_quantize` calls it once per group, in column order, with the group's current
    (rows, g) weights, then calls the returned function once per column of the group."""
    start = 0

    def for_group(group: Tensor) -> Callable[[Tensor], Tensor]:
        nonlocal start
        width = group.shape[1]
        saliency = group.double() ** 2 / u_diag[start : start + width] ** 2  # (rows, g)
        keep = iter(choose(saliency, start).T)
        start += width
        return lambda column: torch.where(next(keep), column, torch.zeros_like(column))

    return for_group


def sparsegpt_prune(
    w: Tensor, h: Tensor, sparsity: float | None = None, pattern: tuple[int, int] | None = None,
    block_size: int = 128, damp: float = 0.01,
) -> Tensor:  # fmt: skip
    """Prune ``w`` (out, in) with OBS compensation (Frantar & Alistarh 2023; chapter "Pruning,
    adapting and distilling a small language model", section "SparseGPT").

    ``h``: the (in, in) Hessian H = 2XᵀX/N (`minicompress.calibration.hessian`), damped by
    λ = ``damp`` · mean(diag H) as in GPTQ. Give ``sparsity`` (unstructured: the columns are
    cut into blocks of the largest divisor of in that is ≤ ``block_size``; at the start of
    each block every row prunes its lowest-saliency weights, round(s·c₂) − round(s·c₁) of
    block [c₁, c₂), so each row loses exactly round(s · in); when in has no divisor of at
    least half of ``block_size`` (a prime width), each row's mask is chosen once, over all
    its columns) or ``pattern`` (n, m): at the
    start of every m columns each row keeps its n highest-saliency weights. Saliency
    w_c²/U_cc² is the OBS cost of zeroing w_c (module docstring); the pruned weights are
    then zeroed in column order by `minicompress.gptq.gptq_quantize`, each step moving
    the later columns of the row to the least-squares optimum. Pruned weights are
    exactly 0 (so are the weights of inputs that are always 0, H_jj = 0). Returns a
    tensor of the shape and dtype of ``w``.
    """
    w = check.float_tensor(w, "w")
    if w.dim() != 2:
        raise ValueError(f"w must be a 2-D (out, in) weight matrix, got shape {tuple(w.shape)}")
    pattern = _check_target(sparsity, pattern)
    check.integer(block_size, "block_size", 1)
    u = inverse_hessian_factor(h, damp)  # checks h and damp
    columns = w.shape[1]
    if len(u) != columns:
        raise ValueError(f"h is {len(u)}×{len(u)} but w has {columns} input columns")
    if pattern is None:
        width = _block_width(columns, block_size)
        if 2 * width < min(block_size, columns):
            # no divisor near block_size (a prime width, say): blocks of one or two columns
            # would prune the same positions in every row; choose each row's mask once instead
            width = columns

        def choose(saliency: Tensor, start: int) -> Tensor:
            count = round(sparsity * (start + width)) - round(sparsity * start)
            return row_mask(saliency, count / width)  # round(count/width · width) = count

    else:
        width, (n, m) = pattern[1], pattern
        if columns % m:
            raise ValueError(f"w has {columns} input columns, not a multiple of m = {m}: "
                             "N:M groups run along the input dimension")  # fmt: skip

        def choose(saliency: Tensor, start: int) -> Tensor:
            return nm_mask(saliency, n, m)

    quantizer = _pruner(torch.diagonal(u), choose)
    return gptq_quantize(w, h, group_size=width, damp=damp, block=block_size,
                         quantizer=quantizer)  # fmt: skip
