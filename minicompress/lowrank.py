"""Low rank: replace a Linear layer's m×n weight by the product of two thin factors.

Chapter "Architecture, low rank and transfer" derives each piece:

- the truncated SVD W_r = Σ_{i≤r} s_i u_i v_iᵀ is the best rank-r approximation of W in
  the Frobenius and the spectral norm (Eckart–Young), with errors √(Σ_{i>r} s_i²) and
  s_{r+1} (`svd_factors`, `eckart_young_error`);
- y = W x + b becomes y = B (A x) + b with A = S_r^{1/2} V_rᵀ (r×n) and B = U_r S_r^{1/2}
  (m×r): r(m + n) weights instead of mn, which pays off only for r < mn / (m + n)
  (`LowRankLinear`, `factorize_linear`, `payoff_rank`);
- the rank of each layer is chosen by the energy kept, Σ_{i≤r} s_i² / Σ_i s_i², or by a
  parameter budget (`rank_for_energy`, `rank_for_budget`), and a whole model is made
  smaller by `low_rank` (fine-tune it afterwards with `minicompress.train.fit`).

References: Eckart & Young (1936); Denton et al. (2014), *Exploiting Linear Structure Within
Convolutional Networks for Efficient Evaluation*.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from minicompress import _validate as check

__all__ = [
    "LowRankLinear",
    "eckart_young_error",
    "energy_kept",
    "factorize_linear",
    "low_rank",
    "payoff_rank",
    "rank_for_budget",
    "rank_for_energy",
    "singular_values",
    "svd_factors",
]


def _check_matrix(weight: object, name: str = "weight") -> Tensor:
    check.float_tensor(weight, name)
    if weight.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix (m, n), got shape {tuple(weight.shape)}")
    return weight


def _check_rank(rank: object, m: int, n: int) -> int:
    rank = check.integer(rank, "rank")
    if not 1 <= rank <= min(m, n):
        raise ValueError(
            f"rank must be in 1..min(m, n) = 1..{min(m, n)} for a {m}×{n} matrix, got {rank}"
        )
    return rank


def singular_values(weight: Tensor) -> Tensor:
    """The singular values s_1 ≥ s_2 ≥ … ≥ s_min(m,n) ≥ 0 of a 2-D weight (float64)."""
    weight = _check_matrix(weight)
    return torch.linalg.svdvals(weight.detach().double())


def svd_factors(weight: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Factors (A, B) with B @ A = U_r S_r V_rᵀ, the truncated SVD of ``weight`` (m×n).

    A = S_r^{1/2} V_rᵀ has shape (r, n) and B = U_r S_r^{1/2} shape (m, r): the r *largest*
    singular values are kept, and each factor gets their square root so that both have the
    same scale for fine-tuning (§ "A Linear layer as two thinner ones").
    """
    weight = _check_matrix(weight)
    rank = _check_rank(rank, *weight.shape)
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    first = root[:, None] * vh[:rank]  # (r, n)
    second = u[:, :rank] * root[None, :]  # (m, r)
    return first.to(weight.dtype), second.to(weight.dtype)


def eckart_young_error(weight: Tensor, rank: int) -> tuple[float, float]:
    """(Frobenius, spectral) norm of W − W_r for the truncated SVD W_r of rank r:
    √(Σ_{i>r} s_i²) and s_{r+1} (0 at full rank) — the smallest any rank-r matrix achieves."""
    s = singular_values(weight)
    rank = _check_rank(rank, *weight.shape)
    rest = s[rank:]
    return float(rest.square().sum().sqrt()), float(rest[0]) if len(rest) else 0.0


def energy_kept(weight: Tensor, rank: int) -> float:
    """Σ_{i≤r} s_i² / Σ_i s_i²: the share of ‖W‖_F² the rank-r truncation keeps."""
    s2 = singular_values(weight).square()
    rank = _check_rank(rank, *weight.shape)
    return float(s2[:rank].sum() / s2.sum())


def rank_for_energy(weight: Tensor, energy: float) -> int:
    """The smallest rank r whose truncation keeps at least ``energy`` of Σ s_i² (§ "Choosing
    the rank")."""
    energy = check.number(energy, "energy", 0.0, 1.0, low_open=True)
    s2 = singular_values(weight).square()
    share = s2.cumsum(0) / s2.sum()
    return min(int((share < energy - 1e-12).sum()) + 1, len(s2))


