"""The runtimes of `minicompress.backends` compute what the float model computes, up to int8
rounding, and reject bad arguments."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from minicompress import backends


def _model_and_data() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)
    ).eval()
    return model, torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def _close_to_float(out: torch.Tensor, ref: torch.Tensor, tolerance: float) -> None:
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < tolerance * ref.abs().max(), float((out - ref).abs().max())
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.9


def test_torch_int8_runs_quantized_kernels_close_to_float():
    model, x = _model_and_data()
    q = backends.torch_int8(model, x)
    kinds = {type(m).__module__ for m in q.modules()}
    assert any("quantized" in k for k in kinds)  # real int8 modules, not fake quantization
    with torch.no_grad():
        _close_to_float(q(x), model(x), 0.05)


def test_onnx_float_equals_torch_and_int8_is_close(tmp_path):
    pytest.importorskip("onnxruntime")
    model, x = _model_and_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = backends.export_onnx(model, x, tmp_path / "m.onnx")
        path8 = backends.onnx_int8(path, x, tmp_path / "m8.onnx")
    assert path8.stat().st_size < path.stat().st_size / 3  # int8 weights: about a quarter
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(backends.OnnxModel(path)(x), ref, rtol=1e-4, atol=1e-5)
    _close_to_float(backends.OnnxModel(path8, threads=1)(x), ref, 0.1)


def test_torchao_int8_is_close_to_float():
    pytest.importorskip("torchao")
    model, x = _model_and_data()
    q = backends.torchao_int8(model)
    with torch.no_grad():
        _close_to_float(q(x), model(x), 0.05)
    assert type(q[3].weight) is not torch.nn.Parameter or q[3].weight.dtype != torch.float32


def test_backends_reject_bad_arguments(tmp_path):
    model, x = _model_and_data()
    with pytest.raises(TypeError, match="calibration"):
        backends.torch_int8(model, x.to(torch.int64))
    with pytest.raises(ValueError, match="NaN"):
        backends.torch_int8(model, torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="engine"):
        backends.torch_int8(model, x, engine="tpu")
    with pytest.raises(TypeError, match="model"):
        backends.torchao_int8("model")
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        backends.OnnxModel(tmp_path / "missing.onnx")


def test_quantized_engine_is_active_inside_and_restored_after():
    before = torch.backends.quantized.engine
    other = next(e for e in torch.backends.quantized.supported_engines if e != before)
    with backends.quantized_engine(other) as name:
        assert name == other == torch.backends.quantized.engine
    assert torch.backends.quantized.engine == before
    with pytest.raises(RuntimeError, match="inside"), backends.quantized_engine(other):
        raise RuntimeError("raised inside the block")
    assert torch.backends.quantized.engine == before  # restored on an exception too


def test_qnnpack_model_runs_under_quantized_engine_close_to_float():
    if "qnnpack" not in torch.backends.quantized.supported_engines:
        pytest.skip("this PyTorch build has no qnnpack engine")
    model, x = _model_and_data()
    before = torch.backends.quantized.engine
    q = backends.torch_int8(model, x, engine="qnnpack")
    with torch.no_grad(), backends.quantized_engine("qnnpack"):
        out = q(x)
    _close_to_float(out, model(x).detach(), 0.05)
    assert torch.backends.quantized.engine == before


def test_quantized_engine_rejects_an_unknown_engine():
    before = torch.backends.quantized.engine
    with pytest.raises(ValueError, match="engine must be one of"), backends.quantized_engine("tpu"):
        pass
    assert torch.backends.quantized.engine == before
