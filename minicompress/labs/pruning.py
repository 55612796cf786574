"""Checkers for the pruning lab: each tests a student's function against `minicompress.pruning`
on randomized inputs and raises `LabCheckError` saying what is wrong.

Each rejects the matching mistake of the source blog posts (course errata 4–7) with a
message that names it: pruning by ``w`` instead of ``|w|``, a Python ``if`` on a tensor, the
"pruning rate" that is really the kept L1 mass, a fraction misread as a threshold, and
fine-tuning that lets pruned weights grow back.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from minicompress import pruning as reference
from minicompress.labs import LabCheckError, _call, _unchanged
from minicompress.models import MLP

__all__ = [
    "check_global_masks",
    "check_magnitude_mask",
    "check_masked_fine_tune",
    "check_pruning_rate",
]


def _check_mask_type(mask: object, like: Tensor, name: str) -> Tensor:
    if not isinstance(mask, Tensor):
        raise LabCheckError(f"{name} must return a tensor, got {type(mask).__name__}.")
    if mask.dtype != torch.bool:
        raise LabCheckError(
            f"{name} must return a bool tensor (True = kept), got dtype {mask.dtype}. "
            "A comparison such as `weight.abs() >= t` gives one."
        )
    if mask.shape != like.shape:
        raise LabCheckError(
            f"{name} returned shape {tuple(mask.shape)}; the mask must have the weight's "
            f"shape {tuple(like.shape)}."
        )
    return mask


def _explain_mask(
    mask: Tensor, expected: Tensor, weight: Tensor, where: str, sparsity: float | None = None
) -> None:
    """Raise a message describing how ``mask`` differs from the ``expected`` one."""
    if torch.equal(mask, expected):
        return
    n, want = weight.numel(), int(expected.sum())
    if want == n and not mask.all():
        raise LabCheckError(
            f"{where}: k = round(sparsity · n) = 0 weights should be removed, but your mask "
            f"removed {int((~mask).sum())}. Handle k = 0 separately: sorted[k − 1] with k = 0 is "
            "sorted[−1], the *largest* magnitude, and topk/kthvalue need k ≥ 1."
        )
    if torch.equal(mask, ~expected):
        raise LabCheckError(f"{where}: the mask is inverted. True must mean *kept*.")
    negatives = weight < 0
    k = weight.numel() - int(expected.sum())
    signed = torch.ones(weight.numel(), dtype=torch.bool)
    signed[torch.topk(weight.flatten(), k, largest=False).indices] = False
    all_negatives_gone = negatives.any() and not mask[negatives].any()
    if torch.equal(mask, signed.view_as(weight)) or (
        all_negatives_gone and expected[negatives].any()
    ):
        raise LabCheckError(
            f"{where}: negative weights were removed because they are small as *values*. Rank "
            "weights by magnitude |w|, not by w: -3.0 matters more than 0.1 (course erratum 4)."
        )
    kept = int(mask.sum())
    if kept != want:
        raise LabCheckError(
            f"{where}: kept {kept} weights, expected {want} (remove exactly round(sparsity · n) "
            f"= {n - want} of the n = {n} weights).{_count_hint(n - kept, sparsity, n)}"
        )
    smallest_kept = weight[mask].abs().min().item()
    largest_removed = weight[~mask].abs().max().item()
    raise LabCheckError(
        f"{where}: kept a weight with |w| = {smallest_kept:.4f} but removed one with "
        f"|w| = {largest_removed:.4f}. Keep the largest magnitudes."
    )


def _count_hint(removed: int, sparsity: float | None, n: int) -> str:
    """Say so if ``removed`` is sparsity · n rounded up (math.ceil) or truncated (int())."""
    if sparsity is None:
        return ""
    exact = sparsity * n
    for name, value in (("math.ceil", math.ceil(exact)), ("int()", int(exact))):
        if value != round(exact) and removed == value:
            return (
                f" sparsity · n = {exact:.4g} has a fractional part: {name} gives {value}; "
                f"round it to the nearest integer, round({exact:.4g}) = {round(exact)}."
            )
    return ""


def check_magnitude_mask(fn: Callable[[Tensor, float], Tensor], seed: int = 0) -> None:
    """Check ``fn(weight, sparsity) -> bool mask`` (True = kept) on random weights."""
    g = torch.Generator().manual_seed(seed)
    # sparsity · n with fractional parts below and above ½ (3.3, 6.6, 76.7 …) as well as whole
    cases = [((10,), 0.33), ((8, 16), 0.5), ((4, 3, 5, 5), 0.9), ((300,), 0.35), ((7,), 0.5),
             ((20, 20), 0.0), ((7,), 1.0), ((64, 32), 0.75), ((11,), 0.6), ((13, 9), 0.43),
             ((59,), 0.2)]  # fmt: skip
    for shape, sparsity in cases:
        weight = torch.randn(shape, generator=g)
        original = weight.clone()
        where = f"magnitude_mask(weight of shape {shape}, sparsity={sparsity})"
        mask = _check_mask_type(_call(fn, where, weight, sparsity), weight, where)
        _unchanged({"weight": original}, {"weight": weight}, where)
        _explain_mask(mask, reference.magnitude_mask(weight, sparsity), weight, where, sparsity)
    print(f"✓ magnitude_mask passed {len(cases)} randomized checks")


def check_global_masks(fn: Callable[[dict, float], dict], seed: int = 0) -> None:
    """Check ``fn(weights: dict[str, Tensor], sparsity) -> dict[str, bool mask]``."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"fc1.weight": ((60, 80), 0.05), "fc2.weight": ((30, 60), 0.1),
              "fc3.weight": ((10, 30), 0.3)}  # fmt: skip
    sparsities = (0.5, 0.9, 0.0, 0.97, 0.3333, 0.6667)  # the last two: fractional counts
    for sparsity in sparsities:
        weights = {k: torch.randn(s, generator=g) * scale for k, (s, scale) in shapes.items()}
        originals = {k: w.clone() for k, w in weights.items()}
        where = f"global_magnitude_masks(sparsity={sparsity})"
        given = dict(weights)
        masks = _call(fn, where, given, sparsity)
        if set(given) != set(weights):
            raise LabCheckError(f"{where} added or removed keys of its input dict.")
        _unchanged(originals, weights, where)
        if not isinstance(masks, dict) or set(masks) != set(weights):
            got = sorted(masks) if isinstance(masks, dict) else type(masks).__name__
            raise LabCheckError(
                f"{where} must return a dict with keys {sorted(weights)}, got {got}."
            )
        expected = reference.global_magnitude_masks(weights, sparsity)
        for name in weights:
            _check_mask_type(masks[name], weights[name], f"{where}[{name!r}]")
        total = sum(w.numel() for w in weights.values())
        removed = sum(int((~m).sum()) for m in masks.values())
        if removed != round(sparsity * total):
            exact = sparsity * total
            hint = ""
            if removed in (math.ceil(exact), int(exact)):
                hint = (f" {sparsity} · {total} = {exact:.4g}: round it to the nearest integer, "
                        "not up (math.ceil) or down (int()).")  # fmt: skip
            raise LabCheckError(
                f"{where}: removed {removed} weights in total, expected round({sparsity} · "
                f"{total}) = {round(sparsity * total)}.{hint}"
            )
        per_layer = {k: 1 - m.float().mean().item() for k, m in masks.items()}
        layerwise = all(abs(s - sparsity) < 0.01 for s in per_layer.values())
        if (
            layerwise
            and 0 < sparsity < 1
            and any(not torch.equal(masks[k], expected[k]) for k in weights)
        ):
            raise LabCheckError(
                f"{where}: every layer lost {sparsity:.0%} of its weights. That is layer-wise "
                "pruning; global pruning ranks all weights together against one threshold, so "
                "layers with larger weights keep more of them."
            )
        for name in weights:
            _explain_mask(masks[name], expected[name], weights[name], f"{where}[{name!r}]")
    print(f"✓ global_magnitude_masks passed {len(sparsities)} randomized checks")


