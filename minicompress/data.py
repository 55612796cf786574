"""Fashion-MNIST (and MNIST) as whole-dataset tensors, read offline from idx files.

The course never downloads anything unless the caller asks (`download=True`). The loader
looks for the four original idx files (gzipped or raw) in, in order:

1. the `root` argument,
2. `$MINICOMPRESS_DATA`,
3. the user cache directory (where `download=True` puts them),
4. `/usr/share/datasets/<name>` (Debian's `dataset-fashion-mnist` package),

and in each of the first three also under `<name>/` and torchvision's `<Class>/raw/` layout,
so a folder that torchvision downloaded into works as it is. A split's images and labels
always come from the same folder. A `root` or `$MINICOMPRESS_DATA` that is given is the only
place searched: if it lacks the pair, that is an error naming what is missing, never a
silent fall-back to another copy. Files are read once and cached under their resolved path,
size and modification time, so a changed file or a changed `$MINICOMPRESS_DATA` is re-read.

Whole tensors (60 000 images are 47 MB as uint8) rather than a per-sample `DataLoader`:
slicing a tensor is what keeps training fast on a 2-core machine.

Reference: Xiao, Rasul, Vollgraf (2017), Fashion-MNIST, arXiv:1708.07747.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs
import torch
from torch import Tensor

from minicompress import _validate as check

__all__ = [
    "CLASSES",
    "DataNotFoundError",
    "fashion_mnist",
    "locate",
    "mnist",
    "read_idx",
    "search_paths",
]

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Fashion-MNIST class names, indexed by label."""

_IDX_DTYPES = {0x08: np.uint8}  # the only element type the (Fashion-)MNIST files use
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}


@dataclass(frozen=True)
class _Dataset:
    name: str  # folder name: "fashion-mnist"
    torchvision_class: str  # torchvision's folder and class name: "FashionMNIST"
    debian_package: str


_FASHION = _Dataset("fashion-mnist", "FashionMNIST", "dataset-fashion-mnist")
_MNIST = _Dataset("mnist", "MNIST", "(none in Debian)")


class DataNotFoundError(FileNotFoundError):
    """No copy of the data set was found in any of the places searched."""


