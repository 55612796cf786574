"""minicompress: the companion package of the minicompress course on neural-network compression.

One module per idea, each implementing what one chapter derives:

- `minicompress.data`: Fashion-MNIST as whole tensors, offline;
- `minicompress.models`: LeNet-300-100, LeNet-5, MLP, TinyGPT;
- `minicompress.train`: one seeded training loop and evaluation;
- `minicompress.measure`: parameters, bits, bytes, MACs, latency, `Report`;
- `minicompress.zoo`: the trained baselines every chapter starts from;
- `minicompress.pruning`, `quantization`, `sharing`, `coding`, `storage`, `binarization`,
  `distillation`, `lowrank`, `architecture`, `transfer`: one module per technique, each
  implementing what its chapter derives;
- `minicompress.binary_roofline`: the memory and popcount bounds on a packed binary product,
  and this core's clock, L2 bandwidth and kernel times, measured;
- `minicompress.backends`: the int8 runtimes the quantization chapter measures;
- `minicompress.checkpoint`, `fsdp`, `deploy`: files, shards and runtimes (chapter 8);
- `minicompress.text`, `lm`: the shipped text corpus, training and scoring a language model
  in bits per character;
- `minicompress.groupwise`, `formats`, `kvcache`, `calibration`, `gptq`, `awq`, `smoothquant`,
  `outliers`, `damage`, `lowbit_matmul`: quantizing a small language model (chapter 9);
- `minicompress.wanda`, `semistructured`, `sparsegpt`: pruning it (chapter 10);
- `minicompress.lora`: LoRA and QLoRA, adapting a frozen (compressed) model (chapter 10);
- `minicompress.labs`: the checkers behind the classroom labs;
- `minicompress.plotting`: the book's figure style (`book_style()`).

Submodules load on first use (``minicompress.zoo`` works after ``import minicompress``),
so ``python -m minicompress.data`` does not import the module twice.
"""

import importlib

__all__ = [
    "architecture",
    "awq",
    "backends",
    "binarization",
    "binary_roofline",
    "calibration",
    "checkpoint",
    "coding",
    "damage",
    "data",
    "deploy",
    "distillation",
    "formats",
    "fsdp",
    "gptq",
    "groupwise",
    "kvcache",
    "labs",
    "lm",
    "lora",
    "lowbit_matmul",
    "lowrank",
    "measure",
    "models",
    "outliers",
    "plotting",
    "pruning",
    "quantization",
    "semistructured",
    "sharing",
    "smoothquant",
    "sparsegpt",
    "storage",
    "text",
    "train",
    "transfer",
    "wanda",
    "zoo",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"minicompress.{name}")
    raise AttributeError(f"module 'minicompress' has no attribute {name!r}")
