"""minicompress.lm and models.TinyGPT: training, bits per character, generation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minicompress import lm
from minicompress.models import TinyGPT


def small(seed: int = 0) -> TinyGPT:
    torch.manual_seed(seed)
    return TinyGPT(vocab=8, context=16, d=16, layers=1, heads=2).eval()


def test_parameters_per_block_are_12d2_plus_13d():
    model = TinyGPT(vocab=96, context=128, d=64, layers=4, heads=4)
    block = sum(p.numel() for p in model.blocks[0].parameters())
    assert block == 12 * 64**2 + 13 * 64
    total = sum(p.numel() for p in model.parameters())
    assert total == 4 * block + 96 * 64 + 128 * 64 + 2 * 64 + 64 * 96


def test_attention_is_causal():
    model = small()
    ids = torch.randint(8, (1, 16))
    changed = ids.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 8
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.equal(a[0, :10], b[0, :10])  # the future cannot leak backwards
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_kv_quantizer_hook_is_applied():
    model = small()
    ids = torch.randint(8, (2, 16))
    with torch.no_grad():
        plain = model(ids)
        model.blocks[0].attn.kv_quantizer = lambda t: t
        assert torch.equal(model(ids), plain)
        model.blocks[0].attn.kv_quantizer = torch.zeros_like
        assert not torch.allclose(model(ids), plain)


def test_window_bits_is_the_cross_entropy_in_bits():
    model = small()
    tokens = torch.randint(8, (16 * 5 + 1,))
    bits = lm.window_bits(model, tokens)
    assert len(bits) == 5
    window = tokens[:17]
    with torch.no_grad():
        nats = F.cross_entropy(model(window[None, :-1])[0].double(), window[1:])
    assert bits[0].item() == pytest.approx(nats.item() / math.log(2), rel=1e-6)
    score = lm.bits_per_char(model, tokens)
    assert score.windows == 5 and score.mean == pytest.approx(bits.mean().item())


def test_compare_bits_is_paired():
    tokens = torch.randint(8, (16 * 20 + 1,))
    a, b = small(0), small(1)
    diff = lm.compare_bits(a, b, tokens)
    expected = lm.window_bits(a, tokens) - lm.window_bits(b, tokens)
    assert diff.mean == pytest.approx(expected.mean().item())
    assert lm.compare_bits(a, a, tokens).standard_error == 0.0


def test_training_lowers_the_loss_and_leaves_global_rng_alone():
    model = small()
    tokens = torch.arange(400) % 8  # a perfectly predictable sequence
    state = torch.random.get_rng_state()
    losses = lm.train_lm(model, tokens, lm.LMConfig(steps=60, batch_size=8, lr=1e-2, warmup=5),
                         progress=False)  # fmt: skip
    assert torch.equal(torch.random.get_rng_state(), state)
    assert losses[-1] < 0.3 * losses[0]
    assert not model.training


def test_learning_rate_schedule():
    config = lm.LMConfig(steps=100, lr=1.0, warmup=10)
    assert config.rate(0) == pytest.approx(0.1)
    assert config.rate(9) == pytest.approx(1.0)
    assert config.rate(10) == pytest.approx(1.0)
    assert config.rate(99) < 0.01


def test_generate_is_seeded():
    model = small()
    prompt = torch.tensor([1, 2, 3])
    a = lm.generate(model, prompt, 20, seed=3)
    assert len(a) == 20 and torch.equal(a, lm.generate(model, prompt, 20, seed=3))
    text = lm.generate(model, prompt, 5, decode=lambda ids: "".join(map(str, ids.tolist())))
    assert isinstance(text, str) and len(text) == 5


def test_bad_input():
    model = small()
    with pytest.raises(ValueError, match="exceeds the context"):
        model(torch.zeros(1, 17, dtype=torch.int64))
    with pytest.raises(ValueError, match="need at least context"):
        lm.window_bits(model, torch.zeros(10, dtype=torch.int64))
    with pytest.raises(TypeError, match="1-D int64"):
        lm.bits_per_char(model, torch.zeros(100))
    with pytest.raises(TypeError, match="attribute `context`"):
        lm.window_bits(torch.nn.Linear(2, 2), torch.zeros(100, dtype=torch.int64))
    with pytest.raises(ValueError, match="steps"):
        lm.LMConfig(steps=-1)
    with pytest.raises(ValueError, match="divisible"):
        TinyGPT(d=10, heads=4)
    with pytest.raises(ValueError, match="positive integers"):
        TinyGPT(layers=0)
