"""Quantization on the LeNets: int8 accuracy, bytes and real int8 speed per engine; 4-bit QAT.

    python benchmarks/quantization.py

- int8, engine by engine, for LeNet-300-100 and LeNet-5 (``"engines"`` in the JSON):
  PyTorch's two CPU int8 engines, ``x86`` (fbgemm and oneDNN underneath) and ``qnnpack``,
  through FX graph mode (``backends.torch_int8``, calibrated on 1000 training images; each
  model timed and evaluated under its own engine with ``backends.quantized_engine``), and
  ONNX Runtime's static int8 (``backends.onnx_int8``). Each against float32, the same
  model in PyTorch, on the same test images at batch 1 and 256: the speed-up is the median
  over rounds of the float32 median latency over the median over rounds of the int8 one,
  all in this run; in each round every contestant is timed (the median of 100 calls at
  batch 1, of 15 at batch 256), in an order rotated from round to round, so that a change
  of load hits them all (``per_round``, float32's time over the int8 one's in each round,
  shows how much it moved). ``se`` is the speed-up's standard error by resampling rounds
  (paired, seeded); comparing two engines, pair their ``per_round`` ratios round by round.
  ``best`` names the fastest engine per (model, batch); the drop in
  accuracy is measured on the 10 000 test images with its paired standard error.
  ``onnxruntime_fp32`` (ONNX Runtime on the float graph) is a reference, not a contestant:
  it shows how much of ONNX Runtime's gain is the runtime rather than int8.
- the keys of the first version stay (LeNet-5 with ``backends.default_engine()``, and
  ONNX Runtime): ``int8_accuracy``, ``size_ratio`` (``torch.save`` bytes),
  ``speedup_bs1``/``speedup_bs256``, ``latency_ms``, ``ort_int8_*``; the speeds are now
  taken from the rounds above;
- 4-bit: `minicompress.quantization.prepare_qat` (per-channel 4-bit weights, 8-bit
  activations) fine-tuned for 2 epochs, against the float model.

Targets (issue #21): the best engine ≥ 3× float32 at batch 256 for both LeNets on a CPU
with VNNI (``null``, not applicable, on a CPU without it), and ≥ 2× at batch 1 for at least
one (model, engine) on every CPU.

What limits the int8 speed-up depends on what the CPU has (``simd`` and ``cpu_capability``
in the JSON):

- **x86 without VNNI** (AVX2, and AVX-512 CPUs before VNNI): a uint8 × int8 dot product is
  ``vpmaddubsw`` (products of byte pairs, adjacent pairs added into *saturating* int16),
  ``vpmaddwd`` against ones (adjacent int16 pairs into int32), ``vpaddd`` to accumulate:
  three instructions for 32 multiply–adds in a 256-bit register, against float32's 8 in one
  FMA: about 1.3× more multiply–adds per instruction (per cycle depends on how many of
  each the core issues), and the int16 step can saturate (why the x86 engine quantizes
  activations to 7 bits, and why ONNX Runtime documents an overflow risk in u8s8 products
  on such CPUs). Issue #21 measured 1.36× for LeNet-5 at batch 256 on an AVX2 CPU.
- **x86 with VNNI** (``avx512_vnni``, or ``avx_vnni`` on 256-bit registers):
  ``vpdpbusd`` multiplies four uint8 × int8 pairs, sums them and adds them into each int32
  lane in one instruction, with no int16 step: 4× the multiply–adds of a float32 FMA of
  the same width.
- **AMX** (``amx_int8``: Intel Xeon from Sapphire Rapids, 4th generation Xeon Scalable):
  tile instructions multiply whole blocks of int8 matrices; oneDNN, one of the two
  libraries under PyTorch's x86 engine, has int8 kernels for them (whether a layer as small
  as LeNet's gets one is the engine's choice, not checked here).
- **Batch 1**, on every CPU: a LeNet image is microseconds of arithmetic, so fixed costs
  per operator (dispatch, quantizing the input, requantizing outputs) dominate, and int8
  does not shrink them; a runtime with less overhead per call wins there whatever the
  precision (compare ``onnxruntime`` with ``onnxruntime_fp32``).
- ``qnnpack`` is PyTorch's mobile-optimized engine (the default on ARM); on x86 it is
  measured for completeness (the slowest of the three on the AMD EPYC this was written on).
- On ARM no VNNI flag is read (its dot-product instructions are not detected here), so the
  VNNI target is ``null``.

Sources: Intel's instruction reference (VPMADDUBSW, VPDPBUSD), oneDNN's "Nuances of int8
computations" and its CPU ISA list (``avx512_core_amx``), Intel's "x86 quantization
backend" article (PyTorch 2.0), ONNX Runtime's change #12088 (u8s8 overflow without VNNI).

The last line printed is one JSON object. Timings depend on the machine and its load: on a
busy machine the rounds disagree (``per_round``), so quote figures from a quiet one.
"""

