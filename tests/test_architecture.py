"""minicompress.architecture: MAC formulas of ordinary, grouped and separable convolutions
against measure.count_macs and PyTorch's FLOP counter; the 1/N + 1/K² ratio; Pareto fronts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from minicompress.architecture import (
    SeparableConv2d,
    SeparableLeNet5,
    conv_macs,
    pareto_front,
    separable_macs,
    separable_ratio,
)
from minicompress.measure import count_macs, count_parameters
from minicompress.models import LeNet5


def torch_macs(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2  # PyTorch counts 2 FLOPs per MAC


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.sampled_from([1, 3, 5]), st.integers(5, 12))
def test_separable_macs_match_count_macs_and_torch(c_in, c_out, k, size):
    block = SeparableConv2d(c_in, c_out, k)
    x = torch.rand(1, c_in, size, size)
    h = size - k + 1
    expected = separable_macs(c_in, c_out, k, h, h)
    assert count_macs(block, x) == expected == torch_macs(block, x)
    assert expected == h * h * c_in * k * k + h * h * c_in * c_out


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_grouped_conv_macs(groups):
    conv = nn.Conv2d(8, 12, 3, groups=groups)
    x = torch.rand(1, 8, 10, 10)
    assert conv_macs(8, 12, 3, 8, 8, groups) == count_macs(conv, x) == torch_macs(conv, x)


@pytest.mark.parametrize("c_in,c_out,k,h", [(20, 50, 5, 8), (32, 64, 3, 14), (3, 7, 5, 4)])
def test_separable_ratio_is_one_over_n_plus_one_over_k_squared(c_in, c_out, k, h):
    ratio = separable_macs(c_in, c_out, k, h, h) / conv_macs(c_in, c_out, k, h, h)
    assert ratio == pytest.approx(separable_ratio(c_out, k))


def test_separable_lenet5_shapes_and_counts():
    model, dense = SeparableLeNet5(), LeNet5()
    x = torch.rand(3, 1, 28, 28)
    assert model(x).shape == (3, 10)
    assert count_parameters(dense) - count_parameters(model) == 25_000 - (20 * 25 + 20 * 50)
    assert count_macs(model, x[:1]) == torch_macs(model, x[:1])
    assert count_macs(dense, x[:1]) - count_macs(model, x[:1]) == conv_macs(
        20, 50, 5, 8, 8
    ) - separable_macs(20, 50, 5, 8, 8)


def test_pareto_front():
    costs = [1, 2, 3, 4, 2, 5]
    scores = [0.5, 0.7, 0.6, 0.9, 0.8, 0.9]
    assert pareto_front(costs, scores) == [0, 4, 3]
    with pytest.raises(ValueError, match="equal length"):
        pareto_front([1, 2], [0.1])


def test_bad_arguments():
    with pytest.raises(ValueError, match="groups"):
        conv_macs(6, 4, 3, 2, 2, groups=4)
    with pytest.raises(ValueError, match="c_out must be an int >= 1"):
        separable_ratio(0, 3)


def test_separable_lenet5_shares_lenet5_code():
    assert issubclass(SeparableLeNet5, LeNet5)
    assert SeparableLeNet5.forward is LeNet5.forward
    assert SeparableLeNet5.__init__ is LeNet5.__init__
    model = SeparableLeNet5(4, 6, 8)
    assert isinstance(model.conv2, SeparableConv2d)
    assert (model.conv2.depthwise.groups, model.conv2.pointwise.out_channels) == (4, 6)
    assert (model.fc1.in_features, model.fc1.out_features) == (6 * 16, 8)
    # conv1 is created first in both, from the same random stream
    torch.manual_seed(0)
    a = SeparableLeNet5()
    torch.manual_seed(0)
    b = LeNet5()
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    with pytest.raises(ValueError, match="positive integers"):
        SeparableLeNet5(0, 50, 500)


def test_prune_channels_refuses_separable_lenet5():
    from minicompress.pruning import prune_channels

    with pytest.raises(TypeError, match="not its variant SeparableLeNet5"):
        prune_channels(SeparableLeNet5(), {"conv1": 0.5})
    # LeNet5 itself is still handled
    small = prune_channels(LeNet5(), {"conv2": 0.5})
    assert type(small) is LeNet5 and small.conv2.out_channels == 25
