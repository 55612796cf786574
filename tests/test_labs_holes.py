"""Each kind of wrong solution that used to pass a lab checker (issue 15) is now rejected with a
message naming the mistake; and so are the new quantization lab functions' errata."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minicompress import pruning
from minicompress import quantization as Q
from minicompress.labs import LabCheckError
from minicompress.labs import binarization as lab_bin
from minicompress.labs import distillation as lab_kd
from minicompress.labs import pruning as lab_prune
from minicompress.labs import quantization as lab_q
from minicompress.labs import sharing as lab_share
from minicompress.train import TrainConfig, fit

# ---- pruning -----------------------------------------------------------------------------


def _mask_with_count(weight, k):
    mask = torch.ones(weight.numel(), dtype=torch.bool)
    if k:
        mask[weight.abs().flatten().argsort()[:k]] = False
    return mask.view_as(weight)


def mask_ceil(weight, sparsity):
    return _mask_with_count(weight, math.ceil(sparsity * weight.numel()))


def mask_int(weight, sparsity):
    return _mask_with_count(weight, int(sparsity * weight.numel()))


def mask_k0_bug(weight, sparsity):  # sorted[k - 1] with k = 0 is the largest magnitude
    k = round(sparsity * weight.numel())
    threshold = weight.abs().flatten().sort().values[k - 1]
    return weight.abs() > threshold


def mask_mutating(weight, sparsity):
    mask = pruning.magnitude_mask(weight, sparsity)
    weight.mul_(mask)  # prunes the caller's tensor as a side effect
    return mask


def global_ceil(weights, sparsity):
    flat = torch.cat([w.abs().flatten() for w in weights.values()])
    keep = _mask_with_count(flat, math.ceil(sparsity * flat.numel()))
    out, start = {}, 0
    for name, w in weights.items():
        out[name] = keep[start : start + w.numel()].view_as(w)
        start += w.numel()
    return out


def global_mutating(weights, sparsity):
    masks = pruning.global_magnitude_masks(weights, sparsity)
    for name, w in weights.items():
        w.mul_(masks[name])
    return masks


def rate_mutating(original, pruned):
    original.zero_()
    return (pruned == 0).float().mean().item()


def fine_tune_masking_gradients_only(model, masks, images, labels, epochs):
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].register_hook(lambda g, m=mask: g * m)  # frozen, never zeroed
    fit(model, images, labels, TrainConfig(epochs=epochs, lr=0.05), progress=False)


def fine_tune_masking_once_after(model, masks, images, labels, epochs):
    fit(model, images, labels, TrainConfig(epochs=epochs, lr=0.05), progress=False)
    pruning.apply_masks(model, masks)


def fine_tune_ok(model, masks, images, labels, epochs):
    pruning.apply_masks(model, masks)
    config = TrainConfig(epochs=epochs, lr=0.05)
    fit(model, images, labels, config, after_step=pruning.keep_masks(masks), progress=False)


# ---- quantization ------------------------------------------------------------------------


def quantize_no_clamp(x, scale, zero_point, bits):
    return (torch.round(x * (1.0 / scale)) + zero_point).to(torch.int64)


def quantize_clamp_2b(x, scale, zero_point, bits):
    q = torch.clamp(torch.round(x * (1.0 / scale)) + zero_point, 0, 2**bits)
    return q.to(torch.uint8)


def quantize_cast_then_clamp(x, scale, zero_point, bits):
    q = (torch.round(x * (1.0 / scale)) + zero_point).to(torch.uint8)
    return torch.clamp(q, 0, 2**bits - 1)


def quantize_no_zero_point(x, scale, zero_point, bits):
    return torch.clamp(torch.round(x * (1.0 / scale)), 0, 2**bits - 1).to(torch.uint8)


def quantize_mutating(x, scale, zero_point, bits):
    x.mul_(1.0 / scale).round_().add_(zero_point).clamp_(0, 2**bits - 1)
    return x.to(torch.uint8)


def dequantize_uint8_wrap(q, scale, zero_point):
    return scale * (q - zero_point).float()  # uint8 − int stays uint8 and wraps


def symmetric_ok(x, bits):
    return x.abs().max().item() / (2 ** (bits - 1) - 1)


def symmetric_by_half(x, bits):
    return x.abs().max().item() / 2 ** (bits - 1)


def symmetric_pytorch(x, bits):
    return x.abs().max().item() / (2 ** (bits - 1) - 0.5)


def symmetric_erratum2(x, bits):  # max(w) / 2^b
    return x.max().item() / 2**bits


def symmetric_erratum3(x, bits):  # (max|w| − min|w|) / 2^b
    return (x.abs().max().item() - x.abs().min().item()) / 2**bits


def symmetric_max_not_abs(x, bits):
    return x.max().item() / (2 ** (bits - 1) - 1)


def per_channel_ok(w, bits):
    return w.abs().amax(dim=1) / (2 ** (bits - 1) - 1)


def per_channel_per_tensor(w, bits):
    return w.abs().max() / (2 ** (bits - 1) - 1)


def per_channel_columns(w, bits):
    return w.abs().amax(dim=0) / (2 ** (bits - 1) - 1)


def per_channel_erratum2(w, bits):
    return w.amax(dim=1) / 2**bits


def multiplier_ok(m):
    mantissa, exponent = math.frexp(m)
    m0 = round(mantissa * 2**31)
    if m0 == 2**31:
        m0, exponent = m0 // 2, exponent + 1
    return m0, -exponent


def multiplier_sign_flipped(m):
    m0, n = multiplier_ok(m)
    return m0, -n


def multiplier_no_overflow_fix(m):
    mantissa, exponent = math.frexp(m)
    return round(mantissa * 2**31), -exponent


def multiplier_truncated(m):
    mantissa, exponent = math.frexp(m)
    return int(mantissa * 2**31), -exponent


def multiplier_real_m0(m):
    mantissa, exponent = math.frexp(m)
    return mantissa, -exponent


def multiplier_unnormalised(m):  # M0 = M itself, n = 0: few significant bits for small M
    return round(m * 2**31), 0


def fake_quant_ok(x, scale, zero_point, bits):
    q = torch.clamp(torch.round(x * (1.0 / scale)) + zero_point, 0, 2**bits - 1)
    x_hat = (q - zero_point) * scale
    inside = (torch.round(x * (1.0 / scale)) + zero_point >= 0) & (
        torch.round(x * (1.0 / scale)) + zero_point <= 2**bits - 1
    )
    return x_hat.detach() + (x - x.detach()) * inside


def fake_quant_no_ste(x, scale, zero_point, bits):
    q = torch.clamp(torch.round(x * (1.0 / scale)) + zero_point, 0, 2**bits - 1)
    return (q - zero_point) * scale


def fake_quant_ste_everywhere(x, scale, zero_point, bits):
    q = torch.clamp(torch.round(x * (1.0 / scale)) + zero_point, 0, 2**bits - 1)
    return x + ((q - zero_point) * scale - x).detach()


def fake_quant_erratum1(x, scale, zero_point, bits):
    return x + (torch.round(x) - x).detach()


# ---- sharing, distillation, binarization -------------------------------------------------


def kmeans_one_centroid_too_few(weight, bits):
    from minicompress import sharing

    codebook, indices = sharing.kmeans_quantize(weight, bits)
    k = 2**bits - 1
    w = weight.flatten()
    c = torch.linspace(float(w.min()), float(w.max()), k)
    for _ in range(100):
        idx = (w[:, None] - c[None, :]).abs().argmin(1)
        c = torch.stack([w[idx == j].mean() if (idx == j).any() else c[j] for j in range(k)])
    return c, idx.reshape(weight.shape)


def shannon_fano(frequencies):
    def split(items):
        if len(items) == 1:
            return {items[0][0]: ""}
        total = sum(f for _, f in items)
        cut = min(range(1, len(items)),
                  key=lambda i: abs(total - 2 * sum(f for _, f in items[:i])))  # fmt: skip
        left, right = split(items[:cut]), split(items[cut:])
        return {s: "0" + c for s, c in left.items()} | {s: "1" + c for s, c in right.items()}

    return split(sorted(frequencies.items(), key=lambda kv: -kv[1]))


def kd_ok(z, v, y, t, a):
    log_q, log_p = F.log_softmax(z / t, 1), F.log_softmax(v.detach() / t, 1)
    loss = a * t**2 * F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    return loss + (1 - a) * F.cross_entropy(z, y) if a < 1 else loss


def kd_always_cross_entropy(z, v, y, t, a):
    log_q, log_p = F.log_softmax(z / t, 1), F.log_softmax(v.detach() / t, 1)
    soft = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    return a * t**2 * soft + (1 - a) * F.cross_entropy(z, y)


def kd_teacher_gets_gradients(z, v, y, t, a):
    log_q, log_p = F.log_softmax(z / t, 1), F.log_softmax(v / t, 1)
    loss = a * t**2 * F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    return loss + (1 - a) * F.cross_entropy(z, y) if a < 1 else loss


def kd_missing_log_target(z, v, y, t, a):
    log_q, log_p = F.log_softmax(z / t, 1), F.log_softmax(v.detach() / t, 1)
    loss = a * t**2 * F.kl_div(log_q, log_p, reduction="batchmean")
    return loss + (1 - a) * F.cross_entropy(z, y) if a < 1 else loss


def kd_mutating(z, v, y, t, a):
    loss = kd_ok(z, v, y, t, a)
    if y is not None:
        y.zero_()  # overwrites the caller's labels
    return loss


def binarize_mutating(w):
    return w.copy_(torch.where(w >= 0, 1.0, -1.0))


WRONG = [
    (lab_prune.check_masked_fine_tune, fine_tune_masking_gradients_only, "never sets them to zero"),
    (lab_prune.check_masked_fine_tune, fine_tune_masking_once_after, "in forward pass \\d+"),
    (lab_prune.check_magnitude_mask, mask_ceil, "math.ceil gives"),
    (lab_prune.check_magnitude_mask, mask_int, "int\\(\\) gives"),
    (lab_prune.check_magnitude_mask, mask_k0_bug, "Handle k = 0 separately"),
    (lab_prune.check_magnitude_mask, mask_mutating, "modified its argument `weight`"),
    (lab_prune.check_global_masks, global_ceil, "not up \\(math.ceil\\)"),
    (lab_prune.check_global_masks, global_mutating, "modified its argument"),
    (lab_prune.check_pruning_rate, rate_mutating, "modified its argument `original`"),
    (lab_q.check_quantize, quantize_no_clamp, "do not fit in \\[0, 255\\]"),
    (lab_q.check_quantize, quantize_clamp_2b, "\\[0, 2\\^b\\] = \\[0, 256\\]"),
    (lab_q.check_quantize, quantize_cast_then_clamp, "before clamping: .* wraps around"),
    (lab_q.check_quantize, quantize_no_zero_point, "forgot the zero point"),
    (lab_q.check_quantize, quantize_mutating, "modified its argument `x`"),
    (lab_q.check_dequantize, dequantize_uint8_wrap, "computed in uint8 wraps around"),
    (lab_q.check_symmetric_scale, symmetric_by_half, "divides by 2\\^\\(b−1\\) = 128"),
    (lab_q.check_symmetric_scale, symmetric_pytorch, "PyTorch's symmetric observer"),
    (lab_q.check_symmetric_scale, symmetric_erratum2, "course erratum 2"),
    (lab_q.check_symmetric_scale, symmetric_erratum3, "course erratum 3"),
    (lab_q.check_symmetric_scale, symmetric_max_not_abs, "uses max\\(x\\), not max\\|x\\|"),
    (lab_q.check_per_channel_scales, per_channel_per_tensor, "per-tensor scale"),
    (lab_q.check_per_channel_scales, per_channel_columns, "one per \\*column\\*"),
    (lab_q.check_per_channel_scales, per_channel_erratum2, "course erratum 2"),
    (lab_q.check_quantize_multiplier, multiplier_sign_flipped, "sign of n is flipped"),
    (lab_q.check_quantize_multiplier, multiplier_no_overflow_fix, "does not fit in an int32"),
    (lab_q.check_quantize_multiplier, multiplier_truncated, "int\\(\\) truncates"),
    (lab_q.check_quantize_multiplier, multiplier_real_m0, "31-bit fixed-point integer"),
    (lab_q.check_quantize_multiplier, multiplier_unnormalised, "normalise first"),
    (lab_q.check_fake_quantize, fake_quant_no_ste, "gradient is 0 everywhere"),
    (lab_q.check_fake_quantize, fake_quant_ste_everywhere, "gradient is 1 everywhere"),
    (lab_q.check_fake_quantize, fake_quant_erratum1, "course erratum 1"),
    (lab_share.check_kmeans_quantize, kmeans_one_centroid_too_few, "= 2\\^2 − 1 centroids"),
    (lab_share.check_huffman_code, shannon_fano, "Shannon–Fano"),
    (lab_kd.check_kd_loss, kd_always_cross_entropy, "targets=None.*compute it only when alpha"),
    (lab_kd.check_kd_loss, kd_teacher_gets_gradients, "gradients reach the teacher"),
    (lab_kd.check_kd_loss, kd_missing_log_target, "log_target=True"),
    (lab_kd.check_kd_loss, kd_mutating, "modified its argument `targets`"),
    (lab_bin.check_binarize, binarize_mutating, "modified its argument `w`"),
]


@pytest.mark.parametrize(
    ("checker", "wrong", "message"), WRONG, ids=[w.__name__ for _, w, _ in WRONG]
)
def test_wrong_kind_is_rejected_naming_the_mistake(checker, wrong, message):
    with pytest.raises(LabCheckError, match=message):
        checker(wrong)


@pytest.mark.parametrize(
    ("checker", "right"),
    [
        (lab_prune.check_masked_fine_tune, fine_tune_ok),
        (lab_q.check_symmetric_scale, symmetric_ok),
        (lab_q.check_per_channel_scales, per_channel_ok),
        (lab_q.check_quantize_multiplier, multiplier_ok),
        (lab_q.check_quantize_multiplier, Q.quantize_multiplier),
        (lab_q.check_fake_quantize, fake_quant_ok),
        (lab_kd.check_kd_loss, kd_ok),
    ],
)
@pytest.mark.parametrize("seed", [0, 12345])
def test_right_versions_pass_on_visible_and_hidden_seeds(checker, right, seed, capsys):
    checker(right, seed=seed)
    assert "✓" in capsys.readouterr().out


def test_grading_seed_comes_from_the_environment(monkeypatch):
    from minicompress.labs import grading_seed

    monkeypatch.setenv("MINICOMPRESS_GRADING_SEED", "987")
    assert grading_seed() == 987
    monkeypatch.setenv("MINICOMPRESS_GRADING_SEED", "x")
    with pytest.raises(ValueError, match="MINICOMPRESS_GRADING_SEED"):
        grading_seed()