from __future__ import annotations

import contextlib
import json
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

import minicompress as mc
from minicompress import backends
from minicompress.measure import correct, measure_latency, paired_from_correct, serialized_size
from minicompress.quantization import calibrate, post_training_quantize, prepare_qat
from minicompress.train import TrainConfig, evaluate, fit

MODELS = ("lenet300", "lenet5")
TORCH_ENGINES = ("x86", "qnnpack")
BATCHES = (1, 256)
ROUNDS = {1: 25, 256: 7}  # batch 1 (~0.1 ms a call) in short rounds: the load changes fast
WARMUP = {1: 10, 256: 3}
REPEATS = {1: 100, 256: 15}  # timed calls per contestant and round
VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}  # each CPU with one has vpdpbusd


def _engine(name: str | None):
    """The ``with`` block a contestant runs in: its PyTorch engine, or nothing."""
    return backends.quantized_engine(name) if name else contextlib.nullcontext()


def _contestants(model: nn.Module, calibration: Tensor, tmp: Path) -> dict:
    """name -> (module, PyTorch engine or None): float32 first, then the int8 versions."""
    runners = {"fp32": (model, None)}
    for engine in TORCH_ENGINES:
        if engine in torch.backends.quantized.supported_engines:
            runners[engine] = (backends.torch_int8(model, calibration, engine=engine), engine)
    fp32_onnx = backends.export_onnx(model, calibration[:1], tmp / "fp32.onnx")
    int8_onnx = backends.onnx_int8(fp32_onnx, calibration, tmp / "int8.onnx")
    runners["onnxruntime"] = (backends.OnnxModel(int8_onnx), None)
    runners["onnxruntime_fp32"] = (backends.OnnxModel(fp32_onnx), None)
    return runners


def _round_medians(runners: dict, images: Tensor, batch: int) -> dict[str, list[float]]:
    """name -> the median latency (ms) of each round; the order rotates every round."""
    names, medians = list(runners), {name: [] for name in runners}
    for r in range(ROUNDS[batch]):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            module, engine = runners[name]
            with _engine(engine):
                ms = measure_latency(
                    module, images[:batch], warmup=WARMUP[batch], repeats=REPEATS[batch]
                ).median_ms
            medians[name].append(ms)
    return medians


def _ratio_of_medians(base: list[float], other: list[float]) -> float:
    return statistics.median(base) / statistics.median(other)


def _bootstrap_se(base: list[float], other: list[float], draws: int = 2000) -> float:
    """Standard error of the ratio of medians: rounds resampled with replacement, in pairs.

    A round's two timings stay together because they share that round's load; the generator
    is seeded, so the same timings give the same error.
    """
    rng, n = random.Random(0), len(base)
    ratios = []
    for _ in range(draws):
        rounds = [rng.randrange(n) for _ in range(n)]
        ratios.append(_ratio_of_medians([base[i] for i in rounds], [other[i] for i in rounds]))
    return statistics.stdev(ratios)


def _speedup(base: list[float], other: list[float]) -> dict:
    """Ratio of medians over rounds and its bootstrap standard error; the per-round ratios."""
    per_round = [b / o for b, o in zip(base, other, strict=True)]
    return {
        "speedup": round(_ratio_of_medians(base, other), 2),
        "se": round(_bootstrap_se(base, other), 3),
        "per_round": [round(v, 3) for v in per_round],
        "mean": round(statistics.mean(per_round), 2),
    }


