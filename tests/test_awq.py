"""minicompress.awq: the scales, W' = Q(W diag s) diag s⁻¹, the search keeps the best
exponent (α = 0 is rounding), the model-level copy, clear errors."""

from __future__ import annotations

import pytest
import torch

from minicompress.awq import awq_model, awq_scales, awq_search, awq_weight
from minicompress.gptq import output_error, round_to_nearest
from minicompress.models import TinyGPT


def inputs_with_outliers(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(200, 32, generator=g)
    x[:, [3, 20]] *= 30.0
    w = torch.randn(8, 32, generator=g)
    w[:, [3, 20]] /= 30.0  # the same function as before the outliers
    return x, w


def test_scales_formula_and_normalisation():
    x, _ = inputs_with_outliers()
    s = awq_scales(x, 0.5)
    raw = x.abs().double().mean(0) ** 0.5
    torch.testing.assert_close(s.double(), raw / (raw.max() * raw.min()).sqrt(), rtol=1e-6, atol=0)
    assert float(s.max() * s.min()) == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(awq_scales(x, 0.0), torch.ones(32))


def test_awq_weight_is_rounding_of_the_scaled_weight():
    x, w = inputs_with_outliers()
    s = awq_scales(x, 0.5)
    torch.testing.assert_close(awq_weight(w, s, 3, 16), round_to_nearest(w * s, 3, 16) / s)
    torch.testing.assert_close(awq_weight(w, torch.ones(32), 3, 16), round_to_nearest(w, 3, 16))


def test_search_keeps_the_best_alpha_and_beats_rounding_on_outliers():
    x, w = inputs_with_outliers()
    result = awq_search(w, x, bits=3, group_size=16)
    assert result.alphas[0] == 0.0 and len(result.alphas) == 21
    assert min(result.errors) == result.errors[result.alphas.index(result.alpha)]
    rtn = output_error(w, round_to_nearest(w, 3, 16), x)
    assert result.errors[0] == pytest.approx(rtn)
    assert output_error(w, result.weight, x) < 0.5 * rtn
    assert result.alpha > 0


def test_awq_model_copy():
    torch.manual_seed(0)
    model = TinyGPT(d=32, layers=1, context=16)
    tokens = torch.randint(0, 96, (16 * 4,))
    before = model.blocks[0].mlp.fc.weight.clone()
    quantized = awq_model(model, tokens, bits=3, group_size=16, alphas=(0.0, 0.5))
    assert torch.equal(model.blocks[0].mlp.fc.weight, before)
    assert not torch.equal(quantized.blocks[0].mlp.fc.weight, before)
    assert torch.equal(quantized.head.weight, model.head.weight)


def test_bad_input():
    x, w = inputs_with_outliers()
    with pytest.raises(ValueError, match="alpha must be in"):
        awq_scales(x, 1.5)
    with pytest.raises(ValueError, match="scale must have shape"):
        awq_weight(w, torch.ones(3), 3, 16)
    with pytest.raises(ValueError, match="alphas is empty"):
        awq_search(w, x, 3, 16, alphas=())
    with pytest.raises(ValueError, match="bits must be in 2..8"):
        awq_search(w, x, 12, 16)
