"""Weight sharing: cluster a layer's weights into k = 2^b values and store b-bit indices.

Chapter "Weight sharing and Huffman coding" derives each piece:

- sharing is k-means on the (unpruned) weights of a layer: minimise the within-cluster
  sum of squares ``Σ_i Σ_{w ∈ c_i} |w − c_i|²`` with Lloyd's iteration, started from a
  linear, density (CDF) or random initialisation (`kmeans_quantize`);
- the layer then stores n indices of log2 k bits and a codebook of k b-bit floats:
  r = nb / (n log2 k + kb)  (`compression_ratio`, Deep Compression eq. 1);
- the codebook is fine-tuned by gradient descent: the gradient of a centroid is the sum of
  the gradients of the weights that share it, ∂L/∂c_k = Σ_{i: I_i = k} ∂L/∂W_i
  (`centroid_gradients`, `SharedWeight`, `fine_tune_centroids`).

Weights are 1-D points, so Lloyd's assignment step is a search among the sorted midpoints
of the centroids (`torch.bucketize`, O(n log k)) and the update step two ``bincount`` calls.

References: Han, Mao, Dally (2016), *Deep Compression*, §3; Lloyd (1982); Gong et al. (2014).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.pruning import prunable_weights
from minicompress.train import TrainConfig, fit

__all__ = [
    "INITS",
    "SharedLayer",
    "SharedWeight",
    "centroid_gradients",
    "compression_ratio",
    "fine_tune_centroids",
    "inertia",
    "init_centroids",
    "kmeans_quantize",
    "share_weights",
    "shared_weight",
]

INITS = ("linear", "density", "random")


def _check_bits(bits: object) -> int:
    return check.bits(bits, 1, 16, what=" (k = 2^bits clusters)")


def _check_weight(weight: object, mask: object) -> tuple[Tensor, Tensor]:
    """The weight as float32 and the mask as bool (all True if None), both checked."""
    check.float_tensor(weight, "weight", nan=True, inf=True)
    weight = weight.detach().float().cpu()
    if mask is None:
        mask = torch.ones_like(weight, dtype=torch.bool)
    elif not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError("mask must be a bool tensor (True where the weight is kept) or None")
    elif mask.shape != weight.shape:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but the weight has {tuple(weight.shape)}"
        )
    mask = mask.cpu()
    if not torch.isfinite(weight[mask]).all():
        raise ValueError("weight contains NaN or inf among the kept entries")
    if not mask.any():
        raise ValueError("the mask keeps no weight: there is nothing to cluster")
    return weight, mask


def init_centroids(values: Tensor, k: int, init: str = "linear", seed: int = 0) -> Tensor:
    """k starting centroids for 1-D ``values``, sorted (§ "Centroid initialisation").

    - ``"linear"``: k points evenly spaced over [min, max]; keeps centroids at the rare
      large weights, which matter most (Deep Compression Fig. 4);
    - ``"density"``: the k quantiles at levels (2i + 1) / 2k of the empirical CDF (equal
      counts per centroid): dense near 0, few at the tails;
    - ``"random"`` (Forgy): k of the values drawn without replacement (with replacement
      when there are fewer than k), seeded.
    """
    check.choice(init, "init", INITS)
    check.integer(k, "k", 1)
    values = check.float_tensor(values, "values", why="centroids must be finite")
    values = values.detach().flatten().float()
    if init == "linear":
        return torch.linspace(float(values.min()), float(values.max()), k)
    if init == "density":
        ordered = values.sort().values
        levels = (2 * torch.arange(k, dtype=torch.float64) + 1) / (2 * k)  # (k,)
        positions = (levels * (len(ordered) - 1)).round().long()
        return ordered[positions]
    g = torch.Generator().manual_seed(seed)
    if len(values) >= k:
        picks = torch.randperm(len(values), generator=g)[:k]
    else:
        picks = torch.randint(len(values), (k,), generator=g)
    return values[picks].sort().values


def _assign(values: Tensor, centroids: Tensor) -> Tensor:
    """Index of the nearest of the sorted ``centroids`` for each value (ties: the lower)."""
    midpoints = (centroids[1:] + centroids[:-1]) / 2  # (k − 1,) cluster boundaries
    return torch.bucketize(values, midpoints, right=False)


def _run_ends(ordered: Tensor, centroids: Tensor) -> Tensor:
    """End (exclusive) of each cluster's run in the sorted values: the same split as `_assign`."""
    midpoints = (centroids[1:] + centroids[:-1]) / 2
    cuts = torch.searchsorted(ordered, midpoints, right=True)  # values <= midpoint go lower
    return torch.cat([cuts, torch.tensor([len(ordered)])])


