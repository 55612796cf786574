"""minicompress.outliers: the rescaled model computes the same function, its chosen channels
are factor times larger, clear errors."""

from __future__ import annotations

import pytest
import torch

from minicompress.calibration import layer_inputs
from minicompress.models import TinyGPT
from minicompress.outliers import add_activation_outliers, rescale_channels


def test_outputs_unchanged_and_channels_scaled():
    torch.manual_seed(0)
    model = TinyGPT(d=32, layers=2, context=16)
    with torch.no_grad():  # non-trivial LayerNorm parameters
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    tokens = torch.randint(0, 96, (16 * 4,))
    rescaled = add_activation_outliers(model, channels=(1, 5), factor=30.0)
    ids = tokens.view(4, 16)
    with torch.no_grad():
        a, b = model(ids), rescaled(ids)
    assert (a - b).abs().max() < 1e-4 * a.abs().max()
    before, after = layer_inputs(model, tokens), layer_inputs(rescaled, tokens)
    for name in ("blocks.0.attn.qkv", "blocks.1.mlp.fc"):
        ratio = after[name] / before[name]
        torch.testing.assert_close(ratio[:, [1, 5]], torch.full_like(ratio[:, [1, 5]], 30.0))
        torch.testing.assert_close(after[name][:, 2:5], before[name][:, 2:5])
    torch.testing.assert_close(after["blocks.0.mlp.proj"], before["blocks.0.mlp.proj"])
    assert not torch.equal(model.blocks[0].ln1.weight, rescaled.blocks[0].ln1.weight)


def test_bad_input():
    model = TinyGPT(d=32, layers=1, context=16)
    with pytest.raises(ValueError, match=r"channels\[i\] must be in 0..31"):
        add_activation_outliers(model, channels=(40,))
    with pytest.raises(ValueError, match="factor must be a finite number > 0"):
        add_activation_outliers(model, factor=0.0)
    with pytest.raises(TypeError, match="channels must be a sequence"):
        add_activation_outliers(model, channels=3)
    with pytest.raises(ValueError, match="scale must be positive"):
        rescale_channels(model.blocks[0].ln1, model.blocks[0].attn.qkv, -torch.ones(32))
    with pytest.raises(TypeError, match="blocks"):
        add_activation_outliers(torch.nn.Linear(2, 2))
