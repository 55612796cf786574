"""minicompress: the companion package of the minicompress course on neural-network compression.

One module per idea, each implementing what one chapter derives:

- `minicompress.data`: Fashion-MNIST as whole tensors, offline;
- `minicompress.models`: LeNet-300-100, LeNet-5, MLP;
- `minicompress.train`: one seeded training loop and evaluation;
- `minicompress.measure`: parameters, bits, bytes, MACs, latency, `Report`;
- `minicompress.zoo`: the trained baselines every chapter starts from;
- `minicompress.pruning`, `quantization`, `sharing`, `coding`, `storage`, `binarization`,
  `distillation`, `lowrank`, `architecture`, `transfer`: one module per technique, each
  implementing what its chapter derives;
- `minicompress.backends`: the int8 runtimes the quantization chapter measures;
- `minicompress.labs`: the checkers behind the classroom labs;
- `minicompress.plotting`: the book's figure style (`book_style()`).

Submodules load on first use (``minicompress.zoo`` works after ``import minicompress``),
so ``python -m minicompress.data`` does not import the module twice.
"""

import importlib

__all__ = [
    "architecture",
    "backends",
    "binarization",
    "coding",
    "data",
    "distillation",
    "labs",
    "lowrank",
    "measure",
    "models",
    "plotting",
    "pruning",
    "quantization",
    "sharing",
    "storage",
    "train",
    "transfer",
    "zoo",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"minicompress.{name}")
    raise AttributeError(f"module 'minicompress' has no attribute {name!r}")
