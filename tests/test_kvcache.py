"""minicompress.kvcache: the bytes-per-token formula, the per-token-and-head quantizer against
minicompress.quantization, and the context manager restoring what was installed."""

from __future__ import annotations

import pytest
import torch

from minicompress.kvcache import (
    cache_bytes_per_token,
    kv_quantizer,
    quantize_kv,
    quantized_kv_cache,
)
from minicompress.models import TinyGPT
from minicompress.quantization import calc_qparams, fake_quantize


def test_cache_bytes_per_token():
    assert cache_bytes_per_token(4, 64, 16) == 2 * 4 * 64 * 2
    assert cache_bytes_per_token(32, 4096, 16) == 524_288  # a 7B-class model: 0.5 MiB/token
    assert cache_bytes_per_token(1, 16, 4 + 32 / 16) == 2 * 16 * 6 / 8


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_each_token_and_head_is_quantized_on_its_own(bits):
    x = torch.randn(2, 4, 10, 16, generator=torch.Generator().manual_seed(bits))
    out = quantize_kv(x, bits)
    one = x[1, 2, 7]  # batch 1, head 2, token 7
    assert torch.equal(out[1, 2, 7], fake_quantize(one, calc_qparams(one, bits)))
    assert (out - x).abs().max() <= (x.amax(-1) - x.amin(-1)).max() / (2**bits - 1) / 2 + 1e-6


def test_context_manager_installs_and_restores():
    torch.manual_seed(0)
    model = TinyGPT(d=32, layers=2)
    marker = kv_quantizer(8)
    model.blocks[1].attn.kv_quantizer = marker
    ids = torch.randint(0, 96, (2, 20))
    plain = model(ids)
    with quantized_kv_cache(model, 2) as same:
        assert same is model
        assert all(b.attn.kv_quantizer.bits == 2 for b in model.blocks)
        assert not torch.allclose(model(ids), plain, atol=1e-4)
    assert model.blocks[0].attn.kv_quantizer is None
    assert model.blocks[1].attn.kv_quantizer is marker
    with pytest.raises(RuntimeError, match="boom"), quantized_kv_cache(model, 4):
        raise RuntimeError("boom")
    assert model.blocks[0].attn.kv_quantizer is None
    assert model.blocks[1].attn.kv_quantizer is marker


def test_bad_input_is_refused_with_clear_errors():
    with pytest.raises(ValueError, match="bits must be in 2..8 for a KV cache"):
        kv_quantizer(1)
    with pytest.raises(ValueError, match="no attention module"):
        with quantized_kv_cache(torch.nn.Linear(2, 2), 4):
            pass
    with pytest.raises(ValueError, match="layers"):
        cache_bytes_per_token(0, 64, 8)
    with pytest.raises(ValueError, match="NaN or inf"):
        quantize_kv(torch.full((1, 1, 2, 16), float("inf")), 4)
