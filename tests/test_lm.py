"""minicompress.lm and models.TinyGPT: training, bits per character, generation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minicompress import lm
from minicompress.distillation import kd_loss
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


def reference_train_lm(model, tokens, config):
    """train_lm's loop before it learnt to skip frozen parameters (every parameter trained)."""
    generator = torch.Generator().manual_seed(config.seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": other, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.99),
    )  # fmt: skip
    offsets, losses = torch.arange(model.context + 1), []
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = config.rate(step)
        starts = torch.randint(len(tokens) - model.context, (config.batch_size, 1),
                               generator=generator)  # fmt: skip
        window = tokens[starts + offsets]
        loss = F.cross_entropy(model(window[:, :-1]).flatten(0, 1), window[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return losses


CONFIG = lm.LMConfig(steps=4, batch_size=3, lr=1e-2, warmup=2)
TOKENS = torch.randint(8, (300,), generator=torch.Generator().manual_seed(5))


def test_train_lm_trains_a_plain_model_as_before():
    a, b = small(), small()
    assert lm.train_lm(a, TOKENS, CONFIG, progress=False) == reference_train_lm(b, TOKENS, CONFIG)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_train_lm_leaves_frozen_parameters_alone():
    model = small()
    model.blocks.requires_grad_(False)
    frozen = {k: v.clone() for k, v in model.blocks.state_dict().items()}
    head = model.head.weight.clone()
    lm.train_lm(model, TOKENS, CONFIG, progress=False)
    assert all(torch.equal(model.blocks.state_dict()[k], v) for k, v in frozen.items())
    assert not torch.equal(model.head.weight, head)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter with requires_grad"):
        lm.train_lm(model, TOKENS, CONFIG, progress=False)


def test_distill_lm_with_label_loss_only_equals_train_lm_step_for_step():
    teacher = small(7)
    a, b = small(), small()
    plain = lm.train_lm(a, TOKENS, CONFIG, progress=False)
    distilled = lm.distill_lm(b, teacher, TOKENS, CONFIG, temperature=2.0, alpha=0.0,
                              progress=False)  # fmt: skip
    assert distilled == pytest.approx(plain, rel=1e-6)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_distill_lm_loss_is_kd_loss_per_token_and_teacher_is_unchanged():
    teacher, student = small(7).train(), small()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    config = lm.LMConfig(steps=1, batch_size=3, lr=0.0, warmup=1)
    loss = lm.distill_lm(student, teacher, TOKENS, config, 3.0, 0.5, progress=False)[0]
    starts = torch.randint(len(TOKENS) - 16, (3, 1), generator=torch.Generator().manual_seed(0))
    window = TOKENS[starts + torch.arange(17)]
    with torch.no_grad():
        z, v = student(window[:, :-1]).flatten(0, 1), teacher(window[:, :-1]).flatten(0, 1)
    expected = kd_loss(z, v, window[:, 1:].flatten(), 3.0, 0.5)
    assert loss == pytest.approx(expected.item(), rel=1e-6)
    assert all(torch.equal(teacher.state_dict()[k], t) for k, t in before.items())
    assert teacher.training and all(p.grad is None for p in teacher.parameters())


def test_distill_lm_brings_the_student_towards_the_teacher():
    teacher, student = small(7), small()
    config = lm.LMConfig(steps=30, batch_size=4, lr=1e-2, warmup=2)
    losses = lm.distill_lm(student, teacher, TOKENS, config, progress=False)
    assert losses[-1] < 0.3 * losses[0]  # KL(teacher ‖ student) per character


def test_distill_lm_bad_input():
    model = small()
    with pytest.raises(ValueError, match="same model"):
        lm.distill_lm(model, model, TOKENS, CONFIG, progress=False)
    with pytest.raises(TypeError, match="teacher must be a torch.nn.Module"):
        lm.distill_lm(model, "teacher", TOKENS, CONFIG, progress=False)
    short = TinyGPT(vocab=8, context=8, d=16, layers=1, heads=2)
    with pytest.raises(ValueError, match="context 8 is shorter"):
        lm.distill_lm(model, short, TOKENS, CONFIG, progress=False)
    other = TinyGPT(vocab=9, context=16, d=16, layers=1, heads=2)
    with pytest.raises(ValueError, match="vocabularies must match"):
        lm.distill_lm(model, other, TOKENS, CONFIG, progress=False)
    with pytest.raises(ValueError, match="alpha must be"):
        lm.distill_lm(model, small(1), TOKENS, CONFIG, alpha=1.5, progress=False)


def test_a_non_finite_loss_stops_training_before_it_reaches_the_weights():
    model = small()
    with torch.no_grad():
        model.head.weight.fill_(float("inf"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = torch.randint(8, (16 * 5 + 1,), generator=torch.Generator().manual_seed(0))
    with pytest.raises(FloatingPointError, match="loss became nan at step 0"):
        lm.train_lm(model, tokens, lm.LMConfig(steps=2, batch_size=2, warmup=1), progress=False)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_distill_names_the_student_in_its_error():
    with pytest.raises(TypeError, match="student"):
        lm.distill_lm("student", small(), torch.zeros(40, dtype=torch.long))
