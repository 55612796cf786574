"""Measuring a model: parameters, zeros, bits, bytes on disk, MACs, latency, and one `Report`.

Chapter "Measuring a model" derives each quantity; every later chapter reports its results
with `Report` so that all chapters' tables and plots compare like with like.

Conventions (the chapter explains why):

- parameters count weights *and* biases, as Han et al. (2015) do (LeNet-300-100: 266 610);
- sparsity = zeros / parameters;
- size in bits = Σ numel · bits per element, over the tensors of the state dict;
- bytes on disk = the length of what `torch.save` writes for the state dict, container
  overhead included;
- one multiply-accumulate (MAC) = one multiply and one add = 2 FLOPs;
- latency = the median of timed repeats after warm-up, with the thread count recorded;
- compression ratio = original size / compressed size (so "12×" means 12 times smaller).
"""

from __future__ import annotations

import io
import math
import os
import platform
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.train import _check_data, evaluate, predict

__all__ = [
    "Latency",
    "PairedDifference",
    "Report",
    "compression_ratio",
    "count_macs",
    "count_nonzero",
    "correct",
    "count_parameters",
    "layer_macs",
    "layer_summary",
    "machine",
    "measure_latency",
    "paired_difference",
    "paired_from_correct",
    "plot_reports",
    "results_table",
    "serialized_size",
    "simd_extensions",
    "size_in_bits",
    "sparsity",
]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (weights and biases): Σ over parameters of their numel."""
    check.module(model)
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Number of parameters that are not exactly zero."""
    check.module(model)
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


def sparsity(model: nn.Module) -> float:
    """Fraction of parameters that are exactly zero: zeros / parameters (§ "Sparsity")."""
    total = count_parameters(model)
    if total == 0:
        raise ValueError("the model has no parameters")
    return 1.0 - count_nonzero(model) / total


def _tensors(obj: object) -> list[Tensor]:
    """Every tensor in a module's state dict, a mapping, a sequence, or a tensor; a sparse
    tensor as the tensors it stores (CSR: values, column indices, row pointers)."""
    if isinstance(obj, Tensor):
        if obj.layout in (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc):
            compressed, plain = (
                (obj.crow_indices(), obj.col_indices())
                if obj.layout in (torch.sparse_csr, torch.sparse_bsr)
                else (obj.ccol_indices(), obj.row_indices())
            )
            return [obj.values(), compressed, plain]
        if obj.layout == torch.sparse_coo:
            return [obj._values(), obj._indices()]
        return [obj]
    if isinstance(obj, nn.Module):
        return _tensors(obj.state_dict())
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _tensors(v)]
    return []  # scalars, dtypes, strings: metadata, not storage


def size_in_bits(obj: nn.Module | Mapping | Tensor) -> int:
    """Bits to store the tensors themselves: Σ numel · (bits per element of its dtype).

    Counts a module's whole state dict (parameters and buffers). A sparse tensor counts
    what it stores (CSR: its values, column indices and row pointers), not its dense size.
    It is the information content of the numbers, without any file format around them;
    see `serialized_size`.
    """
    if not isinstance(obj, nn.Module | Mapping | Tensor):
        raise TypeError(f"expected a Module, state dict or Tensor, got {type(obj).__name__}")
    return sum(t.numel() * t.element_size() * 8 for t in _tensors(obj))


def serialized_size(obj: nn.Module | Mapping) -> int:
    """Bytes that ``torch.save`` writes for a module's state dict (or a given state dict).

    This is what a checkpoint costs on disk: the tensors' bytes plus the zip container
    and pickled metadata. Measured by saving into memory, not estimated. (``torch.save``
    names the folder inside its zip after the file, so the size moves by a few bytes per
    tensor with the file name; in memory the folder is ``archive``, as for ``archive.pt``.)
    """
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a Module or a state dict, got {type(obj).__name__}")
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes


