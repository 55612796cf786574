"""Checkers for the weight-sharing lab: each tests a student's function against
`minicompress.sharing` / `minicompress.coding` on randomized inputs and raises
`LabCheckError` saying what is wrong, naming the seed posts' mistake (course erratum 9:
"sharing" as replacing a vector by its mean) when it sees it.

The lab's functions:

- ``kmeans_quantize(weight, bits) -> (codebook, indices)``: k = 2^bits centroids (1-D
  float tensor) and, for every weight, the index of its centroid (integer tensor of the
  weight's shape);
- ``huffman_code(frequencies) -> dict[symbol, str]``: an optimal prefix code.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import torch
from torch import Tensor

from minicompress import sharing as reference
from minicompress.coding import is_prefix_free
from minicompress.labs import LabCheckError, _call, _unchanged

__all__ = ["check_huffman_code", "check_kmeans_quantize"]


def _weight_cases(seed: int) -> list[tuple[Tensor, int]]:
    g = torch.Generator().manual_seed(seed)
    bell = torch.randn(2000, generator=g) * 0.05
    bell[:20] = torch.randn(20, generator=g) * 0.3  # rare large weights
    return [
        (bell, 2),
        (torch.randn(40, 30, generator=g) * 0.1, 3),  # a matrix: indices keep its shape
        (torch.randn(100, generator=g) * 0.02 + 0.01, 2),  # a bias-like vector
        (
            torch.cat(
                [
                    torch.randn(300, generator=g) * 0.01 - 0.2,
                    torch.randn(300, generator=g) * 0.01 + 0.3,
                ]
            ),
            1,
        ),  # fmt: skip
    ]


def check_kmeans_quantize(fn: Callable[[Tensor, int], tuple], seed: int = 0) -> None:
    """Check ``fn(weight, bits) -> (codebook, indices)``: every weight mapped to its nearest
    of at most 2^bits centroids, which are the means of their clusters (Lloyd's fixed
    point), with an objective no worse than 1.25 × the reference's."""
    for weight, bits in _weight_cases(seed):
        k = 2**bits
        where = f"kmeans_quantize(weight of shape {tuple(weight.shape)}, bits={bits})"
        original = weight.clone()
        result = _call(fn, where, weight, bits)
        _unchanged({"weight": original}, {"weight": weight}, where)
        if not isinstance(result, tuple) or len(result) != 2:
            raise LabCheckError(f"{where} must return a tuple (codebook, indices).")
        codebook, indices = result
        if isinstance(codebook, Tensor) and codebook.shape == weight.shape and indices is None:
            codebook, indices = None, None
        if not isinstance(codebook, Tensor) or not isinstance(indices, Tensor):
            raise LabCheckError(f"{where} must return two tensors: the codebook and the indices.")
        if codebook.ndim != 1 or not codebook.is_floating_point():
            raise LabCheckError(
                f"{where}: the codebook must be a 1-D float tensor of centroids, "
                f"got shape {tuple(codebook.shape)}, {codebook.dtype}."
            )
        if len(codebook) == k - 1:
            raise LabCheckError(
                f"{where}: {k - 1} = 2^{bits} − 1 centroids, but {bits}-bit indices address "
                f"2^{bits} = {k} values (0 … {k - 1}): use k = 2^bits centroids."
            )
        if len(codebook) > k:
            raise LabCheckError(f"{where}: {len(codebook)} centroids, but {bits}-bit indices "
                                f"address only 2^{bits} = {k}.")  # fmt: skip
        if indices.is_floating_point() or indices.dtype == torch.bool:
            raise LabCheckError(f"{where}: indices must be integers (what the layer stores), "
                                f"got {indices.dtype}.")  # fmt: skip
        if indices.shape != weight.shape:
            raise LabCheckError(f"{where}: indices have shape {tuple(indices.shape)}; they must "
                                f"have the weight's shape {tuple(weight.shape)}.")  # fmt: skip
        indices = indices.long()
        if int(indices.min()) < 0 or int(indices.max()) >= len(codebook):
            raise LabCheckError(f"{where}: indices must lie in [0, {len(codebook)}).")
        shared = codebook.float()[indices]
        if len(torch.unique(shared)) == 1 and len(torch.unique(weight)) > 1:
            raise LabCheckError(
                f"{where}: every weight became the same value {float(shared.flatten()[0]):.4g}. "
                "Replacing a vector by its mean is not weight sharing (course erratum 9): "
                f"cluster the weights into up to {k} centroids and store each weight's index."
            )
        if len(codebook) != k:
            raise LabCheckError(
                f"{where}: {len(codebook)} centroids, expected k = 2^{bits} = {k} ({bits}-bit "
                "indices address exactly that many; keep a centroid that loses its weights)."
            )
        distance = (weight.reshape(-1, 1) - codebook.float().reshape(1, -1)).abs()  # (n, k)
        chosen = distance.gather(1, indices.reshape(-1, 1)).squeeze(1)
        wrong = int((chosen > distance.min(dim=1).values + 1e-6).sum())
        if wrong:
            raise LabCheckError(f"{where}: {wrong} of {weight.numel()} weights are not assigned "
                                "to their nearest centroid (the assignment step).")  # fmt: skip
        for c in range(len(codebook)):
            members = weight.reshape(-1)[indices.reshape(-1) == c]
            if len(members) and abs(float(members.mean()) - float(codebook[c])) > 1e-4 * (
                1 + abs(float(codebook[c]))
            ):
                raise LabCheckError(
                    f"{where}: centroid {c} is {float(codebook[c]):.5g} but its weights average "
                    f"{float(members.mean()):.5g}; iterate the update step c = mean of the "
                    "cluster until the assignments stop changing."
                )
        ref_codebook, ref_indices = reference.kmeans_quantize(weight, bits)
        ours = reference.inertia(weight, codebook.float(), indices)
        best = reference.inertia(weight, ref_codebook, ref_indices)
        if ours > 1.25 * best + 1e-12:
            raise LabCheckError(
                f"{where}: the squared error Σ(w − c)² is {ours:.4g}, more than 1.25 × the "
                f"reference's {best:.4g} from the linear initialisation; start the centroids "
                "evenly spaced over [min, max] so that no range of weights is left out."
            )
    print(f"✓ kmeans_quantize passed {len(_weight_cases(seed))} randomized checks")