def _relocate(
    ordered: Tensor, centroids: Tensor, counts: Tensor, sums: Tensor, empty: Tensor
) -> tuple[Tensor, Tensor]:
    """Give each empty cluster one of the weights farthest from their (old) centroid,
    taking it out of its cluster: scikit-learn's `_relocate_empty_clusters`."""
    labels = torch.repeat_interleave(torch.arange(len(counts)), counts)  # (n_kept,)
    distance = (ordered - centroids[labels]).abs()
    n_move = min(int(empty.sum()), len(ordered))
    far = torch.topk(distance, n_move).indices
    targets = empty.nonzero().squeeze(1)[:n_move]
    counts, sums = counts.clone(), sums.clone()
    counts.index_add_(0, labels[far], torch.full((n_move,), -1, dtype=counts.dtype))
    sums.index_add_(0, labels[far], -ordered[far])
    counts[targets], sums[targets] = 1, ordered[far]
    return counts, sums


def inertia(values: Tensor, codebook: Tensor, indices: Tensor) -> float:
    """The k-means objective Σ_i (w_i − c_{I_i})², in float64."""
    diff = values.double().flatten() - codebook.double()[indices.flatten()]
    return float((diff * diff).sum())


def kmeans_quantize(
    weight: Tensor,
    bits: int,
    init: str = "linear",
    mask: Tensor | None = None,
    iterations: int = 300,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Cluster the kept weights into k = 2^bits centroids with Lloyd's algorithm
    (§ "Weight sharing is k-means").

    Alternates, until no assignment changes or ``iterations`` rounds have run:

    - assignment: ``I_i = argmin_k |w_i − c_k|`` (every weight to its nearest centroid);
    - update: c_k = mean{w_i : I_i = k}; a centroid left with no weight moves to the
      weight farthest from its centroid (as scikit-learn does), or keeps its value if there
      are more empty clusters than weights.

    Returns ``(codebook, indices)``: ``codebook`` float32 of shape (k,), sorted ascending;
    ``indices`` int64 of the weight's shape with values in [0, k). The shared weight is
    ``codebook[indices]``. Entries where ``mask`` is False (pruned weights) take no part
    in the clustering and their index is 0, which means nothing: multiply by the mask
    (`shared_weight`). The final assignment is always to the nearest final centroid.
    """
    bits = _check_bits(bits)
    check.choice(init, "init", INITS)
    check.integer(iterations, "iterations", 1)
    weight, mask = _check_weight(weight, mask)
    values = weight[mask]  # (n_kept,)
    k = 2**bits
    centroids = init_centroids(values, k, init, seed).double()
    # On sorted values every cluster is a run [start, end): the assignment step is k − 1
    # binary searches and the update step differences of a prefix sum, O(k log n) a round.
    ordered = values.double().sort().values  # (n_kept,)
    prefix = torch.cat([torch.zeros(1, dtype=torch.float64), ordered.cumsum(0)])  # (n_kept + 1,)
    ends = _run_ends(ordered, centroids)
    for _ in range(iterations):
        starts = torch.cat([torch.zeros(1, dtype=torch.int64), ends[:-1]])
        counts = ends - starts
        sums = prefix[ends] - prefix[starts]
        empty = counts == 0
        if empty.any():  # as scikit-learn: empty clusters take the worst-served weights
            counts, sums = _relocate(ordered, centroids, counts, sums, empty)
            empty = counts == 0
        centroids = torch.where(empty, centroids, sums / counts.clamp(min=1))
        # sorted centroids make every cluster a run of the sorted values
        centroids = centroids.sort().values
        new = _run_ends(ordered, centroids)
        if torch.equal(new, ends):
            break
        ends = new
    codebook = centroids.float()
    indices = torch.zeros(weight.shape, dtype=torch.int64)
    indices[mask] = _assign(values, codebook)  # nearest in float32, as the weight is stored
    return codebook, indices


def shared_weight(codebook: Tensor, indices: Tensor, mask: Tensor | None = None) -> Tensor:
    """The weight a shared layer computes with: W = codebook[I] ⊙ mask."""
    if not isinstance(codebook, Tensor) or codebook.ndim != 1 or not codebook.is_floating_point():
        raise TypeError("codebook must be a 1-D floating-point tensor")
    if not isinstance(indices, Tensor) or indices.dtype not in (torch.int64, torch.int32):
        raise TypeError("indices must be an int64 or int32 tensor")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= len(codebook)):
        raise ValueError(f"indices must lie in [0, {len(codebook)}), the codebook's range")
    weight = codebook[indices.long()]
    if mask is not None:
        if mask.shape != indices.shape or mask.dtype != torch.bool:
            raise ValueError("mask must be a bool tensor of the indices' shape")
        weight = torch.where(mask, weight, 0.0)  # +0.0 where pruned, never −0.0
    return weight


def compression_ratio(n: int, bits: int, clusters: int, weight_bits: int = 32) -> float:
    """Deep Compression eq. 1: r = n·b / (n·log2 k + k·b)  (§ "How much sharing saves").

    ``n`` weights of ``weight_bits`` (b) bits each become ``n`` indices of ``bits``
    (log2 k, rounded up to whole bits) bits and a codebook of ``clusters`` (k ≤ 2^bits)
    entries of b bits. The paper's example, 16 weights and 4 clusters: 16·32 / (16·2 + 4·32)
    = 3.2.
    """
    for name, value in (("n", n), ("bits", bits), ("clusters", clusters),
                        ("weight_bits", weight_bits)):  # fmt: skip
        check.integer(value, name, 1)
    if clusters > 2**bits:
        raise ValueError(f"{clusters} clusters need more than {bits}-bit indices")
    return n * weight_bits / (n * bits + clusters * weight_bits)


# ---- fine-tuning the centroids -------------------------------------------------------------


def centroid_gradients(weight_grad: Tensor, indices: Tensor, mask: Tensor | None, k: int) -> Tensor:
    """∂L/∂c_k = Σ_{i: I_i = k, kept} ∂L/∂W_i: scatter-add the weights' gradients (shape (k,)).

    The explicit form of what autograd computes through W = codebook[I] ⊙ mask (Deep
    Compression eq. 3, § "Fine-tuning the centroids").
    """
    check.float_tensor(weight_grad, "weight_grad", empty=True)
    check.integer(k, "k", 1)
    if not isinstance(indices, Tensor) or indices.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"indices must be an int64 or int32 tensor, got {check.describe(indices)}")
    if weight_grad.shape != indices.shape:
        raise ValueError("weight_grad and indices must have the same shape")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= k):
        raise ValueError(f"indices must lie in [0, {k}), the codebook's range")
    if mask is None:
        mask = torch.ones_like(indices, dtype=torch.bool)
    elif not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != indices.shape:
        raise ValueError("mask must be a bool tensor of the indices' shape, or None")
    grads = weight_grad.detach()[mask].double()
    return torch.zeros(k, dtype=torch.float64).index_add_(0, indices[mask], grads).float()


class SharedWeight(nn.Module):
    """A parametrization W = codebook[I] ⊙ mask whose only trainable tensor is the codebook.

    Registered with ``torch.nn.utils.parametrize`` on a layer's ``weight``, the layer
    computes with the shared weight; backpropagation through the gather sums the gradients
    of the weights sharing a centroid (`centroid_gradients`).
    """

    def __init__(self, codebook: Tensor, indices: Tensor, mask: Tensor) -> None:
        super().__init__()
        shared_weight(codebook, indices, mask)  # checks the arguments
        self.codebook = nn.Parameter(codebook.detach().clone().float())
        self.register_buffer("indices", indices.detach().clone().long())
        self.register_buffer("mask", mask.detach().clone())

    def forward(self, original: Tensor | None = None) -> Tensor:
        # ``original`` (the dense weight parametrize passes in) is ignored on purpose
        return torch.where(self.mask, self.codebook[self.indices], 0.0)


@dataclass(frozen=True)
class SharedLayer:
    """One layer's shared weight: ``codebook`` (k,) float32, ``indices`` int64 and
    ``mask`` bool of the weight's shape; ``weight()`` = codebook[indices] ⊙ mask."""

    codebook: Tensor
    indices: Tensor
    mask: Tensor

    @property
    def bits(self) -> int:
        """The index width, log2 of the codebook length rounded up."""
        return max(1, math.ceil(math.log2(len(self.codebook))))

    def weight(self) -> Tensor:
        return shared_weight(self.codebook, self.indices, self.mask)


def _check_model_bits(model: nn.Module, bits: int | Mapping[str, int]) -> dict[str, int]:
    weights = prunable_weights(model)
    if isinstance(bits, Mapping):
        unknown = set(bits) - set(weights)
        if unknown:
            raise ValueError(f"no prunable weight named {sorted(unknown)}; have {sorted(weights)}")
        return {name: _check_bits(b) for name, b in bits.items()}
    return dict.fromkeys(weights, _check_bits(bits))


def share_weights(
    model: nn.Module,
    bits: int | Mapping[str, int],
    init: str = "linear",
    masks: Mapping[str, Tensor] | None = None,
    seed: int = 0,
) -> dict[str, SharedLayer]:
    """k-means every Linear/Conv2d weight of ``model`` and write the shared weights back in
    place; return the `SharedLayer` of each (by parameter name, ``"fc1.weight"``).

    ``bits`` is one width for all layers or a mapping name → width (layers not in it are
    left alone). ``masks`` are the pruning masks; without them a weight that is exactly 0
    counts as pruned. Biases are not shared (Deep Compression stores them as they are).
    """
    per_layer = _check_model_bits(model, bits)
    weights = prunable_weights(model)
    shared = {}
    for name, b in per_layer.items():
        weight = weights[name]
        mask = masks[name] if masks is not None and name in masks else weight.detach() != 0
        codebook, indices = kmeans_quantize(weight, b, init=init, mask=mask.cpu(), seed=seed)
        shared[name] = SharedLayer(codebook, indices, mask.cpu())
        with torch.no_grad():
            weight.copy_(shared[name].weight())
    return shared


def fine_tune_centroids(
    model: nn.Module,
    shared: Mapping[str, SharedLayer],
    images: Tensor,
    labels: Tensor,
    config: TrainConfig,
    train_biases: bool = True,
) -> dict[str, SharedLayer]:
    """Train the codebooks (and, if ``train_biases``, the biases) with `fit`; indices and
    masks stay fixed (§ "Fine-tuning the centroids"). Returns the new `SharedLayer`s and
    writes W = codebook[I] ⊙ mask into ``model`` in place.

    Each shared weight is replaced during training by a `SharedWeight` parametrization, so
    a centroid's gradient is the sum of its weights' gradients. Every other parameter is
    frozen. Since a centroid sums many gradients, plain SGD needs a learning rate about
    n/k times smaller than for the weights; Adam (``config.optimizer="adam"``) does not care.
    """
    from torch.nn.utils import parametrize

    if not isinstance(shared, Mapping) or not shared:
        raise TypeError("shared must be a non-empty mapping name -> SharedLayer")
    modules = dict(model.named_modules())
    for name, layer in shared.items():
        module_name = name.rsplit(".", 1)[0]
        if not name.endswith(".weight") or module_name not in modules:
            raise ValueError(f"model has no layer weight {name!r}")
        if not isinstance(layer, SharedLayer):
            raise TypeError(f"shared[{name!r}] must be a SharedLayer, got {type(layer).__name__}")
        if layer.indices.shape != modules[module_name].weight.shape:
            raise ValueError(f"shared[{name!r}] does not have the shape of the layer's weight")
    was = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(train_biases and n.endswith(".bias"))
    for name, layer in shared.items():
        module = modules[name.rsplit(".", 1)[0]]
        device = module.weight.device
        param = SharedWeight(layer.codebook, layer.indices, layer.mask).to(device)
        parametrize.register_parametrization(module, "weight", param, unsafe=True)
        module.parametrizations.weight.original.requires_grad_(False)
    try:
        fit(model, images, labels, config, progress=False)
    finally:
        tuned = {}
        for name in shared:
            module = modules[name.rsplit(".", 1)[0]]
            param = module.parametrizations.weight[0]
            tuned[name] = SharedLayer(param.codebook.detach().cpu().clone(),
                                      param.indices.cpu(), param.mask.cpu())  # fmt: skip
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        for n, p in model.named_parameters():
            p.requires_grad_(was.get(n, True))
    return tuned
