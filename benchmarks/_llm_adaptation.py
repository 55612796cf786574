"""Adapting and distilling the tiny GPT (chapter 10's LoRA, QLoRA and distillation figures).

    python benchmarks/_llm_adaptation.py            # both studies, one JSON line
    python benchmarks/_llm_adaptation.py --quick    # a smoke test: few steps, 64 windows

`lora_recovery` prunes the block weights 2:4 by magnitude (`semistructured.nm_mask`, kept
fixed through training by `torch.nn.utils.prune`), then trains
rank-8 LoRA adapters beside the frozen sparse weights and reports the damage before and
after, paired window by window against the dense model, and ``recovered = 1 − after/before``
(target ≥ 0.5). The same for QLoRA on int4 (g = 32) and 3-bit bases, full fine-tuning of
the sparse model (mask kept) with the same steps for comparison, and the bytes each way of
fine-tuning holds (derived and measured, `minicompress.lora`).

`kd_study` trains a smaller TinyGPT on the text alone and, from the same initialisation,
on the teacher's next-character distributions (`minicompress.lm.distill_lm`), with equal
steps, over several seeds; it reports each seed's share of the teacher–student gap closed.
The students are far from converged (≈ 3.8 bits/char against the teacher's 2.16): the
share closed grows with training (measured at one thread: 200 steps × 16 windows 0.013 ±
0.007, one seed negative; 400 × 16 0.057 ± 0.017; 400 × 32 0.137 ± 0.019, ~300 s).

Both are called by benchmarks/llm_sparsity.py. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from minicompress import damage, lm, lora, text, zoo
from minicompress import semistructured as S
from minicompress.calibration import block_linears
from minicompress.distillation import gap_closed
from minicompress.measure import machine
from minicompress.models import TinyGPT

WINDOWS = 384  # chapter 9's validation windows


def prune_2_4(model: nn.Module) -> nn.Module:
    """A copy whose block weights are 2:4 sparse by magnitude; the mask stays through training
    (`torch.nn.utils.prune` recomputes weight = weight_orig ⊙ mask every forward pass)."""
    sparse = copy.deepcopy(model)
    for layer in block_linears(sparse).values():
        prune.custom_from_mask(layer, "weight", S.nm_mask(layer.weight.detach().abs()))
    return sparse


def one_step_memory(model: nn.Module, tokens: Tensor, batch_size: int) -> dict:
    """Bytes held after one AdamW step on ``model``'s trainable parameters: predicted and
    measured (`lora.memory_after_one_step`)."""
    predicted, measured = lora.memory_after_one_step(model, tokens, batch_size)
    return {
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "predicted_bytes": predicted.total,
        "measured_bytes": measured.total,
        "frozen_bytes": measured.frozen,
    }


def _seconds(wall: float, cpu: float) -> dict:
    """Wall-clock and CPU seconds since (wall, cpu) = (perf_counter(), process_time())."""
    return {"seconds": round(time.perf_counter() - wall, 1),
            "cpu_seconds": round(time.process_time() - cpu, 1)}  # fmt: skip


def _log(name: str, value: object) -> None:
    """Each figure on stderr as it is measured (the JSON line on stdout comes at the end)."""
    print(name, json.dumps(value), file=sys.stderr, flush=True)


def _delta(bits: Tensor, base: Tensor) -> dict:
    d = damage.paired(bits, base)
    return {"delta_bpc": round(d.mean, 4), "se": round(d.standard_error, 4)}


def lora_recovery(
    model: nn.Module, train: Tensor, valid: Tensor, windows: int | None = WINDOWS,
    rank: int = 8, steps: int = 150, batch_size: int = 16, lr: float = 3e-3,
    full_lr: float = 1e-3, seed: int = 0,
) -> dict:  # fmt: skip
    """Damage before and after rank-``rank`` LoRA (2:4 sparse base) and QLoRA (int4 g32 and
    3-bit g32 bases), and full fine-tuning of the 2:4 model, all with ``steps`` steps."""
    start = time.perf_counter(), time.process_time()

    def scores(m: nn.Module) -> Tensor:
        return lm.window_bits(m, valid, max_windows=windows)

    def config(rate: float) -> lm.LMConfig:
        return lm.LMConfig(steps=steps, batch_size=batch_size, lr=rate, warmup=steps // 10,
                           weight_decay=0.0, seed=seed)  # fmt: skip

    base = scores(model)
    result: dict = {"windows": len(base), "float_bpc": round(float(base.mean()), 4),
                    "rank": rank, "steps": steps, "batch_size": batch_size}  # fmt: skip
    bases = {
        "sparse24": prune_2_4(model),
        "int4_g32": lora.quantize_base(model, 4, 32),
        "int3_g32": lora.quantize_base(model, 3, 32),
    }
    for name, frozen in bases.items():
        t, c = time.perf_counter(), time.process_time()
        before = scores(frozen)
        adapted = lora.add_lora(frozen, rank, seed=seed)
        lm.train_lm(adapted, train, config(lr), progress=False)
        after = scores(adapted)
        result[name] = {
            "before": _delta(before, base),
            "after": _delta(after, base),
            "recovered": round(damage.recovered(base, before, after).recovered, 3),
        } | _seconds(t, c)
        _log(name, result[name])
    t, c = time.perf_counter(), time.process_time()
    full = bases["sparse24"]  # trained in place: every parameter, the 2:4 mask kept
    lm.train_lm(full, train, config(full_lr), progress=False)
    after = scores(full)
    result["sparse24_full_finetune"] = {
        "after": _delta(after, base),
        "recovered": round(damage.recovered(base, scores(prune_2_4(model)), after).recovered, 3),
    } | _seconds(t, c)
    _log("sparse24_full_finetune", result["sparse24_full_finetune"])
    t, c = time.perf_counter(), time.process_time()
    dense = lora.add_lora(model, rank, seed=seed)  # control: what the same training does alone
    lm.train_lm(dense, train, config(lr), progress=False)
    result["dense_lora_control"] = {"after": _delta(scores(dense), base)} | _seconds(t, c)
    _log("dense_lora_control", result["dense_lora_control"])
    adapters = lora.adapter_parameters(lora.add_lora(model, rank))
    total = sum(p.numel() for p in model.parameters())
    result["adapter_parameters"] = adapters
    result["adapter_share"] = round(adapters / total, 4)
    result["memory"] = {
        "full": one_step_memory(model, train, batch_size),
        "lora": one_step_memory(lora.add_lora(model, rank), train, batch_size),
        "qlora_int4": one_step_memory(lora.add_lora(bases["int4_g32"], rank), train, batch_size),
    }
    return result | _seconds(*start)


def _student(seed: int, d: int, layers: int) -> TinyGPT:
    return TinyGPT.seeded(seed, d=d, layers=layers, heads=4 if d % 4 == 0 else 1)


def kd_study(
    teacher: nn.Module, train: Tensor, valid: Tensor, windows: int | None = WINDOWS,
    seeds: tuple[int, ...] = (0, 1, 2), steps: int = 400, batch_size: int = 16,
    d: int = 32, layers: int = 2, temperature: float = 1.0, alpha: float = 1.0,
    lr: float = 1e-2,
) -> dict:  # fmt: skip
    """Text-only vs distilled students (same initialisation, windows and steps) per seed;
    the share of the teacher–student gap closed, its mean ± standard error over seeds."""
    start = time.perf_counter(), time.process_time()

    def score(m: nn.Module) -> float:
        return float(lm.window_bits(m, valid, max_windows=windows).mean())

    teacher_bpc = score(teacher)
    per_seed = []
    for seed in seeds:
        config = lm.LMConfig(steps=steps, batch_size=batch_size, lr=lr, warmup=steps // 10,
                             seed=seed)  # fmt: skip
        scratch, distilled = _student(seed, d, layers), _student(seed, d, layers)
        lm.train_lm(scratch, train, config, progress=False)
        lm.distill_lm(distilled, teacher, train, config, temperature, alpha, progress=False)
        s, k = score(scratch), score(distilled)
        # gap_closed wants higher-is-better scores: use −bits/char
        per_seed.append({"seed": seed, "text_only_bpc": round(s, 4), "distilled_bpc": round(k, 4),
                         "gap_closed": round(gap_closed(-s, -k, -teacher_bpc), 3)})  # fmt: skip
        _log("kd", per_seed[-1])
    closed = lm.summarize(torch.tensor([r["gap_closed"] for r in per_seed], dtype=torch.float64))
    return {
        "teacher_bpc": round(teacher_bpc, 4),
        "student": {"d": d, "layers": layers,
                    "parameters": sum(p.numel() for p in _student(0, d, layers).parameters())},
        "steps": steps, "batch_size": batch_size, "temperature": temperature, "alpha": alpha,
        "per_seed": per_seed,
        "gap_closed_mean": round(closed.mean, 3),
        "gap_closed_se": round(closed.standard_error, 3),
        "positive_seeds": sum(r["gap_closed"] > 0 for r in per_seed),
    } | _seconds(*start)  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, 64 windows")
    args = parser.parse_args(argv)
    model = zoo.pretrained("tinygpt")
    train, valid = text.split("train"), text.split("validation")
    quick = {"windows": 64, "steps": 10} if args.quick else {}
    result = {
        "lora": lora_recovery(model, train, valid, **quick),
        "kd": kd_study(model, train, valid, **quick),
    }
    result["targets_met"] = {
        "lora_sparse24_recovered": result["lora"]["sparse24"]["recovered"] >= 0.5,
        "kd_gap_closed_positive": result["kd"]["positive_seeds"] == len(result["kd"]["per_seed"]),
    }
    result["machine"] = machine()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
