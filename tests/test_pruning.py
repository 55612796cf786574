"""minicompress.pruning against torch.nn.utils.prune, plus invariants (hypothesis)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

from minicompress.models import MLP, LeNet5, LeNet300100
from minicompress.pruning import (
    apply_masks,
    csr_numbers,
    global_magnitude_masks,
    gradual_pruning,
    gradual_pruning_hook,
    gradual_sparsity,
    iterative_pruning,
    keep_masks,
    layer_masks,
    magnitude_mask,
    mask_sparsity,
    prunable_weights,
    prune_channels,
    threshold_mask,
    weight_sparsity,
)
from minicompress.train import TrainConfig, fit

fractions = st.floats(0.0, 1.0, allow_nan=False)


def random_weight(shape, seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), sparsity=fractions, seed=st.integers(0, 10_000))
def test_mask_removes_exactly_round_sparsity_n_and_keeps_the_largest(n, sparsity, seed):
    w = random_weight((n,), seed)
    mask = magnitude_mask(w, sparsity)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    assert int((~mask).sum()) == round(sparsity * n)
    if mask.any() and (~mask).any():
        assert w[mask].abs().min() >= w[~mask].abs().max()  # kept set = largest magnitudes


@settings(max_examples=40, deadline=None)
@given(sparsity=fractions, seed=st.integers(0, 10_000))
def test_mask_equals_torch_l1_unstructured(sparsity, seed):
    layer = nn.Linear(37, 23)
    with torch.no_grad():
        layer.weight.copy_(random_weight((23, 37), seed))
    ours = magnitude_mask(layer.weight, sparsity)
    prune.l1_unstructured(layer, "weight", amount=sparsity)
    assert torch.equal(ours, layer.weight_mask.bool())


@settings(max_examples=40, deadline=None)
@given(sparsity=fractions, seed=st.integers(0, 10_000))
def test_global_masks_equal_torch_global_unstructured(sparsity, seed):
    layers = [nn.Linear(30, 20), nn.Conv2d(3, 4, 3), nn.Linear(20, 5)]
    with torch.no_grad():
        for i, layer in enumerate(layers):
            layer.weight.copy_(random_weight(layer.weight.shape, seed + i) * (i + 1))
    ours = global_magnitude_masks({str(i): m.weight for i, m in enumerate(layers)}, sparsity)
    prune.global_unstructured(
        [(m, "weight") for m in layers], pruning_method=prune.L1Unstructured, amount=sparsity
    )
    for i, layer in enumerate(layers):
        assert torch.equal(ours[str(i)], layer.weight_mask.bool())


def test_negative_weights_are_kept_by_magnitude():
    w = torch.tensor([-3.0, -0.1, 0.2, 2.0, -1.0, 0.05])
    assert magnitude_mask(w, 0.5).tolist() == [True, False, False, True, True, False]
    assert threshold_mask(w, 0.5).tolist() == [True, False, False, True, True, False]


def test_masking_is_idempotent():
    w = random_weight((50, 40))
    mask = magnitude_mask(w, 0.7)
    pruned = w * mask
    assert torch.equal(magnitude_mask(pruned, 0.7), mask)
    model = MLP((8,))
    masks = layer_masks(model, 0.5)
    apply_masks(model, masks)
    once = {k: v.clone() for k, v in model.state_dict().items()}
    apply_masks(model, masks)
    assert all(torch.equal(once[k], v) for k, v in model.state_dict().items())


def test_threshold_and_sparsity_targets_agree():
    w = random_weight((1000,))
    mask = magnitude_mask(w, 0.8)
    threshold = w[mask].abs().min().item()
    assert torch.equal(threshold_mask(w, threshold), mask)


def test_global_pruning_leaves_the_small_last_layer_denser():
    torch.manual_seed(0)
    model = LeNet300100()  # default init: weights ~ U(±1/sqrt(fan_in)), so fc3's are largest
    masks = layer_masks(model, 0.9, scope="global")
    density = {k: m.float().mean().item() for k, m in masks.items()}
    assert density["fc3.weight"] > density["fc2.weight"] > density["fc1.weight"]
    assert mask_sparsity(masks) == pytest.approx(0.9, abs=1e-5)


def test_fine_tuning_without_the_hook_regrows_and_with_it_does_not():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(256, 1, 28, 28, generator=g), torch.randint(0, 10, (256,), generator=g)
    for hook, expect_zeros in ((False, False), (True, True)):
        torch.manual_seed(0)
        model = MLP((16,))
        masks = layer_masks(model, 0.8)
        apply_masks(model, masks)
        config = TrainConfig(epochs=1, batch_size=64, lr=0.05)
        fit(model, x, y, config, after_step=keep_masks(masks) if hook else None, progress=False)
        still_zero = all(
            bool((p[~masks[name]] == 0).all()) for name, p in prunable_weights(model).items()
        )
        assert still_zero is expect_zeros


def test_gradual_schedule_endpoints_shape_and_steps():
    s = [gradual_sparsity(t, 0.0, 0.9, start=10, n_steps=5, frequency=10) for t in range(80)]
    assert s[0] == s[9] == 0.0 and s[60] == s[79] == pytest.approx(0.9)
    assert all(a <= b for a, b in zip(s, s[1:], strict=False))  # never decreases
    assert len(set(s[10:20])) == 1  # held between pruning steps
    # the cubic: after 1 of 5 steps, s = 0.9 · (1 − (4/5)³)
    assert s[20] == pytest.approx(0.9 * (1 - 0.8**3))
    increments = [s[10 * k + 20] - s[10 * k + 10] for k in range(5)]
    assert increments == sorted(increments, reverse=True)  # prunes fast first, slowly later


def test_csr_count():
    dense = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]])
    sparse = dense.to_sparse_csr()
    stored = sparse.values().numel() + sparse.col_indices().numel() + sparse.crow_indices().numel()
    assert csr_numbers(3, 2) == stored == 2 * 3 + 2 + 1


@pytest.mark.parametrize(
    ("model", "amounts"),
    [
        (LeNet5(), {"conv1": 0.5, "conv2": 0.4, "fc1": 0.3}),
        (LeNet5(), {"conv2": 0.5}),
        (LeNet300100(), {"fc1": 0.5, "fc2": 0.25}),
        (MLP((20, 30, 40), in_features=784, classes=7), {"fc2": 0.5}),
    ],
)
def test_channel_pruning_equals_zeroing_the_smallest_l1_units(model, amounts):
    x = torch.rand(5, 1, 28, 28)
    small = prune_channels(model, amounts)
    assert type(small) is type(model)
    zeroed = _zero_smallest_units(model, amounts)
    torch.testing.assert_close(small(x), zeroed(x), rtol=1e-5, atol=1e-5)
    removed = sum(round(a * getattr(model, n).weight.shape[0]) for n, a in amounts.items())
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    assert removed > 0


def _zero_smallest_units(model, amounts):
    import copy

    zeroed = copy.deepcopy(model)
    with torch.no_grad():
        for name, amount in amounts.items():
            layer = getattr(zeroed, name)
            norms = layer.weight.abs().flatten(1).sum(1)
            drop = torch.topk(norms, round(amount * len(norms)), largest=False).indices
            layer.weight[drop] = 0.0
            layer.bias[drop] = 0.0
    return zeroed


def test_channel_pruning_does_not_touch_the_original():
    model = LeNet5()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prune_channels(model, {"conv1": 0.5})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: magnitude_mask(torch.randn(5), 1.5), ValueError, r"\[0, 1\]"),
        (lambda: magnitude_mask(torch.randn(5), -0.1), ValueError, r"\[0, 1\]"),
        (lambda: magnitude_mask(torch.randn(5), math.nan), ValueError, r"\[0, 1\]"),
        (lambda: magnitude_mask(torch.randn(5), "half"), TypeError, "number"),
        (lambda: magnitude_mask(torch.tensor([1.0, math.nan]), 0.5), ValueError, "NaN"),
        (lambda: magnitude_mask(torch.arange(5), 0.5), TypeError, "floating-point"),
        (lambda: magnitude_mask(torch.zeros(0), 0.5), ValueError, "empty"),
        (lambda: threshold_mask(torch.randn(5), -1.0), ValueError, ">= 0"),
        (lambda: global_magnitude_masks({}, 0.5), TypeError, "non-empty"),
        (lambda: layer_masks(MLP((4,)), {"fc9.weight": 0.5}), ValueError, "fc9"),
        (lambda: layer_masks(MLP((4,)), 0.5, scope="neuron"), ValueError, "scope"),
        (lambda: apply_masks(MLP((4,)), {"fc9.weight": torch.ones(1, dtype=torch.bool)}),
         ValueError, "no parameter"),
        (lambda: apply_masks(MLP((4,)), {"fc1.weight": torch.ones(3, dtype=torch.bool)}),
         ValueError, "shape"),
        (lambda: apply_masks(MLP((4,)), {"fc1.weight": torch.ones(4, 784)}), TypeError, "bool"),
        (lambda: gradual_sparsity(5, 0.0, 1.2, 0, 10), ValueError, r"\[0, 1\]"),
        (lambda: gradual_sparsity(5, 0.0, 0.9, 0, 10, frequency=0), ValueError, "frequency"),
        (lambda: prune_channels(LeNet5(), {"fc2": 0.5}), ValueError, "hidden"),
        (lambda: prune_channels(LeNet5(), {"conv1": 1.0}), ValueError, "leave none"),
        (lambda: prune_channels(nn.Linear(3, 3), {}), TypeError, "LeNet5 and MLP"),
        (lambda: csr_numbers(-1, 3), ValueError, "nonzeros"),
    ],
)  # fmt: skip
def test_bad_input_is_rejected_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _tiny_data(n: int = 128):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_weight_sparsity_ignores_biases():
    model = MLP((4,))
    apply_masks(model, layer_masks(model, 0.5))
    assert weight_sparsity(model) == pytest.approx((784 * 4 // 2 + 40 // 2) / (784 * 4 + 40))


def test_iterative_pruning_reaches_each_stage_and_keeps_earlier_zeros():
    x, y = _tiny_data()
    torch.manual_seed(0)
    model = MLP((16,))
    seen = []
    zeros_after = {}

    def on_stage(s, m):
        seen.append(round(weight_sparsity(m), 3))
        zeros_after[s] = {k: (w == 0).clone() for k, w in prunable_weights(m).items()}

    masks = iterative_pruning(model, x, y, [0.5, 0.8], TrainConfig(epochs=1, lr=0.05),
                              on_stage=on_stage)  # fmt: skip
    assert seen == [0.5, 0.8]
    for name, was_zero in zeros_after[0.5].items():
        assert bool(zeros_after[0.8][name][was_zero].all())  # pruned once, pruned for good
    assert mask_sparsity(masks) == pytest.approx(0.8, abs=1e-3)
    with pytest.raises(ValueError, match="non-decreasing"):
        iterative_pruning(model, x, y, [0.8, 0.5], TrainConfig(epochs=1))


def test_gradual_pruner_follows_the_schedule_and_ends_at_the_target():
    x, y = _tiny_data()
    model = MLP((16,))
    pruner = gradual_pruning_hook(0.9, start=0, n_steps=4, frequency=2)
    fit(model, x, y, TrainConfig(epochs=3, batch_size=16), after_step=pruner, progress=False)
    assert [t for t, _ in pruner.history] == [0, 2, 4, 6, 8]
    assert [s for _, s in pruner.history] == [
        pytest.approx(gradual_sparsity(t, 0.0, 0.9, 0, 4, 2)) for t in (0, 2, 4, 6, 8)
    ]
    assert weight_sparsity(model) == pytest.approx(0.9, abs=1e-3)


def test_gradual_pruning_reaches_the_target_then_trains_the_fixed_mask():
    x, y = _tiny_data()
    model = MLP((16,))
    reference = copy.deepcopy(model)
    config = TrainConfig(epochs=4, batch_size=16)
    masks = gradual_pruning(model, x, y, 0.8, config, prune_until=0.5, n_steps=3, progress=False)
    assert mask_sparsity(masks) == pytest.approx(0.8, abs=1e-3)
    for name, w in prunable_weights(model).items():
        assert bool((w[~masks[name]] == 0).all())  # pruned weights stayed at zero
    # the same run through the hook by hand: Δt = ⌊0.5 T⌋ // 3
    total = 4 * math.ceil(len(x) / 16)
    hook = gradual_pruning_hook(0.8, start=0, n_steps=3, frequency=(total // 2) // 3)
    fit(reference, x, y, config, after_step=hook, progress=False)
    assert all(
        torch.equal(a, b) for a, b in zip(reference.parameters(), model.parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="too few"):
        gradual_pruning(MLP((16,)), x, y, 0.8, TrainConfig(epochs=1, batch_size=64),
                        n_steps=50)  # fmt: skip
