"""The int16 pair saturation of x86 AVX2 int8 kernels, emulated (`int16_pair_dot`) and checked
against PyTorch's own fbgemm kernel forced onto its AVX2 code path on any x86 CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from minicompress.quantization import int16_pair_dot


def test_pair_dot_is_the_exact_dot_product_when_no_pair_overflows():
    g = torch.Generator().manual_seed(0)
    q_x = torch.randint(0, 128, (50, 64), generator=g, dtype=torch.uint8)  # 7-bit inputs
    q_w = torch.randint(-127, 128, (20, 64), generator=g).to(torch.int8)
    exact = q_x.to(torch.int32) @ q_w.to(torch.int32).T
    assert torch.equal(int16_pair_dot(q_x, q_w), exact)


def test_pair_dot_saturates_each_adjacent_pair_to_int16():
    q_x = torch.tensor([[255, 255, 255, 0]], dtype=torch.uint8)
    q_w = torch.tensor([[127, 127, -128, 5], [-128, -128, 0, 0]], dtype=torch.int8)
    # pairs: (64,770 → 32,767) + (−32,640), and (−65,280 → −32,768) + 0
    assert int16_pair_dot(q_x, q_w).tolist() == [[32_767 - 32_640, -32_768]]


def test_pair_dot_rejects_wrong_dtypes_and_shapes():
    with pytest.raises(TypeError, match="uint8"):
        int16_pair_dot(torch.zeros(2, 4), torch.zeros(3, 4, dtype=torch.int8))
    with pytest.raises(ValueError, match="share K"):
        int16_pair_dot(torch.zeros(2, 4, dtype=torch.uint8), torch.zeros(3, 6, dtype=torch.int8))


_COMPARE = textwrap.dedent("""
    import warnings
    import torch
    from minicompress.quantization import QuantizedLinear, calc_qparams, quantize

    warnings.simplefilter("ignore")
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(32, 64, generator=g) * 0.1)
        linear.weight[:, :8] = 1.0  # the largest weight of every row: q_w = 127
    x = torch.rand(256, 64, generator=g)
    x[:128, :8] = 1.0  # q_x = 255: pairs of 255 · 127 overflow int16
    in_qp, out_qp = calc_qparams(x, bits=8), calc_qparams(linear(x).detach())
    torch.backends.quantized.engine = "x86"
    w_qp = QuantizedLinear(linear, in_qp, out_qp).weight_qp
    qw = torch.quantize_per_channel(linear.weight.detach(), w_qp.scale, w_qp.zero_point, 0,
                                    torch.qint8)
    ql = torch.ao.nn.quantized.Linear(64, 32)
    ql.set_weight_bias(qw, linear.bias.detach())
    ql.scale, ql.zero_point = out_qp.scale.item(), int(out_qp.zero_point)
    qx = torch.quantize_per_tensor(x, in_qp.scale.item(), int(in_qp.zero_point), torch.quint8)
    theirs = ql(qx).int_repr().int()
    for saturate in (False, True):
        ours = QuantizedLinear(linear, in_qp, out_qp, saturate_pairs=saturate)(quantize(x, in_qp))
        print(int((ours.int() - theirs).abs().max()))
""")


@pytest.mark.skipif(
    "x86" not in torch.backends.quantized.supported_engines, reason="no x86 quantized engine"
)
def test_saturating_layer_matches_the_avx2_kernel_and_the_exact_layer_does_not():
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("this CPU has no AVX2")
    # fbgemm picks its kernels once per process: force its AVX2 path in a fresh interpreter
    env = {**os.environ, "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}
    out = subprocess.run(
        [sys.executable, "-c", _COMPARE], env=env, capture_output=True, text=True, check=True
    )
    exact_diff, saturated_diff = map(int, out.stdout.split())
    assert saturated_diff <= 1  # float rescale vs fixed point: one step at most
    assert exact_diff > 1  # the exact int32 accumulator is many steps away
