"""The text the course's language models read: CPython's docstrings, shipped with the package.

The corpus is every docstring of 40 characters or more in the Python 3.11.7 standard
library (tests, IDLE, lib2to3, tkinter and the encodings left out), cleaned by
``inspect.cleandoc`` and restricted to newline and printable ASCII, written once by
``tools/make_corpus.py`` and shipped xz-compressed (PSF licence, like Python itself). Its
SHA-256 is checked on every load, so every machine and Python version reads the same bytes.

Characters are tokens: newline is 0 and the printable characters ``' '`` … ``'~'`` are
1 … 95, so the alphabet is fixed (96 symbols) and needs no vocabulary file. The first 90 %
of the text (cut at a newline) is the training split, the rest the validation split.
"""

from __future__ import annotations

import hashlib
import lzma
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from minicompress import _validate as check

__all__ = ["ALPHABET", "CORPUS_SHA256", "corpus", "decode", "encode", "split"]

CORPUS = Path(__file__).parent / "corpus" / "stdlib_docstrings.txt.xz"
CORPUS_SHA256 = "8f8234e16bdcc26e162543be560b80415894a9897ec329ea4c9f44a98ddbbfcd"
ALPHABET = "\n" + "".join(chr(c) for c in range(32, 127))
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
TRAIN_SHARE = 0.9


@cache
def corpus() -> str:
    """The whole corpus as a string (1 469 762 characters), checked against its SHA-256."""
    data = lzma.decompress(CORPUS.read_bytes())
    if hashlib.sha256(data).hexdigest() != CORPUS_SHA256:
        raise ValueError(f"{CORPUS} does not match its recorded SHA-256; reinstall the package")
    return data.decode("ascii")


def encode(text: str) -> Tensor:
    """Token ids (int64) of ``text``: newline → 0, ``chr(c)`` → c − 31 for printable ASCII."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {check.describe(text)}")
    bad = sorted({c for c in text if c not in _INDEX})
    if bad:
        raise ValueError(f"text has characters outside the 96-symbol alphabet: {bad[:5]!r}")
    return torch.tensor([_INDEX[c] for c in text], dtype=torch.int64)


def decode(ids: Tensor) -> str:
    """The text of token ids (the inverse of `encode`)."""
    if not isinstance(ids, Tensor) or ids.dtype != torch.int64 or ids.dim() != 1:
        raise TypeError(f"ids must be a 1-D int64 tensor, got {check.describe(ids)}")
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= len(ALPHABET)):
        raise ValueError(f"ids must be in 0..{len(ALPHABET) - 1}")
    return "".join(ALPHABET[i] for i in ids.tolist())


@cache
def _split_point() -> int:
    text = corpus()
    return text.index("\n", int(TRAIN_SHARE * len(text))) + 1


@cache
def _encoded() -> Tensor:
    ids = torch.frombuffer(bytearray(corpus().encode("ascii")), dtype=torch.uint8).long()
    return torch.where(ids == 10, 0, ids - 31)  # the same map as `encode`, vectorised


def split(name: str) -> Tensor:
    """Token ids of the ``"train"`` (first 90 %) or ``"validation"`` split (a new tensor)."""
    check.choice(name, "split", ("train", "validation"))
    ids = _encoded()
    return (ids[: _split_point()] if name == "train" else ids[_split_point() :]).clone()
