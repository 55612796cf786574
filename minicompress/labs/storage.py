"""Checkers for the storage lab: each tests a student's function against
`minicompress.checkpoint` / `minicompress.fsdp` on randomized inputs and raises
`LabCheckError` naming the mistake it recognises.

The lab's functions:

- ``plan_shards(state, max_bytes) -> (shards, weight_map)``: the keys of ``state``, in
  order, cut into shards (lists of keys) of at most ``max_bytes`` bytes of tensor data, a
  tensor larger than ``max_bytes`` alone in its shard; and the index's ``weight_map``, every
  key → its shard's file name ``shard_file_name(k, n)`` (k = 1 … n);
- ``memory_per_device(parameters, devices, bytes_per_value, optimizer_states) -> float``:
  the bytes each of N devices holds for parameters, gradients and optimizer state when all
  three are sharded, M = (2 + s) · P · b / N.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from minicompress import checkpoint as reference
from minicompress.fsdp import memory_per_device as reference_memory
from minicompress.labs import LabCheckError, _call

__all__ = ["check_memory_per_device", "check_plan_shards"]


def _sizes(state: dict[str, Tensor], unit: Callable[[Tensor], int]) -> dict[str, int]:
    return {name: unit(t) for name, t in state.items()}


def _greedy(sizes: dict[str, int], max_bytes: int, *, strict: bool = False) -> list[list[str]]:
    """The reference planner on given sizes; ``strict=True`` is the ``>=`` slip (a new shard
    when the current one would reach ``max_bytes`` exactly)."""
    shards: list[list[str]] = []
    used = max_bytes + 1
    for name, size in sizes.items():
        if used + size > max_bytes or (strict and used + size == max_bytes):
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    return shards


def _state(shapes: list[tuple[str, tuple[int, ...], torch.dtype]]) -> dict[str, Tensor]:
    return {name: torch.zeros(shape, dtype=dtype) for name, shape, dtype in shapes}


def _shard_cases(seed: int) -> list[tuple[dict[str, Tensor], int]]:
    """(state, max_bytes) cases. Each one is built so that a particular slip shows: exact
    fits (≤ vs <), a first tensor over the limit (empty first shard, dropped tensor), mixed
    dtypes (numel vs bytes, 4 bytes assumed), small tensors after big ones (sorting)."""
    g = torch.Generator().manual_seed(seed)
    f32, f16, i8 = torch.float32, torch.float16, torch.int8

    def rows() -> int:
        return int(torch.randint(8, 40, (1,), generator=g))

    a, b = rows(), rows()
    mlp = [  # an MLP's state dict: weights and biases interleaved, in layer order
        ("fc1.weight", (a, 28), f32), ("fc1.bias", (a,), f32),
        ("fc2.weight", (b, a), f32), ("fc2.bias", (b,), f32),
        ("fc3.weight", (10, b), f32), ("fc3.bias", (10,), f32),
    ]  # fmt: skip
    mlp_state = _state(mlp)
    mlp_limit = 4 * (a * 28 + a + 10)  # fc1 fits with room; fc2.weight alone may exceed it
    # exact fits: 4 tensors of 256 bytes, limit 512 -> two shards of exactly 512 bytes
    exact = _state([(f"block{i}.weight", (8, 8), f32) for i in range(4)])
    # the first tensor is larger than the limit: it gets shard 1 to itself
    oversized_first = _state(
        [("embed.weight", (64, 16), f32), ("norm.weight", (16,), f32), ("norm.bias", (16,), f32),
         ("head.weight", (10, 16), f32), ("head.bias", (10,), f32)]
    )  # fmt: skip
    # an oversized tensor in the middle, and mixed dtypes (float16, int8 codes, float32 scales)
    n = int(torch.randint(20, 60, (1,), generator=g))
    mixed = _state(
        [("a.weight", (n, 4), f16), ("a.scale", (n,), f32), ("b.codes", (n, 16), i8),
         ("b.scale", (n,), f32), ("huge.weight", (n, 64), f32), ("c.weight", (n, 2), f16),
         ("c.bias", (n,), f32)]
    )  # fmt: skip
    # big tensors first, then small ones that a size-sorting packer would move forward
    big_small = _state(
        [("big0", (30, 10), f32), ("small0", (3,), f32), ("big1", (30, 10), f32),
         ("small1", (5,), f32), ("big2", (30, 10), f32), ("small2", (2,), f32)]
    )  # fmt: skip
    return [
        (mlp_state, mlp_limit),
        (exact, 512),
        (oversized_first, 1000),
        (mixed, 4 * n * 8),
        (big_small, 1250),
        (mlp_state, 10**9),  # everything in one shard
    ]


def _describe(state: dict[str, Tensor], max_bytes: int) -> str:
    return f"plan_shards(state of {len(state)} tensors, max_bytes={max_bytes})"


def _check_plan(state: dict[str, Tensor], max_bytes: int, result: object, where: str) -> None:
    if not isinstance(result, tuple) or len(result) != 2:
        raise LabCheckError(f"{where} must return a tuple (shards, weight_map).")
    shards, weight_map = result
    if not isinstance(shards, list | tuple) or not all(isinstance(s, list | tuple) for s in shards):
        raise LabCheckError(f"{where}: shards must be a list of lists of keys, one per shard.")
    if not isinstance(weight_map, dict):
        raise LabCheckError(f"{where}: weight_map must be a dict key -> shard file name.")
    keys = list(state)
    sizes = _sizes(state, reference.tensor_bytes)
    expected = reference.plan_shards(state, max_bytes)
    placed = [name for shard in shards for name in shard]
    unknown = [name for name in placed if name not in state]
    if unknown:
        raise LabCheckError(f"{where}: shard entries must be keys of the state dict, "
                            f"got {unknown[0]!r}.")  # fmt: skip
    for name in keys:
        where_found = [k + 1 for k, shard in enumerate(shards) if name in shard]
        if len(where_found) > 1:
            raise LabCheckError(
                f"{where}: tensor {name!r} is in shards {where_found}: a tensor is never split "
                "across shards (a loader reads it whole from one file); when it does not fit, "
                "start a new shard with it."
            )
    missing = [name for name in keys if name not in placed]
    if missing:
        name = missing[0]
        if sizes[name] > max_bytes:
            raise LabCheckError(
                f"{where}: tensor {name!r} ({sizes[name]} bytes) is larger than max_bytes and "
                "is missing: a tensor over the limit is not dropped, it gets a shard of its own."
            )
        raise LabCheckError(f"{where}: tensor {name!r} is in no shard; every key must be in "
                            "exactly one.")  # fmt: skip
    empty = [k + 1 for k, shard in enumerate(shards) if not shard]
    if empty:
        first = " (the first one)" if empty[0] == 1 else ""
        raise LabCheckError(
            f"{where}: shard {empty[0]}{first} is empty: a file with no tensors. Open a new "
            "shard only when there is a tensor to put in it — e.g. start with no shard and "
            "`used = max_bytes + 1`, so that the first tensor opens shard 1 whatever its size."
        )
    if placed != keys:
        by_size = sorted(keys, key=lambda k: sizes[k], reverse=True)
        firsts = [sizes[s[0]] for s in shards]
        decreasing = all(x >= y for x, y in zip(firsts, firsts[1:], strict=False))
        if placed == by_size or (placed[0] == by_size[0] and decreasing):
            why = (
                " The keys were reordered by size: that is first-fit-decreasing bin packing, "
                "a different planner (fuller shards, but a layer's tensors scattered across "
                "files and streamed back out of order)."
            )
        else:
            why = ""
        raise LabCheckError(
            f"{where}: the keys are not in the state dict's order (first difference: "
            f"{next(p for p, k in zip(placed, keys, strict=True) if p != k)!r}).{why} Walk "
            "the keys in order, so that shard k holds the next run of keys; a loader streams "
            "them back in that order."
        )
    totals = [sum(sizes[n] for n in shard) for shard in shards]
    for k, (shard, total) in enumerate(zip(shards, totals, strict=True), start=1):
        if total > max_bytes and len(shard) > 1:
            hint = ""
            if [list(s) for s in shards] == _greedy(_sizes(state, Tensor.numel), max_bytes):
                hint = (" You counted elements (numel), not bytes: a float32 element takes 4 "
                        "bytes; use `t.numel() * t.element_size()`.")  # fmt: skip
            elif [list(s) for s in shards] == _greedy(
                _sizes(state, lambda t: 4 * t.numel()), max_bytes
            ):
                hint = (
                    " You assumed 4 bytes per element; this state dict also holds float16 "
                    "(2 bytes) and int8 (1 byte) tensors: use `t.element_size()`."
                )
            raise LabCheckError(
                f"{where}: shard {k} holds {total} bytes of tensor data, more than max_bytes = "
                f"{max_bytes}.{hint}"
            )
    got = [list(s) for s in shards]
    if got != expected:
        if got == _greedy(sizes, max_bytes, strict=True):
            k = next(i for i, (x, y) in enumerate(zip(got, expected, strict=False)) if x != y)
            raise LabCheckError(
                f"{where}: shard {k + 1} is closed at {totals[k]} bytes although the next "
                f"tensor, {expected[k][len(got[k])]!r}, fits exactly: 'at most max_bytes' "
                "includes equality. Start a new shard only when used + size > max_bytes "
                "(not >=)."
            )
        if got == _greedy(_sizes(state, lambda t: 4 * t.numel()), max_bytes):
            raise LabCheckError(f"{where}: you assumed 4 bytes per element; this state dict "
                                "also holds float16 and int8 tensors: use "
                                "`t.numel() * t.element_size()`.")  # fmt: skip
        if got == _greedy(_sizes(state, Tensor.numel), max_bytes):
            raise LabCheckError(f"{where}: you counted elements (numel), not bytes: use "
                                "`t.numel() * t.element_size()`.")  # fmt: skip
        k = next(i for i, (x, y) in enumerate(zip(got, expected, strict=False)) if x != y)
        raise LabCheckError(
            f"{where}: shard {k + 1} should hold {expected[k]} ({len(expected)} shards in "
            f"all), got {got[k]}. Fill a shard while the next tensor fits, then start the next "
            "one (greedy, in key order)."
        )
    n = len(shards)
    names = {name: reference.shard_file_name(k, n) for k, s in enumerate(shards, 1) for name in s}
    if set(weight_map) != set(keys):
        extra = sorted(set(weight_map) ^ set(keys))
        raise LabCheckError(f"{where}: weight_map must have exactly the state dict's keys; "
                            f"{extra[0]!r} is missing or extra.")  # fmt: skip
    for name in keys:
        if weight_map[name] != names[name]:
            k = next(i for i, s in enumerate(shards, 1) if name in s)
            raise LabCheckError(
                f"{where}: weight_map[{name!r}] is {weight_map[name]!r}; that key is in shard "
                f"{k} of {n}, whose file is {names[name]!r} (`shard_file_name(k, n)`, "
                "counted from 1)."
            )


def check_plan_shards(fn: Callable[[dict, int], tuple], seed: int = 0) -> None:
    """Check ``fn(state, max_bytes) -> (shards, weight_map)`` against
    `minicompress.checkpoint.plan_shards`: keys in order, greedy, at most ``max_bytes`` bytes
    per shard (equality allowed), an oversized tensor alone, no empty shard; weight_map
    naming each key's file."""
    cases = _shard_cases(seed)
    for state, max_bytes in cases:
        where = _describe(state, max_bytes)
        given = {k: v.clone() for k, v in state.items()}
        result = _call(fn, where, given, max_bytes)
        if list(given) != list(state) or any(not given[k].equal(v) for k, v in state.items()):
            raise LabCheckError(f"{where} modified its argument `state`: a planner only reads "
                                "the sizes.")  # fmt: skip
        _check_plan(state, max_bytes, result, where)
    print(f"✓ plan_shards passed {len(cases)} randomized checks")


