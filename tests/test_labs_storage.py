"""Storage lab checkers: the reference planner and formula pass; each slip the lab names is
rejected with its message (split tensor, <= vs <, reordering, dropped or empty shards, numel
for bytes, and the memory formula without gradients, without optimizer states, × N)."""

from __future__ import annotations

import pytest

from minicompress.checkpoint import shard_file_name
from minicompress.labs import LabCheckError
from minicompress.labs.storage import check_memory_per_device, check_plan_shards


def nbytes(t):
    return t.numel() * t.element_size()


def _index(shards):
    n = len(shards)
    return {name: shard_file_name(k, n) for k, shard in enumerate(shards, 1) for name in shard}


def _planner(size=nbytes, new_shard=lambda used, size, limit: used + size > limit):
    def plan(state, max_bytes):
        shards, used = [], None
        for name, tensor in state.items():
            s = size(tensor)
            if used is None or new_shard(used, s, max_bytes):
                shards.append([])
                used = 0
            shards[-1].append(name)
            used += s
        return shards, _index(shards)

    return plan


plan_ok = _planner()


# ---- wrong planners -----------------------------------------------------------------------


def plan_splits_tensors(state, max_bytes):  # fills every shard to the byte, splitting tensors
    shards, used = [[]], 0
    for name, tensor in state.items():
        left = nbytes(tensor)
        while left:
            take = min(left, max_bytes - used)
            shards[-1].append(name)
            used += take
            left -= take
            if used == max_bytes:
                shards.append([])
                used = 0
    shards = [s for s in shards if s]
    return shards, {n: f for n, f in _index(shards).items()}


plan_less_than = _planner(new_shard=lambda used, size, limit: used + size >= limit)
plan_numel = _planner(size=lambda t: t.numel())
plan_four_bytes = _planner(size=lambda t: 4 * t.numel())


def plan_sorted_by_size(state, max_bytes):
    order = sorted(state, key=lambda k: nbytes(state[k]), reverse=True)
    return plan_ok({k: state[k] for k in order}, max_bytes)


def plan_first_fit_decreasing(state, max_bytes):
    shards, used = [], []
    for name in sorted(state, key=lambda k: nbytes(state[k]), reverse=True):
        size = nbytes(state[name])
        for k in range(len(shards)):
            if used[k] + size <= max_bytes:
                shards[k].append(name)
                used[k] += size
                break
        else:
            shards.append([name])
            used.append(size)
    return shards, _index(shards)


def plan_drops_oversized(state, max_bytes):
    small = {k: v for k, v in state.items() if nbytes(v) <= max_bytes}
    return plan_ok(small, max_bytes)


def plan_empty_first_shard(state, max_bytes):
    shards, used = [[]], 0
    for name, tensor in state.items():
        if used + nbytes(tensor) > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes(tensor)
    return shards, _index(shards)


def plan_zero_based_names(state, max_bytes):
    shards, _ = plan_ok(state, max_bytes)
    n = len(shards)
    # names written by hand, counting from 0 (the package's shard_file_name refuses k = 0)
    names = {k: f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(n)}
    return shards, {name: names[k] for k, s in enumerate(shards) for name in s}


def plan_no_index(state, max_bytes):
    return plan_ok(state, max_bytes)[0]


# ---- memory formulas ---------------------------------------------------------------------


def memory_ok(parameters, devices, bytes_per_value=4, optimizer_states=2):
    return (2 + optimizer_states) * parameters * bytes_per_value / devices


def _formula(f):
    def memory(parameters, devices, bytes_per_value=4, optimizer_states=2):
        return f(parameters, devices, bytes_per_value, optimizer_states)

    return memory


memory_no_gradients = _formula(lambda P, N, b, s: (1 + s) * P * b / N)
memory_no_optimizer = _formula(lambda P, N, b, s: 2 * P * b / N)
memory_times_n = _formula(lambda P, N, b, s: (2 + s) * P * b * N)
memory_replicated = _formula(lambda P, N, b, s: (2 + s) * P * b)
memory_count_not_bytes = _formula(lambda P, N, b, s: (2 + s) * P / N)
memory_adam_only = _formula(lambda P, N, b, s: 4 * P * b / N)
memory_zero2 = _formula(lambda P, N, b, s: P * b + (1 + s) * P * b / N)
memory_off = _formula(lambda P, N, b, s: memory_ok(P, N, b, s) + 1)


def not_written(*args, **kwargs):
    raise NotImplementedError()


def test_reference_versions_pass(capsys):
    check_plan_shards(plan_ok)
    check_memory_per_device(memory_ok)
    check_plan_shards(plan_ok, seed=4242)
    check_memory_per_device(memory_ok, seed=4242)
    assert capsys.readouterr().out.count("✓") == 4


def test_the_package_itself_passes():
    from minicompress.checkpoint import plan_shards
    from minicompress.fsdp import memory_per_device

    check_plan_shards(lambda state, m: (plan_shards(state, m), _index(plan_shards(state, m))))
    check_memory_per_device(memory_per_device)


@pytest.mark.parametrize(
    ("checker", "wrong", "message"),
    [
        (check_plan_shards, plan_splits_tensors, "never split"),
        (check_plan_shards, plan_less_than, r"includes equality.*not >="),
        (check_plan_shards, plan_numel, r"counted elements \(numel\), not bytes"),
        (check_plan_shards, plan_four_bytes, "assumed 4 bytes per element"),
        (check_plan_shards, plan_sorted_by_size, "first-fit-decreasing"),
        (check_plan_shards, plan_first_fit_decreasing, "first-fit-decreasing"),
        (check_plan_shards, plan_drops_oversized, r"larger than max_bytes and is missing"),
        (check_plan_shards, plan_empty_first_shard, r"shard 1 \(the first one\) is empty"),
        (check_plan_shards, plan_zero_based_names, "counted from 1"),
        (check_plan_shards, plan_no_index, r"tuple \(shards, weight_map\)"),
        (check_plan_shards, not_written, "not written yet"),
        (check_memory_per_device, memory_no_gradients, "forgot the gradients"),
        (check_memory_per_device, memory_no_optimizer, "left out the optimizer states"),
        (check_memory_per_device, memory_times_n, "multiplied by N"),
        (check_memory_per_device, memory_replicated, "did not divide by N"),
        (check_memory_per_device, memory_count_not_bytes, "count of values, not bytes"),
        (check_memory_per_device, memory_adam_only, "hard-coded Adam"),
        (check_memory_per_device, memory_zero2, "ZeRO stage 2"),
        (check_memory_per_device, memory_off, r"expected \(2 \+ s\)"),
        (check_memory_per_device, not_written, "not written yet"),
    ],
)
def test_checkers_reject_wrong_versions_saying_why(checker, wrong, message):
    with pytest.raises(LabCheckError, match=message):
        checker(wrong)


@pytest.mark.parametrize("seed", [1, 2, 3, 4242])
def test_hidden_cases_reject_the_slips_too(seed):
    for wrong in (plan_less_than, plan_numel, plan_four_bytes, plan_sorted_by_size,
                  plan_drops_oversized, plan_empty_first_shard, plan_splits_tensors):  # fmt: skip
        with pytest.raises(LabCheckError):
            check_plan_shards(wrong, seed=seed)
