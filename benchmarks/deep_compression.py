"""Deep Compression on LeNet-300-100: prune → share → Huffman-code → a real file → reload.

    python benchmarks/deep_compression.py            # 3 seeds (about 4 min on 2 idle cores)
    python benchmarks/deep_compression.py --quick    # a smoke test: one seed, 2 epochs

1. prune: gradual global magnitude pruning to 95 % (`minicompress.pruning.gradual_pruning`,
   the recipe of ``benchmarks/pruning.py``: 30 epochs, cosine learning rate from 0.05,
   Zhu & Gupta's cubic schedule over the first half, then the fixed mask anneals). Deep
   Compression keeps 8 % of LeNet-300-100's weights on MNIST; the earlier recipe here,
   iterative pruning to 94 % in 15 epochs, gave 54× and 95 % cost 0.6 pp;
2. share: k-means per layer (`minicompress.sharing.share_weights`), 4 bits for fc1 and 5
   for fc2, fc3 (the paper: 6 bits for every fc layer), linear initialisation;
3. fine-tune the centroids and biases for 2 epochs (Adam);
4. Huffman-code the centroid indices and the relative positions, write the file
   (`minicompress.storage.save`, index width chosen per layer), reload it into a fresh
   `LeNet300100` and evaluate *that* model.

``ratio`` is the dense fp32 parameter bytes (266 610 × 4 = 1 066 440) over the file's
length; ``ratio_vs_torch_save`` uses the ``torch.save`` size of the dense model instead.
``drop_pp`` is measured against the equally trained baseline: the shipped model fine-tuned
densely with the same recipe and seed, then 2 epochs of Adam at the centroids' learning rate
on every weight (``drop_vs_shipped_pp``: against the shipped model itself). Seeds change the
fine-tuning order; each seed's pipeline and its baseline run in one of ``WORKERS`` one-thread
processes, so a result depends on the seed, not on the machine's thread count. The targets
are met on the means over the seeds: ratio ≥ 60× and drop ≤ 0.5 pp. Also
timed: 5-bit k-means of all 266 200 weights of the dense model (``kmeans_seconds``) and
Huffman encode / decode of 1 M symbols of the real index stream's distribution (seed 0's),
in the main process after the training. A table in the style of the paper's Table 2 (seed
0) is printed before the JSON line, which is last.

Measured (AMD EPYC, 2 cores shared with other jobs: 7 min 12 s wall, 368 s of CPU, so about
3–4 min on 2 idle cores): 60.97×, 61.10×, 60.86× (mean 60.98 ± 0.07 SE), drops 0.82, 0.64,
0.77 pp against the equally trained baseline (mean 0.74 ± 0.05), 0.54, 0.46, 0.63 pp against
the shipped model: the ratio target is met, the 0.5 pp band is not (see
``benchmarks/pruning.py`` for what was tried on the 95 % pruning).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _stats import mean_se  # benchmarks/, beside this script

import minicompress as mc
from minicompress import pruning as P
from minicompress import storage
from minicompress.coding import entropy, huffman_decode, huffman_encode, relative_index_encode
from minicompress.measure import serialized_size
from minicompress.sharing import fine_tune_centroids, kmeans_quantize, share_weights
from minicompress.train import TrainConfig, evaluate, fit

SPARSITY = 0.95
PRUNING = TrainConfig(epochs=30, lr=0.05, weight_decay=1e-4)  # the shipped baseline's decay
PRUNE_UNTIL, PRUNING_STEPS = 0.5, 20  # the cubic schedule's share of the steps, its steps
BITS = {"fc1.weight": 4, "fc2.weight": 5, "fc3.weight": 5}
CENTROID_TUNING = TrainConfig(epochs=2, lr=1e-4, optimizer="adam")
SEEDS = (0, 1, 2)
WORKERS = 2  # processes of one thread each: the benchmark's 2 cores
TARGETS = {"ratio": 60.0, "drop_pp": 0.5}


def time_kmeans(model) -> float:
    weights = torch.cat([w.detach().flatten() for w in P.prunable_weights(model).values()])
    start = time.perf_counter()
    kmeans_quantize(weights, 5)
    return time.perf_counter() - start


def time_huffman(shared) -> tuple[float, float, float, float]:
    """M symbols/s for encode and decode of 1 M symbols drawn like fc1's index stream."""
    indices = shared["fc1.weight"].indices[shared["fc1.weight"].mask].numpy()
    counts = np.bincount(indices)
    rng = np.random.default_rng(0)
    symbols = rng.choice(len(counts), size=1_000_000, p=counts / counts.sum())
    start = time.perf_counter()
    encoded = huffman_encode(symbols)
    encode = time.perf_counter() - start
    start = time.perf_counter()
    decoded = huffman_decode(encoded)
    decode = time.perf_counter() - start
    if decoded != symbols.tolist():
        raise AssertionError("Huffman round trip failed")
    return 1 / encode, 1 / decode, encoded.n_bits / len(symbols), entropy(counts_map(counts))


