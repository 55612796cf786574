"""The low-rank lab's checkers: the reference passes, and each usual mistake gets its message."""

from __future__ import annotations

import pytest
import torch

from minicompress import architecture, lowrank
from minicompress.labs import LabCheckError
from minicompress.labs.lowrank import check_payoff_rank, check_separable_macs, check_svd_factors


def test_references_pass():
    check_svd_factors(lowrank.svd_factors)
    check_svd_factors(lowrank.svd_factors, seed=7)
    check_payoff_rank(lowrank.payoff_rank)
    check_separable_macs(architecture.separable_macs)


def plain_split(w, r):  # all of S in B: another valid factorisation
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    return vh[:r], u[:, :r] * s[:r]


def smallest(w, r):
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    return vh[-r:], u[:, -r:] * s[-r:]


def no_transpose(w, r):
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    return vh.T[:r], u[:, :r] * s[:r]


def swapped(w, r):
    a, b = lowrank.svd_factors(w, r)
    return b, a


def unwritten(*args):
    raise NotImplementedError()


def test_any_split_of_s_is_accepted():
    check_svd_factors(plain_split)


@pytest.mark.parametrize(
    "fn,message",
    [
        (smallest, "smallest"),
        (no_transpose, "without the transpose"),
        (swapped, "wrong order"),
        (unwritten, "not written yet"),
    ],
)
def test_svd_mistakes(fn, message):
    with pytest.raises(LabCheckError, match=message):
        check_svd_factors(fn)


@pytest.mark.parametrize(
    "fn,message",
    [
        (lambda m, n: max(r for r in range(min(m, n) + 1) if r * m * n < m * n), r"not r·m·n"),
        (lambda m, n: (m * n) // (m + n), "strict"),
        (lambda m, n: m * n / (m + n), "largest \\*integer\\*"),
        (unwritten, "not written yet"),
    ],
)
def test_payoff_mistakes(fn, message):
    with pytest.raises(LabCheckError, match=message):
        check_payoff_rank(fn)


@pytest.mark.parametrize(
    "fn,message",
    [
        (lambda ci, co, k, h, w: h * w * ci * k * k, "add the pointwise"),
        (lambda ci, co, k, h, w: h * w * ci * co, "add the depthwise"),
        (lambda ci, co, k, h, w: h * w * ci * co * k * k, "ordinary"),
        (lambda ci, co, k, h, w: h * w * co * k * k + h * w * ci * co, "one per \\*input\\*"),
        (unwritten, "not written yet"),
    ],
)
def test_separable_mistakes(fn, message):
    with pytest.raises(LabCheckError, match=message):
        check_separable_macs(fn)