def compression_ratio(original: float, compressed: float) -> float:
    """original / compressed: "12×" means the compressed model is 12 times smaller."""
    for name, value in (("original", original), ("compressed", compressed)):
        check.number(value, f"{name} size", 0.0, low_open=True)
    return original / compressed


def layer_macs(model: nn.Module, example: Tensor) -> dict[str, int]:
    """Multiply-accumulates of each Linear and Conv2d layer for one forward pass of ``example``.

    Linear: MACs = out_numel · in_features. Conv2d: MACs = out_numel · (C_in / groups) · k_h · k_w
    (each output value is a dot product of that length). Other layers (ReLU, pooling) are
    ignored: they cost no multiplications. Counts scale with the batch in ``example``.
    """
    check.module(model)
    if not isinstance(example, Tensor):
        raise TypeError(f"example must be a Tensor, got {type(example).__name__}")
    counts: dict[str, int] = {}

    def hook(name: str):
        def record(module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            if isinstance(module, nn.Linear):
                per_output = module.in_features
            else:
                k_h, k_w = module.kernel_size
                per_output = module.in_channels // module.groups * k_h * k_w
            counts[name] = counts.get(name, 0) + output.numel() * per_output

        return record

    handles = [
        m.register_forward_hook(hook(n))
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.Conv2d)
    ]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return counts


def count_macs(model: nn.Module, example: Tensor) -> int:
    """Total multiply-accumulates of one forward pass (see `layer_macs`); FLOPs ≈ 2 · MACs."""
    return sum(layer_macs(model, example).values())


def layer_summary(model: nn.Module, example: Tensor):
    """A `pandas.DataFrame` with one row per Linear/Conv2d layer: its type, weight shape,
    parameters (weights + bias), share of all parameters, MACs for ``example``, share of MACs.
    """
    import pandas as pd

    macs = layer_macs(model, example)
    total_params = count_parameters(model)
    total_macs = sum(macs.values())
    rows = []
    for name, module in model.named_modules():
        if name in macs:
            params = sum(p.numel() for p in module.parameters())
            rows.append({
                "layer": name,
                "type": type(module).__name__,
                "weight shape": tuple(module.weight.shape),
                "parameters": params,
                "% of parameters": round(100 * params / total_params, 1),
                "MACs": macs[name],
                "% of MACs": round(100 * macs[name] / total_macs, 1),
            })  # fmt: skip
    return pd.DataFrame(rows).set_index("layer")


@dataclass(frozen=True)
class Latency:
    """Timing of repeated forward passes: median and quartiles in milliseconds."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    repeats: int
    warmup: int
    batch_size: int
    threads: int

    def __str__(self) -> str:
        return (
            f"{self.median_ms:.3f} ms median (IQR {self.q1_ms:.3f}–{self.q3_ms:.3f}), "
            f"batch {self.batch_size}, {self.repeats} repeats, {self.threads} thread(s)"
        )


def measure_latency(
    model: nn.Module,
    example: Tensor,
    *,
    warmup: int = 10,
    repeats: int = 50,
    threads: int | None = None,
) -> Latency:
    """Time ``model(example)``: ``warmup`` untimed calls, then the median of ``repeats`` timed ones.

    The median, not the mean: a few calls interrupted by the OS would drag the mean up.
    ``threads`` sets ``torch.set_num_threads`` for the measurement (and restores it);
    ``None`` keeps the current setting. Runs in eval mode under ``torch.inference_mode``.
    """
    check.module(model)
    if not isinstance(example, Tensor) or example.ndim < 1:
        raise TypeError("example must be a batched Tensor")
    check.integer(warmup, "warmup", 0)
    check.integer(repeats, "repeats", 1)
    if threads is not None:
        check.integer(threads, "threads", 1)
    previous = torch.get_num_threads()
    was_training = model.training
    model.eval()
    times: list[float] = []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                model(example)
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1e3)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
        model.train(was_training)
    q1, median, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else times * 3
    return Latency(median, q1, q3, repeats, warmup, len(example), used)


_SIMD = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "sve")


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of model a minus accuracy of model b on the same n test images.

    ``only_a``: images a classifies correctly and b does not; ``only_b``: the reverse.
    """

    only_a: int
    only_b: int
    n: int

    @property
    def difference(self) -> float:
        """d = (only_a − only_b) / n, the difference of the two accuracies."""
        return (self.only_a - self.only_b) / self.n

    @property
    def standard_error(self) -> float:
        """SE(d) = √(only_a + only_b − (only_a − only_b)²/n) / n, from the paired outcomes."""
        discordant, gap = self.only_a + self.only_b, self.only_a - self.only_b
        return math.sqrt(max(discordant - gap * gap / self.n, 0.0)) / self.n

    @property
    def z(self) -> float:
        """McNemar's statistic (only_a − only_b) / √(only_a + only_b); 0 when no image differs."""
        discordant = self.only_a + self.only_b
        return (self.only_a - self.only_b) / math.sqrt(discordant) if discordant else 0.0

    @property
    def p_value(self) -> float:
        """The two-sided p-value of McNemar's test, erfc(abs(z) / √2) (normal approximation)."""
        return math.erfc(abs(self.z) / math.sqrt(2))


