"""minicompress.transfer: class subsets with renumbered labels, a fresh head, freezing."""

from __future__ import annotations

import pytest
import torch

from minicompress.models import LeNet5
from minicompress.train import TrainConfig, fit
from minicompress.transfer import class_subset, freeze, new_head, trainable_parameters


def toy(n: int = 200):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10


def test_class_subset_renumbers_and_draws_per_class():
    x, y = toy()
    sx, sy = class_subset(x, y, [7, 2], per_class=5, seed=1)
    assert len(sx) == 10 and sorted(sy.tolist()) == [0] * 5 + [1] * 5
    assert torch.equal(class_subset(x, y, [7, 2], 5, seed=1)[0], sx)
    original = {tuple(r.flatten()[:3].tolist()) for r in x[(y == 7) | (y == 2)]}
    assert {tuple(r.flatten()[:3].tolist()) for r in sx} <= original
    with pytest.raises(ValueError, match="fewer than per_class"):
        class_subset(x, y, [1], per_class=100)
    with pytest.raises(ValueError, match="distinct"):
        class_subset(x, y, [1, 1])


def test_freeze_trains_only_the_head():
    x, y = toy()
    model = new_head(LeNet5(), "fc2", 5, seed=0)
    assert model.fc2.out_features == 5
    freeze(model, ["fc2"])
    assert trainable_parameters(model) == 500 * 5 + 5
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, x, y % 5, TrainConfig(epochs=1, batch_size=50, lr=0.1), progress=False)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("fc2"))
    assert not torch.equal(before["fc2.weight"], after["fc2.weight"])
    with pytest.raises(ValueError, match="no module"):
        freeze(model, ["fc7"])
    with pytest.raises(TypeError, match="not a Linear"):
        new_head(model, "conv1", 3)
