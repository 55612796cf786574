"""A random layer and correlated inputs, for the tests of GPTQ and SparseGPT."""

from __future__ import annotations

import torch


def correlated_inputs(n: int, width: int, seed: int = 0) -> torch.Tensor:
    """(n, width) float64 inputs whose channels are correlated (a random mixing matrix)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(width, width, generator=g, dtype=torch.float64)
    return torch.randn(n, width, generator=g, dtype=torch.float64) @ mix


def weights(rows: int, columns: int, seed: int = 1) -> torch.Tensor:
    """A (rows, columns) float64 Gaussian weight matrix."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, columns, generator=g, dtype=torch.float64)
