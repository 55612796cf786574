"""minicompress.semistructured: N:M masks keep the n largest of every m, the packed format
round-trips exactly and its real bytes equal n·(b + ⌈log₂ m⌉)/m bits per weight."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.semistructured import (
    is_nm_sparse,
    nm_bits_per_weight,
    nm_mask,
    pack_nm,
    packed_nm_bytes,
    unpack_nm,
)

PATTERNS = [(1, 2), (2, 4), (1, 4), (4, 8), (3, 16)]


def scores(rows: int, columns: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, columns, generator=torch.Generator().manual_seed(seed))


def test_mask_keeps_the_n_largest_of_every_m_consecutive_weights():
    s = scores(5, 16)
    mask = nm_mask(s, 2, 4)
    for r, start in itertools.product(range(5), range(0, 16, 4)):
        group = s[r, start : start + 4]
        expected = torch.zeros(4, dtype=torch.bool)
        expected[torch.topk(group, 2).indices] = True  # brute-force reference
        assert torch.equal(mask[r, start : start + 4], expected)


def test_ties_go_to_the_earlier_position():
    assert nm_mask(torch.ones(1, 4)).tolist() == [[True, True, False, False]]


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(PATTERNS), st.integers(1, 4), st.integers(1, 3), st.integers(0, 99))
def test_mask_has_exactly_n_per_group_and_is_nm_sparse(pattern, rows, groups, seed):
    n, m = pattern
    s = scores(rows, groups * m, seed)
    mask = nm_mask(s, n, m)
    assert (mask.view(rows, groups, m).sum(2) == n).all()
    assert is_nm_sparse(torch.where(mask, s, 0.0), n, m)
    kept = torch.where(mask, s, math.inf).view(rows, groups, m).amin(2)
    dropped = torch.where(mask, -math.inf, s).view(rows, groups, m).amax(2)
    assert (kept >= dropped).all()


def test_is_nm_sparse_counts_non_zeros_per_group():
    assert is_nm_sparse(torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0]]))
    assert not is_nm_sparse(torch.tensor([[1.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0]]))
    assert is_nm_sparse(torch.zeros(2, 4), 1, 4)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(PATTERNS), st.integers(1, 4), st.integers(1, 3), st.integers(0, 99),
       st.sampled_from([torch.float16, torch.float32, torch.float64]))  # fmt: skip
def test_pack_round_trips_exactly(pattern, rows, groups, seed, dtype):
    n, m = pattern
    s = scores(rows, groups * m, seed)
    w = torch.where(nm_mask(s, n, m), s, 0.0)
    w[torch.rand(w.shape, generator=torch.Generator().manual_seed(seed)) < 0.3] = 0.0  # fewer
    w = w.to(dtype)
    packed = pack_nm(w, n, m)
    assert packed["values"].dtype == dtype
    assert packed["values"].shape == (rows, groups * n)
    back = unpack_nm(packed)
    assert back.dtype == dtype and torch.equal(back, w)


@pytest.mark.parametrize("n, m", PATTERNS)
def test_packed_bytes_equal_the_bits_per_weight_formula(n, m):
    w = scores(6, 16 * m)
    w = torch.where(nm_mask(w, n, m), w, 0.0).half()
    packed = pack_nm(w, n, m)
    assert packed_nm_bytes(packed) == math.ceil(nm_bits_per_weight(16, n, m) * w.numel() / 8)


def test_two_four_in_float16_is_nine_bits_with_two_bit_indices():
    assert nm_bits_per_weight(16, 2, 4) == 9.0
    assert nm_bits_per_weight(8, 2, 4) == 5.0
    w = torch.where(nm_mask(scores(4, 32)), scores(4, 32), 0.0).half()
    packed = pack_nm(w)
    assert packed["indices"].dtype == torch.uint8
    assert packed["indices"].numel() == w.numel() // 2 * 2 // 8  # four indices per byte
    assert packed_nm_bytes(packed) / (2 * w.numel()) == 9 / 16


def test_bad_input_is_refused_with_clear_errors():
    with pytest.raises(ValueError, match="6 input columns, not a multiple of m = 4"):
        nm_mask(scores(2, 6))
    with pytest.raises(ValueError, match="n must be in 1..4, got 5"):
        nm_mask(scores(2, 8), 5, 4)
    with pytest.raises(ValueError, match="m must be in 2..256, got 1"):
        nm_bits_per_weight(16, 1, 1)
    with pytest.raises(TypeError, match="scores must be a floating-point tensor"):
        nm_mask(torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="scores contains NaN"):
        nm_mask(torch.full((1, 4), math.nan))
    with pytest.raises(ValueError, match="must be a 2-D"):
        nm_mask(torch.ones(8))
    with pytest.raises(ValueError, match="w is not 2:4 sparse"):
        pack_nm(torch.ones(1, 4))
    with pytest.raises(TypeError, match="packed must be a dict made by pack_nm"):
        unpack_nm({"values": torch.ones(2)})
    with pytest.raises(TypeError, match="packed must be a dict made by pack_nm"):
        packed_nm_bytes([1, 2])
    with pytest.raises(ValueError, match="value_bits must be an int >= 1"):
        nm_bits_per_weight(0)


def test_unpack_refuses_corrupt_or_crafted_payloads():
    w = torch.tensor([[1.0, 2.0, 0.0, 0.0, 0.0, 3.0, 0.0, 4.0]])
    good = pack_nm(w)
    torch.testing.assert_close(unpack_nm(good), w)
    same_position = {**good, "indices": torch.zeros_like(good["indices"])}
    with pytest.raises(ValueError, match="indices are corrupt"):
        unpack_nm(same_position)  # would silently lose the 1.0
    with pytest.raises(ValueError, match="indices has 2 bytes"):
        unpack_nm({**good, "indices": torch.cat([good["indices"], good["indices"]])})
    with pytest.raises(ValueError, match="values has 3 entries"):
        unpack_nm({**good, "values": good["values"][:, :3]})
    with pytest.raises(ValueError, match="m must be"):
        unpack_nm({**good, "header": torch.tensor([1, 8, 2, 0])})
    with pytest.raises(ValueError, match="not a multiple of m"):
        unpack_nm({**good, "header": torch.tensor([1, 6, 2, 4])})
    with pytest.raises(TypeError, match="header must be an integer tensor"):
        unpack_nm({**good, "header": torch.tensor([1, 8])})
    with pytest.raises(TypeError, match="1-D uint8"):
        unpack_nm({**good, "indices": good["indices"].float()})
    with pytest.raises(TypeError, match="values and indices must be tensors"):
        packed_nm_bytes({"values": [1.0], "indices": good["indices"]})
    assert packed_nm_bytes({**good, "extra": torch.zeros(100)}) == packed_nm_bytes(good)
