"""minicompress.sharing: k-means against scikit-learn, nearest-centroid assignment, the
paper's 3.2× example, and centroid gradients equal to the scatter-added weight gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from torch import nn
from torch.nn.utils import parametrize

from minicompress.models import MLP, LeNet5, LeNet300100
from minicompress.sharing import (
    SharedWeight,
    centroid_gradients,
    compression_ratio,
    fine_tune_centroids,
    inertia,
    init_centroids,
    kmeans_quantize,
    share_weights,
    shared_weight,
)
from minicompress.train import TrainConfig


def weights(seed: int, n: int = 3000) -> torch.Tensor:
    """Layer-like weights: a narrow bell with a few large ones in the tails."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g) * 0.05
    w[:50] = torch.randn(50, generator=g) * 0.4
    return w


@pytest.mark.parametrize("init", ["linear", "density", "random"])
@pytest.mark.parametrize("bits", [2, 4, 6])
def test_inertia_within_5_percent_of_sklearn_from_the_same_centroids(init, bits):
    w = weights(bits)
    codebook, indices = kmeans_quantize(w, bits, init=init)
    start = init_centroids(w, 2**bits, init).double().numpy().reshape(-1, 1)
    reference = KMeans(2**bits, init=start, n_init=1, max_iter=300, tol=1e-6)
    reference.fit(w.double().numpy().reshape(-1, 1))
    assert inertia(w, codebook, indices) <= 1.05 * reference.inertia_


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=1, max_size=300),
    bits=st.integers(1, 5),
    init=st.sampled_from(["linear", "density", "random"]),
)
def test_every_weight_goes_to_its_nearest_centroid(values, bits, init):
    w = torch.tensor(values)
    codebook, indices = kmeans_quantize(w, bits, init=init)
    assert codebook.shape == (2**bits,) and indices.shape == w.shape
    assert int(indices.min()) >= 0 and int(indices.max()) < 2**bits
    distance = (w.view(-1, 1) - codebook.view(1, -1)).abs()  # (n, k)
    chosen = distance.gather(1, indices.view(-1, 1)).squeeze(1)
    assert torch.all(chosen <= distance.min(dim=1).values + 1e-6)


def test_centroids_are_the_means_of_their_clusters():
    w = weights(7)
    codebook, indices = kmeans_quantize(w, 3)
    for k in range(8):
        members = w[indices == k]
        if len(members):
            assert math.isclose(float(members.double().mean()), float(codebook[k]),
                                rel_tol=1e-5, abs_tol=1e-7)  # fmt: skip


def test_masked_weights_take_no_part_and_get_index_zero():
    w = weights(3)
    mask = w.abs() > 0.03
    w_polluted = torch.where(mask, w, torch.tensor(100.0))  # would drag a centroid away
    codebook, indices = kmeans_quantize(w_polluted, 4, mask=mask)
    expected, _ = kmeans_quantize(w[mask], 4)
    assert torch.equal(codebook, expected)
    assert bool((indices[~mask] == 0).all())
    assert float(codebook.max()) < 1.0


def test_linear_init_keeps_a_centroid_near_the_largest_weight():
    w = weights(0)
    big = float(w.abs().max())
    linear, _ = kmeans_quantize(w, 3, init="linear")
    density, _ = kmeans_quantize(w, 3, init="density")
    assert float(linear.abs().max()) > 0.5 * big
    assert float(density.abs().max()) < float(linear.abs().max())


def test_paper_example_ratio_is_3_point_2():
    assert compression_ratio(16, 2, 4) == pytest.approx(3.2)
    assert compression_ratio(16, 2, 4, weight_bits=32) == 16 * 32 / (16 * 2 + 4 * 32)


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    g = torch.Generator().manual_seed(0)
    layer = nn.Linear(30, 20)
    mask = torch.rand(20, 30, generator=g) > 0.3
    codebook, indices = kmeans_quantize(layer.weight, 3, mask=mask)
    x, y = torch.randn(64, 30, generator=g), torch.randint(0, 20, (64,), generator=g)
    # autograd through W = codebook[I] ⊙ mask
    parametrize.register_parametrization(layer, "weight", SharedWeight(codebook, indices, mask),
                                         unsafe=True)  # fmt: skip
    F.cross_entropy(layer(x), y).backward()
    autograd = layer.parametrizations.weight[0].codebook.grad
    # explicit: gradient w.r.t. a dense leaf weight, scatter-added by cluster
    dense = shared_weight(codebook, indices, mask).requires_grad_()
    F.cross_entropy(F.linear(x, dense, layer.bias.detach()), y).backward()
    explicit = centroid_gradients(dense.grad, indices, mask, 8)
    assert torch.allclose(autograd, explicit, atol=1e-6)
    assert explicit.abs().sum() > 0


