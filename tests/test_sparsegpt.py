"""minicompress.sparsegpt: pruned weights are exactly 0 in the requested pattern, the OBS
compensation is the least-squares optimum, and the output error beats magnitude and Wanda."""

from __future__ import annotations

import pytest
import torch

from minicompress.calibration import hessian
from minicompress.gptq import inverse_hessian_factor, obs_remove, obs_update, output_error
from minicompress.semistructured import is_nm_sparse, nm_mask
from minicompress.sparsegpt import sparsegpt_prune
from minicompress.wanda import magnitude_scores, row_mask, wanda_scores
from tests._layers import correlated_inputs, weights


@pytest.mark.parametrize(
    "sparsity, columns, block_size", [(0.5, 16, 128), (0.5, 12, 8), (0.3, 20, 8), (0.75, 16, 4)]
)
def test_each_row_loses_exactly_round_s_in_weights_set_to_exactly_zero(
    sparsity, columns, block_size
):
    w, x = weights(5, columns), correlated_inputs(100, columns)
    pruned = sparsegpt_prune(w.float(), hessian(x), sparsity, block_size=block_size)
    assert pruned.dtype == torch.float32
    assert ((pruned == 0).sum(1) == round(sparsity * columns)).all()


@pytest.mark.parametrize("n, m", [(2, 4), (1, 4), (4, 8)])
def test_pattern_is_n_m_sparse(n, m):
    w, x = weights(5, 16), correlated_inputs(100, 16)
    pruned = sparsegpt_prune(w, hessian(x), pattern=(n, m), block_size=8)
    assert is_nm_sparse(pruned, n, m)
    assert ((pruned != 0).view(5, -1, m).sum(2) == n).all()


@pytest.mark.parametrize("target", [{"sparsity": 0.5}, {"pattern": (2, 4)}])
def test_output_error_below_magnitude_and_wanda(target):
    w, x = weights(8, 32), correlated_inputs(200, 32)
    pruned = sparsegpt_prune(w, hessian(x), **target, damp=0.0)

    def masked(scores):
        keep = row_mask(scores, 0.5) if "sparsity" in target else nm_mask(scores, 2, 4)
        return torch.where(keep, w, 0.0)

    error = output_error(w, pruned, x)
    assert error < output_error(w, masked(magnitude_scores(w)), x)
    assert error < output_error(w, masked(wanda_scores(w, x)), x)


def test_one_pruned_weight_moves_the_later_ones_to_the_least_squares_optimum():
    w, x = weights(4, 8), correlated_inputs(60, 8)
    h = hessian(x)
    pruned = sparsegpt_prune(w, h, 1 / 8, damp=0.0)  # round(8/8) = 1 weight per row
    saliency = w**2 / torch.diagonal(inverse_hessian_factor(h, 0.0)) ** 2
    for r in range(4):
        q = int(saliency[r].argmin())  # the lowest OBS cost is pruned
        assert pruned[r, q] == 0 and (pruned[r] == 0).sum() == 1
        # columns before q are already fixed; the later ones re-solve min ‖X(w' − w)‖²
        torch.testing.assert_close(pruned[r, :q], w[r, :q], rtol=0, atol=0)
        target = (x[:, q] * w[r, q])[:, None]
        delta = torch.linalg.lstsq(x[:, q + 1 :], target).solution[:, 0]
        torch.testing.assert_close(pruned[r, q + 1 :], w[r, q + 1 :] + delta)


def explicit_inverse_sparsegpt(w, h, n, m, damp):
    """N:M SparseGPT from obs_update / obs_remove and the explicit inverse Hessian."""
    h = h + damp * torch.diagonal(h).mean() * torch.eye(len(h), dtype=h.dtype)
    h_inv, work = torch.linalg.inv(h), w.clone()
    for start in range(0, w.shape[1], m):
        free, diag = h_inv, []
        for c in range(start, start + m):  # [H_F⁻¹]_cc with the columns before c fixed
            diag.append(free[c, c])
            free = obs_remove(free, c)
        saliency = work[:, start : start + m] ** 2 / torch.stack(diag)
        keep = nm_mask(saliency, n, m)
        for i, c in enumerate(range(start, start + m)):
            target = torch.where(keep[:, i], work[:, c], 0.0)
            work, _ = obs_update(work, h_inv, c, target)
            h_inv = obs_remove(h_inv, c)
    return work


@pytest.mark.parametrize("block_size", [4, 8, 128])
def test_equals_the_explicit_inverse_loop_of_obs_steps(block_size):
    w, x = weights(5, 16), correlated_inputs(100, 16)
    expected = explicit_inverse_sparsegpt(w, hessian(x), 2, 4, 0.01)
    got = sparsegpt_prune(w, hessian(x), pattern=(2, 4), block_size=block_size)
    torch.testing.assert_close(got, expected)


def test_bad_input_is_refused_with_clear_errors():
    w, h = weights(3, 8), hessian(correlated_inputs(20, 8))
    with pytest.raises(ValueError, match="exactly one of sparsity"):
        sparsegpt_prune(w, h)
    with pytest.raises(ValueError, match="exactly one of sparsity"):
        sparsegpt_prune(w, h, 0.5, (2, 4))
    with pytest.raises(ValueError, match="h is 8×8 but w has 4 input columns"):
        sparsegpt_prune(weights(3, 4), h, 0.5)
    with pytest.raises(ValueError, match="h must be a square"):
        sparsegpt_prune(w, h[:4], 0.5)
    with pytest.raises(ValueError, match="8 input columns, not a multiple of m = 3"):
        sparsegpt_prune(w, h, pattern=(1, 3))
    with pytest.raises(ValueError, match="block_size must be an int >= 1"):
        sparsegpt_prune(w, h, 0.5, block_size=0)
    with pytest.raises(ValueError, match="damp must be a finite number >= 0"):
        sparsegpt_prune(w, h, 0.5, damp=-1.0)
    with pytest.raises(ValueError, match="sparsity must be in"):
        sparsegpt_prune(w, h, 2.0)
    with pytest.raises(TypeError, match="w must be a floating-point tensor"):
        sparsegpt_prune(w.long(), h, 0.5)


def test_a_prime_width_still_chooses_each_rows_mask_by_saliency():
    # 131 has no divisor near block_size: blocks of one column would prune the same
    # positions in every row (column pruning); each row's mask is chosen once instead
    x = correlated_inputs(400, 131)
    w = weights(16, 131)
    pruned = sparsegpt_prune(w, hessian(x), sparsity=0.5)
    assert ((pruned == 0).sum(1) == round(0.5 * 131)).all()
    assert (pruned == 0).all(0).sum() < 131 // 4  # not the same columns in every row
    wanda = w * row_mask(wanda_scores(w, x), 0.5)
    assert output_error(w, pruned, x) < output_error(w, wanda, x)
