"""minicompress.formats: FP8 E4M3/E5M2 bit for bit against PyTorch's casts (every code, every
midpoint, random inputs, overflow), FP4 E2M1's values, MXFP4's power-of-two scales and NVFP4
against a direct computation, and bad input."""

from __future__ import annotations

import pytest
import torch

from minicompress.formats import (
    E2M1,
    E4M3,
    E5M2,
    decode,
    fake_quantize_fp8,
    fake_quantize_mxfp4,
    fake_quantize_nvfp4,
    mx_scale,
    round_to_format,
)

CASTS = [(E4M3, torch.float8_e4m3fn), (E5M2, torch.float8_e5m2)]


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal as float32 bit patterns (so −0 ≠ +0), NaN where the other is NaN."""
    nan = torch.isnan(a)
    if not torch.equal(nan, torch.isnan(b)):
        return False
    return torch.equal(a[~nan].view(torch.int32), b[~nan].view(torch.int32))


@pytest.mark.parametrize("fmt, dtype", CASTS)
def test_decoding_every_code_matches_pytorch(fmt, dtype):
    codes = torch.arange(256, dtype=torch.uint8)
    assert same_bits(decode(codes, fmt), codes.view(dtype).float())


@pytest.mark.parametrize("fmt, dtype", CASTS)
def test_rounding_matches_the_cast_bit_for_bit(fmt, dtype):
    values = decode(torch.arange(256), fmt)
    grid = values[torch.isfinite(values)].unique()  # sorted
    midpoints = (grid[1:] + grid[:-1]) / 2  # ties: round half to even
    g = torch.Generator().manual_seed(0)
    x = torch.cat([
        grid, -grid, midpoints, midpoints.nextafter(grid[1:]), midpoints.nextafter(grid[:-1]),
        torch.randn(50_000, generator=g) * fmt.max / 30,
        torch.randn(20_000, generator=g) * fmt.min_normal,  # subnormals
        torch.tensor([fmt.max * 1.03, fmt.max * 1.1, 1e30, -1e30, float("inf"), float("-inf"),
                      float("nan"), -1e-30, 0.0]),
    ])  # fmt: skip
    assert same_bits(round_to_format(x, fmt), x.to(dtype).float())


def test_overflow_saturates_e4m3_and_goes_to_inf_in_e5m2():
    assert round_to_format(torch.tensor([464.0, 465.0, float("inf")]), E4M3).tolist() == [
        448.0, 448.0, 448.0]  # fmt: skip
    assert round_to_format(torch.tensor([61439.0, 61440.0]), E5M2).tolist() == [
        57344.0, float("inf")]  # fmt: skip


def test_fp4_e2m1_values():
    values = decode(torch.arange(8), E2M1)
    assert values.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    x = torch.tensor([0.25, 0.75, 2.5, 5.0, 7.0, 100.0, -3.4])
    assert round_to_format(x, E2M1).tolist() == [0.0, 1.0, 2.0, 4.0, 6.0, 6.0, -3.0]


def test_mx_scale_is_a_power_of_two_and_puts_the_block_max_in_fp4_range():
    blocks = torch.randn(200, 32, generator=torch.Generator().manual_seed(1)) * torch.logspace(
        -3, 3, 200
    ).unsqueeze(1)
    scale = mx_scale(blocks)
    assert torch.equal(torch.log2(scale), torch.log2(scale).round())
    assert torch.equal(scale, scale.to(torch.float8_e8m0fnu).float())  # representable in E8M0
    ratio = blocks.abs().amax(1, keepdim=True) / scale
    assert ((ratio >= 4) & (ratio < 8)).all()
    out = fake_quantize_mxfp4(blocks) / scale
    assert out.abs().max() <= 6 and torch.equal(round_to_format(out, E2M1), out)


def test_nvfp4_matches_a_direct_computation():
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(2))
    out = fake_quantize_nvfp4(w)
    s = w.abs().max() / (448 * 6)
    for block in range(4):
        x = w[5, 16 * block : 16 * (block + 1)]
        sb = (x.abs().max() / (6 * s)).to(torch.float8_e4m3fn).float()
        values = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6])
        y = (x / (s * sb)).clamp(-6, 6)
        nearest = values[(y.abs()[:, None] - values).abs().argmin(1)] * y.sign()
        torch.testing.assert_close(out[5, 16 * block : 16 * (block + 1)], nearest * s * sb)


def test_block_formats_beat_nothing_and_keep_zeros():
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(3))
    for f in (fake_quantize_mxfp4, fake_quantize_nvfp4, fake_quantize_fp8):
        out = f(w)
        assert out.shape == w.shape and 0 < (out - w).pow(2).mean() < w.pow(2).mean() / 20
        assert (f(torch.zeros(2, 32)) == 0).all()


def test_bad_input_is_refused_with_clear_errors():
    with pytest.raises(ValueError, match="block_size 32 must divide"):
        fake_quantize_mxfp4(torch.randn(4, 48))
    with pytest.raises(TypeError, match="FloatFormat"):
        round_to_format(torch.ones(3), "e4m3")
    with pytest.raises(TypeError, match="floating-point"):
        round_to_format(torch.ones(3, dtype=torch.int32), E4M3)
    with pytest.raises(ValueError, match="codes must be in 0..255"):
        decode(torch.tensor([256]), E4M3)
    with pytest.raises(ValueError, match="NaN or inf"):
        fake_quantize_nvfp4(torch.tensor([[float("nan")] * 16]))