def read_idx(path: str | os.PathLike, *, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read one idx file (optionally gzipped) and check its header against its length.

    The idx format is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim``
    big-endian uint32 sizes, then the data. Raises `ValueError` naming the file for a bad
    magic number, an unsupported element type, a header other than ``shape`` (if given), or
    a file shorter or longer than its header says. A gzipped file is decompressed as a
    stream that stops one byte past the size its header declares, so a small file that
    expands to gigabytes costs no more than what the header (and ``shape``) allow.
    """
    path = check.regular_file(path, "path")
    gz = path.suffix == ".gz"
    try:
        with gzip.open(path, "rb") if gz else path.open("rb") as f:
            return _read_idx_stream(f, path, shape, None if gz else path.stat().st_size)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(
            f"{path}: cannot decompress ({err}); the file is corrupt or truncated"
        ) from err


def _read_idx_stream(f, path: Path, shape: tuple | None, file_size: int | None) -> np.ndarray:
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise ValueError(f"{path}: not an idx file (bad magic number {magic.hex()!r})")
    dtype_code, ndim = magic[2], magic[3]
    if dtype_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: idx element type 0x{dtype_code:02x} unsupported (need 0x08)")
    sizes = f.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise ValueError(f"{path}: truncated inside the header")
    declared = tuple(int.from_bytes(sizes[4 * i : 4 + 4 * i], "big") for i in range(ndim))
    if shape is not None and declared != tuple(shape):
        raise ValueError(f"{path}: expected shape {tuple(shape)}, the header says {declared}")
    n = int(np.prod(declared, dtype=object)) if declared else 1
    expected = 4 + 4 * ndim + n
    if file_size is not None and file_size != expected:  # a raw file: check before reading
        raise ValueError(
            f"{path}: header says shape {declared} ({expected} bytes) but the file has "
            f"{file_size} bytes; it is truncated or corrupt"
        )
    data = bytearray()
    while len(data) < n:  # in chunks: a lying header must not allocate what is not there
        chunk = f.read(min(n - len(data), 1 << 22))
        if not chunk:
            raise ValueError(
                f"{path}: header says shape {declared} ({expected} bytes) but the data ends "
                f"after {4 + 4 * ndim + len(data)} bytes; it is truncated or corrupt"
            )
        data += chunk
    if f.read(1):
        raise ValueError(
            f"{path}: header says shape {declared} ({expected} bytes) but the file is longer; "
            "it is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=_IDX_DTYPES[dtype_code]).reshape(declared)


def _user_cache() -> Path:
    return Path(platformdirs.user_cache_dir("minicompress"))


def search_paths(
    root: str | os.PathLike | None = None, dataset: str = "fashion-mnist"
) -> list[Path]:
    """The folders `fashion_mnist`/`mnist` search, in order (see the module docstring)."""
    ds = _dataset(dataset)
    bases = [Path(root)] if root is not None else []
    if os.environ.get("MINICOMPRESS_DATA"):
        bases.append(Path(os.environ["MINICOMPRESS_DATA"]))
    bases.append(_user_cache())
    dirs = [d for b in bases for d in (b, b / ds.name, b / ds.torchvision_class / "raw")]
    dirs.append(Path("/usr/share/datasets") / ds.name)
    return dirs


def _find(stem: str, folder: Path) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _dataset(name: str) -> _Dataset:
    for ds in (_FASHION, _MNIST):
        if name == ds.name:
            return ds
    raise ValueError(f"dataset must be 'fashion-mnist' or 'mnist', got {name!r}")


def _not_found(ds: _Dataset, split: str, dirs: list[Path], given: str = "") -> DataNotFoundError:
    tried = "\n".join(f"  - {d}" for d in dirs)
    debian = (
        f"  - Debian/Ubuntu: sudo apt-get install {ds.debian_package}\n" if ds is _FASHION else ""
    )
    image_stem, label_stem, _ = _FILES[split]
    where = f" in {given}, the only place searched when it is given" if given else ""
    return DataNotFoundError(
        f"{ds.name} ({split}) not found{where}. Looked for {image_stem}[.gz] and "
        f"{label_stem}[.gz] in:\n{tried}\n"
        f"Get it one of these ways:\n{debian}"
        f"  - download once (needs internet): minicompress.data.{ds.name.replace('-', '_')}"
        f"(download=True), or `python -m minicompress.data --download`\n"
        f"  - or point root= or $MINICOMPRESS_DATA at a folder holding the four idx files."
    )


def _places(root: str | os.PathLike | None, ds: _Dataset) -> tuple[list[Path], str]:
    """The folders to search and, when the caller named one place, how it was named."""
    dirs = search_paths(root, ds.name)
    given = ""
    if root is not None:
        given = f"root={os.fspath(root)!r}"
    elif os.environ.get("MINICOMPRESS_DATA"):
        given = f"$MINICOMPRESS_DATA={os.environ['MINICOMPRESS_DATA']!r}"
    return (dirs[:3] if given else dirs), given  # a given place has no fall-back


def _download(ds: _Dataset, target: Path) -> None:
    import torchvision  # only needed here; the offline path never imports it

    cls = getattr(torchvision.datasets, ds.torchvision_class)
    for train in (True, False):
        cls(root=str(target), train=train, download=True)


def locate(
    split: str = "train", root: str | os.PathLike | None = None, dataset: str = "fashion-mnist"
) -> tuple[Path, Path]:
    """The (images, labels) files the loader would read, both from the same folder.

    `DataNotFoundError` if no folder holds the pair, naming what is missing: a folder that
    holds only one of the two files is an error, not a reason to take the other elsewhere.
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    ds = _dataset(dataset)
    dirs, given = _places(root, ds)
    image_stem, label_stem, _ = _FILES[split]
    for folder in dirs:
        image_path, label_path = _find(image_stem, folder), _find(label_stem, folder)
        if image_path is not None and label_path is not None:
            return image_path, label_path
        if image_path is not None or label_path is not None:
            if label_path is None:
                have, lack = image_path, label_stem
            else:
                have, lack = label_path, image_stem
            raise DataNotFoundError(
                f"{folder} holds {have.name} but not {lack}[.gz]: a split's images and labels "
                "must come from the same folder; add the missing file or remove the other"
            )
    raise _not_found(ds, split, dirs, given)


def _identity(path: Path) -> tuple[str, int, int]:
    """What the cache is keyed on: the resolved path, the size and the modification time."""
    info = path.stat()
    return str(path.resolve()), info.st_size, info.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _load_uint8(
    images_id: tuple[str, int, int], labels_id: tuple[str, int, int], count: int
) -> tuple[Tensor, Tensor]:
    image_path, label_path = Path(images_id[0]), Path(labels_id[0])
    images = read_idx(image_path, shape=(count, 28, 28))
    labels = read_idx(label_path, shape=(count,))
    if labels.max() > 9:
        raise ValueError(f"{label_path}: labels must lie in 0..9, found {int(labels.max())}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def _load(
    dataset: str, split: str, root: str | os.PathLike | None, download: bool
) -> tuple[Tensor, Tensor]:
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {type(download).__name__}")
    root = None if root is None else Path(root).expanduser()
    try:
        image_path, label_path = locate(split, root, dataset)
    except DataNotFoundError:
        if not download:
            raise
        env = os.environ.get("MINICOMPRESS_DATA")
        _download(_dataset(dataset), root or (Path(env) if env else _user_cache()))
        image_path, label_path = locate(split, root, dataset)
    count = _FILES[split][2]
    images, labels = _load_uint8(_identity(image_path), _identity(label_path), count)
    # A fresh float copy each call, so a caller can modify it without touching the cache.
    return images.unsqueeze(1).float().div_(255.0), labels.clone()


def fashion_mnist(
    split: str = "train", root: str | os.PathLike | None = None, download: bool = False
) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST as ``(images, labels)``: float32 ``(N, 1, 28, 28)`` in [0, 1], int64 ``(N,)``.

    ``split`` is ``"train"`` (N = 60 000) or ``"test"`` (N = 10 000). Searches the places in
    `search_paths`; downloads through torchvision into the user cache only if
    ``download=True``. Raises `DataNotFoundError` listing every place tried, and
    `ValueError` for a corrupt or truncated file.
    """
    return _load("fashion-mnist", split, root, download)


def mnist(
    split: str = "train", root: str | os.PathLike | None = None, download: bool = False
) -> tuple[Tensor, Tensor]:
    """The original MNIST digits, same format and search rules as `fashion_mnist`.

    Nothing in the course depends on it (there is no offline copy here); it is for readers
    who have the files and want to compare with the papers' MNIST numbers.
    """
    return _load("mnist", split, root, download)


def main(argv: list[str] | None = None) -> int:
    """``python -m minicompress.data [--download] [--root DIR]``: report where the data is.

    With ``--download``, a missing Fashion-MNIST is fetched once through torchvision (with
    its progress bar) into the user cache; without internet the command prints where it
    looked and the other ways to get the data, and exits with status 1.
    """
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--root", default=None, help="a folder to search first")
    parser.add_argument("--download", action="store_true", help="download if not found")
    args = parser.parse_args(argv)
    try:
        for split in _FILES:
            try:
                images, _ = fashion_mnist(split, root=args.root)
            except DataNotFoundError as missing:
                if not args.download:
                    raise
                print("Fashion-MNIST is not installed: downloading it once through torchvision")
                try:
                    images, _ = fashion_mnist(split, root=args.root, download=True)
                except Exception as err:  # no network, a proxy, a mirror down: say so, and how else
                    raise DataNotFoundError(
                        f"the download failed ({type(err).__name__}: {err}).\n{missing}"
                    ) from err
            print(f"fashion-mnist {split}: {len(images)} images from {locate(split, args.root)[0]}")
    except (DataNotFoundError, ValueError) as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
