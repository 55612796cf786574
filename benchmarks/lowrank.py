"""Architecture, low rank and transfer on Fashion-MNIST: the chapter's headline figures.

    python benchmarks/lowrank.py            # the full recipe (see RECIPE)
    python benchmarks/lowrank.py --quick    # shorter training, same measurements: a smoke test

- Low rank: LeNet-300-100 with fc1 and fc2 at rank 32, LeNet-5 with fc1 at rank 40 (both ≥ 5×
  fewer parameters), each fine-tuned, against the dense model fine-tuned with the same recipe
  (the honest baseline). Reported: parameter ratio, drop in pp with its paired standard error.
  Target: ≥ 5× fewer parameters within 0.5 pp.
- Separable: `SeparableLeNet5` vs `LeNet5`: MAC ratio (a count) and latency ratio (medians,
  batch 1 and 256, one thread) — latency falls less than MACs.
- Transfer: pretrain a small LeNet-5 (10-20-100) on classes 0–4, transfer to classes 5–9 with
  10, 100, 1000 labels per class; fine-tuning vs training from scratch over ≥ 3 seeds, mean
  gain and its standard error.
- Search: MLPs of several widths trained ``search_epochs`` on all training images, against the
  low-rank LeNet-300-100: is it above the candidates' accuracy–bytes frontier?

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

import minicompress as mc
from minicompress import lowrank as LR
from minicompress import transfer as T
from minicompress.architecture import SeparableLeNet5
from minicompress.measure import count_macs, count_parameters, measure_latency, paired_difference
from minicompress.models import MLP, LeNet5
from minicompress.train import TrainConfig, evaluate, fit

RECIPE = {
    "lenet300_rank": 32,
    "lenet5_rank": 40,
    "finetune_epochs": 3,
    "finetune_lr": 0.01,
    "transfer_labels": (10, 100, 1000),
    "transfer_epochs": {10: 60, 100: 15, 1000: 4},
    "pretrain_epochs": 3,
    "seeds": (0, 1, 2),
    "search_widths": ((16,), (32,), (64,), (128,), (256,), (64, 32), (128, 64), (300, 100)),
    "search_epochs": 10,
}
QUICK = RECIPE | {
    "finetune_epochs": 1,
    "transfer_epochs": {10: 30, 100: 8, 1000: 2},
    "pretrain_epochs": 1,
    "search_widths": ((32,), (128,), (300, 100)),
    "search_epochs": 2,
}


def low_rank_result(base, layers, rank, data, test, config) -> tuple[dict, torch.nn.Module]:
    """Fine-tuned low-rank model vs the dense model fine-tuned with the same config."""
    dense = copy.deepcopy(base)
    fit(dense, *data, config, progress=False)
    small = LR.low_rank(base, dict.fromkeys(layers, rank))
    untuned = evaluate(small, *test)
    fit(small, *data, config, progress=False)
    d = paired_difference(small, dense, *test)
    return {
        "rank": rank,
        "params_ratio": round(count_parameters(base) / count_parameters(small), 3),
        "drop_pp": round(-100 * d.difference, 3),
        "drop_se_pp": round(100 * d.standard_error, 3),
        "dense_finetuned_acc": round(evaluate(dense, *test), 4),
        "lowrank_untuned_acc": round(untuned, 4),
        "lowrank_finetuned_acc": round(evaluate(small, *test), 4),
    }, small


def separable(test_x) -> dict:
    dense, sep = LeNet5().eval(), SeparableLeNet5().eval()  # timing does not need training
    one, batch = test_x[:1], test_x[:256]
    out = {"separable_mac_ratio": round(count_macs(dense, one) / count_macs(sep, one), 3)}
    for b, x, repeats in ((1, one, 300), (256, batch, 30)):
        t_dense = measure_latency(dense, x, warmup=10, repeats=repeats, threads=1).median_ms
        t_sep = measure_latency(sep, x, warmup=10, repeats=repeats, threads=1).median_ms
        out[f"separable_latency_ratio_b{b}"] = round(t_dense / t_sep, 3)
    return out


def transfer(train_x, train_y, test_x, test_y, recipe) -> dict:
    source, target = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
    src_x, src_y = T.class_subset(train_x, train_y, source)
    tgt_test = T.class_subset(test_x, test_y, target)
    pretrained = T.new_head(LeNet5(10, 20, 100), "fc2", 5)
    fit(pretrained, src_x, src_y, TrainConfig(epochs=recipe["pretrain_epochs"], lr=0.05),
        progress=False)  # fmt: skip
    out = {}
    for k in recipe["transfer_labels"]:
        gains, accs = [], {"scratch": [], "probe": [], "fine-tune": []}
        for seed in recipe["seeds"]:
            x_k, y_k = T.class_subset(train_x, train_y, target, k, seed=seed)
            cfg = TrainConfig(epochs=recipe["transfer_epochs"][k], lr=0.02, batch_size=32,
                              seed=seed)  # fmt: skip
            for method in accs:
                if method == "scratch":
                    torch.manual_seed(seed)
                    model = T.new_head(LeNet5(10, 20, 100), "fc2", 5, seed=seed)
                else:
                    model = T.new_head(copy.deepcopy(pretrained), "fc2", 5, seed=seed)
                    if method == "probe":
                        T.freeze(model, ["fc2"])
                fit(model, x_k, y_k, cfg, progress=False)
                accs[method].append(evaluate(model, *tgt_test))
            gains.append(100 * (accs["fine-tune"][-1] - accs["scratch"][-1]))
        out[k] = {
            "gain_pp": round(statistics.mean(gains), 3),
            "gain_se_pp": round(statistics.stdev(gains) / len(gains) ** 0.5, 3),
            **{m: round(statistics.mean(a), 4) for m, a in accs.items()},
        }
    return out


def search(train_x, train_y, test, lowrank300, recipe) -> dict:
    config = TrainConfig(epochs=recipe["search_epochs"], lr=0.05)
    candidates = []
    for widths in recipe["search_widths"]:
        model = MLP(widths)
        fit(model, train_x, train_y, config, progress=False)
        candidates.append((mc.measure.size_in_bits(model) // 8, evaluate(model, *test), widths))
    nbytes = mc.measure.size_in_bits(lowrank300) // 8
    fitting = [acc for b, acc, _ in candidates if b <= nbytes]
    return {
        "candidates": [
            {"hidden": list(w), "bytes": b, "accuracy": round(a, 4)} for b, a, w in candidates
        ],  # fmt: skip
        "lowrank300_bytes": nbytes,
        "lowrank300_accuracy": round(evaluate(lowrank300, *test), 4),
        "best_candidate_within_bytes": round(max(fitting), 4) if fitting else None,
    }


def main(recipe: dict) -> dict:
    torch.set_num_threads(1)
    start = time.perf_counter()
    train_x, train_y = mc.data.fashion_mnist("train")
    test_x, test_y = mc.data.fashion_mnist("test")
    test = (test_x, test_y)
    config = TrainConfig(epochs=recipe["finetune_epochs"], lr=recipe["finetune_lr"])
    r300, small300 = low_rank_result(
        mc.zoo.pretrained("lenet300"),
        ("fc1", "fc2"),
        recipe["lenet300_rank"],
        (train_x, train_y),
        test,
        config,
    )
    r5, _ = low_rank_result(mc.zoo.pretrained("lenet5"), ("fc1",), recipe["lenet5_rank"],
                            (train_x, train_y), test, config)  # fmt: skip
    tr = transfer(train_x, train_y, test_x, test_y, recipe)
    return {
        "lenet300_params_ratio": r300["params_ratio"],
        "lenet300_drop_pp": r300["drop_pp"],
        "lenet300_drop_se_pp": r300["drop_se_pp"],
        "lenet5_params_ratio": r5["params_ratio"],
        "lenet5_drop_pp": r5["drop_pp"],
        "lenet5_drop_se_pp": r5["drop_se_pp"],
        **separable(test_x),
        "transfer_gain_pp": tr[100]["gain_pp"] if 100 in tr else None,
        "transfer_gain_se_pp": tr[100]["gain_se_pp"] if 100 in tr else None,
        "transfer_seeds": len(recipe["seeds"]),
        "lenet300": r300,
        "lenet5": r5,
        "transfer": {str(k): v for k, v in tr.items()},
        "search": search(train_x, train_y, test, small300, recipe),
        "targets_met": {
            "lenet300": r300["params_ratio"] >= 5 and r300["drop_pp"] <= 0.5,
            "lenet5": r5["params_ratio"] >= 5 and r5["drop_pp"] <= 0.5,
        },
        "recipe": {
            k: (v if not isinstance(v, dict) else {str(a): b for a, b in v.items()})
            for k, v in recipe.items()
        },  # fmt: skip
        "seconds": round(time.perf_counter() - start, 1),
        "machine": mc.measure.machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter training (smoke test)")
    args = parser.parse_args()
    result = main(QUICK if args.quick else RECIPE)
    print(json.dumps(result))
