"""minicompress.lora: LoRA adapters, their exact merge, a quantized frozen base, memory."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from minicompress import lm, lora
from minicompress.calibration import block_linears
from minicompress.groupwise import (
    bits_per_weight,
    dequantize_groups,
    fake_quantize_groups,
    pack_groups,
    quantize_groups,
    unpack_groups,
)
from minicompress.models import TinyGPT


def small(seed: int = 0) -> TinyGPT:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return TinyGPT(vocab=12, context=16, d=32, layers=2, heads=2).eval()


def ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(12, (3, 16), generator=torch.Generator().manual_seed(seed))


def randomise_adapters(model: nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, lora.LoRALinear):
                m.lora_b.copy_(torch.randn(m.lora_b.shape, generator=generator) * 0.1)


def test_lora_parameters_is_r_times_m_plus_n():
    assert lora.lora_parameters(192, 64, 8) == 8 * (192 + 64)
    assert lora.lora_parameters(3, 5, 1) == 8


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [((0, 4, 1), ValueError, "m must be"), ((4, 4, 0), ValueError, "r must be"),
     ((4.0, 4, 1), TypeError, "m must be an int")],
)  # fmt: skip
def test_lora_parameters_rejects_bad_sizes(args, error, match):
    with pytest.raises(error, match=match):
        lora.lora_parameters(*args)


def test_lora_linear_computes_base_plus_scaled_low_rank_update():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = lora.LoRALinear(base, rank=2, alpha=3.0, seed=4)
    assert torch.equal(layer.lora_b, torch.zeros(5, 2))
    with torch.no_grad():
        layer.lora_b.normal_()
    x = torch.randn(7, 6)
    expected = base(x) + (3.0 / 2) * x @ (layer.lora_b @ layer.lora_a).T
    torch.testing.assert_close(layer(x), expected)
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert layer.lora_a.abs().max() <= 1 / math.sqrt(6)


def test_a_fresh_adapter_changes_nothing():
    model = small()
    adapted = lora.add_lora(model, rank=4)
    with torch.no_grad():
        assert torch.equal(adapted(ids()), model(ids()))


def test_trainable_parameters_are_the_sum_of_r_m_plus_n():
    model = small()
    adapted = lora.add_lora(model, rank=4)
    trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    expected = sum(lora.lora_parameters(m.out_features, m.in_features, 4)
                   for m in block_linears(model).values())  # fmt: skip
    assert trainable == expected == lora.adapter_parameters(adapted)
    assert all(p.requires_grad for p in model.parameters())  # the original is untouched


def test_add_lora_does_not_touch_the_global_random_generator():
    state = torch.random.get_rng_state()
    lora.add_lora(small(), rank=2, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_adapters_are_drawn_from_their_seed():
    a = lora.add_lora(small(), rank=2, seed=3)
    b = lora.add_lora(small(), rank=2, seed=3)
    c = lora.add_lora(small(), rank=2, seed=4)
    qkv = "blocks.0.attn.qkv"
    assert torch.equal(a.get_submodule(qkv).lora_a, b.get_submodule(qkv).lora_a)
    assert not torch.equal(a.get_submodule(qkv).lora_a, c.get_submodule(qkv).lora_a)


def test_merged_model_computes_the_adapted_function():
    adapted = lora.add_lora(small(), rank=4, alpha=8.0, names=["blocks.0.mlp.fc", "head"])
    randomise_adapters(adapted)
    merged = lora.merge_lora(adapted)
    assert not any(isinstance(m, lora.LoRALinear) for m in merged.modules())
    assert all(p.requires_grad for p in merged.parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(ids()), adapted(ids()), rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 9), n=st.integers(1, 9), r=st.integers(1, 9), alpha=st.floats(0.1, 10))
def test_merged_weight_is_w_plus_scaled_ba(m, n, r, alpha):
    r = min(r, m, n)
    base = nn.Linear(n, m)
    layer = lora.LoRALinear(base, r, alpha)
    with torch.no_grad():
        layer.lora_b.uniform_(-1, 1)
    merged = lora.merge_lora(nn.Sequential(layer))[0]
    expected = base.weight + alpha / r * layer.lora_b @ layer.lora_a
    torch.testing.assert_close(merged.weight, expected)
    x = torch.randn(4, n)
    torch.testing.assert_close(merged(x), layer(x), rtol=1e-5, atol=1e-5)


def test_lora_training_moves_only_the_adapters():
    model = small()
    adapted = lora.add_lora(model, rank=2)
    frozen = {k: v.clone() for k, v in adapted.state_dict().items() if "lora_" not in k}
    config = lm.LMConfig(steps=3, batch_size=2, lr=1e-2, warmup=1)
    lm.train_lm(adapted, torch.arange(200) % 12, config, progress=False)
    after = adapted.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    assert any(m.lora_b.abs().sum() > 0 for m in adapted.modules()
               if isinstance(m, lora.LoRALinear))  # fmt: skip


def test_quantized_linear_computes_with_the_group_quantized_weight():
    torch.manual_seed(0)
    linear = nn.Linear(64, 8)
    layer = lora.QuantizedLinear(linear, bits=4, group_size=32)
    x = torch.randn(5, 64)
    stored = unpack_groups(pack_groups(quantize_groups(linear.weight.detach(), 4, 32)))
    expected = F.linear(x, dequantize_groups(stored), linear.bias)  # float16 scales
    torch.testing.assert_close(layer(x), expected)
    rounded = fake_quantize_groups(linear.weight.detach(), 4, 32)  # float32 scales
    assert (layer.weight - rounded).abs().max() < 1e-3 * rounded.abs().max()
    assert list(layer.parameters()) == []  # never trained


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_quantized_linear_stores_b_plus_16_plus_b_over_g_bits_per_weight(bits):
    linear = nn.Linear(256, 4, bias=False)
    layer = lora.QuantizedLinear(linear, bits=bits, group_size=32)
    stored = sum(t.numel() * t.element_size() for k, t in layer.state_dict().items()
                 if k != "header")  # fmt: skip
    assert stored == bits_per_weight(bits, 32) * linear.weight.numel() / 8


def test_qlora_model_adapts_a_quantized_base_and_merges_to_float():
    base = lora.quantize_base(small(), bits=4, group_size=16)
    assert sum(isinstance(m, lora.QuantizedLinear) for m in base.modules()) == 8
    adapted = lora.add_lora(base, rank=2)
    with torch.no_grad():
        assert torch.equal(adapted(ids()), base(ids()))
    randomise_adapters(adapted)
    merged = lora.merge_lora(adapted)
    assert isinstance(merged.get_submodule("blocks.0.attn.qkv"), nn.Linear)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids()), adapted(ids()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("how", ["full", "lora", "qlora"])
def test_finetune_memory_derived_equals_measured_after_one_adamw_step(how):
    model = small()
    if how != "full":
        model = lora.add_lora(lora.quantize_base(model, 4, 16) if how == "qlora" else model, 2)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained)
    model(ids()).square().mean().backward()
    optimizer.step()
    measured = lora.finetune_memory(model, optimizer)
    predicted = lora.predicted_finetune_memory(model)
    assert measured == predicted
    p = sum(t.numel() for t in trained)
    assert measured.trainable == measured.gradients == 4 * p
    assert measured.optimizer == 8 * p + 4 * len(trained)  # two moments, one step counter


@pytest.mark.parametrize("how", ["full", "lora", "qlora"])
def test_memory_after_one_step_is_predicted_and_leaves_the_model_alone(how):
    model = small()
    if how != "full":
        model = lora.add_lora(lora.quantize_base(model, 4, 16) if how == "qlora" else model, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = torch.randint(12, (4 * 17,), generator=torch.Generator().manual_seed(0))
    predicted, measured = lora.memory_after_one_step(model, tokens, batch_size=4)
    assert predicted == measured
    p = sum(t.numel() for t in model.parameters() if t.requires_grad)
    assert measured.gradients == 4 * p  # the step ran: every trainable tensor has a gradient
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(t.grad is None for t in model.parameters())


def test_qlora_base_is_smaller_than_the_float_base():
    model = small()
    masks = sum(b.numel() for b in model.buffers())  # the attention masks, 1 byte each
    float_frozen = lora.predicted_finetune_memory(lora.add_lora(model, 2)).frozen
    q_frozen = lora.predicted_finetune_memory(lora.add_lora(lora.quantize_base(model), 2)).frozen
    assert float_frozen == 4 * sum(p.numel() for p in model.parameters()) + masks
    assert q_frozen < 0.5 * float_frozen


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: lora.LoRALinear(nn.Conv2d(1, 1, 1), 1), TypeError, "base must be"),
        (lambda: lora.LoRALinear(nn.Linear(4, 3), 0), ValueError, "rank must be"),
        (lambda: lora.LoRALinear(nn.Linear(4, 3), 4), ValueError, "rank must be in 1..3"),
        (lambda: lora.LoRALinear(nn.Linear(4, 3), 1, alpha=-1), ValueError, "alpha must be"),
        (lambda: lora.add_lora("model", 1), TypeError, "model must be a torch.nn.Module"),
        (lambda: lora.add_lora(small(), 1, names="head"), TypeError, "not one str"),
        (lambda: lora.add_lora(small(), 1, names=["ln_f"]), ValueError, "ln_f"),
        (lambda: lora.add_lora(small(), 1, names=[]), ValueError, "no layer"),
        (lambda: lora.add_lora(nn.Linear(2, 2), 1), TypeError, "blocks"),
        (lambda: lora.merge_lora(small()), ValueError, "no LoRALinear"),
        (lambda: lora.quantize_base(small(), bits=1), ValueError, "bits must be in 2..8"),
        (lambda: lora.quantize_base(small(), group_size=7), ValueError, "group_size 7"),
        (lambda: lora.QuantizedLinear(nn.Conv2d(1, 1, 1)), TypeError, "linear must be"),
        (lambda: lora.finetune_memory(small(), "adam"), TypeError, "optimizer must be"),
        (lambda: lora.predicted_finetune_memory(small(), moments=-1), ValueError, "moments"),
        (
            lambda: lora.memory_after_one_step(nn.Linear(2, 2), torch.zeros(99, dtype=torch.long)),
            TypeError,
            "context",
        ),
        (lambda: lora.memory_after_one_step(small(), torch.zeros(40)), TypeError, "int64"),
        (
            lambda: lora.memory_after_one_step(small(), torch.zeros(40, dtype=torch.long)),
            ValueError,
            "batch_size × \\(context \\+ 1\\) = 272",
        ),
        (
            lambda: lora.memory_after_one_step(small(), torch.zeros(999, dtype=torch.long), 0),
            ValueError,
            "batch_size must be",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_merge_keeps_the_dtype_and_the_global_generator():
    model = small().half()
    adapted = lora.add_lora(model, 2)
    state = torch.random.get_rng_state()
    merged = lora.merge_lora(adapted)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert {p.dtype for p in merged.parameters()} == {torch.float16}
    ids = torch.randint(12, (2, 16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(merged(ids), adapted(ids), atol=1e-2, rtol=1e-2)


def test_refuses_adapting_twice_and_a_rank_above_the_matrix():
    adapted = lora.add_lora(small(), 2)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        lora.add_lora(adapted, 2)
    with pytest.raises(ValueError, match="r must be in 1..10"):
        lora.lora_parameters(10, 20, 50)
