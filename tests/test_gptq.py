"""minicompress.gptq: the OBS step equals least squares, the Cholesky form equals the
explicit inverse, GPTQ beats rounding and lands near the exhaustive optimum, clear errors."""

from __future__ import annotations

import pytest
import torch

from minicompress import lm
from minicompress.calibration import hessian
from minicompress.gptq import (
    gptq_model,
    gptq_quantize,
    gptq_quantize_reference,
    grid_search,
    inverse_hessian_factor,
    minmax_quantizer,
    obs_remove,
    obs_update,
    output_error,
    round_to_nearest,
    rtn_model,
)
from minicompress.models import TinyGPT
from minicompress.quantization import calc_qparams, dequantize, quantize
from tests._layers import correlated_inputs, weights


def test_round_to_nearest_matches_the_affine_map_per_group():
    w = weights(3, 8)
    got = round_to_nearest(w, 3, group_size=4)
    for r in range(3):
        for start in (0, 4):
            group = w[r, start : start + 4]
            qp = calc_qparams(group, 3)  # min-max with 0 included, 8 levels
            expected = dequantize(quantize(group, qp), qp).double()
            torch.testing.assert_close(got[r, start : start + 4], expected)
            assert len(torch.unique(got[r, start : start + 4])) <= 8


def test_output_error_is_half_the_hessian_quadratic_form():
    x, w = correlated_inputs(50, 6), weights(4, 6)
    w_hat = round_to_nearest(w, 2, 3)
    delta = w_hat - w
    assert output_error(w, w_hat, x) == pytest.approx(
        float(torch.trace(delta @ hessian(x) @ delta.T)) / 2, rel=1e-10
    )


def test_obs_step_equals_least_squares_with_one_weight_fixed():
    x, w = correlated_inputs(40, 5), weights(2, 5)
    h_inv = torch.linalg.inv(hessian(x))
    q, target = 2, torch.tensor([0.25, -1.0], dtype=torch.float64)
    moved, cost = obs_update(w, h_inv, q, target)
    free = [j for j in range(5) if j != q]
    for r in range(2):
        # min over the free weights of ‖X w − X w'‖² with w'_q fixed: least squares
        rhs = x @ w[r] - x[:, q] * target[r]
        solution = torch.linalg.lstsq(x[:, free], rhs[:, None]).solution[:, 0]
        torch.testing.assert_close(moved[r, free], solution)
        assert moved[r, q] == target[r]
        assert float(cost[r]) == pytest.approx(output_error(w[r : r + 1], moved[r : r + 1], x))


def test_obs_remove_is_the_inverse_of_the_reduced_hessian():
    h = hessian(correlated_inputs(30, 5))
    reduced = obs_remove(torch.linalg.inv(h), 1)
    keep = [0, 2, 3, 4]
    torch.testing.assert_close(reduced[keep][:, keep], torch.linalg.inv(h[keep][:, keep]))
    assert reduced[1].abs().max() < 1e-10 and reduced[:, 1].abs().max() < 1e-10


@pytest.mark.parametrize("group_size, block", [(None, 128), (4, 4), (4, 8), (2, 3)])
def test_cholesky_form_equals_the_explicit_inverse_loop(group_size, block):
    x, w = correlated_inputs(60, 8), weights(5, 8)
    h = hessian(x)
    fast = gptq_quantize(w, h, 3, group_size, block=block)
    slow = gptq_quantize_reference(w, h, 3, group_size)
    torch.testing.assert_close(fast, slow)


def test_inverse_hessian_factor_diagonal_is_the_free_inverse_hessian_diagonal():
    h = hessian(correlated_inputs(40, 6))
    u, free = inverse_hessian_factor(h, damp=0.0), torch.linalg.inv(h)
    torch.testing.assert_close(u.T @ u, free)
    for q in range(6):  # U_qq² = [H_F⁻¹]_qq once the columns before q are fixed
        torch.testing.assert_close(u[q, q] ** 2, free[q, q])
        free = obs_remove(free, q)


