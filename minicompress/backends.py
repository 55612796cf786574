"""Real int8 kernels: the same model handed to the runtimes people deploy with.

Chapter "Quantization", § "Real int8 speed" and § "Where production went", measures each:

- `default_engine`: the quantized engine to use on this machine, ``x86`` (fbgemm
  underneath) where PyTorch has it, else ``qnnpack`` (ARM: Apple Silicon, Raspberry Pi);
- `quantized_engine`: a ``with`` block inside which a given engine is the active one (a
  model converted for ``qnnpack`` must also run under ``qnnpack``);
- `torch_int8`: PyTorch's own int8 CPU kernels through FX graph mode post-training
  quantization. ``torch.ao.quantization`` is
  deprecated in favour of torchao, but it is still the stock eager-CPU int8 path;
- `export_onnx` / `onnx_int8` / `OnnxModel`: ONNX Runtime's static int8 quantization
  (QLinearConv/QLinearMatMul kernels), wrapped as an ``nn.Module`` so `evaluate`,
  `measure_latency` and `Report.measure` work on it unchanged;
- `torchao_int8`: torchao's dynamic int8 (activations quantized per batch, weights per
  channel) for Linear layers; on CPU its speed comes only through ``torch.compile``.

Each runtime is imported when first used, so the rest of the package does not need it.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from minicompress import _validate as check

__all__ = [
    "OnnxModel", "default_engine", "export_onnx", "onnx_int8", "quantized_engine", "torch_int8",
    "torchao_int8",
]  # fmt: skip

_ENGINE_PREFERENCE = ("x86", "qnnpack")  # x86: fbgemm + onednn; qnnpack: ARM (and x86 too)


def default_engine() -> str:
    """The quantized engine for this machine: ``"x86"`` where
    ``torch.backends.quantized.supported_engines`` has it, else ``"qnnpack"``.

    The one place the package chooses an engine (§ "Real int8 speed on this CPU"): ``x86``
    exists only on x86-64 builds; on ARM (Apple Silicon, Raspberry Pi, Graviton) PyTorch
    ships ``qnnpack``. Raises RuntimeError when neither is available.
    """
    supported = list(torch.backends.quantized.supported_engines)
    for engine in _ENGINE_PREFERENCE:
        if engine in supported:
            return engine
    raise RuntimeError(
        f"this PyTorch build has no int8 CPU engine: supported_engines = {supported}, "
        f"need one of {list(_ENGINE_PREFERENCE)}"
    )


@contextmanager
def quantized_engine(name: str) -> Iterator[str]:
    """Inside the ``with`` block, ``name`` is ``torch.backends.quantized.engine``; on leaving
    it (normally or by an exception) the engine that was active before is restored.

    The engine is global state: int8 weights are packed for the engine that is active when
    the model is converted (`torch_int8`), and some quantized operators (max pooling, for one)
    choose their kernel by the engine active when they run, so a model converted for
    ``qnnpack`` is timed and evaluated under ``quantized_engine("qnnpack")``
    (§ "Real int8 speed on this CPU"). Raises ValueError for an engine this PyTorch build
    does not have (``torch.backends.quantized.supported_engines``).
    """
    check.choice(name, "engine", list(torch.backends.quantized.supported_engines))
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield name
    finally:
        torch.backends.quantized.engine = previous


def _check_model_and_images(model: nn.Module, images: Tensor, name: str = "images") -> None:
    check.module(model)
    check.float_tensor(images, name)
    if images.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension (N, ...), got a 0-d tensor")


@torch.no_grad()
def torch_int8(
    model: nn.Module, calibration: Tensor, engine: str | None = None, batch_size: int = 250
) -> nn.Module:
    """``model`` converted to PyTorch's int8 kernels by FX post-training quantization.

    The engine's default recipe: per-channel symmetric int8 weights, uint8 activations
    whose ranges are observed on ``calibration`` (a histogram observer), ReLU fused into
    the preceding layer. ``engine=None`` takes `default_engine`; ``engine="x86"``
    quantizes activations to 7 bits (``reduce_range``) so that fbgemm's int16 intermediate
    sums cannot saturate (§ "Integer-only inference"). The returned model's weights
    are packed for ``engine``, but some of its operators run the engine that is active when
    it is called: time it inside ``quantized_engine(engine)``. The previously active engine
    is restored before returning.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    _check_model_and_images(model, calibration, "calibration")
    check.integer(batch_size, "batch_size", 1)
    engine = default_engine() if engine is None else engine
    if engine not in torch.backends.quantized.supported_engines:
        raise ValueError(
            f"engine {engine!r} is not available; have {torch.backends.quantized.supported_engines}"
        )
    with quantized_engine(engine), warnings.catch_warnings():  # deprecation notices
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "Please use quant_min", UserWarning)
        prepared = prepare_fx(
            copy.deepcopy(model).eval(),
            get_default_qconfig_mapping(engine),
            example_inputs=(calibration[:1],),
        )
        for start in range(0, len(calibration), batch_size):
            prepared(calibration[start : start + batch_size])
        return convert_fx(prepared)


