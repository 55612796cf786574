"""Real int8 kernels: the same model handed to the runtimes people deploy with.

Chapter "Quantization", § "Real int8 speed" and § "Where production went", measures each:

- `torch_int8`: PyTorch's own int8 CPU kernels (the ``x86`` engine, fbgemm underneath)
  through FX graph mode post-training quantization. ``torch.ao.quantization`` is
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
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["OnnxModel", "export_onnx", "onnx_int8", "torch_int8", "torchao_int8"]


def _check_model_and_images(model: nn.Module, images: Tensor) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(images, Tensor) or not images.is_floating_point() or len(images) == 0:
        raise TypeError("images must be a non-empty floating-point tensor (N, ...)")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or inf")


@torch.no_grad()
def torch_int8(
    model: nn.Module, calibration: Tensor, engine: str = "x86", batch_size: int = 250
) -> nn.Module:
    """``model`` converted to PyTorch's int8 kernels by FX post-training quantization.

    The engine's default recipe: per-channel symmetric int8 weights, uint8 activations
    whose ranges are observed on ``calibration`` (a histogram observer), ReLU fused into
    the preceding layer. ``engine="x86"`` quantizes activations to 7 bits (``reduce_range``)
    so that fbgemm's int16 intermediate sums cannot saturate (§ "Integer-only inference").
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    _check_model_and_images(model, calibration)
    if engine not in torch.backends.quantized.supported_engines:
        raise ValueError(
            f"engine {engine!r} is not available; have {torch.backends.quantized.supported_engines}"
        )
    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
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
    _check_model_and_images(model, example)
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
    written as QLinear operators (QOperator format) to ``out_path``.
    """
    from onnxruntime import quantization as ortq

    if not isinstance(calibration, Tensor) or not calibration.is_floating_point():
        raise TypeError("calibration must be a floating-point tensor (N, ...)")
    starts = range(0, len(calibration), batch_size)
    chunks = [{"x": calibration[i : i + batch_size].numpy()} for i in starts]

    class Reader(ortq.CalibrationDataReader):
        def __init__(self) -> None:
            self.chunks = iter(chunks)

        def get_next(self) -> dict | None:
            return next(self.chunks, None)

    out_path = Path(out_path)
    prepared = out_path.with_suffix(".pre.onnx")
    ortq.quant_pre_process(str(onnx_path), str(prepared))
    ortq.quantize_static(
        str(prepared), str(out_path), Reader(), quant_format=ortq.QuantFormat.QOperator,
        per_channel=True, weight_type=ortq.QuantType.QInt8, activation_type=ortq.QuantType.QUInt8,
    )  # fmt: skip
    prepared.unlink()
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

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    quantized = copy.deepcopy(model).eval()
    quantize_(quantized, Int8DynamicActivationInt8WeightConfig())
    return quantized
