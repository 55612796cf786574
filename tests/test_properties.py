"""Property tests (hypothesis) for issue 16's invariants, each with a small fixed budget:
quantization error ≤ S/2 over the whole float32 range, and lossless round trips of
Huffman coding, relative indices, CSR, bit packing and the storage file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from minicompress import binarization as B
from minicompress import coding, storage
from minicompress import quantization as Q
from minicompress.sharing import SharedLayer

BUDGET = settings(max_examples=40, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip

float32s = st.floats(width=32, allow_nan=False, allow_infinity=False)


@BUDGET
@given(st.lists(float32s, min_size=1, max_size=30), st.integers(2, 16), st.booleans())
def test_round_trip_error_is_at_most_half_a_step(values, bits, symmetric):
    x = torch.tensor(values, dtype=torch.float32)
    try:
        qp = Q.calc_qparams(x, bits=bits, symmetric=symmetric)
    except ValueError as err:  # only a grid that float32 cannot hold is refused
        assert "too wide" in str(err) and x.abs().max() > 1e37
        return
    error = (Q.dequantize(Q.quantize(x, qp), qp) - x).abs()
    ulp = torch.finfo(torch.float32).eps * x.abs()
    assert (error <= qp.scale / 2 + 2 * ulp + torch.finfo(torch.float32).tiny).all()


@BUDGET
@given(st.lists(st.integers(0, 40), min_size=1, max_size=300))
def test_huffman_round_trip(symbols):
    encoded = coding.huffman_encode(symbols)
    assert coding.huffman_decode(encoded) == symbols
    assert encoded.n_bits == sum(len(encoded.code[s]) for s in symbols)


@BUDGET
@given(arrays(np.int64, st.integers(0, 400), elements=st.integers(-3, 3)), st.integers(1, 6))
def test_relative_index_round_trip(values, index_bits):
    gaps, entries = coding.relative_index_encode(values, index_bits)
    assert (gaps < 2**index_bits).all()
    assert np.array_equal(coding.relative_index_decode(gaps, entries, len(values)), values)


@BUDGET
@given(arrays(np.float32, st.tuples(st.integers(0, 12), st.integers(0, 12)),
              elements=st.sampled_from([0.0, 0.0, 1.5, -2.0])))  # fmt: skip
def test_csr_round_trip(matrix):
    values, columns, pointers = coding.to_csr(matrix)
    assert len(values) + len(columns) + len(pointers) == 2 * np.count_nonzero(matrix) + (
        matrix.shape[0] + 1
    )
    assert np.array_equal(coding.from_csr(values, columns, pointers, matrix.shape), matrix)


@BUDGET
@given(st.integers(1, 4), st.integers(1, 200), st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(rows, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = B.binarize(torch.randn(rows, n, generator=g))
    packed = B.pack_bits(x)
    assert packed.shape == (rows, -(-n // 64))
    assert torch.equal(B.unpack_bits(packed, n), x)
    assert torch.equal(B.xnor_matmul(packed, packed, n), (x @ x.T).long())


@BUDGET
@given(st.integers(1, 4), st.integers(1, 40), st.integers(0, 2**32 - 1),
       st.sampled_from([1, 3, 5, "auto"]))  # fmt: skip
def test_storage_round_trip(tmp_path, k_bits, width, seed, index_bits):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(width, 3))
    k = 2**k_bits
    codebook = torch.randn(k, generator=g).sort().values
    indices = torch.randint(k, (3, width), generator=g)
    mask = torch.rand(3, width, generator=g) < 0.3
    layer = SharedLayer(codebook, indices, mask)
    with torch.no_grad():
        model[0].weight.copy_(layer.weight())
    path = tmp_path / f"m{seed}.mcdc"
    size = storage.save(path, model, {"0.weight": layer}, index_bits=index_bits)
    assert size == path.stat().st_size
    loaded = storage.read(path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded[name], tensor), name


@pytest.mark.parametrize("symmetric", [False, True])
def test_extreme_float32_values_round_trip(symmetric):
    big = torch.finfo(torch.float32).max / 4
    x = torch.tensor([-big, -1.0, 0.0, 1e-30, big])
    qp = Q.calc_qparams(x, bits=8, symmetric=symmetric)
    error = (Q.dequantize(Q.quantize(x, qp), qp) - x).abs()
    assert torch.isfinite(error).all()
    assert (error <= qp.scale / 2 + 2 * torch.finfo(torch.float32).eps * x.abs()).all()
