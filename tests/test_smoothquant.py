"""minicompress.smoothquant: the scales, XWᵀ = (X diag s⁻¹)(W diag s)ᵀ exactly, the
smoothed model computes the same function, the W8A8 layer equals int8 arithmetic, clear
errors."""

from __future__ import annotations

import pytest
import torch

from minicompress.calibration import layer_inputs
from minicompress.models import TinyGPT
from minicompress.outliers import add_activation_outliers
from minicompress.smoothquant import W8A8Linear, smooth_model, smooth_scales, w8a8_model


def test_scales_formula_and_balance():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(50, 8, generator=g), torch.randn(4, 8, generator=g)
    x[:, 2] *= 40
    a, b = x.abs().amax(0), w.abs().amax(0)
    s = smooth_scales(a, w, 0.5)
    torch.testing.assert_close(s, (a.double() ** 0.5 / b.double() ** 0.5).float())
    torch.testing.assert_close((x / s).abs().amax(0), (w * s).abs().amax(0))  # α = 0.5 balances
    torch.testing.assert_close(smooth_scales(a, w, 1.0), a)
    # exact in float: the product does not change beyond rounding
    torch.testing.assert_close((x / s) @ (w * s).T, x @ w.T, rtol=1e-5, atol=1e-4)
    x64, w64, s64 = x.double(), w.double(), s.double()
    torch.testing.assert_close((x64 / s64) @ (w64 * s64).T, x64 @ w64.T, rtol=1e-12, atol=1e-10)


def model_and_tokens() -> tuple[TinyGPT, torch.Tensor]:
    torch.manual_seed(0)
    return TinyGPT(d=32, layers=2, context=16), torch.randint(0, 96, (16 * 6,))


def test_smoothed_model_computes_the_same_function_with_flatter_inputs():
    model, tokens = model_and_tokens()
    outlier = add_activation_outliers(model, channels=(4,), factor=30.0)
    smoothed = smooth_model(outlier, tokens, 0.5)
    ids = tokens.view(6, 16)
    with torch.no_grad():
        a, b = outlier(ids), smoothed(ids)
    assert (a - b).abs().max() < 1e-4 * a.abs().max()
    x_before = layer_inputs(outlier, tokens)["blocks.0.attn.qkv"].abs().amax(0)
    x_after = layer_inputs(smoothed, tokens)["blocks.0.attn.qkv"].abs().amax(0)
    assert x_after.max() / x_after.median() < x_before.max() / x_before.median() / 3


def test_w8a8_linear_equals_integer_arithmetic():
    g = torch.Generator().manual_seed(1)
    linear = torch.nn.Linear(8, 3)
    x = torch.randn(5, 8, generator=g)
    layer = W8A8Linear(linear, act_absmax=2.0)
    sa = 2.0 / 127
    qx = torch.clamp(torch.round(x / sa), -128, 127)
    sw = linear.weight.detach().abs().amax(1, keepdim=True) / 127
    qw = torch.round(linear.weight.detach() / sw)
    expected = (qx @ qw.T) * sa * sw.T + linear.bias.detach()
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)
    assert qw.abs().max() <= 127


def test_w8a8_model_wraps_every_block_linear():
    model, tokens = model_and_tokens()
    quantized = w8a8_model(model, tokens)
    smoothed = w8a8_model(model, tokens, alpha=0.5)
    for q in (quantized, smoothed):
        assert isinstance(q.blocks[1].mlp.proj, W8A8Linear)
        assert isinstance(q.blocks[0].attn.qkv, W8A8Linear)
        assert isinstance(q.head, torch.nn.Linear)
    assert isinstance(model.blocks[0].attn.qkv, torch.nn.Linear)  # original untouched
    ids = tokens.view(6, 16)
    with torch.no_grad():
        assert (quantized(ids) - model(ids)).abs().max() < 0.1 * model(ids).abs().max()


def test_bad_input():
    with pytest.raises(ValueError, match="x_absmax must have shape"):
        smooth_scales(torch.ones(3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="alpha must be in"):
        smooth_scales(torch.ones(4), torch.ones(2, 4), -0.1)
    with pytest.raises(ValueError, match="act_absmax must be"):
        W8A8Linear(torch.nn.Linear(2, 2), 0.0)
    with pytest.raises(TypeError, match="linear must be an nn.Linear"):
        W8A8Linear(torch.nn.Conv1d(2, 2, 1), 1.0)
