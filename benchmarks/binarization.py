"""Binarization on Fashion-MNIST: binary MLPs' accuracy and bytes, and a popcount kernel's speed.

    python benchmarks/binarization.py            # needs numba: pip install -c constraints.txt numba

- accuracy: `minicompress.binarization.BinaryMLP` in four variants of one shape (784 →
  HIDDEN → 10, BatchNorm after every layer), trained with the same recipe: float (ReLU),
  BinaryConnect, binary weights with α (BWN), binary weights and activations (XNOR);
  the binary ones with `clip_latent_weights` after every step. Drops are in percentage
  points against the float model; bytes count binary weights at one bit (packed int64
  words) and everything else (α, BatchNorm) at float32;
- memory: a 1024×1024 layer's float32 bytes over its packed bytes;
- speed: y = x Wᵀ on a 1024×1024 layer at batch 1 and 64, float32 ``torch.matmul`` against
  `xnor_matmul` (plain PyTorch) and `xnor_matmul_numba` (hardware popcount) on pre-packed
  operands, median of repeats, at one thread (torch and numba) and at every core. The
  packed times exclude packing the activations; ``with_packing_ms`` includes it.

The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable

import torch

import minicompress as mc
from minicompress.binarization import (
    BinaryMLP,
    binarize,
    binary_model_bytes,
    clip_latent_weights,
    float_model_bytes,
    pack_bits,
    xnor_matmul,
    xnor_matmul_numba,
)
from minicompress.train import TrainConfig, evaluate, fit

HIDDEN = (512, 512)
RECIPE = TrainConfig(epochs=3, lr=0.001, optimizer="adam", batch_size=128, seed=0)
KINDS = ("float", "binaryconnect", "bwn", "xnor")


def train_all(train, test) -> dict[str, dict]:
    results = {}
    for kind in KINDS:
        torch.manual_seed(RECIPE.seed)  # the same initial latent weights for every variant
        model = BinaryMLP(HIDDEN, kind)
        start = time.perf_counter()
        hook = None if kind == "float" else clip_latent_weights
        fit(model, *train, RECIPE, after_step=hook, progress=False)
        results[kind] = {
            "model": model,
            "accuracy": evaluate(model, *test),
            "train_s": time.perf_counter() - start,
            "bytes": float_model_bytes(model) if kind == "float" else binary_model_bytes(model),
        }
    return results


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def kernel_timings(threads: int) -> dict:
    import numba

    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    g = torch.Generator().manual_seed(0)
    weight = binarize(torch.randn(1024, 1024, generator=g))
    packed_weight = pack_bits(weight)  # done once, offline
    out = {"torch_threads": torch.get_num_threads(), "numba_threads": numba.get_num_threads()}
    for batch in (1, 64):
        x = binarize(torch.randn(batch, 1024, generator=g))
        px = pack_bits(x)
        assert torch.equal(xnor_matmul_numba(px, packed_weight, 1024), (x @ weight.T).long())
        with torch.inference_mode():
            float_ms = median_ms(lambda x=x: x @ weight.T, repeats=200)
        torch_ms = median_ms(lambda px=px: xnor_matmul(px, packed_weight, 1024),
                             repeats=50 if batch == 1 else 10)  # fmt: skip
        numba_ms = median_ms(lambda px=px: xnor_matmul_numba(px, packed_weight, 1024), repeats=200)
        packing_ms = median_ms(
            lambda x=x: xnor_matmul_numba(pack_bits(binarize(x)), packed_weight, 1024), repeats=200
        )
        out[f"bs{batch}"] = {
            "float_ms": round(float_ms, 4),
            "torch_packed_ms": round(torch_ms, 4),
            "numba_packed_ms": round(numba_ms, 4),
            "numba_with_packing_ms": round(packing_ms, 4),
            "speedup_numba": round(float_ms / numba_ms, 2),
            "speedup_torch_packed": round(float_ms / torch_ms, 3),
        }
    return out


def main() -> dict:
    train = mc.data.fashion_mnist("train")
    test = mc.data.fashion_mnist("test")
    threads = torch.get_num_threads()
    results = train_all(train, test)

    # the trained XNOR model's hidden layer, run on packed bits, computes the same outputs
    xnor = results["xnor"]["model"]
    with torch.no_grad():
        h = xnor.bn1(xnor.fc1(test[0][:256].flatten(1)))
        packed_ok = torch.allclose(xnor.fc2.forward_packed(h, backend="numba"), xnor.fc2(h),
                                   atol=1e-4)  # fmt: skip

    layer_float = 4 * 1024 * 1024
    layer_packed = pack_bits(binarize(torch.randn(1024, 1024))).element_size() * 1024 * 16
    timings = {f"{t}_thread": kernel_timings(t) for t in sorted({1, os.cpu_count() or 1})}
    torch.set_num_threads(threads)
    one = timings["1_thread"]
    base = results["float"]["accuracy"]
    return {
        "recipe": {"hidden": list(HIDDEN), **RECIPE.to_dict()},
        "accuracy": {k: round(r["accuracy"], 4) for k, r in results.items()},
        "train_s": {k: round(r["train_s"], 1) for k, r in results.items()},
        "bytes": {k: r["bytes"] for k, r in results.items()},
        "bc_drop_pp": round(100 * (base - results["binaryconnect"]["accuracy"]), 2),
        "bwn_drop_pp": round(100 * (base - results["bwn"]["accuracy"]), 2),
        "binary_act_drop_pp": round(100 * (base - results["xnor"]["accuracy"]), 2),
        "model_size_ratio": round(results["float"]["bytes"] / results["xnor"]["bytes"], 2),
        "memory_ratio": round(layer_float / layer_packed, 2),
        "packed_forward_matches": bool(packed_ok),
        "kernel_speedup_bs1": one["bs1"]["speedup_numba"],
        "kernel_speedup_bs64": one["bs64"]["speedup_numba"],
        "kernel": timings,
        "machine": mc.measure.machine(),
    }


if __name__ == "__main__":
    print(json.dumps(main()))
