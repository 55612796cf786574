"""The course's models: the two networks of Han et al. (2015) and a configurable MLP.

- `LeNet300100`: the 784-300-100-10 multilayer perceptron (266 610 parameters).
- `LeNet5`: Caffe's LeNet as used by Han et al. 2015 and Deep Compression: conv 20 (5x5),
  max-pool, conv 50 (5x5), max-pool, fc 500, fc 10 (431 080 parameters).

Layers are named attributes (``fc1``, ``conv2``, ...) rather than indices in a
``Sequential``, so tables of per-layer results read like the papers' tables. Widths are
arguments, so a structurally pruned network is the same class with smaller widths.

References: Han, Pool, Tran, Dally (2015), *Learning both Weights and Connections for
Efficient Neural Networks*; LeCun et al. (1998) for LeNet.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MLP", "LeNet300100", "LeNet5"]


def _check_widths(widths: Sequence[int], what: str) -> tuple[int, ...]:
    widths = tuple(widths)
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:  # one message for all
            raise ValueError(f"{what} must be positive integers, got {widths!r}")
    return widths


class MLP(nn.Module):
    """A ReLU multilayer perceptron on flattened 28x28 images: 784 -> hidden... -> 10.

    Layers are ``fc1 ... fcK``. ``MLP((1200, 1200))`` is Hinton et al.'s distillation
    teacher; ``MLP((300, 100))`` has the shape of `LeNet300100`.
    """

    def __init__(
        self, hidden: Sequence[int] = (300, 100), in_features: int = 784, classes: int = 10
    ):
        super().__init__()
        sizes = (in_features, *_check_widths(hidden, "hidden widths"), classes)
        _check_widths(sizes, "in_features and classes")
        self.hidden = sizes[1:-1]
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
            self.add_module(f"fc{i}", nn.Linear(n_in, n_out))
        self.n_layers = len(sizes) - 1

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (N, 1, 28, 28) -> (N, 784)
        for i in range(1, self.n_layers + 1):
            x = getattr(self, f"fc{i}")(x)
            if i < self.n_layers:
                x = F.relu(x)
        return x


class LeNet300100(MLP):
    """LeNet-300-100: 784-300-100-10 with ReLU, exactly the network of Han et al. 2015.

    Parameters: 784·300 + 300 + 300·100 + 100 + 100·10 + 10 = 266 610.
    """

    def __init__(self, hidden: Sequence[int] = (300, 100)):
        super().__init__(hidden)


class LeNet5(nn.Module):
    """Caffe's LeNet (Han et al. 2015's "LeNet-5"): conv1 20@5x5, conv2 50@5x5, fc1 500, fc2 10.

    Shapes: (N,1,28,28) -conv1-> (N,20,24,24) -pool-> (N,20,12,12) -conv2-> (N,50,8,8)
    -pool-> (N,50,4,4) -flatten-> (N,800) -fc1-> (N,500) -fc2-> (N,10).
    Parameters: 520 + 25 050 + 400 500 + 5 010 = 431 080.

    Caffe's prototxt has no nonlinearity after the convolutions; we put a ReLU after each
    (as every PyTorch LeNet does). It adds no parameters and keeps activations non-negative,
    which the quantization chapter relies on.
    """

    def __init__(self, conv1: int = 20, conv2: int = 50, fc1: int = 500):
        super().__init__()
        _check_widths((conv1, conv2, fc1), "layer widths")
        self.conv1 = nn.Conv2d(1, conv1, kernel_size=5)
        self.conv2 = nn.Conv2d(conv1, conv2, kernel_size=5)
        self.fc1 = nn.Linear(conv2 * 4 * 4, fc1)
        self.fc2 = nn.Linear(fc1, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 20, 12, 12)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 50, 4, 4)
        x = F.relu(self.fc1(x.flatten(1)))  # (N, 500)
        return self.fc2(x)
