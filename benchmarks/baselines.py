"""Measure the shipped baselines: accuracy, bytes, MACs, latency at batch 1 and 256.

    python benchmarks/baselines.py

Prints a line per model, then (last line) one JSON object with every figure, so that
later runs and other machines can be compared. Latency is the median of repeats after
warm-up (see the chapter "Measuring a model"), with the machine stated.
"""

from __future__ import annotations

import json

import torch

import minicompress as mc
from minicompress.measure import (
    count_macs,
    count_parameters,
    measure_latency,
    serialized_size,
)


def main() -> dict:
    test_x, test_y = mc.data.fashion_mnist("test")
    results: dict = {"machine": mc.measure.machine(), "models": {}}
    for name in mc.zoo.names():
        model = mc.zoo.pretrained(name)
        row = {
            "accuracy": mc.train.evaluate(model, test_x, test_y),
            "parameters": count_parameters(model),
            "file_bytes": serialized_size(model),
            "macs_per_image": count_macs(model, test_x[:1]),
        }
        for batch in (1, 256):
            lat = measure_latency(model, test_x[:batch], warmup=20, repeats=200)
            row[f"latency_ms_bs{batch}"] = round(lat.median_ms, 4)
            row["threads"] = lat.threads
        results["models"][name] = row
        print(f"{name}: {row}")
    return results


if __name__ == "__main__":
    torch.manual_seed(0)
    print(json.dumps(main()))
