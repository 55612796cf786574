"""Ship a compressed model as a graph another runtime can run, and check it still agrees.

Chapter "Storage, deployment and sharding", § "Deploying a compressed model". Two formats:
ONNX (run by ONNX Runtime, `backends.OnnxModel`) and PyTorch's `torch.export` program (a
``.pt2`` archive: the graph as JSON plus the weights). Both are exported with a dynamic batch
dimension, reloaded from the file, and compared with the PyTorch model on real images.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor, nn

from minicompress import _validate as check
from minicompress import backends


def to_onnx(model: nn.Module, example: Tensor, path: str | Path) -> Path:
    """Write ``model`` as ONNX with a dynamic batch dimension (`backends.export_onnx`).
    § "Deploying a compressed model"."""
    return backends.export_onnx(model, example, path)


def to_exported_program(model: nn.Module, example: Tensor, path: str | Path) -> Path:
    """Trace ``model`` with `torch.export` (batch dimension dynamic, any size ≥ 1) and save the
    program as a ``.pt2`` archive. § "Deploying a compressed model"."""
    check.module(model)
    check.float_tensor(example, "example")
    batch = torch.export.Dim("batch", min=1)
    # The program stores its example input: a copy, or a view would save its whole base
    # tensor (e.g. the whole test set); a batch of 1 would be traced as the constant 1.
    example = (
        example[:2].clone() if len(example) > 1 else example.repeat(2, *[1] * (example.ndim - 1))
    )
    program = torch.export.export(
        copy.deepcopy(model).eval(), (example,), dynamic_shapes=({0: batch},)
    )
    path = Path(path)
    torch.export.save(program, str(path))
    return path


def load_exported_program(path: str | Path) -> nn.Module:
    """The module of a saved `torch.export` program, ready to call."""
    path = check.regular_file(path)
    return torch.export.load(str(path)).module()


@torch.no_grad()
def max_output_difference(reference: nn.Module, candidate: nn.Module, images: Tensor) -> float:
    """max |reference(x) − candidate(x)| over every logit of every image: the agreement the
    chapter states a tolerance for. § "Deploying a compressed model"."""
    check.module(reference, "reference")
    check.module(candidate, "candidate")
    check.float_tensor(images, "images")
    return float((reference.eval()(images) - candidate(images)).abs().max())


@torch.no_grad()
def agreement(reference: nn.Module, candidate: nn.Module, images: Tensor) -> float:
    """Share of images on which both models predict the same class."""
    check.module(reference, "reference")
    check.module(candidate, "candidate")
    check.float_tensor(images, "images")
    same = reference.eval()(images).argmax(1) == candidate(images).argmax(1)
    return float(same.float().mean())