def correct(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """Which of ``images`` the model classifies correctly: a bool tensor (N,), the per-image
    outcomes that `paired_from_correct` compares (chapter "Measuring a model",
    § "Accuracy, and how precisely we know it"). Its mean is the accuracy."""
    check.module(model)
    _check_data(images, labels)
    logits = predict(model, images)
    if logits.dim() != 2:
        raise ValueError(f"model must return (N, classes) logits, got shape {tuple(logits.shape)}")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must be class indices in 0..{logits.shape[1] - 1}, got "
                         f"{int(labels.min())}..{int(labels.max())}")  # fmt: skip
    return logits.argmax(1) == labels


def paired_from_correct(right_a: Tensor, right_b: Tensor) -> PairedDifference:
    """`paired_difference` from the per-image outcomes of two models (`correct`), so that
    a model compared with several others is run on the test images only once."""
    right_a = check.bool_vector(right_a, "right_a", "from measure.correct")
    right_b = check.bool_vector(right_b, "right_b", "from measure.correct")
    if right_a.shape != right_b.shape:
        raise ValueError(f"right_a has {len(right_a)} images, right_b {len(right_b)}: "
                         "compare two models on the same images")  # fmt: skip
    return PairedDifference(
        only_a=int((right_a & ~right_b).sum()),
        only_b=int((~right_a & right_b).sum()),
        n=len(right_a),
    )


def paired_difference(
    model_a: nn.Module, model_b: nn.Module, images: Tensor, labels: Tensor
) -> PairedDifference:
    """Compare two models on the *same* test images (chapter "Measuring a model",
    § "Accuracy, and how precisely we know it").

    Only the images on which the two disagree carry information about which is better, so
    the difference d = (only_a − only_b)/n has the standard error
    √(only_a + only_b − (only_a − only_b)²/n) / n — much smaller than the √2 · SE of two
    independent test sets when the models mostly agree — and McNemar's test asks whether
    only_a and only_b differ by more than chance.
    """
    check.module(model_a, "model_a")
    check.module(model_b, "model_b")
    return paired_from_correct(correct(model_a, images, labels), correct(model_b, images, labels))


