"""N:M semi-structured sparsity: at most n non-zeros in every m consecutive weights of a row.

Chapter "Pruning, adapting and distilling a small language model", section "2:4
semi-structured sparsity", derives each piece:

- the mask: keep the n largest scores of every group of m consecutive weights along the
  input dimension (`nm_mask`; the scores are ``|W|`` for magnitude, ``|W|·‖X[:, j]‖`` for Wanda,
  the OBS saliency for SparseGPT) and the test for the pattern (`is_nm_sparse`);
- the storage format: per group the n kept values and, for each, its position in the
  group as a ⌈log₂ m⌉-bit index (`pack_nm`, `unpack_nm`), so
  n·(b + ⌈log₂ m⌉)/m bits per weight (`nm_bits_per_weight`), which `packed_nm_bytes`
  counts in real bytes: 2:4 in float16 is 9 bits per weight instead of 16.

Why 2:4 is the pattern GPUs accelerate (Mishra et al. 2021): the sparsity is fixed at 50 %
in every group, so each row of W holds exactly in/2 values and in/2 two-bit indices, a
dense array of half the width. The kernel loads the kept values, uses each index to pick
the matching activation out of its group of four, and does half the multiply–adds with
no branch and no variable-length bookkeeping, unlike unstructured sparsity (CSR), whose
per-row counts and column lists differ from row to row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from minicompress import _validate as check

# the b-bit bitstream of chapter 9's packed groups, reused for the indices
from minicompress.groupwise import _pack_bits, _unpack_bits

__all__ = ["is_nm_sparse", "nm_bits_per_weight", "nm_mask", "pack_nm", "packed_nm_bytes",
           "unpack_nm"]  # fmt: skip

MAX_M = 256  # indices of at most 8 bits


def _check_pattern(n: object, m: object) -> tuple[int, int]:
    m = check.integer(m, "m", 2, MAX_M)
    return check.integer(n, "n", 1, m), m


def _groups(x: object, name: str, m: int, *, nan: bool = False) -> Tensor:
    """``x`` (rows, in) as (rows, in/m, m); ``in`` must be a multiple of m."""
    x = check.float_tensor(x, name, inf=True, nan=nan, why="values of NaN cannot be ranked")
    if x.dim() != 2:
        raise ValueError(f"{name} must be a 2-D (out, in) matrix, got shape {tuple(x.shape)}")
    if x.shape[1] % m:
        raise ValueError(f"{name} has {x.shape[1]} input columns, not a multiple of m = {m}: "
                         "N:M groups run along the input dimension")  # fmt: skip
    return x.reshape(x.shape[0], -1, m)  # (rows, in/m, m)


def nm_mask(scores: Tensor, n: int = 2, m: int = 4) -> Tensor:
    """Keep the n largest ``scores`` of every m consecutive weights along the input dimension
    (chapter "Pruning, adapting and distilling a small language model", section
    "2:4 semi-structured sparsity").

    ``scores`` (out, in), in a multiple of m. Returns a bool mask of the same shape, True
    where kept, with exactly n True in every group; ties go to the earlier position.
    """
    n, m = _check_pattern(n, m)
    groups = _groups(scores, "scores", m)
    # a stable descending sort puts ties in position order
    keep = torch.sort(groups, dim=2, descending=True, stable=True).indices[..., :n]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, keep, True)
    return mask.view(scores.shape)


def is_nm_sparse(w: Tensor, n: int = 2, m: int = 4) -> bool:
    """Whether every group of m consecutive weights of each row of ``w`` (out, in) has at most
    n non-zeros (chapter "Pruning, adapting and distilling a small language model",
    section "2:4 semi-structured sparsity")."""
    n, m = _check_pattern(n, m)
    return bool(((_groups(w, "w", m, nan=True) != 0).sum(2) <= n).all())


def _index_bits(m: int) -> int:
    return math.ceil(math.log2(m))


def nm_bits_per_weight(value_bits: int, n: int = 2, m: int = 4) -> float:
    """Storage of N:M sparse weights: n·(b + ⌈log₂ m⌉)/m bits per weight for b-bit values
    (chapter "Pruning, adapting and distilling a small language model", section "2:4
    semi-structured sparsity").

    Each group of m weights keeps n values of b bits and n indices of ⌈log₂ m⌉ bits saying
    where in the group each one sits. 2:4 in float16: 2·(16 + 2)/4 = 9 bits instead of 16.
    """
    value_bits = check.integer(value_bits, "value_bits", 1)
    n, m = _check_pattern(n, m)
    return n * (value_bits + _index_bits(m)) / m


def pack_nm(w: Tensor, n: int = 2, m: int = 4) -> dict[str, Tensor]:
    """The N:M storage format of an N:M sparse ``w`` (out, in) (chapter "Pruning, adapting and
    distilling a small language model", section "2:4 semi-structured sparsity").

    ``values`` (out, in·n/m) in ``w``'s dtype: the n kept weights of every group, in
    position order; ``indices``: their positions in the group, ⌈log₂ m⌉ bits each, packed
    into uint8 (four 2-bit indices per byte for 2:4); ``header`` (int64: out, in, n, m).
    A group with fewer than n non-zeros stores zeros at its first free positions, so every
    group has exactly n entries. Cast ``w`` first to store other value types (``w.half()``).
    """
    n, m = _check_pattern(n, m)
    groups = _groups(w, "w", m, nan=True)
    if not is_nm_sparse(w, n, m):
        raise ValueError(f"w is not {n}:{m} sparse: some group of {m} has more than {n} "
                         "non-zeros (prune it with nm_mask first)")  # fmt: skip
    nonzero = (groups != 0).to(torch.int8)
    first = torch.sort(nonzero, dim=2, descending=True, stable=True).indices[..., :n]
    index = torch.sort(first, dim=2).values  # (rows, in/m, n) positions, ascending
    rows, width = w.shape
    return {
        "values": torch.gather(groups, 2, index).reshape(rows, -1).detach().clone(),
        "indices": _pack_bits(index, _index_bits(m)),
        "header": torch.tensor([rows, width, n, m]),
    }


def _check_header(header: object) -> tuple[int, int, int, int]:
    """(out, in, n, m) from a `pack_nm` header, each checked before anything is allocated."""
    if not isinstance(header, Tensor) or header.shape != (4,) or header.is_floating_point():
        raise TypeError(f"header must be an integer tensor (out, in, n, m), got "
                        f"{check.describe(header)}")  # fmt: skip
    rows, width, n, m = (int(v) for v in header)
    check.integer(rows, "header's out", 1)
    n, m = _check_pattern(n, m)
    check.integer(width, "header's in", m)
    if width % m:
        raise ValueError(f"header's in = {width} is not a multiple of m = {m}")
    return rows, width, n, m


def unpack_nm(packed: Mapping[str, Tensor]) -> Tensor:
    """The dense (out, in) matrix back from `pack_nm`, exactly (chapter "Pruning, adapting
    and distilling a small language model", section "2:4 semi-structured sparsity")."""
    if not isinstance(packed, Mapping) or not {"values", "indices", "header"} <= set(packed):
        raise TypeError("packed must be a dict made by pack_nm (with 'values', 'indices' and "
                        "'header')")  # fmt: skip
    rows, width, n, m = _check_header(packed["header"])
    indices, values = packed["indices"], packed["values"]
    groups, bits = rows * width // m, _index_bits(m)
    if not isinstance(indices, Tensor) or indices.dtype != torch.uint8 or indices.dim() != 1:
        raise TypeError(f"indices must be a 1-D uint8 tensor, got {check.describe(indices)}")
    if len(indices) != math.ceil(groups * n * bits / 8):  # the size is fixed by the header
        raise ValueError(f"indices has {len(indices)} bytes; the header ({rows}×{width}, {n}:{m}) "
                         f"needs {math.ceil(groups * n * bits / 8)}")  # fmt: skip
    values = check.float_tensor(values, "values", nan=True, inf=True)
    if values.numel() != groups * n:
        raise ValueError(f"values has {values.numel()} entries; the header needs {groups * n}")
    index = _unpack_bits(indices, bits, groups * n).view(groups, n)
    # each group's positions: below m and strictly increasing (so no two share a position)
    if (index >= m).any() or (index[:, 1:] <= index[:, :-1]).any():
        raise ValueError(f"indices are corrupt: every group's {n} positions must be distinct, "
                         f"increasing and below m = {m}")  # fmt: skip
    values = values.reshape(rows, width // m, n)
    out = torch.zeros(rows, width // m, m, dtype=values.dtype)
    return out.scatter_(2, index.view(rows, width // m, n), values).view(rows, width)


def packed_nm_bytes(packed: Mapping[str, Tensor]) -> int:
    """Bytes of a `pack_nm` payload, values + indices (the small header, written once per
    matrix, is not counted): `nm_bits_per_weight` · out · in / 8, rounded up to whole bytes
    (chapter "Pruning, adapting and distilling a small language model", section "2:4
    semi-structured sparsity")."""
    if not isinstance(packed, Mapping) or not {"values", "indices"} <= set(packed):
        raise TypeError("packed must be a dict made by pack_nm")
    parts = [packed["values"], packed["indices"]]
    if not all(isinstance(t, Tensor) for t in parts):
        raise TypeError("packed's values and indices must be tensors (from pack_nm)")
    return sum(t.numel() * t.element_size() for t in parts)
