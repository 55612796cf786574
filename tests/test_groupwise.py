"""minicompress.groupwise: per-group quantization against per-row quantization of
minicompress.quantization, the S/2 error bound, packing round trips, packed bytes against
the b + (16 + zero bits)/g formula, the model-level hook, and bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.groupwise import (
    GroupQuantized,
    bits_per_weight,
    block_linear_names,
    dequantize_groups,
    fake_quantize_groups,
    pack_groups,
    packed_bytes,
    quantize_groups,
    quantize_model_weights,
    unpack_groups,
)
from minicompress.models import TinyGPT
from minicompress.quantization import calc_qparams, dequantize, quantize


def weight(seed: int, shape=(12, 64)) -> torch.Tensor:
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return w * torch.linspace(0.1, 3.0, shape[1])  # columns of different ranges


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_one_group_per_row_is_per_row_quantization(bits, symmetric):
    w = weight(bits)
    gq = quantize_groups(w, bits, group_size=w.shape[1], symmetric=symmetric)
    qp = calc_qparams(w, bits, symmetric=symmetric, axis=0)
    assert torch.equal(gq.q, quantize(w, qp))
    assert torch.equal(dequantize_groups(gq), dequantize(quantize(w, qp), qp))


def test_each_group_is_quantized_on_its_own():
    w = weight(0)
    gq = quantize_groups(w, 4, 16)
    block = w[3, 32:48]  # row 3, group 2
    qp = calc_qparams(block, 4)
    assert torch.equal(gq.q[3, 32:48], quantize(block, qp))
    assert gq.scale[3, 2] == qp.scale and gq.zero[3, 2] == qp.zero_point


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    bits=st.sampled_from([2, 3, 4, 8]),
    group_size=st.sampled_from([8, 16, 32]),
    symmetric=st.booleans(),
)
def test_rounding_error_is_at_most_half_a_step(seed, bits, group_size, symmetric):
    w = weight(seed, (4, 64))
    gq = quantize_groups(w, bits, group_size, symmetric)
    err = (w - dequantize_groups(gq)).abs().view(4, -1, group_size)
    assert (err <= gq.scale[..., None] / 2 * (1 + 1e-5)).all()


def test_smaller_groups_round_more_finely():
    w = weight(1, (64, 256))
    errors = [(w - fake_quantize_groups(w, 4, g)).pow(2).mean() for g in (256, 64, 16)]
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_packing_round_trips(bits, symmetric):
    gq = quantize_groups(weight(bits), bits, 16, symmetric)
    back = unpack_groups(pack_groups(gq))
    assert torch.equal(back.q, gq.q) and back.q.dtype == gq.q.dtype
    assert (back.zero is None) == symmetric
    if not symmetric:
        assert torch.equal(back.zero, gq.zero)
    assert torch.equal(back.scale, gq.scale.half().float())  # the file holds float16 scales


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("bits, group_size", [(4, 32), (4, 16), (4, 64), (3, 32), (2, 16), (8, 64)])
def test_packed_bytes_equal_the_formula(bits, group_size, symmetric):
    w = weight(0, (24, 128))
    packed = pack_groups(quantize_groups(w, bits, group_size, symmetric))
    per_weight = bits_per_weight(bits, group_size, zero_bits=0 if symmetric else None)
    assert packed_bytes(packed) == w.numel() * per_weight / 8


def test_four_bit_codes_are_two_per_byte_low_nibble_first():
    w = torch.tensor([[0.0, 1.0, 2.0, 15.0]])  # asymmetric 4-bit: S = 1, Z = 0, q = w
    packed = pack_groups(quantize_groups(w, 4, 4))
    assert packed["codes"].tolist() == [0x10, 0xF2]
    assert packed["scale"].dtype == torch.float16


def test_bits_per_weight_formula():
    assert bits_per_weight(4, 32, zero_bits=0) == 4.5
    assert bits_per_weight(4, 32, zero_bits=16) == 5.0
    assert bits_per_weight(4, 32) == 4 + 20 / 32
    assert bits_per_weight(4, 32, scale_bits=8, zero_bits=0) == 4.25  # MXFP4


def test_model_hook_replaces_block_linears_only():
    torch.manual_seed(0)
    model = TinyGPT(d=32, layers=1)
    names = block_linear_names(model)
    assert names == ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc",
                     "blocks.0.mlp.proj"]  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_model_weights(model, lambda w: fake_quantize_groups(w, 4, 16))
    for k, v in model.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])
    for k, v in quantized.state_dict().items():
        changed = not torch.equal(v, before[k])
        assert changed == (k.removesuffix(".weight") in names and k.endswith(".weight")), k
    with_head = quantize_model_weights(model, torch.zeros_like, include=["head"])
    assert (with_head.head.weight == 0).all() and torch.equal(
        with_head.blocks[0].mlp.fc.weight, model.blocks[0].mlp.fc.weight
    )


def test_bad_input_is_refused_with_clear_errors():
    w = weight(0)
    with pytest.raises(ValueError, match="group_size 24 must divide"):
        quantize_groups(w, 4, 24)
    with pytest.raises(ValueError, match="2-D"):
        quantize_groups(w.flatten(), 4, 16)
    with pytest.raises(TypeError, match="w must be a floating-point tensor"):
        quantize_groups(w.int(), 4, 16)
    with pytest.raises(ValueError, match="NaN or inf"):
        quantize_groups(w.index_fill(1, torch.tensor([0]), float("nan")), 4, 16)
    with pytest.raises(ValueError, match="bits"):
        quantize_groups(w, 1, 16, symmetric=True)
    with pytest.raises(TypeError, match="GroupQuantized"):
        dequantize_groups(w)
    with pytest.raises(ValueError, match="at most 8 bits"):
        pack_groups(quantize_groups(w, 12, 16))
    model = TinyGPT(d=32, layers=1)
    with pytest.raises(ValueError, match="not nn.Linear"):
        quantize_model_weights(model, lambda w: w, include=["tok_emb"])
    with pytest.raises(ValueError, match="quantizer returned"):
        quantize_model_weights(model, lambda w: w[:1])
    with pytest.raises(TypeError, match="callable"):
        quantize_model_weights(model, 4)
    with pytest.raises(TypeError, match="not one str"):
        quantize_model_weights(model, lambda w: w, include="head")
    assert isinstance(quantize_groups(w, 4, 16), GroupQuantized)
