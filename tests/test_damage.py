"""minicompress.damage: deltas equal lm.compare_bits, the recovered share's formula, errors."""

from __future__ import annotations

import copy

import pytest
import torch

from minicompress import lm
from minicompress.damage import bits_deltas, damage_recovered, paired
from minicompress.models import TinyGPT


def models() -> tuple[TinyGPT, TinyGPT, TinyGPT, torch.Tensor]:
    torch.manual_seed(0)
    base = TinyGPT(d=32, layers=1, context=16)
    worse, half = copy.deepcopy(base), copy.deepcopy(base)
    g = torch.Generator().manual_seed(1)
    noise = 0.5 * torch.randn(base.head.weight.shape, generator=g)
    with torch.no_grad():
        worse.head.weight.add_(noise)
        half.head.weight.add_(0.3 * noise)
    return base, worse, half, torch.randint(0, 96, (16 * 20 + 1,), generator=g)


def test_deltas_equal_compare_bits():
    base, worse, half, tokens = models()
    got = bits_deltas(base, {"worse": worse, "half": half}, tokens)
    for name, m in (("worse", worse), ("half", half)):
        expected = lm.compare_bits(m, base, tokens)
        assert got[name].mean == pytest.approx(expected.mean, abs=1e-12)
        assert got[name].standard_error == pytest.approx(expected.standard_error, rel=1e-9)


def test_recovered_share():
    base, worse, half, tokens = models()
    r = damage_recovered(base, worse, half, tokens)
    assert r.rounding.mean > 0
    assert r.recovered == pytest.approx(1 - r.method.mean / r.rounding.mean)
    assert r.gain.mean == pytest.approx(r.rounding.mean - r.method.mean)
    assert damage_recovered(base, worse, base, tokens).recovered == pytest.approx(1.0)
    assert damage_recovered(base, worse, worse, tokens).recovered == pytest.approx(0.0)


def test_bad_input():
    base, worse, _, tokens = models()
    with pytest.raises(ValueError, match="no damage"):
        damage_recovered(base, base, worse, tokens)
    with pytest.raises(TypeError, match="models must be a mapping"):
        bits_deltas(base, [worse], tokens)


def test_paired_refuses_mismatched_windows():
    with pytest.raises(ValueError, match="bits_a has 3 windows, bits_b 2"):
        paired(torch.ones(3, dtype=torch.float64), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="1-D"):
        paired(torch.ones(3, 1), torch.ones(3, 1))