def test_fine_tuning_changes_only_centroids_and_keeps_indices_and_masks():
    torch.manual_seed(0)
    model = MLP((64, 32))
    with torch.no_grad():
        model.fc1.weight[model.fc1.weight.abs() < 0.02] = 0
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(256, 1, 28, 28, generator=g), torch.randint(0, 10, (256,), generator=g)
    shared = share_weights(model, 2)
    before = F.cross_entropy(model(x), y).item()
    tuned = fine_tune_centroids(model, shared, x, y,
                                TrainConfig(epochs=3, lr=3e-3, optimizer="adam"))  # fmt: skip
    for name, layer in tuned.items():
        assert torch.equal(layer.indices, shared[name].indices)
        assert torch.equal(layer.mask, shared[name].mask)
        assert not torch.equal(layer.codebook, shared[name].codebook)
        weight = dict(model.named_parameters())[name]
        assert torch.equal(weight.detach(), layer.weight())
        assert len(torch.unique(weight)) <= 2**2 + 1  # k centroids and the pruned zeros
    assert F.cross_entropy(model(x), y).item() < before  # the codebooks learned
    assert all(p.requires_grad for p in model.parameters())
    assert not parametrize.is_parametrized(model.fc1)


def test_conv_weights_are_shared_and_tuned_like_linear_ones():
    # Deep Compression on LeNet-5 (benchmarks/deep_compression.py) shares its Conv2d weights
    torch.manual_seed(0)
    model = LeNet5(conv1=4, conv2=6, fc1=16)
    with torch.no_grad():
        model.conv2.weight[model.conv2.weight.abs() < 0.05] = 0
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
    shared = share_weights(model, {"conv1.weight": 3, "conv2.weight": 2})
    tuned = fine_tune_centroids(model, shared, x, y,
                                TrainConfig(epochs=2, lr=3e-3, optimizer="adam"))  # fmt: skip
    for name, layer in tuned.items():
        weight = dict(model.named_parameters())[name]
        assert layer.indices.shape == weight.shape  # (out, in, kh, kw)
        assert torch.equal(layer.mask, shared[name].mask)
        assert torch.equal(weight.detach(), layer.weight())
        assert not torch.equal(layer.codebook, shared[name].codebook)
    pruned = ~tuned["conv2.weight"].mask
    assert pruned.any() and (model.conv2.weight[pruned] == 0).all()  # the zeros stay pruned


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: kmeans_quantize(torch.randn(10), 0), ValueError, "1..16"),
        (lambda: kmeans_quantize(torch.randn(10), 17), ValueError, "1..16"),
        (lambda: kmeans_quantize(torch.randn(10), 4.0), TypeError, "int"),
        (lambda: kmeans_quantize(torch.zeros(0), 4), ValueError, "empty"),
        (lambda: kmeans_quantize(torch.tensor([1.0, math.nan]), 2), ValueError, "NaN"),
        (lambda: kmeans_quantize(torch.randn(10), 2, init="kmeans++"), ValueError, "init"),
        (lambda: kmeans_quantize(torch.arange(10), 2), TypeError, "floating-point"),
        (lambda: kmeans_quantize(torch.randn(10), 2, mask=torch.ones(10)), TypeError, "bool"),
        (lambda: kmeans_quantize(torch.randn(10), 2, mask=torch.zeros(10, dtype=torch.bool)),
         ValueError, "keeps no weight"),
        (lambda: kmeans_quantize(torch.randn(10), 2, iterations=0), ValueError, "iterations"),
        (lambda: compression_ratio(16, 2, 5), ValueError, "clusters"),
        (lambda: compression_ratio(0, 2, 4), ValueError, "n must"),
        (lambda: shared_weight(torch.randn(4), torch.tensor([4])), ValueError, "indices"),
        (lambda: share_weights(LeNet300100(), {"fc9.weight": 4}), ValueError, "fc9"),
    ],
)  # fmt: skip
def test_bad_input_is_rejected_clearly(call, error, match):
    with pytest.raises(error, match=match):
        call()