def export_onnx(model: nn.Module, example: Tensor, path: str | Path) -> Path:
    """Write ``model`` as an ONNX graph with a dynamic batch dimension; return the path."""
    _check_model_and_images(model, example, "example")
    path = Path(path)
    torch.onnx.export(
        copy.deepcopy(model).eval(), (example[:1],), str(path), input_names=["x"],
        output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False,
    )  # fmt: skip
    return path


def onnx_int8(
    onnx_path: str | Path, calibration: Tensor, out_path: str | Path, batch_size: int = 100
) -> Path:
    """ONNX Runtime's static int8 quantization of the graph at ``onnx_path``.

    Per-channel int8 weights, uint8 activations calibrated by min–max on ``calibration``,
    written as QLinear operators (QOperator format) to ``out_path``. The pre-processed
    graph goes to a temporary directory, removed afterwards.
    """
    from onnxruntime import quantization as ortq

    onnx_path = check.regular_file(onnx_path, "onnx_path")
    check.float_tensor(calibration, "calibration")
    check.integer(batch_size, "batch_size", 1)
    starts = range(0, len(calibration), batch_size)
    chunks = [{"x": calibration[i : i + batch_size].numpy()} for i in starts]

    class Reader(ortq.CalibrationDataReader):
        def __init__(self) -> None:
            self.chunks = iter(chunks)

        def get_next(self) -> dict | None:
            return next(self.chunks, None)

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="minicompress-onnx-") as tmp:  # removed on exit
        prepared = Path(tmp) / "pre.onnx"
        ortq.quant_pre_process(str(onnx_path), str(prepared))
        ortq.quantize_static(
            str(prepared), str(out_path), Reader(), quant_format=ortq.QuantFormat.QOperator,
            per_channel=True, weight_type=ortq.QuantType.QInt8,
            activation_type=ortq.QuantType.QUInt8,
        )  # fmt: skip
    return out_path


class OnnxModel(nn.Module):
    """An ONNX Runtime session behind the ``nn.Module`` interface (torch in, torch out).

    Runs on the CPU execution provider with ``threads`` intra-op threads, so that timings
    compare with PyTorch's at ``torch.get_num_threads()``.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ONNX file at {self.path}")
        options = ort.SessionOptions()
        if threads is not None:
            check.integer(threads, "threads", 1)
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )

    def forward(self, x: Tensor) -> Tensor:
        (y,) = self.session.run(None, {"x": x.detach().float().contiguous().numpy()})
        return torch.from_numpy(y)


def torchao_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Linear layers run torchao's dynamic int8 × int8 matmul.

    Activations are quantized per row on the fly, weights per output channel, once.
    Convolutions are left in float. Wrap the result in ``torch.compile`` for speed on CPU.
    """
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    check.module(model)
    quantized = copy.deepcopy(model).eval()
    quantize_(quantized, Int8DynamicActivationInt8WeightConfig())
    return quantized
