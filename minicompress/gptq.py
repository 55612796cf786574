"""GPTQ: quantize a layer's weights one column at a time, correcting the columns not yet done.

Chapter "Quantizing a small language model", § "GPTQ", derives each piece:

- the layer-wise objective: choose Ŵ on the quantization grid minimising ‖XWᵀ − XŴᵀ‖²/N
  over calibration inputs X (N, in) (`output_error`); for each row of W it is the quadratic
  ½ δᵀHδ in δ = ŵ − w, with Hessian H = 2XᵀX/N (`minicompress.calibration.hessian`; the
  papers' 2XXᵀ with X stored as (in, N));
- the Optimal Brain Surgeon step (Hassibi & Stork 1993; Frantar & Alistarh 2022): fixing
  weight q at the value v and re-solving for the others moves them by
  δ = −(w_q − v) / [H⁻¹]_qq · H⁻¹_{:,q} and costs (w_q − v)² / (2 [H⁻¹]_qq) (`obs_update`;
  v = 0 is pruning, which chapter 10's SparseGPT reuses); the inverse Hessian of the
  weights still free is H⁻¹ − H⁻¹_{:,q} H⁻¹_{q,:} / [H⁻¹]_qq (`obs_remove`);
- GPTQ (Frantar et al. 2023) applies the step to the columns in order, all rows at once,
  and reads every H⁻¹ it needs from one upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU): row q
  of U is row q of the reduced inverse divided by its square root of the diagonal
  (`gptq_quantize`; the explicit-inverse loop is `gptq_quantize_reference`);
- the model-level loop, one block Linear after another (`gptq_model`).

The quantization grid is a plain function argument: ``quantizer(group)`` receives the
current (rows, g) weights of a group when the column loop reaches it and returns the
function that rounds one (rows,) column to that group's grid (`minmax_quantizer`: b-bit
asymmetric min–max, as `round_to_nearest` uses).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.calibration import block_linears, hessian, layer_inputs
from minicompress.groupwise import fake_quantize_groups
from minicompress.quantization import calc_qparams, dequantize, quantize

__all__ = [
    "ColumnQuantizer",
    "GroupQuantizer",
    "gptq_model",
    "gptq_quantize",
    "gptq_quantize_reference",
    "grid_search",
    "inverse_hessian_factor",
    "minmax_quantizer",
    "obs_remove",
    "obs_update",
    "output_error",
    "round_to_nearest",
    "rtn_model",
]

ColumnQuantizer = Callable[[Tensor], Tensor]
"""Rounds one (rows,) column of weights to its group's grid."""
GroupQuantizer = Callable[[Tensor], ColumnQuantizer]
"""Given a group's (rows, g) weights, returns the `ColumnQuantizer` of that group's grid."""

MAX_BITS = 8


def _check_matrix(w: object, name: str = "w") -> Tensor:
    w = check.float_tensor(w, name)
    if w.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (out, in) weight matrix, got shape "
                         f"{tuple(w.shape)}")  # fmt: skip
    return w


def _check_group(group_size: int | None, columns: int) -> int:
    if group_size is None:
        return columns
    check.integer(group_size, "group_size", 1)
    if columns % group_size:
        raise ValueError(f"group_size {group_size} must divide the {columns} input columns")
    return group_size


def _check_hessian(h: object, columns: int | None) -> Tensor:
    h = check.float_tensor(h, "h")
    if h.dim() != 2 or h.shape[0] != h.shape[1]:
        raise ValueError(f"h must be a square matrix, got shape {tuple(h.shape)}")
    if columns is not None and h.shape[0] != columns:
        raise ValueError(f"h is {h.shape[0]}×{h.shape[0]} but w has {columns} input columns")
    return h


def minmax_quantizer(bits: int) -> GroupQuantizer:
    """b-bit asymmetric min–max grid per row of a group (chapter "Quantizing a small language
    model", § "GPTQ").

    For a group G (rows, g): per row r, S_r = (max − min)/(2^b − 1) over the row's g weights
    (the range extended to contain 0) and Z_r = −round(min/S_r), via
    `minicompress.quantization.calc_qparams`; the returned function maps a column c to
    S(clamp(round(c/S) + Z, 0, 2^b − 1) − Z).
    """
    check.bits(bits, 2, MAX_BITS)

    def for_group(group: Tensor) -> ColumnQuantizer:
        qp = calc_qparams(group.float(), bits, symmetric=False, axis=0)
        return lambda column: dequantize(quantize(column.float(), qp), qp).to(column.dtype)

    return for_group


