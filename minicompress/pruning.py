"""Pruning: remove the weights (or whole neurons and filters) that matter least.

Chapter "Pruning" derives each piece:

- magnitude pruning solves  min ‖W − W'‖²  s.t.  ‖W'‖₀ ≤ k  by keeping the k largest ``|w|``
  (`magnitude_mask`, `threshold_mask`), per layer or over the whole model
  (`global_magnitude_masks`);
- masks must be re-applied after every optimizer step, or pruned weights grow back
  (`apply_masks`, `keep_masks`: pass ``after_step=keep_masks(masks)`` to `fit`);
- the gradual schedule of Zhu & Gupta (2017) (`gradual_sparsity`);
- structured L1-norm pruning of filters and neurons (Li et al. 2017), which returns a
  smaller dense model that really runs faster (`prune_channels`);
- what a sparse matrix costs stored in CSR: 2a + n + 1 numbers (`csr_numbers`).

A mask is a bool tensor of the weight's shape, True where the weight is kept.

References: Han, Pool, Tran, Dally (2015); Zhu & Gupta (2017); Li et al. (2017).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.models import MLP, LeNet5
from minicompress.train import TrainConfig, fit

__all__ = [
    "GradualPruner",
    "apply_masks",
    "csr_numbers",
    "csr_state_dict",
    "global_magnitude_masks",
    "gradual_pruning",
    "gradual_pruning_hook",
    "gradual_sparsity",
    "iterative_pruning",
    "keep_masks",
    "layer_masks",
    "magnitude_mask",
    "mask_sparsity",
    "prunable_weights",
    "prune_channels",
    "threshold_mask",
    "weight_sparsity",
]


def _check_weight(weight: object, what: str = "weight") -> Tensor:
    why = "magnitudes of NaN cannot be ranked"
    return check.float_tensor(weight, what, inf=True, why=why).detach()


def _check_sparsity(sparsity: float, name: str = "sparsity") -> float:
    return check.probability(sparsity, name)  # the fraction removed


def _n_removed(sparsity: float, n: int) -> int:
    # Python's round: half to even, the same rule torch.nn.utils.prune uses.
    return round(sparsity * n)


def magnitude_mask(weight: Tensor, sparsity: float) -> Tensor:
    """Keep the largest-magnitude weights, removing exactly ``round(sparsity · n)`` of them.

    The solution of  min ‖W − W'‖²  s.t.  at most k non-zeros  (§ "Magnitude pruning"):
    zeroing w costs w², so remove the n − k weights with the smallest ``|w|``. Same result as
    ``torch.nn.utils.prune.l1_unstructured(module, "weight", amount=sparsity)``.
    """
    weight = _check_weight(weight)
    k = _n_removed(_check_sparsity(sparsity), weight.numel())
    mask = torch.ones(weight.numel(), dtype=torch.bool)
    if k:
        mask[torch.topk(weight.abs().flatten(), k, largest=False).indices] = False
    return mask.view_as(weight)


def threshold_mask(weight: Tensor, threshold: float) -> Tensor:
    """Keep weights with ``|w| >= threshold``; remove ``|w| < threshold`` (both signs alike)."""
    weight = _check_weight(weight)
    check.number(threshold, "threshold", 0.0)
    return weight.abs() >= threshold


def global_magnitude_masks(weights: Mapping[str, Tensor], sparsity: float) -> dict[str, Tensor]:
    """One magnitude threshold for all tensors together: remove ``round(sparsity · Σn)``
    smallest ``|w|`` across them. Same result as ``prune.global_unstructured`` with
    ``pruning_method=prune.L1Unstructured``.
    """
    if not isinstance(weights, Mapping) or not weights:
        raise TypeError("weights must be a non-empty mapping of name -> tensor")
    checked = {name: _check_weight(w, f"weights[{name!r}]") for name, w in weights.items()}
    flat = torch.cat([w.abs().flatten() for w in checked.values()])
    k = _n_removed(_check_sparsity(sparsity), flat.numel())
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if k:
        keep[torch.topk(flat, k, largest=False).indices] = False
    masks, start = {}, 0
    for name, w in checked.items():
        masks[name] = keep[start : start + w.numel()].view_as(w)
        start += w.numel()
    return masks


def prunable_weights(model: nn.Module) -> dict[str, Tensor]:
    """The ``weight`` of every Linear and Conv2d layer, by parameter name (``"fc1.weight"``)."""
    check.module(model)
    return {
        f"{name}.weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | nn.Conv2d)
    }


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of the Linear/Conv2d weights that are zero (biases, which pruning leaves
    alone, are not counted; `minicompress.measure.sparsity` counts every parameter)."""
    weights = prunable_weights(model).values()
    total = sum(w.numel() for w in weights)
    if total == 0:
        raise ValueError("the model has no Linear or Conv2d weights")
    return sum(int((w == 0).sum()) for w in weights) / total


