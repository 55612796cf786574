"""Quantizing the tiny GPT (chapter "Quantizing a small language model"): headline figures.

    python benchmarks/llm_quantization.py            # every window of the validation text
    python benchmarks/llm_quantization.py --quick    # 256 windows: a smoke test

Every cost is a paired difference of bits per character against the float model (window by
window, with its standard error). Targets from the issue that built the chapter:
- ``int4_g32_delta_bpc`` ≤ 0.05: 4-bit groups of 32, round to nearest (GPTQ's figure beside it);
- ``gptq3_recovered`` ≥ 0.4: the share of 3-bit rounding's damage GPTQ removes;
- ``awq3_recovered_outliers`` ≥ 0.25: the same for AWQ, on the model with planted outliers;
- ``w8a8_outliers_delta_bpc_smoothquant`` ≤ 0.01 (and without smoothing beside it);
- ``int4_matvec_speedup_bs1`` ≥ 4: PyTorch's int4 CPU kernel vs float32 at batch 1, float32
  working set ≥ 2× the last-level cache (roofline prediction and in-cache figure beside it);
- ``int4_file_ratio`` ≤ 0.15: packed int4 codes, scales and zeros vs float32, real bytes.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from minicompress import awq, damage, gptq, lm, lowbit_matmul, outliers, smoothquant, text, zoo
from minicompress import groupwise as G
from minicompress.measure import machine


def costs(model, calibration, valid, windows) -> dict:
    """The bits/char figures: every method scored on the same windows as the float model."""

    def scores(m):
        return lm.window_bits(m, valid, max_windows=windows)

    base = scores(model)
    rtn4, gptq4 = (
        scores(gptq.rtn_model(model, 4, 32)),
        scores(gptq.gptq_model(model, calibration, 4, 32)),
    )
    rtn3, gptq3 = (
        scores(gptq.rtn_model(model, 3, 32)),
        scores(gptq.gptq_model(model, calibration, 3, 32)),
    )
    spiky = outliers.add_activation_outliers(model)
    spiky_base = scores(spiky)
    spiky_rtn3 = scores(gptq.rtn_model(spiky, 3, 32))
    spiky_awq3 = scores(awq.awq_model(spiky, calibration, 3, 32))
    w8a8_none = scores(smoothquant.w8a8_model(spiky, calibration, alpha=None))
    w8a8_smooth = scores(smoothquant.w8a8_model(spiky, calibration, alpha=0.5))
    return {
        "windows": len(base),
        "float_bpc": round(float(base.mean()), 4),
        "int4_g32_delta_bpc": round(damage.paired(rtn4, base).mean, 4),
        "int4_g32_delta_se": round(damage.paired(rtn4, base).standard_error, 4),
        "gptq4_g32_delta_bpc": round(damage.paired(gptq4, base).mean, 4),
        "rtn3_g32_delta_bpc": round(damage.paired(rtn3, base).mean, 4),
        "gptq3_g32_delta_bpc": round(damage.paired(gptq3, base).mean, 4),
        "gptq3_recovered": round(damage.recovered(base, rtn3, gptq3).recovered, 3),
        "awq3_recovered_outliers": round(
            damage.recovered(spiky_base, spiky_rtn3, spiky_awq3).recovered, 3
        ),
        "w8a8_outliers_delta_bpc": round(damage.paired(w8a8_none, base).mean, 4),
        "w8a8_outliers_delta_bpc_smoothquant": round(damage.paired(w8a8_smooth, base).mean, 4),
    }


def file_ratio(model) -> float:
    """Packed int4 (g = 32, asymmetric) bytes of the block weights over their float32 bytes."""
    names = G.block_linear_names(model)
    weights = [model.get_submodule(n).weight.detach() for n in names]
    packed = sum(G.packed_bytes(G.pack_groups(G.quantize_groups(w, 4, 32))) for w in weights)
    return packed / sum(4 * w.numel() for w in weights)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 validation windows")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    torch.manual_seed(0)
    model = zoo.pretrained("tinygpt")
    valid = text.split("validation")
    calibration = text.split("train")[: 128 * 64]
    result = costs(model, calibration, valid, 256 if args.quick else None)
    result["int4_file_ratio"] = round(file_ratio(model), 4)
    kernel = lowbit_matmul.kernel_benchmark() if lowbit_matmul.int4_available() else {}
    result |= {k: round(v, 3) if isinstance(v, float) else v for k, v in kernel.items()}
    result["targets_met"] = {
        "int4_g32_delta_bpc": result["int4_g32_delta_bpc"] <= 0.05,
        "gptq3_recovered": result["gptq3_recovered"] >= 0.4,
        "awq3_recovered_outliers": result["awq3_recovered_outliers"] >= 0.25,
        "w8a8_outliers_smoothquant": result["w8a8_outliers_delta_bpc_smoothquant"] <= 0.01,
        "int4_matvec_speedup_bs1": kernel.get("int4_matvec_speedup_bs1", 0) >= 4,
        "int4_file_ratio": result["int4_file_ratio"] <= 0.15,
    }
    result["machine"] = machine()
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
