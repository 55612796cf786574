"""minicompress.models: the papers' parameter counts, shapes, and argument checks."""

from __future__ import annotations

import pytest
import torch

from minicompress.measure import count_parameters
from minicompress.models import MLP, LeNet5, LeNet300100, TinyGPT


def test_lenet300_has_the_papers_266610_parameters():
    model = LeNet300100()
    assert count_parameters(model) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10 == 266_610
    assert [n for n, _ in model.named_parameters()] == [
        "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"
    ]  # fmt: skip


def test_lenet5_has_cafffes_431080_parameters():
    model = LeNet5()
    assert (
        count_parameters(model)
        == (20 * 25 + 20) + (50 * 20 * 25 + 50) + (800 * 500 + 500) + (500 * 10 + 10)
        == 431_080
    )


@pytest.mark.parametrize("model", [LeNet300100(), LeNet5(), MLP((64,)), LeNet5(4, 6, 30)])
def test_forward_maps_images_to_ten_logits(model):
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_mlp_with_widths_of_lenet300_equals_it_given_the_same_weights():
    a, b = LeNet300100(), MLP((300, 100))
    b.load_state_dict(a.state_dict())
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "build",
    [
        lambda: MLP(()),  # fine: a linear classifier
    ],
)
def test_linear_classifier_is_allowed(build):
    assert count_parameters(build()) == 7850


@pytest.mark.parametrize(
    "build",
    [
        lambda: MLP((0, 10)),
        lambda: MLP((3.5,)),
        lambda: MLP((True,)),
        lambda: LeNet5(conv1=-1),
        lambda: LeNet300100((300, "100")),
    ],
)
def test_bad_widths_are_rejected(build):
    with pytest.raises(ValueError, match="positive integers"):
        build()


def test_seeded_tiny_gpt_repeats_its_weights_and_leaves_the_global_generator():
    state = torch.random.get_rng_state()
    a = TinyGPT.seeded(3, vocab=12, context=8, d=8, layers=1, heads=2)
    b = TinyGPT.seeded(3, vocab=12, context=8, d=8, layers=1, heads=2)
    c = TinyGPT.seeded(4, vocab=12, context=8, d=8, layers=1, heads=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.head.weight, c.head.weight)
    with pytest.raises(ValueError, match="seed must be"):
        TinyGPT.seeded(-1)
