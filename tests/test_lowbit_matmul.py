"""Low-bit CPU matrix products: PyTorch's int4/int8 kernels against the dequantized reference,
the packed layout, the bytes of a decoding step, the roofline arithmetic, the timing helper."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from minicompress import lowbit_matmul as lb
from minicompress.models import TinyGPT
from minicompress.quantization import calc_qparams, fake_quantize

needs_int4 = pytest.mark.skipif(
    not lb.int4_available(), reason="this PyTorch has no CPU int4 kernel (_weight_int4pack_mm)"
)
needs_int8 = pytest.mark.skipif(
    not lb.int8_available(), reason="this PyTorch has no CPU int8 kernel (_weight_int8pack_mm)"
)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


# ----------------------------------------------------------------------------- the bytes


def test_block_parameters_match_a_tinygpt_block():
    for d in (32, 64):
        block = TinyGPT(d=d, layers=1, heads=4).blocks[0]
        assert lb.block_parameters(d) == sum(p.numel() for p in block.parameters())


def test_shape_of_a_tinygpt_counts_all_its_parameters():
    model = TinyGPT(d=32, layers=2, heads=4)
    shape = lb.GPTShape.of(model)
    assert shape == lb.GPTShape(d=32, layers=2, heads=4, vocab=96, context=128)
    assert shape.parameters == sum(p.numel() for p in model.parameters())


def test_decode_bytes_count_weights_cache_and_flops():
    shape = lb.GPTShape(d=64, layers=4, heads=4, vocab=96, context=128)
    fp32 = lb.decode_bytes_per_token(shape, 100)
    # every parameter but the unused embedding rows, 4 bytes each
    read = shape.parameters - (96 - 1) * 64 - (128 - 1) * 64
    assert fp32.weights == 4 * read
    assert fp32.kv_cache == 4 * 2 * 4 * 64 * 100
    assert fp32.flops == 2 * (12 * 64 * 64 * 4 + 64 * 96) + 4 * 4 * 64 * 100
    four = lb.decode_bytes_per_token(shape, 100, weight_bits=4)
    assert fp32.weights - four.weights == shape.linear_weights * (4 - 0.5)
    two = lb.decode_bytes_per_token(shape, 100, batch=2)
    assert two.weights == fp32.weights  # weights are read once for the whole batch
    assert two.kv_cache == 2 * fp32.kv_cache and two.flops == 2 * fp32.flops
    assert fp32.total == fp32.weights + fp32.kv_cache + fp32.activations
    assert fp32.intensity == pytest.approx(fp32.flops / fp32.total)


def test_decoding_a_7b_shape_reads_about_two_bytes_per_parameter_in_16_bits():
    shape = lb.GPTShape(d=4096, layers=32, heads=32, vocab=32000, context=4096)
    assert 6.5e9 < shape.parameters < 7e9
    step = lb.decode_bytes_per_token(shape, 0, weight_bits=16, other_bits=16)
    unread = (32000 - 1 + 4096 - 1) * 4096  # the embeddings' other rows
    assert step.weights == 2 * (shape.parameters - unread)
    assert step.intensity == pytest.approx(1.0, rel=0.05)  # 2 FLOPs per 2-byte weight


def test_decode_bytes_refuses_bad_arguments():
    shape = lb.GPTShape(d=64, layers=4, heads=4, vocab=96, context=128)
    with pytest.raises(ValueError, match="position"):
        lb.decode_bytes_per_token(shape, -1)
    with pytest.raises(ValueError, match="weight_bits"):
        lb.decode_bytes_per_token(shape, 1, weight_bits=0)
    with pytest.raises(TypeError, match="shape"):
        lb.decode_bytes_per_token((64, 4), 1)
    with pytest.raises(ValueError, match="divisible by heads"):
        lb.GPTShape(d=64, layers=4, heads=5, vocab=96, context=128)


# --------------------------------------------------------------------------- the roofline


def test_roofline_is_the_slower_of_memory_and_arithmetic():
    assert lb.roofline_time(1e9, 1e9, bandwidth=1e10, peak=1e11) == pytest.approx(0.1)
    assert lb.roofline_time(1e6, 1e12, bandwidth=1e10, peak=1e11) == pytest.approx(10.0)


def test_roofline_speedup_is_the_ratio_of_bytes_when_memory_bound():
    assert lb.roofline_speedup(16) == 2.0
    assert lb.roofline_speedup(8) == 4.0
    assert lb.roofline_speedup(4 + 32 / 32) == pytest.approx(6.4)
    # with a machine: batch 1 is memory-bound (0.5 FLOP/byte at 32 bits, ridge at 10) ...
    machine = {"bandwidth": 20e9, "peak": 200e9}
    assert lb.roofline_speedup(4, batch=1, **machine) == pytest.approx(8.0)
    # ... batch 64 is compute-bound for both (32 and 256 FLOP/byte): no speed-up
    assert lb.roofline_speedup(4, batch=64, **machine) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="both"):
        lb.roofline_speedup(4, bandwidth=1e9)
    with pytest.raises(ValueError, match="bandwidth"):
        lb.roofline_time(1, 1, bandwidth=0, peak=1)


# ---------------------------------------------------------------------------- the kernels


@needs_int4
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_int4_kernel_matches_the_dequantized_reference(dtype):
    torch.manual_seed(0)
    w, b, x = torch.randn(96, 128), torch.randn(96), torch.randn(2, 5, 128)
    layer = lb.Int4Linear(w, b, dtype=dtype)
    reference = x.to(dtype).float() @ lb.int4_group_quantize(w, 32, dtype).dequantize().T + b
    y = layer(x)
    assert y.shape == (2, 5, 96) and y.dtype == torch.float32
    bound = 1e-5 if dtype == torch.float32 else 1e-2  # bf16 output: 2^-8 per value
    assert relative_error(y, reference) < bound


@needs_int4
def test_int4_codes_are_the_affine_map_of_the_quantization_chapter():
    torch.manual_seed(1)
    w = torch.randn(32, 64)
    q = lb.int4_group_quantize(w, 32, torch.float32)
    groups = w.reshape(-1, 32)
    expected = fake_quantize(groups, calc_qparams(groups, bits=4, axis=0)).reshape(32, 64)
    assert torch.allclose(q.dequantize(), expected, atol=1e-6)
    assert q.codes.dtype == torch.int32 and int(q.codes.min()) >= 0 and int(q.codes.max()) <= 15
    assert q.scales_and_zeros.shape == (2, 32, 2)  # (in / g, out, [scale, zero])


@needs_int4
def test_int4_packing_holds_two_codes_of_one_column_per_byte():
    # whatever the CPU's layout (blocks of 64 rows with AVX-512, 32 otherwise), a byte
    # pairs two rows of the same column: codes that depend on the column alone give
    # bytes whose two nibbles are equal, and the nibbles' counts are the codes' counts
    n, k = 128, 64
    codes = (torch.arange(k, dtype=torch.int32) % 16).expand(n, k).contiguous()
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    assert packed.dtype == torch.uint8 and packed.shape == (n, k // 2)
    assert torch.equal(packed & 15, packed >> 4)
    random = torch.randint(0, 16, (n, k), dtype=torch.int32, generator=torch.Generator())
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(random, 1)
    nibbles = torch.cat([(packed & 15).flatten(), (packed >> 4).flatten()]).long()
    assert torch.equal(torch.bincount(nibbles, minlength=16), torch.bincount(random.flatten()))


@needs_int4
def test_int4_layer_reads_five_bits_per_weight_with_16_bit_scales():
    layer = lb.Int4Linear(torch.randn(64, 256), group_size=32)
    assert layer.weight_bytes * 8 == 64 * 256 * (4 + 2 * 16 / 32)
    layer = lb.Int4Linear(torch.randn(64, 256), group_size=128, dtype=torch.float32)
    assert layer.weight_bytes * 8 == 64 * 256 * (4 + 2 * 32 / 128)


@needs_int4
def test_int4_layer_of_a_tinygpt_linear_keeps_its_bias():
    linear = TinyGPT(d=32, layers=1).blocks[0].attn.qkv
    nn.init.normal_(linear.bias)
    layer = lb.Int4Linear.from_linear(linear)
    x = torch.randn(3, 32)
    assert relative_error(layer(x), linear(x)) < 0.1  # 4-bit rounding, not a wrong bias
    assert torch.equal(layer.bias, linear.bias.detach())


@needs_int4
def test_int4_refuses_bad_input():
    with pytest.raises(ValueError, match="divisible by group_size"):
        lb.Int4Linear(torch.randn(32, 48))
    with pytest.raises(ValueError, match="group_size must be one of"):
        lb.Int4Linear(torch.randn(32, 64), group_size=16)
    with pytest.raises(ValueError, match="multiple of 16"):
        lb.Int4Linear(torch.randn(24, 64))
    with pytest.raises(TypeError, match="floating-point"):
        lb.Int4Linear(torch.ones(32, 64, dtype=torch.int32))
    with pytest.raises(ValueError, match="dtype must be"):
        lb.Int4Linear(torch.randn(32, 64), dtype=torch.float64)
    with pytest.raises(ValueError, match="2-D"):
        lb.Int4Linear(torch.randn(32))
    layer = lb.Int4Linear(torch.randn(32, 64))
    with pytest.raises(ValueError, match="in_features = 64"):
        layer(torch.randn(2, 32))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(2, 64, dtype=torch.long))


@needs_int8
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_int8_kernel_matches_the_dequantized_reference(dtype):
    torch.manual_seed(0)
    w, x = torch.randn(40, 80), torch.randn(3, 80)
    layer = lb.Int8Linear(w, dtype=dtype)
    reference = x.to(dtype).float() @ layer.dequantized_weight().T
    bound = 1e-5 if dtype == torch.float32 else 1e-2
    assert relative_error(layer(x), reference) < bound
    assert int(layer.codes.abs().max()) == 127  # symmetric: each row's largest |w| → ±127
    assert layer.weight_bytes == 40 * 80 + 40 * (2 if dtype == torch.bfloat16 else 4)


@needs_int8
def test_int8_refuses_bad_input():
    with pytest.raises(TypeError, match="floating-point"):
        lb.Int8Linear(torch.ones(16, 16, dtype=torch.int8))
    # PyTorch 2.14's AVX-512 bf16 path is wrong for rows of 72: refused on every CPU
    with pytest.raises(ValueError, match="multiple of 16"):
        lb.Int8Linear(torch.randn(40, 72))


# ------------------------------------------------------------------------ caches, timing


def test_cache_sizes_are_positive_and_the_last_level_is_the_largest_level():
    sizes = lb.cache_sizes()
    assert all(isinstance(v, int) and v > 0 for v in sizes.values())
    llc = lb.last_level_cache_bytes()
    if sizes:
        top = max(sizes, key=lambda k: int(k[1]))
        assert llc == sizes[top]
    else:
        assert llc is None


@needs_int4
@needs_int8
def test_matvec_speedup_times_every_format_over_the_stack():
    t = lb.matvec_speedup(64, 64, 1, stack_bytes=3 * 4 * 64 * 64, repeats=3,
                          formats=("bfloat16", "int8", "int4"))  # fmt: skip
    assert t.layers == 3 and t.working_set_bytes == 3 * 4 * 64 * 64
    assert set(t.median_ms) == {"float32", "bfloat16", "int8", "int4"}
    assert t.weight_bytes == {"float32": 4 * 4096, "bfloat16": 2 * 4096,
                              "int8": 4096 + 2 * 64, "int4": 4096 * 5 // 8}  # fmt: skip
    assert t.speedup("float32") == 1.0
    assert t.speedup("int4") == pytest.approx(t.median_ms["float32"] / t.median_ms["int4"])
    # speed-up = (bytes ratio) · (bandwidth ratio), exactly
    ratio = t.weight_bytes["float32"] / t.weight_bytes["int4"]
    assert t.speedup("int4") == pytest.approx(ratio * t.bandwidth("int4") / t.bandwidth("float32"))
    assert all(t.q1_ms[f] <= t.median_ms[f] <= t.q3_ms[f] for f in t.median_ms)
    assert t.threads == 1 and torch.get_num_threads() >= 1
    with pytest.raises(ValueError, match="fmt must be one of"):
        t.speedup("int2")


def test_matvec_speedup_refuses_bad_arguments():
    with pytest.raises(ValueError, match="formats entry"):
        lb.matvec_speedup(64, 64, formats=("int3",))
    with pytest.raises(ValueError, match="stack_bytes"):
        lb.matvec_speedup(64, 64, stack_bytes=2**31)
    with pytest.raises(ValueError, match="batch"):
        lb.matvec_speedup(64, 64, 0)


@needs_int4
def test_matvec_sweep_doubles_the_stack_up_to_the_target():
    sweep = lb.matvec_sweep(32, 32, 5 * 4 * 32 * 32, formats=("int4",), repeats=1, warmup=0)
    assert [t.layers for t in sweep] == [1, 2, 4, 5]
    assert math.isclose(sweep[-1].working_set_bytes, 5 * 4096)


@needs_int4
def test_kernel_benchmark_reports_its_figures(monkeypatch):
    monkeypatch.setattr(lb, "last_level_cache_bytes", lambda: 2**16)  # a 64 KiB "cache"
    result = lb.kernel_benchmark(64)
    assert result["llc_bytes"] == 2**16
    assert result["working_set_bytes"] >= 2 * 2**16
    assert result["both_beyond_working_set_bytes"] >= 2 * 6.4 * 2**16
    assert result["roofline_int4_bs1"] == 6.4
    assert result["int4_matvec_speedup_bs1"] > 0 and result["in_cache_speedup_bs1"] > 0
    assert result["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    with pytest.raises(ValueError, match="multiple of 32"):
        lb.kernel_benchmark(48)