def _cpu() -> tuple[str, set[str]]:
    """The CPU's name and its feature flags, read from /proc/cpuinfo (empty set elsewhere)."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")) and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return cpu, flags


def simd_extensions() -> set[str]:
    """The vector extensions among avx2, avx512f, avx512_vnni, avx_vnni, amx_int8, asimd, sve
    that this CPU reports (an empty set where /proc/cpuinfo is not available, e.g. macOS).

    Chapters state hardware facts conditionally on this: e.g. x86 int8 kernels saturate
    int16 pairs without VNNI (chapter "Quantization", § "Integer-only inference").
    """
    return {f for f in _SIMD if f in _cpu()[1]}


def machine() -> str:
    """One line naming the CPU, its vector extensions, cores, torch version and threads.

    The vector extensions matter: int8 kernels are several times faster with AVX-512 VNNI
    (or AMX) than with AVX2 alone, so a quantization speed-up means little without them.
    """
    cpu, flags = _cpu()
    simd = "/".join(f for f in _SIMD if f in flags) or "unknown SIMD"
    return (
        f"{cpu} ({simd}), {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)"
    )


@dataclass(frozen=True)
class Report:
    """What a compressed model bought: one row of a chapter's results table.

    ``size_bytes`` is what the model costs stored (by default the ``torch.save`` size of its
    state dict; a chapter with its own file format passes that file's length).
    """

    name: str
    accuracy: float
    size_bytes: int
    parameters: int
    nonzero: int
    latency_ms: float | None = None

    @property
    def sparsity(self) -> float:
        """zeros / parameters."""
        return 1.0 - self.nonzero / self.parameters

    @classmethod
    def measure(
        cls,
        name: str,
        model: nn.Module,
        images: Tensor,
        labels: Tensor,
        *,
        size_bytes: int | None = None,
        latency_example: Tensor | None = None,
    ) -> Report:
        """Measure ``model``: test accuracy on (images, labels), bytes, counts, and latency
        (median ms on ``latency_example``) if one is given."""
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        latency = None
        if latency_example is not None:
            latency = measure_latency(model, latency_example).median_ms
        return cls(
            name=name,
            accuracy=evaluate(model, images, labels),
            size_bytes=serialized_size(model) if size_bytes is None else size_bytes,
            parameters=count_parameters(model),
            nonzero=count_nonzero(model),
            latency_ms=latency,
        )

    def to_dict(self) -> dict:
        """The report as a plain dict (JSON-ready)."""
        return asdict(self)


def results_table(reports: Sequence[Report], baseline: Report | None = None):
    """A `pandas.DataFrame`, one row per report: accuracy (%), Δ vs. baseline (pp), size,
    compression ratio vs. baseline, parameters, non-zeros, sparsity, and latency if measured.

    ``baseline`` defaults to the first report.
    """
    import pandas as pd  # imported here: pandas is only needed for tables

    if not reports or not all(isinstance(r, Report) for r in reports):
        raise TypeError("reports must be a non-empty sequence of Report")
    base = baseline or reports[0]
    rows = []
    for r in reports:
        row = {
            "model": r.name,
            "accuracy (%)": round(100 * r.accuracy, 2),
            "Δ acc (pp)": round(100 * (r.accuracy - base.accuracy), 2),
            "size (KB)": round(r.size_bytes / 1000, 1),
            "ratio (×)": round(compression_ratio(base.size_bytes, r.size_bytes), 2),
            "parameters": r.parameters,
            "non-zero": r.nonzero,
            "sparsity (%)": round(100 * r.sparsity, 1),
        }
        if any(x.latency_ms is not None for x in reports):
            row["latency (ms)"] = None if r.latency_ms is None else round(r.latency_ms, 3)
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def plot_reports(reports: Sequence[Report], ax=None):
    """Accuracy against stored size (log scale): the course's common picture of a trade-off."""
    import matplotlib.pyplot as plt

    if not reports or not all(isinstance(r, Report) for r in reports):
        raise TypeError("reports must be a non-empty sequence of Report")
    if ax is None:
        # the width and dpi come from rcParams: mc.plotting.book_style() in the book
        _, ax = plt.subplots(figsize=(7, 4.9))
    for r in reports:
        ax.scatter(r.size_bytes / 1000, 100 * r.accuracy)
        ax.annotate(
            r.name,
            (r.size_bytes / 1000, 100 * r.accuracy),
            fontsize="small",
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("stored size (KB, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    return ax
