"""minicompress.calibration: hooks record exactly each Linear's input and are removed, the
Hessian convention, clear errors."""

from __future__ import annotations

import pytest
import torch

from minicompress.calibration import block_linears, hessian, layer_inputs, token_windows
from minicompress.models import TinyGPT


def tiny() -> tuple[TinyGPT, torch.Tensor]:
    torch.manual_seed(0)
    return TinyGPT(d=32, layers=1, context=16), torch.randint(0, 96, (16 * 5 + 3,))


def test_block_linears_are_the_four_per_block_in_forward_order():
    model, _ = tiny()
    assert list(block_linears(model)) == [
        "blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc", "blocks.0.mlp.proj",
    ]  # fmt: skip


def test_layer_inputs_are_what_each_linear_receives():
    model, tokens = tiny()
    model.train()
    inputs = layer_inputs(model, tokens, batch_size=2)
    assert model.training  # mode restored
    block = model.blocks[0]
    windows = token_windows(tokens, 16)
    assert windows.shape == (5, 16)
    with torch.no_grad():
        model.eval()
        x = model.tok_emb(windows) + model.pos_emb(torch.arange(16))
        expected = block.ln1(x).reshape(-1, 32)
        h = x + block.attn(block.ln1(x))
        expected_fc = block.ln2(h).reshape(-1, 32)
    torch.testing.assert_close(inputs["blocks.0.attn.qkv"], expected)
    torch.testing.assert_close(inputs["blocks.0.mlp.fc"], expected_fc)
    assert inputs["blocks.0.mlp.proj"].shape == (80, 128)
    # the output of each layer follows from its input
    fc = block.mlp.fc
    with torch.no_grad():
        torch.testing.assert_close(
            inputs["blocks.0.mlp.proj"], torch.nn.functional.gelu(fc(expected_fc))
        )
    for linear in block_linears(model).values():
        assert not linear._forward_hooks  # hooks removed


def test_hooks_are_removed_when_the_forward_pass_fails():
    model, tokens = tiny()
    model.blocks[0].mlp.proj.register_forward_pre_hook(lambda m, a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        layer_inputs(model, tokens)
    assert all(not m._forward_hooks for m in block_linears(model).values())


def test_max_rows_and_names():
    model, tokens = tiny()
    inputs = layer_inputs(model, tokens, ["blocks.0.mlp.fc"], max_rows=7)
    full = layer_inputs(model, tokens, ["blocks.0.mlp.fc"])["blocks.0.mlp.fc"]
    assert list(inputs) == ["blocks.0.mlp.fc"]
    assert inputs["blocks.0.mlp.fc"].shape == (7, 32)
    assert torch.equal(inputs["blocks.0.mlp.fc"][0], full[0])
    assert torch.equal(inputs["blocks.0.mlp.fc"][-1], full[-1])


def test_hessian_is_twice_the_mean_outer_product():
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    expected = 2 * sum(torch.outer(r, r) for r in x.double()) / 10
    torch.testing.assert_close(hessian(x), expected)


def test_bad_input_is_refused():
    model, tokens = tiny()
    with pytest.raises(ValueError, match="not block Linears"):
        layer_inputs(model, tokens, ["head"])
    with pytest.raises(TypeError, match="1-D int64"):
        layer_inputs(model, tokens.float())
    with pytest.raises(ValueError, match="need at least context"):
        layer_inputs(model, tokens[:5])
    with pytest.raises(TypeError, match="blocks"):
        block_linears(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="2-D"):
        hessian(torch.ones(3))