def round_to_nearest(w: Tensor, bits: int, group_size: int | None = 32) -> Tensor:
    """Round-to-nearest per group: every g consecutive input weights of a row share an
    asymmetric b-bit min–max grid (chapter "Quantizing a small language model", § "GPTQ").

    Ŵ[r, G] = S(clamp(round(W[r, G]/S) + Z, 0, 2^b − 1) − Z) with S, Z from the group's
    min and max (`minmax_quantizer`); ``group_size=None`` is one group per output row.
    Returns a float tensor of the shape and dtype of ``w``.
    """
    w = _check_matrix(w)
    check.bits(bits, 2, MAX_BITS)
    g = _check_group(group_size, w.shape[1])
    return fake_quantize_groups(w.detach(), bits, g)  # the one group quantizer of the course


def output_error(w: Tensor, w_hat: Tensor, x: Tensor) -> float:
    """The layer-wise objective ‖XWᵀ − XŴᵀ‖²_F / N for inputs X (N, in), in float64
    (chapter "Quantizing a small language model", § "GPTQ").

    Equal to tr(ΔW H ΔWᵀ)/2 with ΔW = Ŵ − W and H = 2XᵀX/N."""
    w, w_hat = _check_matrix(w), _check_matrix(w_hat, "w_hat")
    x = check.float_tensor(x, "x")
    if w.shape != w_hat.shape:
        raise ValueError(f"w_hat has shape {tuple(w_hat.shape)}, w {tuple(w.shape)}")
    if x.dim() != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"x must be (N, {w.shape[1]}), got shape {tuple(x.shape)}")
    delta = (w_hat.detach().double() - w.detach().double()) @ x.detach().double().T
    return float((delta**2).sum() / len(x))


def grid_search(w: Tensor, x: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """The exact optimum of ‖XWᵀ − XŴᵀ‖²/N over every Ŵ whose row r lies on row r's b-bit
    min–max grid (the grid `round_to_nearest` with ``group_size=None`` uses), by trying all
    (2^b)^in candidates of each row (chapter "Quantizing a small language model", § "GPTQ").

    Returns (Ŵ_best, errors): errors (rows, (2^b)^in) is the objective of every candidate,
    row by row, candidates in `itertools.product` order. Refused beyond 10^6 candidates."""
    w = _check_matrix(w)
    check.bits(bits, 2, MAX_BITS)
    x = check.float_tensor(x, "x")
    if x.dim() != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"x must be (N, {w.shape[1]}), got shape {tuple(x.shape)}")
    levels, columns = 2**bits, w.shape[1]
    if levels**columns > 10**6:
        raise ValueError(f"{levels}^{columns} candidates per row is too many for a search")
    codes = torch.cartesian_prod(*[torch.arange(levels)] * columns).view(-1, columns)
    qp = calc_qparams(w.detach().float(), bits, symmetric=False, axis=0)
    grid = dequantize(torch.arange(levels).repeat(len(w), 1), qp).double()  # (rows, levels)
    x = x.detach().double()
    errors = torch.stack([
        ((x @ (grid[r][codes] - w[r].detach().double()).T) ** 2).mean(0) for r in range(len(w))
    ])  # fmt: skip
    best = torch.stack([grid[r][codes[int(errors[r].argmin())]] for r in range(len(w))])
    return best.to(w.dtype), errors


def obs_update(
    w: Tensor, h_inv: Tensor, index: int, target: Tensor | float
) -> tuple[Tensor, Tensor]:
    """The Optimal Brain Surgeon step: set weight ``index`` of every row to ``target`` and
    move the others to the best compensating values (chapter "Quantizing a small language
    model", § "GPTQ"; pruning is ``target=0``, chapter 10's SparseGPT).

    For each row w (objective ½ δᵀHδ, constraint e_qᵀ(w + δ) = v):
    δ = −(w_q − v) / [H⁻¹]_qq · H⁻¹_{:,q}, at the cost (w_q − v)² / (2 [H⁻¹]_qq).
    ``w`` is (rows, n), ``h_inv`` the (n, n) inverse Hessian of the weights still free,
    ``target`` a number or a (rows,) tensor. Returns (w + δ, cost per row); entry ``index``
    of the result is exactly ``target``. Weights fixed earlier must already be removed
    from ``h_inv`` (`obs_remove`), so their rows and columns of H⁻¹ are zero.
    """
    w = _check_matrix(w)
    h_inv = _check_hessian(h_inv, w.shape[1])
    check.integer(index, "index", 0, w.shape[1] - 1)
    d = h_inv[index, index]
    if not d > 0:
        raise ValueError(
            f"[H⁻¹]_qq at index {index} is {float(d)}: this weight is no longer free "
            "(already removed from h_inv) or H is not positive definite"
        )
    target = torch.as_tensor(target, dtype=w.dtype).expand(w.shape[0])
    error = w[:, index] - target  # (rows,)
    out = w - (error / d)[:, None] * h_inv[:, index].to(w.dtype)[None, :]
    out[:, index] = target  # exact, not up to rounding
    return out, error**2 / (2 * d)