def check_pruning_rate(fn: Callable[[Tensor, Tensor], float], seed: int = 0) -> None:
    """Check ``fn(original, pruned) -> float``: the fraction of weights that are zero after
    pruning (zeros / weights), on the source blog's own example and on random ones."""
    original = torch.tensor([0.5, 1.2, 0.3, 0.8, 0.6, 1.5])
    pruned = torch.tensor([0.5, 0.0, 0.0, 0.8, 0.6, 1.5])  # the blog's "pruned" weights
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(1000, generator=g)
    with_zeros = w.clone()
    with_zeros[:100] = 0.0  # zeros that were there before pruning still count as zeros
    cases = [
        (original, pruned),
        (w, w * reference.magnitude_mask(w, 0.9)),
        (w, w.clone()),
        (with_zeros, with_zeros * reference.magnitude_mask(with_zeros, 0.5)),
    ]
    for before, after in cases:
        originals = {"original": before.clone(), "pruned": after.clone()}
        got = _call(fn, "pruning_rate", before, after)
        _unchanged(originals, {"original": before, "pruned": after}, "pruning_rate")
        want = (after == 0).float().mean().item()
        if not isinstance(got, int | float | Tensor) or abs(float(got) - want) > 1e-6:
            kept_mass = (after.abs().sum() / before.abs().sum()).item()
            hint = ""
            if isinstance(got, int | float | Tensor) and abs(float(got) - kept_mass) < 1e-4:
                hint = (
                    " You computed Σ|w'| / Σ|w|, the share of L1 mass *kept*; the pruning rate "
                    "counts weights, not mass (course erratum 5)."
                )
            n_zero = int((after == 0).sum())
            raise LabCheckError(
                f"pruning_rate returned {got!r} for {after.numel()} weights of which {n_zero} "
                f"are zero; expected zeros / weights = {want:.4f}.{hint}"
            )
    print(f"✓ pruning_rate passed {len(cases)} checks (including the blog's example: 2/6)")


