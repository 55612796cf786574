"""Pruning the tiny GPT (chapter "Pruning, adapting and distilling a small language model").

    python benchmarks/llm_sparsity.py            # every window of the validation text
    python benchmarks/llm_sparsity.py --quick    # 256 windows: a smoke test

Every cost is a paired difference of bits per character against the dense model (window by
window, with its standard error ``..._se``), on chapter 9's validation windows; Wanda and
SparseGPT calibrate on the first 128·64 tokens of the training split (64 windows of the
model's context of 128), as chapter 9 does.
Magnitude, Wanda and SparseGPT at 50 % (each row loses half its weights) and at 2:4, on
the shipped model and (``outlier_...``) on `minicompress.outliers.add_activation_outliers`
of it, the same function with a few input channels 30× larger and their weights 30× smaller.
Targets from the issue (#20): on the outlier model, Wanda ≥ 0.15 bits/char better than
magnitude; ``lora_recovered`` (the share of the 2:4 damage rank-8 LoRA removes,
`_llm_adaptation.lora_recovery`) ≥ 0.5. ``kd_gap_closed``: the share of the teacher–student
gap a distilled student closes, mean of 3 seeds (`_llm_adaptation.kd_study`).
``nm_bytes_ratio``: packed 2:4 float16 bytes (values + 2-bit indices) over
dense float16 bytes, real bytes of the block weights.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import _llm_adaptation  # benchmarks/, beside this script
from tqdm.auto import tqdm

from minicompress import damage, lm, outliers, text, wanda, zoo
from minicompress import semistructured as S
from minicompress.calibration import block_linears
from minicompress.measure import machine

TARGETS = {"50": {"sparsity": 0.5}, "24": {"pattern": (2, 4)}}


def pruning_costs(model, calibration, valid, windows, prefix: str = "") -> dict:
    """Δ bits/char (and its standard error) of every method × target, paired with ``model``."""
    base = lm.window_bits(model, valid, max_windows=windows)
    out = {}
    runs = [(m, t) for t in TARGETS for m in wanda.METHODS]
    for method, target in tqdm(runs, desc=prefix or "dense", disable=None, leave=False):
        pruned = wanda.prune_model(model, calibration, method, **TARGETS[target])
        cost = damage.paired(lm.window_bits(pruned, valid, max_windows=windows), base)
        out[f"{prefix}{method}_{target}_delta_bpc"] = round(cost.mean, 4)
        out[f"{prefix}{method}_{target}_delta_se"] = round(cost.standard_error, 4)
    return out


def nm_bytes_ratio(model) -> float:
    """Packed 2:4 float16 bytes (`semistructured.pack_nm`) over dense float16 bytes."""
    weights = [m.weight.detach() for m in block_linears(model).values()]
    packed = sum(S.packed_nm_bytes(S.pack_nm((w * S.nm_mask(w.abs())).half())) for w in weights)
    return packed / sum(2 * w.numel() for w in weights)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 validation windows")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model = zoo.pretrained("tinygpt")
    valid = text.split("validation")
    calibration = text.split("train")[: 128 * 64]
    windows = 256 if args.quick else None
    result = {"windows": min((len(valid) - 1) // model.context, windows or len(valid))}
    result |= pruning_costs(model, calibration, valid, windows)
    spiky = outliers.add_activation_outliers(model)
    result |= pruning_costs(spiky, calibration, valid, windows, prefix="outlier_")
    result["nm_bytes_ratio"] = round(nm_bytes_ratio(model), 4)
    quick = {"windows": 64, "steps": 10} if args.quick else {}
    adaptation = _llm_adaptation.lora_recovery(model, text.split("train"), valid, **quick)
    result["lora_recovered"] = adaptation["sparse24"]["recovered"]  # 2:4 damage LoRA removes
    result["lora"] = adaptation
    kd = _llm_adaptation.kd_study(model, text.split("train"), valid, **quick)
    result["kd_gap_closed"] = kd["gap_closed_mean"]
    result["kd_gap_closed_se"] = kd["gap_closed_se"]
    result["kd"] = kd
    wanda_gain = result["outlier_magnitude_50_delta_bpc"] - result["outlier_wanda_50_delta_bpc"]
    result["outlier_wanda_gain_50"] = round(wanda_gain, 4)
    result["targets_met"] = {
        "outlier_wanda_gain_50": wanda_gain >= 0.15,
        "lora_recovered": result["lora_recovered"] >= 0.5,
        "kd_every_seed_positive": kd["positive_seeds"] == len(kd["per_seed"]),
    }
    result["machine"] = machine()
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
