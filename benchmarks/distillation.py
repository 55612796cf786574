"""Knowledge distillation on Fashion-MNIST: LeNet-5 teacher, two MLP students, from scratch
vs. distilled, over temperatures, α and seeds.

    python benchmarks/distillation.py            # the full sweep (see RECIPE)
    python benchmarks/distillation.py --quick    # two seeds, two temperatures: a smoke test

The teacher is the zoo's LeNet-5 (92.21 %); its logits on the training images are computed
once. Each student is trained on the first ``n_train`` training images (the data-limited
setting where soft targets help most, Hinton et al. 2015 §3), from scratch with
cross-entropy and distilled with `minicompress.distillation.kd_loss`, with the same
initialisation, batches and schedule for each seed. Reported: test accuracy mean ± sd over
seeds, the share of the teacher–student gap closed, and whether the distilled student beats
its from-scratch twin in every seed. The top-level numbers are for the best setting (largest
mean gap closed) of the larger student.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import minicompress as mc
from minicompress.distillation import distill, gap_closed, teacher_logits
from minicompress.train import TrainConfig, evaluate, fit

RECIPE = {
    "n_train": 5_000,
    "epochs": 100,
    "lr": 0.05,
    "batch_size": 128,
    "students": {"mlp32": (32,), "mlp256": (256,)},
    "temperatures": (1.0, 2.0, 4.0, 8.0, 20.0),
    "alphas": (0.5, 1.0),
    "seeds": (0, 1, 2),
}


def student(hidden: tuple[int, ...], seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # the same initial weights for the scratch and distilled twins
    return mc.models.MLP(hidden)


def summary(accs: list[float]) -> dict:
    return {"mean": round(statistics.mean(accs), 4), "sd": round(statistics.stdev(accs), 4),
            "per_seed": [round(a, 4) for a in accs]}  # fmt: skip


def main(recipe: dict) -> dict:
    train_x, train_y = mc.data.fashion_mnist("train")
    test_x, test_y = mc.data.fashion_mnist("test")
    n = recipe["n_train"]
    x, y = train_x[:n], train_y[:n]
    teacher = mc.zoo.pretrained("lenet5")
    teacher_acc = evaluate(teacher, test_x, test_y)
    start = time.perf_counter()
    cached = teacher_logits(teacher, x)  # once, reused by every run below
    logits_s = time.perf_counter() - start
    seeds = recipe["seeds"]
    results, times = {}, []
    for name, hidden in recipe["students"].items():

        def trained(seed: int, train, hidden: tuple = hidden) -> float:
            """Test accuracy of a fresh student trained by ``train(model, config)``."""
            config = TrainConfig(epochs=recipe["epochs"], lr=recipe["lr"],
                                 batch_size=recipe["batch_size"], seed=seed)  # fmt: skip
            model = student(hidden, seed)
            start = time.perf_counter()
            train(model, config)
            times.append(time.perf_counter() - start)
            return evaluate(model, test_x, test_y)

        scratch = [trained(seed, lambda m, c: fit(m, x, y, c, progress=False)) for seed in seeds]
        settings = []
        for temperature in recipe["temperatures"]:
            for alpha in recipe["alphas"]:
                accs = [
                    trained(seed, lambda m, c, t=temperature, a=alpha: distill(
                        m, cached, x, y, c, t, a, progress=False))
                    for seed in seeds
                ]  # fmt: skip
                gaps = [gap_closed(s, d, teacher_acc) for s, d in zip(scratch, accs, strict=True)]
                settings.append({
                    "temperature": temperature, "alpha": alpha, "accuracy": summary(accs),
                    "gap_closed": round(gap_closed(statistics.mean(scratch),
                                                   statistics.mean(accs), teacher_acc), 3),
                    "gap_closed_per_seed": [round(g, 3) for g in gaps],
                    "beats_scratch_every_seed": all(d > s for s, d in zip(scratch, accs,
                                                                          strict=True)),
                })  # fmt: skip
                print(f"{name:7s} T={temperature:<4g} α={alpha:<4g} "
                      f"{100 * statistics.mean(accs):.2f} ± {100 * statistics.stdev(accs):.2f} % "
                      f"(scratch {100 * statistics.mean(scratch):.2f} %) "
                      f"gap closed {settings[-1]['gap_closed']:+.2f}", flush=True)  # fmt: skip
        best = max(settings, key=lambda s: s["gap_closed"])
        results[name] = {"hidden": list(hidden), "parameters": sum(
            p.numel() for p in student(hidden, 0).parameters()), "scratch": summary(scratch),
            "settings": settings, "best": best}  # fmt: skip
    head = results[list(recipe["students"])[-1]]
    return {
        "teacher_accuracy": round(teacher_acc, 4),
        "student": list(recipe["students"])[-1],
        "scratch_mean": head["scratch"]["mean"],
        "scratch_sd": head["scratch"]["sd"],
        "distilled_mean": head["best"]["accuracy"]["mean"],
        "distilled_sd": head["best"]["accuracy"]["sd"],
        "gap_closed": head["best"]["gap_closed"],
        "best_temperature": head["best"]["temperature"],
        "best_alpha": head["best"]["alpha"],
        "beats_scratch_every_seed": head["best"]["beats_scratch_every_seed"],
        "seeds": list(seeds),
        "students": results,
        "recipe": {k: v for k, v in recipe.items() if k != "students"},
        "teacher_logits_s": round(logits_s, 2),
        "seconds_per_run": round(statistics.mean(times), 2),
        "machine": mc.measure.machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two seeds, T in {1, 4}, α = 1")
    recipe = dict(RECIPE)
    if parser.parse_args().quick:
        recipe |= {"temperatures": (1.0, 4.0), "alphas": (1.0,), "seeds": (0, 1)}
    print(json.dumps(main(recipe)))
