"""Weight-sharing lab checkers: the reference passes; erratum 9 (mean "sharing"), a
non-prefix-free code, a non-optimal code and common slips are rejected saying why."""

from __future__ import annotations

import heapq

import pytest
import torch

from minicompress.labs import LabCheckError
from minicompress.labs.sharing import check_huffman_code, check_kmeans_quantize


def kmeans_ok(weight, bits, iterations=100):
    w = weight.flatten()
    codebook = torch.linspace(float(w.min()), float(w.max()), 2**bits)
    for _ in range(iterations):
        indices = (w.view(-1, 1) - codebook.view(1, -1)).abs().argmin(dim=1)
        for k in range(len(codebook)):
            if (indices == k).any():
                codebook[k] = w[indices == k].mean()
    indices = (w.view(-1, 1) - codebook.view(1, -1)).abs().argmin(dim=1)
    return codebook, indices.view(weight.shape)


def huffman_ok(frequencies):
    heap = [(f, i, {s: ""}) for i, (s, f) in enumerate(frequencies.items())]
    heapq.heapify(heap)
    count = len(heap)
    while len(heap) > 1:
        f1, _, a = heapq.heappop(heap)
        f2, _, b = heapq.heappop(heap)
        merged = {s: "0" + w for s, w in a.items()} | {s: "1" + w for s, w in b.items()}
        heapq.heappush(heap, (f1 + f2, count, merged))
        count += 1
    return heap[0][2]


# ---- wrong versions -----------------------------------------------------------------------


def kmeans_seed_002_mean(weight, bits):  # erratum 9: param.copy_(param.mean())
    return torch.full((1,), float(weight.mean())), torch.zeros_like(weight, dtype=torch.long)


def kmeans_one_assignment_step(weight, bits):
    w = weight.flatten()
    codebook = torch.linspace(float(w.min()), float(w.max()), 2**bits)
    indices = (w.view(-1, 1) - codebook.view(1, -1)).abs().argmin(dim=1)
    return codebook, indices.view(weight.shape)  # centroids never updated


def kmeans_floor_assignment(weight, bits):
    codebook, _ = kmeans_ok(weight, bits)
    step = (codebook[-1] - codebook[0]) / (len(codebook) - 1)
    indices = ((weight - codebook[0]) / step).floor().clamp(0, len(codebook) - 1).long()
    return codebook, indices


def kmeans_flat_indices(weight, bits):
    codebook, indices = kmeans_ok(weight, bits)
    return codebook, indices.flatten()


def kmeans_float_indices(weight, bits):
    codebook, indices = kmeans_ok(weight, bits)
    return codebook, indices.float()


def kmeans_too_many(weight, bits):
    return kmeans_ok(weight, bits + 1)


def huffman_not_prefix_free(frequencies):
    ordered = sorted(frequencies, key=frequencies.get, reverse=True)
    return {s: format(i, "b") for i, s in enumerate(ordered)}  # "0", "1", "10", ...


def huffman_fixed_length(frequencies):
    width = max(1, (len(frequencies) - 1).bit_length())
    return {s: format(i, f"0{width}b") for i, s in enumerate(frequencies)}


def huffman_merges_largest(frequencies):
    heap = [(-f, i, {s: ""}) for i, (s, f) in enumerate(frequencies.items())]
    heapq.heapify(heap)
    count = len(heap)
    while len(heap) > 1:
        f1, _, a = heapq.heappop(heap)
        f2, _, b = heapq.heappop(heap)
        merged = {s: "0" + w for s, w in a.items()} | {s: "1" + w for s, w in b.items()}
        heapq.heappush(heap, (f1 + f2, count, merged))
        count += 1
    return heap[0][2]


def huffman_drops_a_symbol(frequencies):
    code = huffman_ok(frequencies)
    code.pop(next(iter(code)))
    return code


def not_written(*args):
    raise NotImplementedError()


def test_reference_versions_pass(capsys):
    check_kmeans_quantize(kmeans_ok)
    check_huffman_code(huffman_ok)
    assert capsys.readouterr().out.count("✓") == 2


def test_the_package_itself_passes():
    from minicompress.coding import huffman_code
    from minicompress.sharing import kmeans_quantize

    check_kmeans_quantize(kmeans_quantize)
    check_huffman_code(huffman_code)


@pytest.mark.parametrize(
    ("checker", "wrong", "message"),
    [
        (check_kmeans_quantize, kmeans_seed_002_mean, "erratum 9"),
        (check_kmeans_quantize, kmeans_one_assignment_step, "update step"),
        (check_kmeans_quantize, kmeans_floor_assignment, "nearest centroid"),
        (check_kmeans_quantize, kmeans_flat_indices, "weight's shape"),
        (check_kmeans_quantize, kmeans_float_indices, "must be integers"),
        (check_kmeans_quantize, kmeans_too_many, "address only"),
        (check_kmeans_quantize, not_written, "not written yet"),
        (check_huffman_code, huffman_not_prefix_free, "not prefix-free"),
        (check_huffman_code, huffman_fixed_length, "fixed-length"),
        (check_huffman_code, huffman_merges_largest, "least"),
        (check_huffman_code, huffman_drops_a_symbol, "has no code word"),
        (check_huffman_code, not_written, "not written yet"),
    ],
)
def test_checkers_reject_wrong_versions_saying_why(checker, wrong, message):
    with pytest.raises(LabCheckError, match=message):
        checker(wrong)
