"""measure.paired_difference: the accuracy difference of two models on the same images."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from minicompress.measure import (
    PairedDifference,
    correct,
    paired_difference,
    paired_from_correct,
    simd_extensions,
)


class Fixed(nn.Module):
    """A 'model' that predicts given classes: logits one-hot at ``predictions``."""

    def __init__(self, predictions: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("predictions", predictions)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = x[:, 0].long()  # the image carries its own index
        return nn.functional.one_hot(self.predictions[idx], 3).float()


def test_counts_only_the_images_the_models_disagree_on():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    a = Fixed(torch.tensor([0, 1, 2, 1, 1, 0]))  # right on 0, 1, 2, 4
    b = Fixed(torch.tensor([0, 2, 2, 0, 0, 0]))  # right on 0, 2, 3
    images = torch.arange(6.0).reshape(6, 1)
    d = paired_difference(a, b, images, labels)
    assert (d.only_a, d.only_b, d.n) == (2, 1, 6)
    assert d.difference == pytest.approx(4 / 6 - 3 / 6)
    assert d.standard_error == pytest.approx(math.sqrt(3 - 1 / 6) / 6)
    assert d.z == pytest.approx(1 / math.sqrt(3))
    assert d.p_value == pytest.approx(math.erfc(1 / math.sqrt(6)))


def test_standard_error_matches_a_paired_bootstrap():
    g = torch.Generator().manual_seed(0)
    n = 5000
    right_a = torch.rand(n, generator=g) < 0.9
    flip = torch.rand(n, generator=g) < 0.02  # b disagrees with a on 2 % of the images
    right_b = right_a ^ flip
    d = PairedDifference(int((right_a & ~right_b).sum()), int((~right_a & right_b).sum()), n)
    idx = torch.randint(0, n, (2000, n), generator=g)
    boot = (right_a[idx].float().mean(1) - right_b[idx].float().mean(1)).std().item()
    assert d.standard_error == pytest.approx(boot, rel=0.08)
    independent = math.sqrt(2 * 0.9 * 0.1 / n)  # two separate test sets
    assert d.standard_error < 0.5 * independent


def test_identical_models_differ_by_nothing():
    d = PairedDifference(0, 0, 100)
    assert d.difference == 0 and d.standard_error == 0 and d.z == 0 and d.p_value == 1


def test_rejects_non_modules():
    with pytest.raises(TypeError, match="nn.Module"):
        paired_difference("model", nn.Linear(1, 1), torch.zeros(1, 1), torch.zeros(1))


def test_simd_extensions_is_a_subset_of_the_known_names():
    assert simd_extensions() <= {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd",
                                 "sve"}  # fmt: skip


def test_from_correct_equals_running_the_models():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    a = Fixed(torch.tensor([0, 1, 2, 1, 1, 0]))
    b = Fixed(torch.tensor([0, 2, 2, 0, 0, 0]))
    images = torch.arange(6.0).reshape(6, 1)
    right_a, right_b = correct(a, images, labels), correct(b, images, labels)
    assert right_a.tolist() == [True, True, True, False, True, False]
    assert paired_from_correct(right_a, right_b) == paired_difference(a, b, images, labels)


def test_from_correct_rejects_bad_outcomes():
    ok = torch.tensor([True, False])
    with pytest.raises(TypeError, match="right_a must be a 1-D bool tensor"):
        paired_from_correct(torch.tensor([1.0, 0.0]), ok)
    with pytest.raises(TypeError, match="right_b must be a 1-D bool tensor"):
        paired_from_correct(ok, ok[None])
    with pytest.raises(ValueError, match="same images"):
        paired_from_correct(ok, torch.tensor([True]))
    with pytest.raises(ValueError, match="right_a is empty"):
        paired_from_correct(torch.tensor([], dtype=torch.bool), ok)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        correct(nn.Linear(1, 3), torch.zeros(2, 1), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="labels must be an int64 tensor"):
        correct(nn.Linear(1, 3), torch.zeros(2, 1), torch.zeros(2))
    with pytest.raises(ValueError, match=r"class indices in 0..2, got 0..7"):
        correct(nn.Linear(1, 3), torch.zeros(2, 1), torch.tensor([0, 7]))
