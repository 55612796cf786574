"""FSDP2 on two CPU processes (gloo, loopback): half the parameters per rank, the same output,
and a checkpoint saved by two ranks that loads into one process unchanged."""

from __future__ import annotations

import pytest
import torch

from minicompress import fsdp


def test_two_ranks_shard_save_and_load_into_one(tmp_path):
    reports = fsdp.run(tmp_path, processes=2, timeout=180)
    total = reports[0]["total_parameters"]
    assert total == sum(t.numel() for t in fsdp.reference_state().values())
    assert sum(r["local_parameters"] for r in reports) == total
    assert all(abs(r["local_parameters"] - total / 2) <= 3 for r in reports)  # dim-0 padding
    assert all(r["max_abs_difference"] == 0.0 for r in reports)
    # parameters, gradients and Adam's two moments: 16 bytes per parameter, halved
    for r in reports:
        assert abs(r["local_training_bytes"] - fsdp.memory_per_device(total, 2)) <= 16 * 3
    loaded, reference = fsdp.load_unsharded(tmp_path), fsdp.reference_state()
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_memory_per_device_formula():
    # Adam, float32: (2 + 2) · 4 bytes = 16 bytes per parameter, divided among the devices
    assert fsdp.memory_per_device(1000, 1) == 16_000
    assert fsdp.memory_per_device(1000, 4) == 4_000
    assert fsdp.memory_per_device(1000, 2, optimizer_states=0, bytes_per_value=2) == 2_000
    # ZeRO's mixed-precision Adam, 2 + 2 + 12 bytes, is also 16 bytes per parameter
    assert fsdp.memory_per_device(7.5e9, 64) == (2 + 2 + 12) * 7.5e9 / 64


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"parameters": -1, "devices": 2}, ValueError),
        ({"parameters": 10, "devices": 0}, ValueError),
        ({"parameters": "1", "devices": 2}, TypeError),
        ({"parameters": 1, "devices": 1.5}, TypeError),
        ({"parameters": 1, "devices": 2, "bytes_per_value": 0}, ValueError),
    ],
)
def test_memory_per_device_refuses_bad_input(kwargs, error):
    with pytest.raises(error):
        fsdp.memory_per_device(**kwargs)


def test_load_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no distributed checkpoint"):
        fsdp.load_unsharded(tmp_path)
