"""Reproduce the pruning chapter's headline on LeNet-300-100, and structured-pruning speed.

    python benchmarks/pruning.py

Iterative global magnitude pruning (Han et al. 2015) through 50, 75, 90, 95, 97 % sparsity,
4 fine-tuning epochs per stage, against the honest baseline: the dense model fine-tuned for
the same 20 epochs. Reports the highest sparsity within 0.5 pp of that baseline. Then times
LeNet-5 (batch 256): dense vs. 90 % unstructured vs. 50 % of channels removed (structured).
The last line printed is one JSON object.
"""

from __future__ import annotations

import copy
import json

import minicompress as mc
from minicompress import pruning as P
from minicompress.measure import measure_latency, sparsity
from minicompress.train import TrainConfig, evaluate, fit

STAGES = (0.5, 0.75, 0.9, 0.95, 0.97)
EPOCHS_PER_STAGE = 4


def headline() -> dict:
    train_x, train_y = mc.data.fashion_mnist("train")
    test_x, test_y = mc.data.fashion_mnist("test")
    original = mc.zoo.pretrained("lenet300")
    dense = copy.deepcopy(original)
    config = TrainConfig(epochs=EPOCHS_PER_STAGE, lr=0.05)
    fit(dense, train_x, train_y, TrainConfig(epochs=EPOCHS_PER_STAGE * len(STAGES), lr=0.05))
    baseline = evaluate(dense, test_x, test_y)
    stages = []

    def record(target: float, model) -> None:
        stages.append({"target": target, "sparsity": round(P.weight_sparsity(model), 4),
                       "parameter_sparsity": round(sparsity(model), 4),
                       "accuracy": round(evaluate(model, test_x, test_y), 4)})  # fmt: skip
        print(f"stage {target:.2f}: accuracy {100 * stages[-1]['accuracy']:.2f}%", flush=True)

    P.iterative_pruning(copy.deepcopy(original), train_x, train_y, STAGES, config, on_stage=record)
    within = [s for s in stages if baseline - s["accuracy"] <= 0.005] or [stages[0]]
    best = max(within, key=lambda s: s["sparsity"])
    return {
        "sparsity": best["sparsity"],  # of the Linear weights; biases are not pruned
        "parameter_sparsity": best["parameter_sparsity"],
        "accuracy": best["accuracy"],
        "baseline_accuracy": round(baseline, 4),
        "original_accuracy": round(evaluate(original, test_x, test_y), 4),
        "drop_pp": round(100 * (baseline - best["accuracy"]), 2),
        "stages": stages,
    }


def speed() -> dict:
    x = mc.data.fashion_mnist("test")[0][:256]
    dense = mc.zoo.pretrained("lenet5")
    unstructured = copy.deepcopy(dense)
    P.apply_masks(unstructured, P.layer_masks(unstructured, 0.9, scope="global"))
    structured = P.prune_channels(dense, {"conv1": 0.5, "conv2": 0.5, "fc1": 0.5})
    ms = {
        name: measure_latency(model, x, warmup=20, repeats=100).median_ms
        for name, model in (("dense", dense), ("unstructured", unstructured),
                            ("structured", structured))
    }  # fmt: skip
    return {
        "structured_speedup_bs256": round(ms["dense"] / ms["structured"], 2),
        "unstructured_speedup_bs256": round(ms["dense"] / ms["unstructured"], 2),
        "latency_ms_bs256": {k: round(v, 3) for k, v in ms.items()},
    }


if __name__ == "__main__":
    result = {**headline(), **speed(), "machine": mc.measure.machine()}
    print(json.dumps(result))