def _memory_cases(seed: int) -> list[tuple[int, int, int, int]]:
    g = torch.Generator().manual_seed(seed)
    draws = torch.randint(1_000, 5_000_000, (3,), generator=g).tolist()
    return [
        (266_610, 2, 4, 2),  # LeNet-300-100, 2 devices, float32, Adam
        (int(draws[0]), 4, 4, 1),  # SGD with momentum
        (int(draws[1]), 8, 2, 2),  # bfloat16 values
        (int(draws[2]), 3, 4, 0),  # plain SGD: no optimizer state
        (7_000_000_000, 8, 4, 2),
        (int(draws[0]), 1, 4, 2),  # one device: a replicated copy
    ]


def _memory_slips(P: int, N: int, b: int, s: int) -> list[tuple[float, str]]:
    """(value, what went wrong) for the usual wrong formulas."""
    return [
        ((1 + s) * P * b / N, "forgot the gradients: every parameter has a gradient of the "
         "same size, so the factor is 2 + s (parameters + gradients + s optimizer states), "
         "not 1 + s"),
        (2 * P * b / N, "left out the optimizer states: Adam keeps 2 values per parameter (its "
         "moments m and v), SGD with momentum 1; the factor is 2 + s"),
        (P * b / N, "counted the parameters only: add their gradients and the optimizer's s "
         "states per parameter, (2 + s) · P · b / N"),
        ((2 + s) * P * b * N, "multiplied by N: sharding divides the memory among the N devices "
         "(÷ N); × N is what copying the model to every device costs in all"),
        ((2 + s) * P * b, "did not divide by N: that is a full copy on every device "
         "(replication), not sharding"),
        ((2 + s) * P / N, "returned a count of values, not bytes: multiply by bytes_per_value"),
        (4 * P * b / N, "hard-coded Adam's 2 states: use optimizer_states (s)"),
        (P * b + (1 + s) * P * b / N, "sharded only the gradients and optimizer states (ZeRO "
         "stage 2); fully sharded (FSDP, ZeRO stage 3) divides the parameters by N too"),
    ]  # fmt: skip


