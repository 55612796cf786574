"""Argument checks shared by every public function of the package: one rule, one message style.

Each check returns the value it accepted (converted where that is harmless, e.g. an int
``temperature`` to float) and raises ``TypeError`` for the wrong kind of thing and
``ValueError`` for the right kind with a wrong value. Messages read
``"<name> must be <what>, got <value>"``, naming the argument as the caller spelled it.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn


def describe(x: object) -> str:
    """How an argument is named in a message: a tensor by its dtype, anything else by type."""
    return f"tensor of dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__


def float_tensor(x: object, name: str, *, empty: bool = False, nan: bool = False,
                 inf: bool = False, why: str = "") -> Tensor:  # fmt: skip
    """A floating-point tensor; empty, NaN and ±inf are refused unless allowed.

    ``why`` ends the message about NaN/inf with the reason they are refused.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {describe(x)}")
    if not empty and x.numel() == 0:
        raise ValueError(f"{name} is empty")
    refused = {  # (nan allowed, inf allowed) -> what is refused, and how to find it
        (False, False): ("NaN or inf", lambda t: ~torch.isfinite(t)),
        (False, True): ("NaN", torch.isnan),
        (True, False): ("inf", torch.isinf),
    }.get((nan, inf))
    if refused is not None and refused[1](x).any():
        raise ValueError(f"{name} contains {refused[0]}" + (f"; {why}" if why else ""))
    return x


def bool_vector(x: object, name: str, why: str = "") -> Tensor:
    """A non-empty 1-D bool tensor (per-item outcomes); ``why`` says where one comes from."""
    if not isinstance(x, Tensor) or x.dtype != torch.bool or x.dim() != 1:
        shape = f" of shape {tuple(x.shape)}" if isinstance(x, Tensor) else ""
        raise TypeError(f"{name} must be a 1-D bool tensor{why and f' ({why})'}, got "
                        f"{describe(x)}{shape}")  # fmt: skip
    if x.numel() == 0:
        raise ValueError(f"{name} is empty")
    return x


def integer(value: object, name: str, low: int | None = None, high: int | None = None) -> int:
    """An int (not a bool) in [low, high]; either bound may be None."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            raise ValueError(f"{name} must be an int >= {low}, got {value}")
        if low is None:
            raise ValueError(f"{name} must be an int <= {high}, got {value}")
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    return int(value)


def number(
    value: object, name: str, low: float | None = None, high: float | None = None,
    *, low_open: bool = False,
) -> float:  # fmt: skip
    """A finite real number (int or float, not bool) in [low, high] (``(low, high]`` if
    ``low_open``); either bound may be None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if not math.isfinite(value) or too_low or too_high:
        if low is not None and high is not None:
            wanted = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
        elif low is not None:
            wanted = f"a finite number {'>' if low_open else '>='} {low:g}"
        else:
            wanted = "a finite number" + (f" <= {high:g}" if high is not None else "")
        raise ValueError(f"{name} must be {wanted}, got {value}")
    return float(value)


def probability(value: object, name: str) -> float:
    """A number in [0, 1]."""
    return number(value, name, 0.0, 1.0)


def temperature(value: object, name: str = "temperature") -> float:
    """A finite number > 0."""
    return number(value, name, 0.0, low_open=True)


def bits(value: object, low: int, high: int, name: str = "bits", what: str = "") -> int:
    """A bit width in low..high; ``what`` says what the width is for."""
    value = integer(value, name)
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}{what}, got {value}")
    return value


def axis(value: object, ndim: int) -> int | None:
    """None (per tensor) or a dimension of an ``ndim``-d tensor, made non-negative."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"axis must be an int or None, got {type(value).__name__}")
    if not -ndim <= value < ndim:
        raise ValueError(f"axis {value} is out of range for a tensor with {ndim} dimensions")
    return value % ndim


def choice(value: object, name: str, options: Sequence) -> object:
    """One of ``options``."""
    if not any(value == o and type(value) is type(o) for o in options):
        shown = ", ".join(repr(o) for o in options)
        raise ValueError(f"{name} must be one of {shown}, got {value!r}")
    return value


def module(value: object, name: str = "model") -> nn.Module:
    """A ``torch.nn.Module``."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    return value


def regular_file(path: object, name: str = "path") -> Path:
    """An existing regular file: a device or pipe (``/dev/zero``) could be read forever."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}: no file at {path}") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{name}: {path} is not a regular file")
    return path


def read_file(path: object, name: str = "path") -> bytes:
    """A regular file's bytes, reading at most the size it had when opened."""
    path = regular_file(path, name)
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        return f.read(size)


def _path(path: object, name: str) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def output_folder(path: object, name: str = "directory") -> Path:
    """A folder to write into, created if missing; an existing file there is refused."""
    path = _path(path, name)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}: {path} exists and is not a folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def output_file(path: object, name: str = "path") -> Path:
    """A file to write: its folder must exist (a typo should not create folders)."""
    path = _path(path, name)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{name}: no folder {path.parent} to write {path.name} into")
    if path.is_dir():
        raise ValueError(f"{name}: {path} is a folder")
    return path