def _frequency_cases(seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    skewed = torch.randint(1, 1000, (12,), generator=g) ** 2
    return [
        {"a": 45, "b": 13, "c": 12, "d": 16, "e": 9, "f": 5},  # CLRS's example
        {i: int(f) for i, f in enumerate(skewed)},
        {i: 1 for i in range(8)},  # uniform: a fixed-length code is optimal
        {0: 1, 1: 1, 2: 2, 3: 4, 4: 8, 5: 16, 6: 32},  # deep tree
        # Shannon–Fano (top-down halving) is suboptimal on these: 89 vs 87, 231 vs 230 bits
        {"a": 15, "b": 7, "c": 6, "d": 6, "e": 5},
        {"v": 35, "w": 17, "x": 17, "y": 16, "z": 15},
    ]


def _shannon_fano_cost(frequencies: dict) -> int:
    """Σ f·ℓ of the Shannon–Fano code: sort by frequency, split where the halves' totals are
    closest, recurse. A greedy top-down code, often but not always optimal."""

    def lengths(fs: list[int]) -> list[int]:
        if len(fs) == 1:
            return [0]
        total, best, cut = sum(fs), None, 1
        for i in range(1, len(fs)):
            diff = abs(total - 2 * sum(fs[:i]))
            if best is None or diff < best:
                best, cut = diff, i
        return [1 + d for d in lengths(fs[:cut]) + lengths(fs[cut:])]

    fs = sorted(frequencies.values(), reverse=True)
    return sum(f * d for f, d in zip(fs, lengths(fs), strict=True))


def _optimal_cost(frequencies: dict) -> int:
    heap = list(frequencies.values())
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


def check_huffman_code(fn: Callable[[dict], dict], seed: int = 0) -> None:
    """Check ``fn(frequencies) -> {symbol: "0101…"}``: one 0/1 word per symbol, prefix-free,
    and of the least total length Σ f·ℓ (any optimal code passes, canonical or not)."""
    for frequencies in _frequency_cases(seed):
        where = f"huffman_code({len(frequencies)} symbols)"
        given = dict(frequencies)
        code = _call(fn, where, given)
        if given != frequencies:
            raise LabCheckError(f"{where} modified its argument `frequencies` in place.")
        if not isinstance(code, dict):
            raise LabCheckError(f"{where} must return a dict symbol -> code word string.")
        missing = [s for s in frequencies if s not in code]
        if missing:
            raise LabCheckError(f"{where}: symbol {missing[0]!r} has no code word.")
        for s, word in code.items():
            if not isinstance(word, str) or not word or set(word) - {"0", "1"}:
                raise LabCheckError(f"{where}: the word of {s!r} is {word!r}; code words are "
                                    "non-empty strings of '0' and '1'.")  # fmt: skip
        if not is_prefix_free(code):
            words = sorted(code.values())
            a, b = next((a, b) for a, b in zip(words, words[1:], strict=False)
                        if b.startswith(a))  # fmt: skip
            raise LabCheckError(
                f"{where}: not prefix-free: {a!r} is a prefix of {b!r}, so a bit stream can be "
                "read in two ways. Read the words off the paths of one binary tree."
            )
        cost = sum(frequencies[s] * len(code[s]) for s in frequencies)
        best = _optimal_cost(frequencies)
        if cost != best:
            lengths = {len(w) for w in code.values()}
            hint = (" All words have the same length: that is a fixed-length code, not Huffman's."
                    if len(lengths) == 1 else
                    " That is the Shannon–Fano code (split the sorted symbols into halves of "
                    "equal weight, top down), which is not always optimal; Huffman's merges "
                    "bottom up." if cost == _shannon_fano_cost(frequencies) else
                    " Always merge the two *least* frequent trees, and re-insert the merged "
                    "tree with the sum of their frequencies.")  # fmt: skip
            raise LabCheckError(f"{where}: total length Σ f·ℓ = {cost} bits, but the optimum is "
                                f"{best}.{hint}")  # fmt: skip
    print(f"✓ huffman_code passed {len(_frequency_cases(seed))} randomized checks")
