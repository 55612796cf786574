"""Quantization on LeNet-5: int8 accuracy, bytes and real int8 speed; 4-bit QAT.

    python benchmarks/quantization.py

- int8: PyTorch's int8 engine (``backends.default_engine()``: x86, or qnnpack on ARM)
  through FX graph mode (``torch.ao.quantization``, deprecated but still the stock CPU int8
  path), calibrated on 1000 training images; accuracy, the
  ``torch.save`` size, and the median latency at batch 1 and 256 against fp32;
- the same with ONNX Runtime's static int8 quantization (accuracy, file bytes, speed);
- 4-bit: `minicompress.quantization.prepare_qat` (per-channel 4-bit weights, 8-bit
  activations) fine-tuned for 2 epochs, against the float model.

The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import minicompress as mc
from minicompress import backends
from minicompress.measure import measure_latency, serialized_size
from minicompress.quantization import calibrate, post_training_quantize, prepare_qat
from minicompress.train import TrainConfig, evaluate, fit


def main() -> dict:
    warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
    train_x, train_y = mc.data.fashion_mnist("train")
    test_x, test_y = mc.data.fashion_mnist("test")
    model = mc.zoo.pretrained("lenet5")
    base = evaluate(model, test_x, test_y)
    int8 = backends.torch_int8(model, train_x[:1000])
    with tempfile.TemporaryDirectory() as tmp:
        onnx_fp32 = backends.export_onnx(model, test_x[:1], Path(tmp) / "lenet5.onnx")
        onnx_int8 = backends.onnx_int8(onnx_fp32, train_x[:1000], Path(tmp) / "lenet5_int8.onnx")
        ort = backends.OnnxModel(onnx_int8)
        ort_bytes = onnx_int8.stat().st_size
    speed, ort_speed = {}, {}
    for batch in (1, 256):
        fp32 = measure_latency(model, test_x[:batch], warmup=20, repeats=100).median_ms
        q = measure_latency(int8, test_x[:batch], warmup=20, repeats=100).median_ms
        speed[batch] = (fp32, q)
        ort_ms = measure_latency(ort, test_x[:batch], warmup=20, repeats=100).median_ms
        ort_speed[batch] = fp32 / ort_ms
    ranges = calibrate(model, train_x[:1000])
    ptq4 = evaluate(post_training_quantize(model, ranges, weight_bits=4), test_x, test_y)
    qat = prepare_qat(model, ranges, weight_bits=4, act_bits=8)
    fit(qat, train_x, train_y, TrainConfig(epochs=2, lr=0.01))
    qat4 = evaluate(qat, test_x, test_y)
    return {
        "float_accuracy": round(base, 4),
        "int8_accuracy": round(evaluate(int8, test_x, test_y), 4),
        "int8_drop_pp": round(100 * (base - evaluate(int8, test_x, test_y)), 2),
        "size_ratio": round(serialized_size(model) / serialized_size(int8), 2),
        "speedup_bs1": round(speed[1][0] / speed[1][1], 2),
        "speedup_bs256": round(speed[256][0] / speed[256][1], 2),
        "latency_ms": {
            f"bs{b}": {"fp32": round(f, 3), "int8": round(q, 3)} for b, (f, q) in speed.items()
        },  # fmt: skip
        "ort_int8_drop_pp": round(100 * (base - evaluate(ort, test_x, test_y)), 2),
        "ort_int8_bytes": ort_bytes,
        "ort_int8_speedup_vs_torch_fp32": {f"bs{b}": round(v, 2) for b, v in ort_speed.items()},
        "ptq4_drop_pp": round(100 * (base - ptq4), 2),
        "qat4_drop_pp": round(100 * (base - qat4), 2),
        "machine": mc.measure.machine(),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
