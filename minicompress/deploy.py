"""Ship a compressed model as a graph another runtime can run, and check it still agrees.

Chapter "Storage, deployment and sharding", § "Deploying a compressed model". Two formats:
ONNX (run by ONNX Runtime, `backends.OnnxModel`) and PyTorch's `torch.export` program (a
``.pt2`` archive: the graph as JSON plus the weights). Both are exported with a dynamic batch
dimension, reloaded from the file, and compared with the PyTorch model on real images.
"""

from __future__ import annotations

import copy
import io
import pickle
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from minicompress import _validate as check
from minicompress import backends


def to_onnx(model: nn.Module, example: Tensor, path: str | Path) -> Path:
    """Write ``model`` as ONNX with a dynamic batch dimension (`backends.export_onnx`).
    § "Deploying a compressed model"."""
    return backends.export_onnx(model, example, check.output_file(path))


def to_exported_program(model: nn.Module, example: Tensor, path: str | Path) -> Path:
    """Trace ``model`` with `torch.export` (batch dimension dynamic, any size ≥ 1) and save the
    program as a ``.pt2`` archive. § "Deploying a compressed model"."""
    check.module(model)
    check.float_tensor(example, "example")
    path = check.output_file(path)
    if example.ndim == 0:
        raise ValueError("example must be a batch: its first dimension is the batch")
    batch = torch.export.Dim("batch", min=1)
    # The program stores its example input: a copy, or a view would save its whole base
    # tensor (e.g. the whole test set); a batch of 1 would be traced as the constant 1.
    example = (
        example[:2].clone() if len(example) > 1 else example.repeat(2, *[1] * (example.ndim - 1))
    )
    program = torch.export.export(
        copy.deepcopy(model).eval(), (example,), dynamic_shapes=({0: batch},)
    )
    torch.export.save(program, str(path))
    return path


def load_exported_program(path: str | Path) -> nn.Module:
    """The module of a saved `torch.export` program, ready to call.

    A ``.pt2`` archive is not pickle-free: ``torch.export.load`` unpickles some members (the
    stored example inputs) with ``weights_only=False``, so a crafted file could run code.
    Every pickled member is therefore first loaded with ``weights_only=True``, and the file
    is refused if one names anything but tensors and containers.
    § "Deploying a compressed model"."""
    path = check.regular_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                data = archive.read(member)
                if _may_be_pickle(member, data):
                    _weights_only(io.BytesIO(data), f"{path.name}: {member}")
        return torch.export.load(str(path)).module()
    except (zipfile.BadZipFile, UnicodeDecodeError, KeyError, EOFError) as error:
        raise ValueError(f"{path} is not a torch.export archive ({error})") from None


def _may_be_pickle(member: str, data: bytes) -> bool:
    """A torch.save file (a zip), a raw pickle (protocol 2+ starts with 0x80), or a ``.pt``
    name. Raw weights live under ``data/weights/`` and may start with any byte."""
    zipped = data[:4] == b"PK\x03\x04"
    raw_pickle = data[:1] == b"\x80" and "/data/weights/" not in f"/{member}"
    return zipped or raw_pickle or member.endswith((".pt", ".pkl"))


def _weights_only(data: io.BytesIO, where: str) -> None:
    try:
        torch.load(data, weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).splitlines()[-1] if str(error) else ""
        raise ValueError(f"{where} holds a pickle that is not weights-only: {first}") from None


def _outputs(reference: nn.Module, candidate: nn.Module, images: Tensor) -> tuple:
    check.module(reference, "reference")
    check.module(candidate, "candidate")
    check.float_tensor(images, "images")
    was_training = reference.training
    try:
        expected = reference.eval()(images)
    finally:
        reference.train(was_training)  # leave the caller's model as it was
    got = candidate(images)
    if got.shape != expected.shape:
        raise ValueError(f"outputs differ in shape: {tuple(expected.shape)} vs {tuple(got.shape)}")
    return expected, got


@torch.no_grad()
def max_output_difference(reference: nn.Module, candidate: nn.Module, images: Tensor) -> float:
    """``max |reference(x) − candidate(x)|`` over every logit of every image: the agreement
    the chapter states a tolerance for. § "Deploying a compressed model"."""
    expected, got = _outputs(reference, candidate, images)
    return float((expected - got).abs().max())


@torch.no_grad()
def agreement(reference: nn.Module, candidate: nn.Module, images: Tensor) -> float:
    """Share of images on which both models predict the same class."""
    expected, got = _outputs(reference, candidate, images)
    return float((expected.argmax(1) == got.argmax(1)).float().mean())
