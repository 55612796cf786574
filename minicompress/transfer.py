"""Transfer (知识迁移): reuse a trained network's features for a new task with few labels.

Chapter "Architecture, low rank and transfer", § "Transfer", uses these pieces:

- `class_subset` takes the examples of some classes (optionally k per class, drawn with a
  seed) and renumbers their labels 0..len(classes) − 1;
- `new_head` replaces the output layer by a freshly initialised one for the new classes;
- `freeze` stops gradients to every parameter outside the named layers, so
  `minicompress.train.fit` trains only those (a *linear probe* when only the head is left).

Transfer saves labels and training time, not bytes: the transferred model has the source
model's size. To make it smaller, distil it (`minicompress.distillation.distill`).

Reference: Yosinski et al. (2014), *How transferable are features in deep neural networks?*
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from minicompress import _validate as check

__all__ = ["class_subset", "freeze", "new_head", "trainable_parameters"]


def class_subset(
    images: Tensor, labels: Tensor, classes: Sequence[int], per_class: int | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The examples whose label is in ``classes``, labels renumbered to their position in
    ``classes``; with ``per_class``, a seeded random draw of that many of each class."""
    check.float_tensor(images, "images", inf=True)
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64:
        raise TypeError(f"labels must be an int64 tensor, got {check.describe(labels)}")
    classes = [check.integer(c, "class") for c in classes]
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct and non-empty, got {classes}")
    generator = torch.Generator().manual_seed(check.integer(seed, "seed", 0))
    picked = []
    for c in classes:
        idx = (labels == c).nonzero().flatten()
        if per_class is not None:
            k = check.integer(per_class, "per_class", 1)
            if k > len(idx):
                raise ValueError(f"class {c} has {len(idx)} examples, fewer than per_class={k}")
            idx = idx[torch.randperm(len(idx), generator=generator)[:k]]
        picked.append(idx)
    order = torch.cat(picked).sort().values  # keep the data's order
    remap = torch.full((int(labels.max()) + 1,), -1, dtype=torch.int64)
    remap[torch.tensor(classes)] = torch.arange(len(classes))
    return images[order], remap[labels[order]]


def new_head(model: nn.Module, name: str, classes: int, seed: int = 0) -> nn.Module:
    """Replace the Linear layer ``name`` (the output layer) by a new Linear with ``classes``
    outputs, initialised from ``seed``; returns the model (changed in place)."""
    check.module(model)
    layer = model.get_submodule(name)
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"{name} is a {type(layer).__name__}, not a Linear output layer")
    classes = check.integer(classes, "classes", 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(check.integer(seed, "seed", 0))
        head = nn.Linear(layer.in_features, classes, bias=layer.bias is not None)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, head)
    return model


def freeze(model: nn.Module, trainable: Sequence[str] = ()) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter except those of the named modules
    (``freeze(model, ["fc2"])`` leaves only the head to train: a linear probe); returns it."""
    check.module(model)
    names = dict(model.named_modules())
    missing = [t for t in trainable if t not in names]
    if missing:
        raise ValueError(f"the model has no module(s) {missing}")
    for pname, p in model.named_parameters():
        p.requires_grad_(any(pname.startswith(t + ".") for t in trainable))
    return model


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters with ``requires_grad`` (what an optimizer will change)."""
    check.module(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