def engine_study(name: str, train_x: Tensor, test_x: Tensor, test_y: Tensor) -> dict:
    """Accuracy and speed of every int8 engine on the pretrained model ``name``."""
    model = mc.zoo.pretrained(name)
    right_fp32 = correct(model, test_x, test_y)
    with tempfile.TemporaryDirectory() as tmp:
        runners = _contestants(model, train_x[:1000], Path(tmp))
        onnx_bytes = (Path(tmp) / "int8.onnx").stat().st_size
    medians = {b: _round_medians(runners, test_x, b) for b in BATCHES}
    result = {"float_accuracy": round(right_fp32.float().mean().item(), 4), "int8": {}}
    for engine, (module, torch_engine) in runners.items():
        if engine == "fp32":
            continue
        entry = {f"bs{b}": _speedup(medians[b]["fp32"], medians[b][engine]) for b in BATCHES}
        entry["latency_ms"] = {
            f"bs{b}": round(statistics.median(medians[b][engine]), 4) for b in BATCHES
        }
        if torch_engine:
            entry["bytes"] = serialized_size(module)  # torch.save of the converted model
        if engine != "onnxruntime_fp32":
            with _engine(torch_engine):
                right = correct(module, test_x, test_y)
            drop = paired_from_correct(right_fp32, right)
            entry |= {
                "accuracy": round(right.float().mean().item(), 4),
                "drop_pp": round(100 * drop.difference, 2),
                "drop_se_pp": round(100 * drop.standard_error, 2),
            }
        result["int8"][engine] = entry
    ort = result["int8"]["onnxruntime"]
    ort["bytes"] = onnx_bytes
    ort["vs_onnxruntime_fp32"] = {
        f"bs{b}": round(
            statistics.median(medians[b]["onnxruntime_fp32"])
            / statistics.median(medians[b]["onnxruntime"]),
            2,
        )
        for b in BATCHES
    }
    result["fp32_latency_ms"] = {
        f"bs{b}": round(statistics.median(medians[b]["fp32"]), 4) for b in BATCHES
    }
    contestants = [e for e in result["int8"] if e != "onnxruntime_fp32"]
    result["best"] = {}
    for b in BATCHES:
        best = max(contestants, key=lambda e: result["int8"][e][f"bs{b}"]["speedup"])
        result["best"][f"bs{b}"] = {
            "engine": best,
            "speedup": result["int8"][best][f"bs{b}"]["speedup"],
        }
    return result


def targets(engines: dict, simd: set[str]) -> dict:
    """≥ 3× at batch 256 for every model with VNNI (None without), ≥ 2× at batch 1 somewhere."""
    vnni = bool(simd & VNNI_FLAGS)
    at_256 = all(study["best"]["bs256"]["speedup"] >= 3 for study in engines.values())
    at_1 = any(study["best"]["bs1"]["speedup"] >= 2 for study in engines.values())
    return {"int8_bs256_3x_with_vnni": at_256 if vnni else None, "int8_bs1_2x_somewhere": at_1}


def main() -> dict:
    start = time.perf_counter()
    warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
    train_x, train_y = mc.data.fashion_mnist("train")
    test_x, test_y = mc.data.fashion_mnist("test")
    engines = {name: engine_study(name, train_x, test_x, test_y) for name in MODELS}
    default = backends.default_engine()
    model = mc.zoo.pretrained("lenet5")
    lenet5, int8 = engines["lenet5"], engines["lenet5"]["int8"][default]
    ranges = calibrate(model, train_x[:1000])
    ptq4 = evaluate(post_training_quantize(model, ranges, weight_bits=4), test_x, test_y)
    qat = prepare_qat(model, ranges, weight_bits=4, act_bits=8)
    fit(qat, train_x, train_y, TrainConfig(epochs=2, lr=0.01))
    qat4 = evaluate(qat, test_x, test_y)
    base = lenet5["float_accuracy"]
    simd = mc.measure.simd_extensions()
    ort = lenet5["int8"]["onnxruntime"]
    return {  # the first version's keys: LeNet-5, default engine, ONNX Runtime
        "float_accuracy": base,
        "int8_accuracy": int8["accuracy"],
        "int8_drop_pp": int8["drop_pp"],
        "size_ratio": round(serialized_size(model) / int8["bytes"], 2),
        "speedup_bs1": int8["bs1"]["speedup"],
        "speedup_bs256": int8["bs256"]["speedup"],
        "latency_ms": {
            f"bs{b}": {
                "fp32": round(lenet5["fp32_latency_ms"][f"bs{b}"], 3),
                "int8": round(int8["latency_ms"][f"bs{b}"], 3),
            }
            for b in BATCHES
        },
        "ort_int8_drop_pp": ort["drop_pp"],
        "ort_int8_bytes": ort["bytes"],
        "ort_int8_speedup_vs_torch_fp32": {f"bs{b}": ort[f"bs{b}"]["speedup"] for b in BATCHES},
        "ptq4_drop_pp": round(100 * (base - ptq4), 2),
        "qat4_drop_pp": round(100 * (base - qat4), 2),
        "default_engine": default,
        "engines": engines,
        "best": {name: study["best"] for name, study in engines.items()},
        "targets_met": targets(engines, simd),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "simd": sorted(simd),
        "recipe": {
            "calibration_images": 1000,
            "rounds": {f"bs{b}": ROUNDS[b] for b in BATCHES},
            "warmup": {f"bs{b}": WARMUP[b] for b in BATCHES},
            "repeats_per_round": {f"bs{b}": REPEATS[b] for b in BATCHES},
            "threads": torch.get_num_threads(),
            "qat4": "2 epochs, lr 0.01",
        },
        "machine": mc.measure.machine(),
        "seconds": round(time.perf_counter() - start, 1),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