def check_memory_per_device(fn: Callable[..., float], seed: int = 0) -> None:
    """Check ``fn(parameters, devices, bytes_per_value, optimizer_states)`` against
    M = (2 + s) · P · b / N, naming the usual slips: no gradients, no optimizer state,
    × N instead of ÷ N, a count instead of bytes, Adam's 2 states hard-coded."""
    cases = _memory_cases(seed)
    answers = []
    for P, N, b, s in cases:
        where = (f"memory_per_device(parameters={P:,}, devices={N}, bytes_per_value={b}, "
                 f"optimizer_states={s})")  # fmt: skip
        got = _call(fn, where, P, N, bytes_per_value=b, optimizer_states=s)
        if isinstance(got, Tensor) and got.numel() == 1:
            got = float(got)
        if not isinstance(got, int | float) or isinstance(got, bool):
            raise LabCheckError(f"{where} must return a number of bytes, got "
                                f"{type(got).__name__}.")  # fmt: skip
        want = reference_memory(P, N, bytes_per_value=b, optimizer_states=s)
        answers.append((where, got, want, _memory_slips(P, N, b, s)))
    wrong = [a for a in answers if not math.isclose(a[1], a[2], rel_tol=1e-9)]
    if wrong:
        where, got, want, _ = wrong[0]
        # a slip is named only if it explains every case (some coincide on a single case)
        for i, (_, why) in enumerate(wrong[0][3]):
            if all(math.isclose(g, slips[i][0], rel_tol=1e-9) for _, g, _, slips in answers):
                raise LabCheckError(f"{where} = {got:,.0f}, expected {want:,.0f}: you {why}.")
        raise LabCheckError(f"{where} = {got:,.2f}, expected (2 + s) · P · b / N = {want:,.0f}.")
    print(f"✓ memory_per_device passed {len(cases)} randomized checks")