def counts_map(counts: np.ndarray) -> dict[int, int]:
    return {i: int(c) for i, c in enumerate(counts) if c}


def layer_table(info: dict[str, dict]) -> list[dict]:
    rows = []
    for name, entry in info.items():
        if entry["kind"] != "shared":
            continue
        weight_bits = entry["entry_bits"]  # ⌈log2(k + 1)⌉: the filler is a symbol too
        fixed = entry["fixed_bits"]
        rows.append({
            "layer": name.removesuffix(".weight"),
            "weights": entry["numel"],
            "kept_pct": round(100 * entry["kept"] / entry["numel"], 2),
            "weight_bits": weight_bits,
            "index_bits": entry["index_bits"],
            "fillers": entry["fillers"],
            "huffman_weight_bits": round(entry["values"]["bits"] / entry["kept"], 2),
            "huffman_index_bits": round(entry["gaps"]["bits"] / entry["kept"], 2),
            "bytes_fixed_width": math.ceil(fixed / 8),
            "bytes_huffman": entry["bytes"],
            "pct_of_dense_fixed": round(100 * fixed / 8 / (4 * entry["numel"]), 2),
            "pct_of_dense_huffman": round(100 * entry["bytes"] / (4 * entry["numel"]), 2),
        })  # fmt: skip
    return rows


def print_table(rows: list[dict]) -> None:
    head = ("layer", "weights", "kept %", "w bits", "idx bits", "fillers", "H w bits",
            "H idx bits", "fixed B", "Huffman B", "% fixed", "% Huffman")  # fmt: skip
    print(" ".join(f"{h:>10}" for h in head))
    for r in rows:
        print(" ".join(f"{v!s:>10}" for v in r.values()))


def _data() -> tuple:
    return (*mc.data.fashion_mnist("train"), *mc.data.fashion_mnist("test"))


def dense_baseline(seed: int, epochs: int) -> float:
    """The equally trained baseline's test accuracy: the same fine-tuning, no pruning."""
    torch.set_num_threads(1)
    train_x, train_y, test_x, test_y = _data()
    model = mc.zoo.pretrained("lenet300")
    fit(model, train_x, train_y, replace(PRUNING, epochs=epochs, seed=seed), progress=False)
    fit(model, train_x, train_y, replace(CENTROID_TUNING, seed=seed), progress=False)
    return evaluate(model, test_x, test_y)


def compress(seed: int, epochs: int) -> dict:
    """Prune, share, tune, write the file, reload it: accuracies, file layout, fc1's layer."""
    torch.set_num_threads(1)
    train_x, train_y, test_x, test_y = _data()
    model = mc.zoo.pretrained("lenet300")
    start = time.perf_counter()
    masks = P.gradual_pruning(model, train_x, train_y, SPARSITY,
                              replace(PRUNING, epochs=epochs, seed=seed),
                              prune_until=PRUNE_UNTIL, n_steps=PRUNING_STEPS,
                              progress=False)  # fmt: skip
    pruned = evaluate(model, test_x, test_y)
    shared = share_weights(model, BITS, masks=masks)
    shared_acc = evaluate(model, test_x, test_y)
    shared = fine_tune_centroids(model, shared, train_x, train_y,
                                 replace(CENTROID_TUNING, seed=seed))  # fmt: skip
    tuned = evaluate(model, test_x, test_y)
    train_seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lenet300.mcdc"
        file_bytes = storage.save(path, model, shared, index_bits="auto")
        reloaded = storage.load(path, mc.models.LeNet300100())
        info = storage.inspect(path)
    return {
        "file_bytes": file_bytes,
        "accuracy": evaluate(reloaded, test_x, test_y),
        "reloaded_outputs_equal": torch.equal(
            mc.train.predict(reloaded, test_x), mc.train.predict(model, test_x)
        ),  # fmt: skip
        "pruned_accuracy": pruned,
        "shared_accuracy_before_tuning": shared_acc,
        "tuned_accuracy": tuned,
        "weights_kept_pct": 100 * (1 - P.mask_sparsity(masks)),
        "train_seconds": train_seconds,
        "info": info,
        "fc1": shared["fc1.weight"],
    }


def _stat(values: list[float], digits: int) -> dict:
    mean, se = mean_se(values)
    return {"per_seed": [round(v, digits) for v in values], "mean": round(mean, digits + 1),
            "se": None if se is None else round(se, digits + 1)}  # fmt: skip