def obs_remove(h_inv: Tensor, index: int) -> Tensor:
    """The inverse Hessian of the weights left free once weight ``index`` is fixed
    (chapter "Quantizing a small language model", § "GPTQ").

    H⁻¹ − H⁻¹_{:,q} H⁻¹_{q,:} / [H⁻¹]_qq: one step of Gaussian elimination, which equals
    inverting H with row and column q deleted (and leaves row and column q zero)."""
    h_inv = check.float_tensor(h_inv, "h_inv")
    if h_inv.dim() != 2 or h_inv.shape[0] != h_inv.shape[1]:
        raise ValueError(f"h_inv must be a square matrix, got shape {tuple(h_inv.shape)}")
    check.integer(index, "index", 0, h_inv.shape[0] - 1)
    column = h_inv[:, index]
    return h_inv - torch.outer(column, h_inv[index, :]) / h_inv[index, index]


def _damped(h: Tensor, w: Tensor, damp: float) -> tuple[Tensor, Tensor]:
    """H + λI with λ = damp · mean(diag H); dead inputs (H_jj = 0) get H_jj = 1 and W[:, j] = 0."""
    h = h.detach().double().clone()
    w = w.detach().double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * torch.diag(h).mean() * torch.eye(len(h), dtype=h.dtype)
    return h, w


def _upper_factor(h_damped: Tensor) -> Tensor:
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h_damped))
    return torch.linalg.cholesky(inverse, upper=True)


def inverse_hessian_factor(h: Tensor, damp: float = 0.01) -> Tensor:
    """U, the upper Cholesky factor of H_λ⁻¹ = UᵀU with H_λ = H + λI, λ = ``damp`` ·
    mean(diag H) (dead inputs, H_jj = 0, get H_jj = 1 first), in float64 (chapter
    "Quantizing a small language model", § "GPTQ").

    Row q of U is row q of H_F⁻¹, the inverse Hessian of the columns q, q+1, … still free
    once the columns before q are fixed, divided by √[H_F⁻¹]_qq; so U_qq² = [H_F⁻¹]_qq, the
    denominator of the OBS step and cost (`obs_update`) when the columns are done in order.
    `gptq_quantize` reads every H⁻¹ it needs from it; chapter 10's SparseGPT its saliencies.
    """
    h = _check_hessian(h, None)
    check.number(damp, "damp", 0.0)
    return _upper_factor(_damped(h, h[:1], damp)[0])


def _check_common(
    w: object, h: object, bits: int, group_size: int | None, damp: float, quantizer: object
) -> tuple[Tensor, Tensor, int, GroupQuantizer]:
    w = _check_matrix(w)
    h = _check_hessian(h, w.shape[1])
    g = _check_group(group_size, w.shape[1])
    check.number(damp, "damp", 0.0)
    if quantizer is None:
        quantizer = minmax_quantizer(bits)
    elif not callable(quantizer):
        raise TypeError(f"quantizer must be callable or None, got {type(quantizer).__name__}")
    return w, h, g, quantizer


def gptq_quantize_reference(
    w: Tensor, h: Tensor, bits: int = 4, group_size: int | None = 32, damp: float = 0.01,
    quantizer: GroupQuantizer | None = None,
) -> Tensor:  # fmt: skip
    """GPTQ written with the explicit inverse: for q = 0, 1, …: round column q
    (`obs_update` with v = quant(w_q) for all rows), then remove q from H⁻¹ (`obs_remove`)
    (chapter "Quantizing a small language model", § "GPTQ").

    O(n³) per column; `gptq_quantize` computes the same with one Cholesky factor.
    Arguments as `gptq_quantize`."""
    if quantizer is None:
        check.bits(bits, 2, MAX_BITS)
    w, h, g, quantizer = _check_common(w, h, bits, group_size, damp, quantizer)
    h, work = _damped(h, w, damp)
    h_inv = torch.linalg.inv(h)
    for q in range(work.shape[1]):
        if q % g == 0:
            round_column = quantizer(work[:, q : q + g])
        work, _ = obs_update(work, h_inv, q, round_column(work[:, q]))
        h_inv = obs_remove(h_inv, q)
    return work.to(w.dtype)


