"""minicompress.wanda: magnitude and Wanda scores, per-row masks compared with
torch.nn.utils.prune, the model-level loop on a copy, and clear errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

from minicompress.calibration import block_linears
from minicompress.models import TinyGPT
from minicompress.semistructured import is_nm_sparse
from minicompress.wanda import magnitude_scores, prune_model, row_mask, sparsity_of, wanda_scores


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_magnitude_scores_are_absolute_values():
    w = randn(3, 5)
    assert torch.equal(magnitude_scores(w), w.abs())


def test_wanda_score_is_the_output_change_when_the_weight_is_zeroed():
    w, x = randn(3, 5), randn(40, 5, seed=1)
    got = wanda_scores(w, x)
    for i in range(3):
        for j in range(5):
            zeroed = w[i].clone()
            zeroed[j] = 0
            change = torch.linalg.vector_norm(x @ w[i] - x @ zeroed)  # brute force
            assert float(got[i, j]) == pytest.approx(float(change), rel=1e-12)


def test_wanda_scores_ignore_a_function_preserving_channel_rescaling():
    w, x = randn(4, 6), randn(30, 6, seed=1)
    scale = torch.tensor([1.0, 30.0, 1.0, 0.1, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(wanda_scores(w / scale, x * scale), wanda_scores(w, x))
    assert (magnitude_scores(w / scale)[:, 1] < magnitude_scores(w)[:, 1]).all()


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.7, 1.0])
def test_row_mask_equals_l1_unstructured_on_each_row(sparsity):
    w = randn(4, 10).float()
    mask = row_mask(w.abs(), sparsity)
    for r in range(4):
        row = nn.Linear(10, 1, bias=False)
        with torch.no_grad():
            row.weight.copy_(w[r : r + 1])
        prune.l1_unstructured(row, "weight", amount=sparsity)
        assert torch.equal(mask[r], row.weight_mask[0].bool())


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.integers(1, 12), st.floats(0, 1), st.integers(0, 99))
def test_row_mask_prunes_round_s_in_per_row_and_keeps_the_largest(rows, columns, s, seed):
    scores = randn(rows, columns, seed=seed).abs()
    mask = row_mask(scores, s)
    assert ((~mask).sum(1) == round(s * columns)).all()
    kept = torch.where(mask, scores, torch.inf).amin(1)
    pruned = torch.where(mask, -torch.inf, scores).amax(1)
    assert (kept >= pruned).all()


def tiny_model_and_tokens() -> tuple[TinyGPT, torch.Tensor]:
    with torch.random.fork_rng():  # the model's init, without touching the global generator
        torch.manual_seed(0)
        model = TinyGPT(d=16, layers=2, heads=2, context=16)
    g = torch.Generator().manual_seed(1)
    return model, torch.randint(0, 96, (16 * 8,), generator=g)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_prune_model_prunes_block_linears_only_on_a_copy(method):
    model, tokens = tiny_model_and_tokens()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune_model(model, tokens, method, sparsity=0.5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])  # the original is untouched
    assert sparsity_of(model) == 0.0
    assert sparsity_of(pruned) == 0.5
    after = pruned.state_dict()
    linears = {f"{name}.weight" for name in block_linears(pruned)}
    for k, v in after.items():
        if k not in linears:
            assert torch.equal(v, before[k]), k  # biases, embeddings, LayerNorms, head
    for linear in block_linears(pruned).values():
        assert ((linear.weight == 0).sum(1) == linear.in_features // 2).all()
    two_four = prune_model(model, tokens, method, pattern=(2, 4))
    assert all(is_nm_sparse(m.weight, 2, 4) for m in block_linears(two_four).values())
    assert sparsity_of(two_four) == 0.5


def test_wanda_keeps_the_weights_of_a_rescaled_channel_that_magnitude_drops():
    model, tokens = tiny_model_and_tokens()
    fc = model.blocks[0].mlp.fc
    with torch.no_grad():  # channel 3 of fc's inputs 50× larger, its weights 50× smaller
        model.blocks[0].ln2.weight[3] *= 50
        model.blocks[0].ln2.bias[3] *= 50
        fc.weight[:, 3] /= 50
    magnitude = prune_model(model, None, "magnitude", sparsity=0.5)
    wanda = prune_model(model, tokens, "wanda", sparsity=0.5)
    assert (magnitude.blocks[0].mlp.fc.weight[:, 3] == 0).all()
    assert (wanda.blocks[0].mlp.fc.weight[:, 3] != 0).any()


def test_sparsity_of_counts_zero_block_weights():
    model, _ = tiny_model_and_tokens()
    with torch.no_grad():
        model.blocks[1].mlp.fc.weight.zero_()  # 16·64 of 2·(16·48 + 16·16 + 16·64 + 64·16)
    assert sparsity_of(model) == pytest.approx(1024 / (2 * 3072))


def test_bad_input_is_refused_with_clear_errors():
    model, tokens = tiny_model_and_tokens()
    with pytest.raises(ValueError, match="exactly one of sparsity"):
        prune_model(model, tokens, "wanda")
    with pytest.raises(ValueError, match="exactly one of sparsity"):
        prune_model(model, tokens, "wanda", sparsity=0.5, pattern=(2, 4))
    with pytest.raises(ValueError, match="method must be one of 'magnitude'"):
        prune_model(model, tokens, "random", sparsity=0.5)
    with pytest.raises(ValueError, match="'wanda' needs calibration tokens"):
        prune_model(model, None, "wanda", sparsity=0.5)
    with pytest.raises(TypeError, match="pattern must be a tuple"):
        prune_model(model, tokens, "wanda", pattern=[2, 4])
    with pytest.raises(ValueError, match="pattern's n must be in 1..4"):
        prune_model(model, tokens, "wanda", pattern=(5, 4))
    with pytest.raises(ValueError, match="sparsity must be in"):
        row_mask(randn(2, 4), 1.5)
    with pytest.raises(ValueError, match=r"x must be \(N, 4\)"):
        wanda_scores(randn(2, 4), randn(3, 5))
    with pytest.raises(TypeError, match="w must be a floating-point tensor"):
        magnitude_scores(torch.ones(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="w contains NaN"):
        magnitude_scores(torch.full((2, 2), torch.nan))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        prune_model("gpt", tokens, "magnitude", sparsity=0.5)


def test_prune_model_refuses_a_quantized_model():
    from minicompress.lora import quantize_base

    model, tokens = tiny_model_and_tokens()
    with pytest.raises(TypeError, match="prune the float model first"):
        prune_model(quantize_base(model, 4, 16), None, "magnitude", 0.5)


def test_wanda_scores_of_half_weights_do_not_overflow():
    w = torch.randn(8, 16, generator=torch.Generator().manual_seed(0)).half()
    x = torch.full((10_000, 16), 300.0)  # ‖x_j‖ = 30,000: its square overflows float16
    scores = wanda_scores(w, x)
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores, w.abs().float() * 30_000.0, rtol=1e-4, atol=0)