def payoff_rank(m: int, n: int) -> int:
    """The largest rank r at which two factors store fewer weights than W: r(m + n) < mn,
    i.e. r < mn / (m + n) (0 if no rank pays off, as for a 1×n matrix)."""
    m, n = check.integer(m, "m", 1), check.integer(n, "n", 1)
    return (m * n - 1) // (m + n)


def rank_for_budget(m: int, n: int, budget: int) -> int:
    """The largest rank r whose factors fit in ``budget`` weights: r(m + n) ≤ budget, capped
    at min(m, n). Raises if not even rank 1 (m + n weights) fits."""
    m, n = check.integer(m, "m", 1), check.integer(n, "n", 1)
    budget = check.integer(budget, "budget", 1)
    if budget < m + n:
        raise ValueError(f"a budget of {budget} weights cannot hold even rank 1 ({m + n})")
    return min(budget // (m + n), m, n)


class LowRankLinear(nn.Module):
    """y = B (A x) + b: a rank-r Linear layer of r(in + out) weights plus the bias.

    ``first`` is Linear(in_features, rank, bias=False) holding A; ``second`` is
    Linear(rank, out_features) holding B and the bias, so `minicompress.measure.count_macs`
    counts r(in + out) MACs per example.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        in_features = check.integer(in_features, "in_features", 1)
        out_features = check.integer(out_features, "out_features", 1)
        self.rank = _check_rank(rank, out_features, in_features)
        self.in_features, self.out_features = in_features, out_features
        self.first = nn.Linear(in_features, self.rank, bias=False)
        self.second = nn.Linear(self.rank, out_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.first(x))  # (N, n) -> (N, r) -> (N, m)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def factorize_linear(layer: nn.Linear, rank: int) -> LowRankLinear:
    """A `LowRankLinear` computing the truncated SVD of ``layer``'s weight, same bias.

    At full rank it computes the same function as ``layer`` (up to rounding).
    """
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"layer must be a torch.nn.Linear, got {type(layer).__name__}")
    m, n = layer.weight.shape
    first, second = svd_factors(layer.weight, _check_rank(rank, m, n))
    small = LowRankLinear(n, m, rank, bias=layer.bias is not None)
    small = small.to(device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        small.first.weight.copy_(first)
        small.second.weight.copy_(second)
        if layer.bias is not None:
            small.second.bias.copy_(layer.bias)
    return small.train(layer.training)


def low_rank(model: nn.Module, ranks: Mapping[str, int]) -> nn.Module:
    """A copy of ``model`` with each named Linear layer replaced by its rank-r factorisation
    (§ "Choosing the rank"). ``ranks`` maps module names (``"fc1"``) to ranks; the input model
    is not changed. Layers whose rank does not pay off (r ≥ mn/(m + n)) are refused: they
    would make the model bigger.
    """
    check.module(model)
    if not isinstance(ranks, Mapping) or not ranks:
        raise TypeError("ranks must be a non-empty mapping of layer names to ranks")
    modules = dict(model.named_modules())
    for name, rank in ranks.items():
        if name not in modules:
            raise ValueError(f"the model has no layer {name!r}")
        layer = modules[name]
        if not isinstance(layer, nn.Linear):
            kind = type(layer).__name__
            raise TypeError(f"{name} is a {kind}; low_rank factorises Linear layers")
        m, n = layer.weight.shape
        _check_rank(rank, m, n)
        if rank > payoff_rank(m, n):
            raise ValueError(
                f"rank {rank} of {name} ({m}×{n}) stores {rank * (m + n)} weights, not fewer than "
                f"{m * n}: use r ≤ {payoff_rank(m, n)} (r < mn/(m + n) = {m * n / (m + n):.1f})"
            )
    small = copy.deepcopy(model)
    for name, rank in ranks.items():
        parent, _, child = name.rpartition(".")
        holder = small.get_submodule(parent) if parent else small
        setattr(holder, child, factorize_linear(getattr(holder, child), rank))
    return small