def run_seeds(seeds: tuple[int, ...], epochs: int) -> tuple[list[dict], list[float]]:
    """Every seed's pipeline and dense baseline, ``WORKERS`` at a time."""
    spawn = multiprocessing.get_context("spawn")  # a fresh process: no state shared or left
    with ProcessPoolExecutor(WORKERS, mp_context=spawn) as pool:
        runs = [pool.submit(compress, seed, epochs) for seed in seeds]
        dense = [pool.submit(dense_baseline, seed, epochs) for seed in seeds]
        return [r.result() for r in runs], [d.result() for d in dense]


def main(quick: bool = False) -> dict:
    start = time.perf_counter()
    seeds, epochs = (SEEDS[:1], 2) if quick else (SEEDS, PRUNING.epochs)
    original = mc.zoo.pretrained("lenet300")
    test_x, test_y = mc.data.fashion_mnist("test")
    base = evaluate(original, test_x, test_y)
    kmeans_seconds = time_kmeans(original)
    runs, dense = run_seeds(seeds, epochs)
    dense_bytes = 4 * mc.measure.count_parameters(original)
    torch_bytes = serialized_size(original)
    ratios = [dense_bytes / r["file_bytes"] for r in runs]
    drops = [100 * (d - r["accuracy"]) for r, d in zip(runs, dense, strict=True)]
    first = runs[0]
    fc1, b = first["fc1"], first["info"]["fc1.weight"]["index_bits"]
    gaps, values = relative_index_encode(torch.where(fc1.mask, fc1.indices + 1, 0).flatten(), b)
    streams = {"values": storage.compare_general_purpose(values, len(fc1.codebook) + 1),
               "gaps": storage.compare_general_purpose(gaps, 2**b)}  # fmt: skip
    encode, decode, coded_bits, h = time_huffman({"fc1.weight": fc1})
    rows = layer_table(first["info"])
    print_table(rows)
    ratio, drop = _stat(ratios, 2), _stat(drops, 2)
    print(f"ratio {ratio['per_seed']} (mean {ratio['mean']} ± {ratio['se']}), drop "
          f"{drop['per_seed']} pp (mean {drop['mean']} ± {drop['se']})", flush=True)  # fmt: skip
    return {
        "ratio": ratio,
        "drop_pp": drop,
        "targets_met": {
            "ratio_60x_within_0.5pp": (
                not quick
                and ratio["mean"] >= TARGETS["ratio"]
                and drop["mean"] <= TARGETS["drop_pp"]
            ),
        },
        "seeds": list(seeds),
        "recipe": {
            "sparsity": SPARSITY,
            "pruning": PRUNING.to_dict() | {"epochs": epochs},
            "prune_until": PRUNE_UNTIL,
            "pruning_steps": PRUNING_STEPS,
            "bits": BITS,
            "centroid_tuning": CENTROID_TUNING.to_dict(),
        },  # fmt: skip
        "file_bytes": [r["file_bytes"] for r in runs],
        "ratio_vs_torch_save": [round(torch_bytes / r["file_bytes"], 2) for r in runs],
        "dense_fp32_bytes": dense_bytes,
        "torch_save_bytes": torch_bytes,
        "accuracy": [round(r["accuracy"], 4) for r in runs],
        "dense_accuracy": [round(d, 4) for d in dense],
        "baseline_accuracy": round(base, 4),
        "drop_vs_shipped_pp": [round(100 * (base - r["accuracy"]), 2) for r in runs],
        **{
            key: [round(r[key], 4) for r in runs]
            for key in ("pruned_accuracy", "shared_accuracy_before_tuning", "tuned_accuracy")
        },
        "reloaded_outputs_equal": all(r["reloaded_outputs_equal"] for r in runs),
        "weights_kept_pct": [round(r["weights_kept_pct"], 2) for r in runs],
        "layers": rows,
        "fc1_streams_bytes": streams,
        "kmeans_seconds": round(kmeans_seconds, 3),
        "huffman_msymbols_per_s": round(min(encode, decode), 2),
        "huffman_encode_msymbols_per_s": round(encode, 2),
        "huffman_decode_msymbols_per_s": round(decode, 2),
        "huffman_bits_per_symbol": round(coded_bits, 3),
        "entropy_bits_per_symbol": round(h, 3),
        "train_seconds": [round(r["train_seconds"], 1) for r in runs],
        "quick": quick,
        "workers": WORKERS,
        "seconds": round(time.perf_counter() - start, 1),
        "machine": mc.measure.machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 2 pruning epochs")
    print(json.dumps(main(parser.parse_args().quick)))
