"""minicompress.lowrank: the factorised layer is the truncated SVD product, full rank
reproduces the layer, the Eckart–Young errors, the payoff rank, and clear errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from minicompress.lowrank import (
    LowRankLinear,
    eckart_young_error,
    energy_kept,
    factorize_linear,
    low_rank,
    payoff_rank,
    rank_for_budget,
    rank_for_energy,
    singular_values,
    svd_factors,
)
from minicompress.measure import count_macs, count_parameters
from minicompress.models import LeNet5, LeNet300100


def matrix(m: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_factors_multiply_to_the_truncated_svd():
    w = matrix(30, 20)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    for r in (1, 5, 20):
        first, second = svd_factors(w, r)
        assert first.shape == (r, 20) and second.shape == (30, r)
        torch.testing.assert_close(second @ first, u[:, :r] @ torch.diag(s[:r]) @ vh[:r])


def test_factorised_layer_equals_the_truncated_product():
    torch.manual_seed(0)
    layer = nn.Linear(40, 25)
    small = factorize_linear(layer, 7)
    first, second = svd_factors(layer.weight, 7)
    x = torch.randn(16, 40)
    torch.testing.assert_close(small(x), x @ (second @ first).T + layer.bias)


def test_full_rank_reproduces_the_layer():
    torch.manual_seed(1)
    layer = nn.Linear(12, 9)
    x = torch.randn(5, 12)
    torch.testing.assert_close(factorize_linear(layer, 9)(x), layer(x), atol=1e-5, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 12), st.integers(2, 12), st.integers(0, 10**6), st.data())
def test_eckart_young_error_is_the_discarded_singular_values(m, n, seed, data):
    w = matrix(m, n, seed)
    r = data.draw(st.integers(1, min(m, n)))
    first, second = svd_factors(w, r)
    fro, spec = eckart_young_error(w, r)
    diff = w - second @ first
    assert abs(torch.linalg.matrix_norm(diff).item() - fro) < 1e-9 * (1 + fro)
    assert abs(torch.linalg.matrix_norm(diff, ord=2).item() - spec) < 1e-9 * (1 + spec)
    # no other rank-r matrix does better: a random rank-r product as a competitor
    other = matrix(m, r, seed + 1) @ matrix(r, n, seed + 2)
    assert torch.linalg.matrix_norm(w - other).item() >= fro - 1e-9


def test_energy_and_rank_for_energy_agree():
    w = matrix(50, 30)
    s2 = singular_values(w).square()
    for energy in (0.5, 0.9, 0.99, 1.0):
        r = rank_for_energy(w, energy)
        assert energy_kept(w, r) >= energy - 1e-12
        if r > 1:
            assert energy_kept(w, r - 1) < energy
    assert abs(energy_kept(w, 30) - 1.0) < 1e-12
    assert abs(energy_kept(w, 1) - float(s2[0] / s2.sum())) < 1e-12


@pytest.mark.parametrize("m,n", [(300, 784), (100, 300), (500, 800), (10, 100), (1, 5), (7, 7)])
def test_payoff_rank_is_the_largest_that_saves_weights(m, n):
    r = payoff_rank(m, n)
    assert r * (m + n) < m * n
    assert (r + 1) * (m + n) >= m * n


def test_rank_for_budget():
    assert rank_for_budget(300, 784, 300 * 784 // 5) == 300 * 784 // 5 // 1084
    assert rank_for_budget(4, 4, 10**6) == 4
    with pytest.raises(ValueError, match="cannot hold even rank 1"):
        rank_for_budget(300, 784, 1000)


def test_low_rank_model_is_smaller_and_leaves_the_original():
    model = LeNet300100()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = low_rank(model, {"fc1": 30, "fc2": 20})
    assert isinstance(small.fc1, LowRankLinear) and small.fc1.rank == 30
    assert count_parameters(small) == count_parameters(model) - 300 * 784 + 30 * 1084 \
        - 100 * 300 + 20 * 400  # fmt: skip
    x = torch.rand(2, 1, 28, 28)
    assert count_macs(small, x) == 2 * (30 * 1084 + 20 * 400 + 100 * 10)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_low_rank_lenet5_fc1():
    model = LeNet5()
    small = low_rank(model, {"fc1": 40})
    assert count_parameters(small) == count_parameters(model) - 800 * 500 + 40 * 1300


def test_bad_ranks_and_layers_get_clear_errors():
    w = matrix(6, 4)
    for bad in (0, 5, -1):
        with pytest.raises(ValueError, match=r"rank must be in 1..min\(m, n\) = 1..4"):
            svd_factors(w, bad)
    with pytest.raises(TypeError, match="rank must be an int"):
        svd_factors(w, 2.0)
    with pytest.raises(ValueError, match="2-D matrix"):
        singular_values(torch.zeros(3))
    with pytest.raises(TypeError, match="torch.nn.Linear"):
        factorize_linear(nn.Conv2d(1, 2, 3), 1)
    with pytest.raises(TypeError, match="conv1 is a Conv2d; low_rank factorises Linear"):
        low_rank(LeNet5(), {"conv1": 2})
    with pytest.raises(ValueError, match="no layer 'fc9'"):
        low_rank(LeNet5(), {"fc9": 2})
    with pytest.raises(ValueError, match="not fewer than"):
        low_rank(LeNet300100(), {"fc2": 80})