def gptq_quantize(
    w: Tensor, h: Tensor, bits: int = 4, group_size: int | None = 32, damp: float = 0.01,
    block: int = 128, quantizer: GroupQuantizer | None = None,
) -> Tensor:  # fmt: skip
    """Quantize ``w`` (out, in) column by column, compensating with the columns not yet
    quantized (Frantar et al. 2023; chapter "Quantizing a small language model", § "GPTQ").

    With H_λ = H + λI, λ = ``damp`` · mean(diag H), and U the upper Cholesky factor of
    H_λ⁻¹ (H_λ⁻¹ = UᵀU), column q is rounded to ŵ_q = quant(w_q) and the columns after it
    move by −(w_q − ŵ_q)/U_qq · U_{q, q:}, which is the OBS step −(w_q − ŵ_q)/[H_F⁻¹]_qq ·
    [H_F⁻¹]_{q,:} with H_F⁻¹ the inverse Hessian of the columns still free. As in the
    reference implementation, columns are processed in blocks of ``block`` (updates inside
    the block at once, the rest of the matrix once per block), and a group's grid is
    chosen when the loop reaches its first column, from the group's weights as updated
    so far (the reference reads them before the updates inside the current block).
    ``quantizer`` (default `minmax_quantizer` (bits)) makes a group's column quantizer;
    ``bits`` is then ignored. Returns the dequantized Ŵ, shape and dtype of ``w``.
    """
    if quantizer is None:
        check.bits(bits, 2, MAX_BITS)
    w, h, g, quantizer = _check_common(w, h, bits, group_size, damp, quantizer)
    check.integer(block, "block", 1)
    block = max(g, block // g * g)  # whole groups per block, so a group's weights are current
    h, work = _damped(h, w, damp)
    u = _upper_factor(h)
    out = torch.zeros_like(work)
    columns = work.shape[1]
    for i1 in range(0, columns, block):
        i2 = min(i1 + block, columns)
        w1, u1 = work[:, i1:i2].clone(), u[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        for i in range(i2 - i1):
            if (i1 + i) % g == 0:
                round_column = quantizer(w1[:, i : i + g])
            q = round_column(w1[:, i]).double()
            out[:, i1 + i] = q
            err1[:, i] = (w1[:, i] - q) / u1[i, i]
            w1[:, i:] -= torch.outer(err1[:, i], u1[i, i:])
        work[:, i2:] -= err1 @ u[i1:i2, i2:]
    return out.to(w.dtype)


def _quantized_copy(
    model: nn.Module, replace: Callable[[str, nn.Linear, nn.Module], Tensor]
) -> nn.Module:
    out = copy.deepcopy(check.module(model))
    for name, linear in block_linears(out).items():
        with torch.no_grad():
            linear.weight.copy_(replace(name, linear, out))
    return out


def rtn_model(model: nn.Module, bits: int = 4, group_size: int | None = 32) -> nn.Module:
    """A deep copy of ``model`` whose block Linears hold `round_to_nearest` weights
    (chapter "Quantizing a small language model", § "GPTQ"); biases, embeddings, LayerNorms
    and ``head`` stay in float."""
    check.bits(bits, 2, MAX_BITS)
    return _quantized_copy(
        model, lambda name, linear, _: round_to_nearest(linear.weight, bits, group_size)
    )


def gptq_model(
    model: nn.Module, calibration_tokens: Tensor, bits: int = 4, group_size: int | None = 32,
    damp: float = 0.01, block: int = 128, max_rows: int | None = None,
) -> nn.Module:  # fmt: skip
    """A deep copy of ``model`` with every block Linear quantized by `gptq_quantize`
    (chapter "Quantizing a small language model", § "GPTQ").

    Sequential, as in the paper: the layers are done in forward order, and each layer's
    H = 2XᵀX/N comes from its inputs X in the copy whose earlier layers are already
    quantized, so a layer also corrects for the error of the layers before it. Biases,
    embeddings, LayerNorms and ``head`` stay in float.
    """
    check.bits(bits, 2, MAX_BITS)

    def replace(name: str, linear: nn.Linear, current: nn.Module) -> Tensor:
        x = layer_inputs(current, calibration_tokens, [name], max_rows)[name]
        return gptq_quantize(linear.weight, hessian(x), bits, group_size, damp, block)

    return _quantized_copy(model, replace)
