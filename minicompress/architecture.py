"""Cheaper structures: depthwise-separable and grouped convolutions, and the Pareto frontier.

Chapter "Architecture, low rank and transfer" derives each piece:

- a K×K convolution from C_in to C_out channels on an H×W output costs
  H·W·C_out·(C_in/g)·K² MACs with g groups (`conv_macs`; g = 1 is the ordinary one);
- a depthwise-separable one (a K×K depthwise convolution, g = C_in, then a 1×1 pointwise
  one) costs H·W·C_in·K² + H·W·C_in·C_out, a ratio 1/C_out + 1/K² of the ordinary one
  (`separable_macs`, `separable_ratio`, `SeparableConv2d`, `SeparableLeNet5`);
- among candidate networks, the ones no other beats on both cost and accuracy form the
  Pareto frontier (`pareto_front`).

References: Howard et al. (2017), *MobileNets*; Chollet (2017), *Xception*; Krizhevsky,
Sutskever & Hinton (2012) for grouped convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.models import LeNet5

__all__ = [
    "SeparableConv2d",
    "SeparableLeNet5",
    "conv_macs",
    "pareto_front",
    "separable_macs",
    "separable_ratio",
]


def conv_macs(c_in: int, c_out: int, kernel: int, h_out: int, w_out: int, groups: int = 1) -> int:
    """MACs of a K×K convolution for one image: H_out·W_out·C_out·(C_in/g)·K² (each output is a
    dot product over C_in/g channels and K² positions; § "Cheaper convolutions")."""
    c_in, c_out = check.integer(c_in, "c_in", 1), check.integer(c_out, "c_out", 1)
    kernel, groups = check.integer(kernel, "kernel", 1), check.integer(groups, "groups", 1)
    h_out, w_out = check.integer(h_out, "h_out", 1), check.integer(w_out, "w_out", 1)
    if c_in % groups or c_out % groups:
        raise ValueError(f"groups ({groups}) must divide c_in ({c_in}) and c_out ({c_out})")
    return h_out * w_out * c_out * (c_in // groups) * kernel * kernel


def separable_macs(c_in: int, c_out: int, kernel: int, h_out: int, w_out: int) -> int:
    """MACs of a depthwise-separable convolution: depthwise H·W·C_in·K² plus pointwise
    H·W·C_in·C_out (the 1×1 convolution that mixes the channels)."""
    depthwise = conv_macs(c_in, c_in, kernel, h_out, w_out, groups=c_in)
    pointwise = conv_macs(c_in, c_out, 1, h_out, w_out)
    return depthwise + pointwise


def separable_ratio(c_out: int, kernel: int) -> float:
    """separable_macs / conv_macs = 1/C_out + 1/K², whatever C_in, H and W."""
    c_out, kernel = check.integer(c_out, "c_out", 1), check.integer(kernel, "kernel", 1)
    return 1 / c_out + 1 / kernel**2


class SeparableConv2d(nn.Module):
    """A K×K depthwise convolution (one filter per input channel, ``groups=in_channels``)
    followed by a 1×1 pointwise convolution: C_in·K² + C_in·C_out weights instead of
    C_in·C_out·K². No nonlinearity between the two, as in Xception."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True):
        super().__init__()
        in_channels = check.integer(in_channels, "in_channels", 1)
        out_channels = check.integer(out_channels, "out_channels", 1)
        kernel_size = check.integer(kernel_size, "kernel_size", 1)
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))  # (N, C_in, H, W) -> (N, C_out, H', W')


class SeparableLeNet5(LeNet5):
    """`minicompress.models.LeNet5` with ``conv2`` depthwise-separable (the same shapes).

    Only `LeNet5.make_conv2` is overridden: the constructor, the forward pass and the order
    in which the layers draw their initial weights are LeNet5's. ``conv1`` stays an ordinary
    convolution: with one input channel its depthwise part would be a single 5×5 filter, and
    the ordinary layer costs only C_out·K² per position anyway.
    """

    def make_conv2(self, in_channels: int, out_channels: int) -> nn.Module:
        return SeparableConv2d(in_channels, out_channels, kernel_size=5)


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Indices of the points no other point dominates (cost ≤ and score ≥, one strictly),
    sorted by increasing cost (§ "Choosing the structure")."""
    costs, scores = list(costs), list(scores)
    if len(costs) != len(scores) or not costs:
        raise ValueError(
            f"costs and scores must be non-empty and of equal length, got {len(costs)} and "
            f"{len(scores)}"
        )
    for i, (c, s) in enumerate(zip(costs, scores, strict=True)):
        check.number(c, f"costs[{i}]")
        check.number(s, f"scores[{i}]")
    front, best = [], float("-inf")
    for i in sorted(range(len(costs)), key=lambda i: (costs[i], -scores[i])):
        if scores[i] > best:
            front.append(i)
            best = scores[i]
    return front