def test_grid_search_finds_the_optimum():
    x, w = correlated_inputs(30, 3, seed=5), weights(2, 3, seed=6)
    best, errors = grid_search(w, x, 2)
    assert errors.shape == (2, 4**3)
    for r in range(2):
        assert output_error(w[r : r + 1], best[r : r + 1], x) == pytest.approx(
            float(errors[r].min())
        )
    rtn = round_to_nearest(w, 2, None)
    assert output_error(w, best, x) <= output_error(w, rtn, x)


def test_gptq_beats_rounding_and_is_near_the_exhaustive_optimum():
    # a 3x4 layer, 3-bit, one group per row: GPTQ picks the row's grid at column 0 from the
    # float weights, the same 8 levels round-to-nearest and the exhaustive search use
    x, w = correlated_inputs(40, 4, seed=3), weights(3, 4, seed=4)
    gptq = gptq_quantize(w, hessian(x), 3, group_size=None, damp=0.0)
    rtn = round_to_nearest(w, 3, group_size=None)
    best, errors = grid_search(w, x, 3)  # all 8^4 = 4096 candidates of each row
    for r in range(3):
        row = slice(r, r + 1)
        mine = output_error(w[row], gptq[row], x)
        assert mine <= output_error(w[row], rtn[row], x) + 1e-12
        # GPTQ is greedy: not always the optimum, but among the best 1 % of the grid
        assert float((errors[r] < mine - 1e-12).double().mean()) <= 0.01
        assert mine <= 2.0 * float(errors[r].min())


def test_gptq_error_below_rounding_on_a_wider_layer():
    x, w = correlated_inputs(200, 64), weights(16, 64)
    h = hessian(x)
    for bits in (3, 4):
        gptq, rtn = gptq_quantize(w, h, bits, 32), round_to_nearest(w, bits, 32)
        assert output_error(w, gptq, x) < 0.8 * output_error(w, rtn, x)


def test_quantizer_argument_is_used():
    x, w = correlated_inputs(30, 4), weights(2, 4)
    calls = []

    def quantizer(group):
        calls.append(group.shape)
        return minmax_quantizer(4)(group)

    gptq_quantize(w, hessian(x), group_size=2, quantizer=quantizer)
    assert calls == [(2, 2), (2, 2)]


def test_gptq_model_quantizes_block_linears_only_on_a_copy():
    torch.manual_seed(0)
    model = TinyGPT(d=32, layers=1, context=16)
    tokens = torch.randint(0, 96, (16 * 8 + 1,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = gptq_model(model, tokens, bits=3, group_size=16)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the original is untouched
    q = quantized.state_dict()
    assert torch.equal(q["head.weight"], before["head.weight"])
    assert torch.equal(q["blocks.0.mlp.fc.bias"], before["blocks.0.mlp.fc.bias"])
    w = q["blocks.0.mlp.fc.weight"]  # 8 levels per group of 16
    assert max(len(torch.unique(row)) for row in w.view(-1, 16)) <= 8
    assert not torch.equal(w, rtn_model(model, 3, 16).state_dict()["blocks.0.mlp.fc.weight"])
    assert lm.bits_per_char(quantized, tokens).mean > 0


def test_bad_input_is_refused_with_clear_errors():
    w, h = weights(3, 4), hessian(correlated_inputs(10, 4))
    with pytest.raises(ValueError, match="h must be a square"):
        gptq_quantize(w, h[:3], 3, None)
    with pytest.raises(ValueError, match="h is 4×4 but w has 8"):
        gptq_quantize(weights(3, 8), h, 3, None)
    with pytest.raises(ValueError, match="bits must be in 2..8"):
        gptq_quantize(w, h, 9, None)
    with pytest.raises(ValueError, match="bits must be in 2..8"):
        round_to_nearest(w, 1, None)
    with pytest.raises(ValueError, match="group_size 3 must divide the 4"):
        gptq_quantize(w, h, 3, 3)
    with pytest.raises(TypeError, match="w must be a floating-point tensor"):
        gptq_quantize(w.long(), h, 3, None)
    with pytest.raises(ValueError, match="no longer free"):
        obs_update(w, obs_remove(torch.linalg.inv(h), 0), 0, 0.0)
    with pytest.raises(ValueError, match="too many"):
        grid_search(weights(1, 8), correlated_inputs(10, 8), 3)
    with pytest.raises(TypeError, match="quantizer must be callable"):
        gptq_quantize(w, h, 3, None, quantizer=3)