def layer_masks(
    model: nn.Module, sparsity: float | Mapping[str, float], scope: str = "layer"
) -> dict[str, Tensor]:
    """Magnitude masks for every prunable weight of ``model``.

    ``scope="layer"``: each layer loses the same fraction (or its own, if ``sparsity`` maps
    parameter names to fractions). ``scope="global"``: one threshold for the whole model.
    """
    weights = prunable_weights(model)
    if scope == "global":
        if isinstance(sparsity, Mapping):
            raise TypeError("global pruning takes one sparsity, not one per layer")
        return global_magnitude_masks(weights, sparsity)
    if scope != "layer":
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    per_layer = sparsity if isinstance(sparsity, Mapping) else dict.fromkeys(weights, sparsity)
    unknown = set(per_layer) - set(weights)
    if unknown:
        raise ValueError(f"no prunable weight named {sorted(unknown)}; have {sorted(weights)}")
    return {name: magnitude_mask(weights[name], s) for name, s in per_layer.items()}


def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> None:
    """Zero, in place, every weight whose mask entry is False: w ← w ⊙ m."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"model has no parameter {name!r}")
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask for {name!r} must be a bool tensor")
        if mask.shape != params[name].shape:
            raise ValueError(
                f"mask for {name!r} has shape {tuple(mask.shape)}, "
                f"the parameter has {tuple(params[name].shape)}"
            )
        with torch.no_grad():
            params[name].mul_(mask)


def keep_masks(masks: Mapping[str, Tensor]) -> Callable[[nn.Module], None]:
    """An ``after_step`` hook for `minicompress.train.fit` that re-applies ``masks``.

    Without it, the first optimizer step gives pruned weights a non-zero gradient update
    and they grow back (§ "Fine-tuning must keep the mask").
    """
    frozen = dict(masks)
    return lambda model: apply_masks(model, frozen)


def mask_sparsity(masks: Mapping[str, Tensor]) -> float:
    """Fraction of masked-out entries over all masks: removed / total."""
    total = sum(m.numel() for m in masks.values())
    if total == 0:
        raise ValueError("no masks given")
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / total


def gradual_sparsity(
    step: int, initial: float, final: float, start: int, n_steps: int, frequency: int = 1
) -> float:
    """Zhu & Gupta (2017)'s schedule: s_t = s_f + (s_i − s_f)(1 − (t − t₀)/(nΔt))³.

    Sparsity rises from ``initial`` (s_i) at step ``start`` (t₀) to ``final`` (s_f) over
    ``n_steps`` pruning steps (n) taken every ``frequency`` (Δt) training steps; it is
    s_i before t₀, held between pruning steps, and s_f from t₀ + nΔt on.
    """
    for name, value in (("step", step), ("start", start), ("n_steps", n_steps)):
        check.integer(value, name, 0)
    check.integer(frequency, "frequency", 1)
    initial, final = _check_sparsity(initial, "initial"), _check_sparsity(final, "final")
    if step < start:
        return initial
    if n_steps == 0:
        return final
    done = min((step - start) // frequency, n_steps)  # pruning steps taken so far
    return final + (initial - final) * (1.0 - done / n_steps) ** 3


def iterative_pruning(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    stages: Sequence[float],
    config: TrainConfig,
    scope: str = "global",
    on_stage: Callable[[float, nn.Module], None] | None = None,
) -> dict[str, Tensor]:
    """Han et al. (2015)'s prune–retrain loop, in place; returns the final masks.

    For each sparsity in ``stages`` (increasing): recompute magnitude masks from the current
    weights, apply them, and fine-tune with ``config`` keeping them (`keep_masks`). Weights
    pruned at an earlier stage are zero, hence the smallest, so they stay pruned.
    ``on_stage(sparsity, model)`` is called after each stage (to evaluate or snapshot).
    """
    stages = [_check_sparsity(s) for s in stages]
    if not stages or any(b < a for a, b in zip(stages, stages[1:], strict=False)):
        raise ValueError(f"stages must be a non-empty, non-decreasing list, got {stages}")
    masks: dict[str, Tensor] = {}
    for sparsity in stages:
        masks = layer_masks(model, sparsity, scope)
        apply_masks(model, masks)
        fit(model, images, labels, config, after_step=keep_masks(masks), progress=False)
        if on_stage is not None:
            on_stage(sparsity, model)
    return masks


class GradualPruner:
    """An ``after_step`` hook for `fit` that prunes on Zhu & Gupta's schedule.

    Every ``frequency`` optimizer steps from ``start`` on, it recomputes magnitude masks at
    the scheduled sparsity (`gradual_sparsity`); after every step it re-applies the current
    masks. Weights pruned earlier are zero, hence the smallest, so they stay pruned.
    """

    def __init__(
        self, final: float, start: int, n_steps: int, frequency: int,
        initial: float = 0.0, scope: str = "global",
    ) -> None:  # fmt: skip
        gradual_sparsity(start, initial, final, start, n_steps, frequency)  # checks arguments
        if scope not in ("layer", "global"):
            raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
        self.final, self.start, self.n_steps, self.frequency = final, start, n_steps, frequency
        self.initial, self.scope = initial, scope
        self.step = 0
        self.masks: dict[str, Tensor] | None = None
        self.history: list[tuple[int, float]] = []  # (step, sparsity) at each pruning step

    def __call__(self, model: nn.Module) -> None:
        t, self.step = self.step, self.step + 1
        offset = t - self.start
        if (
            offset >= 0
            and offset % self.frequency == 0
            and offset // self.frequency <= self.n_steps
        ):
            s = gradual_sparsity(
                t, self.initial, self.final, self.start, self.n_steps, self.frequency
            )
            self.masks = layer_masks(model, s, self.scope)
            self.history.append((t, s))
        if self.masks is not None:
            apply_masks(model, self.masks)


def gradual_pruning_hook(
    final: float, start: int, n_steps: int, frequency: int,
    initial: float = 0.0, scope: str = "global",
) -> GradualPruner:  # fmt: skip
    """A `GradualPruner`: pass it as ``fit(..., after_step=...)`` to prune while training."""
    return GradualPruner(final, start, n_steps, frequency, initial, scope)


def gradual_pruning(
    model: nn.Module, images: Tensor, labels: Tensor, sparsity: float, config: TrainConfig,
    prune_until: float = 0.5, n_steps: int = 20, scope: str = "global", progress: bool = True,
) -> dict[str, Tensor]:  # fmt: skip
    """Prune while fine-tuning, in place, then anneal with the mask fixed; return the masks.

    One `fit` run of T = epochs · ⌈N / batch_size⌉ steps with ``config``'s learning rate
    schedule; Zhu & Gupta's sparsity s_t (`gradual_sparsity`, s_i = 0, t₀ = 0) rises to
    ``sparsity`` in ``n_steps`` steps every Δt = ⌊prune_until · T⌋ // n_steps optimizer
    steps, and the last ``1 − prune_until`` of the run trains the final mask while a cosine
    learning rate falls to 0 (§ "How fast to prune: one-shot, iterative, gradual").
    ``progress`` shows `fit`'s progress bar (tqdm; quiet when the output is not a terminal).
    """
    check.module(model)
    check.number(prune_until, "prune_until", 0.0, 1.0)
    check.integer(n_steps, "n_steps", 1)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    total = config.epochs * math.ceil(len(images) / config.batch_size)
    every = max(1, int(prune_until * total) // n_steps)
    if n_steps * every >= total:  # the last pruning step is taken at step n_steps · Δt
        raise ValueError(
            f"{total} training steps are too few to reach the final sparsity in {n_steps} "
            f"pruning steps every {every}; train longer or take fewer pruning steps"
        )
    hook = GradualPruner(_check_sparsity(sparsity), 0, n_steps, every, scope=scope)
    fit(model, images, labels, config, after_step=hook, progress=progress)
    assert hook.masks is not None  # noqa: S101 -- step 0 always prunes
    return hook.masks


def csr_numbers(nonzeros: int, rows: int) -> int:
    """Numbers stored by CSR for a matrix with ``a`` non-zeros and ``n`` rows: 2a + n + 1
    (a values, a column indices, n + 1 row pointers)."""
    for name, value in (("nonzeros", nonzeros), ("rows", rows)):
        check.integer(value, name, 0)
    return 2 * nonzeros + rows + 1


def csr_state_dict(model: nn.Module, index_dtype: torch.dtype = torch.int32) -> dict[str, Tensor]:
    """The model's state dict with every Linear/Conv2d weight stored in CSR.

    A conv weight (C_out, C_in, k, k) is stored as the (C_out, C_in·k·k) matrix it is in
    the im2col view. Indices are ``index_dtype`` (int32 by default: PyTorch's int64 would
    double their cost). Measure it with `minicompress.measure.serialized_size`.
    """
    check.choice(index_dtype, "index_dtype", (torch.int32, torch.int64))
    weights = prunable_weights(model)
    out = {}
    for name, tensor in model.state_dict().items():
        if name in weights:
            with warnings.catch_warnings():  # "sparse CSR support is in beta": known
                warnings.simplefilter("ignore", UserWarning)
                csr = tensor.detach().flatten(1).to_sparse_csr()
            out[name] = torch.sparse_csr_tensor(
                csr.crow_indices().to(index_dtype), csr.col_indices().to(index_dtype),
                csr.values(), size=csr.shape, check_invariants=True,
            )  # fmt: skip
        else:
            out[name] = tensor
    return out


def _l1_keep(weight: Tensor, keep: int) -> Tensor:
    """Indices (sorted) of the ``keep`` output units with the largest L1 norm."""
    norms = weight.detach().abs().flatten(1).sum(dim=1)
    return torch.topk(norms, keep).indices.sort().values


def _keep_count(amount: float, n: int, name: str) -> int:
    keep = n - round(_check_sparsity(amount) * n)
    if keep < 1:
        raise ValueError(f"pruning {amount} of {name}'s {n} units would leave none")
    return keep


def prune_channels(model: nn.Module, amounts: Mapping[str, float]) -> nn.Module:
    """Remove whole filters/neurons with the smallest L1 norm (Li et al. 2017); return a
    new, smaller dense model of the same class. The input model is not changed.

    ``amounts`` maps a hidden layer name (``"conv1"``, ``"conv2"``, ``"fc1"`` of a
    `LeNet5`; ``"fc1"``, ``"fc2"``, … but not the output layer of an `MLP`) to the fraction
    of its output units to remove. The next layer loses the matching inputs, so the
    smaller model computes exactly what the original computes with those units zeroed.
    """
    if isinstance(model, LeNet5) and type(model) is not LeNet5:
        # a variant (e.g. SeparableLeNet5) has a conv2 whose filters are not one weight
        # tensor, and the smaller model built below would be a plain LeNet5
        raise TypeError(
            f"prune_channels supports LeNet5 itself, not its variant {type(model).__name__}"
        )
    if isinstance(model, LeNet5):
        chain = ["conv1", "conv2", "fc1", "fc2"]
    elif isinstance(model, MLP):
        chain = [f"fc{i}" for i in range(1, model.n_layers + 1)]
    else:
        raise TypeError(
            f"prune_channels supports LeNet5 and MLP models, got {type(model).__name__}"
        )
    if not isinstance(amounts, Mapping):
        raise TypeError("amounts must map layer names to fractions")
    unknown = set(amounts) - set(chain[:-1])
    if unknown:
        raise ValueError(f"can prune only hidden layers {chain[:-1]}, got {sorted(unknown)}")
    kept: dict[str, Tensor] = {}
    for name in chain[:-1]:
        weight = getattr(model, name).weight
        n = weight.shape[0]
        keep = _keep_count(amounts.get(name, 0.0), n, name)
        kept[name] = _l1_keep(weight, keep) if name in amounts else torch.arange(n)
    if isinstance(model, LeNet5):
        small = LeNet5(len(kept["conv1"]), len(kept["conv2"]), len(kept["fc1"]))
    elif type(model) is MLP:
        widths = tuple(len(kept[n]) for n in chain[:-1])
        small = MLP(widths, model.fc1.in_features, getattr(model, chain[-1]).out_features)
    else:  # a subclass with fixed input/output sizes, e.g. LeNet300100
        small = type(model)(tuple(len(kept[n]) for n in chain[:-1]))
    with torch.no_grad():
        previous: Tensor | None = None
        for name in chain:
            src, dst = getattr(model, name), getattr(small, name)
            weight, bias = src.weight, src.bias
            if name in kept:
                weight, bias = weight[kept[name]], bias[kept[name]]
            if previous is not None:
                if name == "fc1" and isinstance(model, LeNet5):
                    # conv2's output (C, 4, 4) is flattened: channel c owns features 16c..16c+15
                    cols = (previous.view(-1, 1) * 16 + torch.arange(16)).flatten()
                    weight = weight[:, cols]
                else:
                    weight = weight[:, previous]
            dst.weight.copy_(weight)
            dst.bias.copy_(bias)
            previous = kept.get(name)
    return small.train(model.training)