def _watch_forwards(model: nn.Module, masks: dict) -> tuple[list[int], list]:
    """Record, for every training-mode forward pass of ``model``, how many masked-out weights
    are non-zero at that moment."""
    params = dict(model.named_parameters())
    seen: list[int] = []

    def record(module: nn.Module, _inputs: tuple) -> None:
        if module.training:
            with torch.no_grad():
                seen.append(sum(int((params[k][~m] != 0).sum()) for k, m in masks.items()))

    return seen, [model.register_forward_pre_hook(record)]


def check_masked_fine_tune(fn: Callable, seed: int = 0) -> None:
    """Check ``fn(model, masks, images, labels, epochs)``: trains ``model`` in place with the
    masked-out weights at exactly zero from the first optimizer step to the end.

    The model is handed over *unpruned*: the function applies the masks itself, then keeps
    them applied during training (every forward pass after the first is watched)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(512, 1, 28, 28, generator=g)
    labels = torch.randint(0, 10, (512,), generator=g)
    torch.manual_seed(seed)
    model = MLP((32,))
    masks = reference.layer_masks(model, 0.8)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    given = {k: m.clone() for k, m in masks.items()}
    seen, handles = _watch_forwards(model, masks)
    try:
        _call(fn, "masked_fine_tune", model, given, images, labels, 1)
    finally:
        for handle in handles:
            handle.remove()
    _unchanged(masks, given, "masked_fine_tune")
    params = dict(model.named_parameters())
    kept_changed = any(
        not torch.equal(before[k][m], params[k].detach()[m]) for k, m in masks.items()
    )
    if not kept_changed:
        raise LabCheckError("masked_fine_tune left every kept weight unchanged: did it train?")
    for name, mask in masks.items():
        now = params[name].detach()[~mask]
        regrown = int((now != 0).sum())
        if regrown and torch.equal(now, before[name][~mask]):
            raise LabCheckError(
                f"after masked_fine_tune, the {regrown} pruned weights of {name} still hold "
                "their original values: freezing them (masking their gradients) keeps them "
                "from changing but never sets them to zero. Zero them with the masks first."
            )
        if regrown:
            raise LabCheckError(
                f"after masked_fine_tune, {regrown} of the {int((~mask).sum())} pruned weights of "
                f"{name} are non-zero: they grew back. Re-apply the masks after *every* "
                "optimizer step, e.g. `fit(..., after_step=keep_masks(masks))` (course erratum 7)."
            )
    during = [i for i, n in enumerate(seen[1:], start=2) if n]
    if during:
        raise LabCheckError(
            f"masked_fine_tune: in forward pass {during[0]} of {len(seen)}, {seen[during[0] - 1]} "
            "pruned weights were non-zero, so the network trained with them and only had them "
            "zeroed at the end (the accuracy you measure is then not the one you trained). "
            "Apply the masks before training and after *every* optimizer step (course erratum 7)."
        )
    print("✓ masked_fine_tune trained, with every pruned weight at zero throughout")
