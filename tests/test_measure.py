"""minicompress.measure: counts, bits, bytes, MACs (vs. PyTorch's FLOP counter), latency, Report."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from minicompress import measure
from minicompress.measure import (
    Report,
    compression_ratio,
    count_macs,
    count_nonzero,
    count_parameters,
    layer_macs,
    measure_latency,
    results_table,
    serialized_size,
    size_in_bits,
    sparsity,
)
from minicompress.models import MLP, LeNet5, LeNet300100


def test_nonzero_and_sparsity_count_exact_zeros():
    model = MLP((4,))  # 784*4 + 4 + 4*10 + 10 = 3190 parameters
    with torch.no_grad():
        model.fc1.weight[:2] = 0.0  # 1568 zeros
    assert count_parameters(model) == 3190
    assert count_nonzero(model) == 3190 - 1568
    assert sparsity(model) == pytest.approx(1568 / 3190)


@pytest.mark.parametrize(
    ("dtype", "bits"),
    [(torch.float32, 32), (torch.float16, 16), (torch.bfloat16, 16), (torch.int8, 8),
     (torch.float64, 64)],
)  # fmt: skip
def test_size_in_bits_is_numel_times_dtype_width(dtype, bits):
    assert size_in_bits(torch.zeros(3, 5, dtype=dtype)) == 15 * bits


def test_size_in_bits_counts_buffers_too():
    bn = nn.BatchNorm1d(10)  # weight, bias, running_mean, running_var (fp32), num_batches (int64)
    assert size_in_bits(bn) == 4 * 10 * 32 + 64


def test_serialized_size_is_what_torch_save_writes(tmp_path):
    model = LeNet300100()
    path = tmp_path / "archive.pt"  # torch.save's zip records are named after the file
    torch.save(model.state_dict(), path)
    assert serialized_size(model) == path.stat().st_size
    # The container costs a little on top of the raw 32-bit numbers, and not much more.
    raw = size_in_bits(model) // 8
    assert raw < serialized_size(model) < raw * 1.01


def test_macs_of_the_lenets_by_hand():
    assert count_macs(LeNet300100(), torch.zeros(1, 1, 28, 28)) == 784 * 300 + 300 * 100 + 100 * 10
    by_layer = layer_macs(LeNet5(), torch.zeros(1, 1, 28, 28))
    assert by_layer == {
        "conv1": 20 * 24 * 24 * (1 * 5 * 5),
        "conv2": 50 * 8 * 8 * (20 * 5 * 5),
        "fc1": 800 * 500,
        "fc2": 500 * 10,
    }


@pytest.mark.parametrize(
    "model",
    [LeNet300100(), LeNet5(), nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2),
     nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.Flatten(), nn.Linear(3 * 26 * 26, 7))],
)  # fmt: skip
def test_macs_agree_with_torch_flop_counter(model):
    shape = (2, 4, 10, 10) if isinstance(model, nn.Conv2d) else (2, 1, 28, 28)
    x = torch.randn(shape)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    assert 2 * count_macs(model, x) == counter.get_total_flops()  # 1 MAC = 2 FLOPs


def test_latency_reports_quartiles_and_restores_threads_and_mode():
    model = MLP((8,)).train()
    threads = torch.get_num_threads()
    lat = measure_latency(model, torch.rand(4, 1, 28, 28), warmup=2, repeats=9, threads=1)
    assert lat.q1_ms <= lat.median_ms <= lat.q3_ms
    assert (lat.repeats, lat.warmup, lat.batch_size, lat.threads) == (9, 2, 4, 1)
    assert torch.get_num_threads() == threads and model.training
    assert "median" in str(lat)


def test_compression_ratio():
    assert compression_ratio(1070, 27) == pytest.approx(
        39.63, abs=0.01
    )  # Deep Compression, LeNet-300-100
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(ValueError, match="finite number > 0"):
            compression_ratio(10, bad)
    with pytest.raises(TypeError, match="number"):
        compression_ratio(10, "1")


def test_report_measures_and_tabulates():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(50, 1, 28, 28, generator=g), torch.randint(0, 10, (50,), generator=g)
    model = MLP((8,))
    dense = Report.measure("dense", model, x, y)
    with torch.no_grad():
        model.fc1.weight.zero_()
    pruned = Report.measure("pruned", model, x, y, size_bytes=dense.size_bytes // 4,
                            latency_example=x[:1])  # fmt: skip
    assert dense.parameters == pruned.parameters == 784 * 8 + 8 + 8 * 10 + 10
    assert pruned.sparsity == pytest.approx(784 * 8 / dense.parameters)
    assert pruned.latency_ms is not None and pruned.latency_ms > 0
    table = results_table([dense, pruned])
    assert list(table.index) == ["dense", "pruned"]
    assert table.loc["pruned", "ratio (×)"] == pytest.approx(4.0, abs=0.01)
    assert table.loc["dense", "Δ acc (pp)"] == 0
    assert "latency (ms)" in table.columns
    assert Report(**dense.to_dict()) == dense


def test_plot_reports_draws_one_point_per_report():
    import matplotlib

    matplotlib.use("Agg")
    reports = [Report("a", 0.9, 1000, 10, 10), Report("b", 0.8, 100, 10, 1)]
    ax = measure.plot_reports(reports)
    assert len(ax.collections) == 2 and ax.get_xscale() == "log"


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: count_parameters("model"), TypeError),
        (lambda: size_in_bits([1, 2]), TypeError),
        (lambda: serialized_size(torch.zeros(3)), TypeError),
        (lambda: sparsity(nn.ReLU()), ValueError),
        (lambda: layer_macs(MLP((4,)), [1, 2]), TypeError),
        (lambda: measure_latency(MLP((4,)), torch.zeros(1, 784), repeats=0), ValueError),
        (lambda: measure_latency(MLP((4,)), torch.zeros(1, 784), threads=0), ValueError),
        (lambda: results_table([]), TypeError),
        (lambda: Report.measure("", MLP((4,)), torch.zeros(1, 784), torch.zeros(1).long()),
         ValueError),
    ],
)  # fmt: skip
def test_bad_arguments_are_rejected(call, error):
    with pytest.raises(error):
        call()


def test_machine_names_cpu_and_threads():
    text = measure.machine()
    assert "cores" in text and "thread" in text and torch.__version__ in text


def test_layer_summary_shares_add_up():
    table = measure.layer_summary(LeNet5(), torch.zeros(1, 1, 28, 28))
    assert list(table.index) == ["conv1", "conv2", "fc1", "fc2"]
    assert table["parameters"].sum() == 431_080
    assert table.loc["conv2", "MACs"] == 50 * 8 * 8 * 20 * 5 * 5
    assert abs(table["% of MACs"].sum() - 100) < 0.5
