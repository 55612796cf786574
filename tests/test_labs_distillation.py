"""Distillation lab checker: the reference passes; the seeds' versions (erratum 10) and the
common slips (no T², reversed KL, no temperature, sum over the batch, swapped weights...)
are rejected with messages that say what is wrong."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from minicompress.distillation import kd_loss
from minicompress.labs import LabCheckError
from minicompress.labs.distillation import check_kd_loss


def kd_ok(z, v, y, t, a):
    v = v.detach()
    soft = F.kl_div(F.log_softmax(z / t, dim=1), F.softmax(v / t, dim=1), reduction="batchmean")
    return a * t**2 * soft + (1 - a) * F.cross_entropy(z, y) if a < 1 else t**2 * soft


def kd_ok_by_hand(z, v, y, t, a):
    if y is None:
        y = torch.zeros(len(z), dtype=torch.long)  # weight 0 below: any labels do
    v = v.detach()
    p, log_q = torch.softmax(v / t, 1), torch.log_softmax(z / t, 1)
    soft = (p * (p.log() - log_q)).sum(1).mean()
    hard = -torch.log_softmax(z, 1).gather(1, y.view(-1, 1)).mean()
    return a * t * t * soft + (1 - a) * hard


def kl(p_logits, q_logits, t, reduction="batchmean"):
    return F.kl_div(F.log_softmax(q_logits / t, 1), F.softmax(p_logits / t, 1),
                    reduction=reduction)  # fmt: skip


# ---- wrong versions -----------------------------------------------------------------------


def seed_002_teacher_as_prediction(z, v, y, t, a):  # erratum 10: y_pred = teacher_model(x)
    return F.cross_entropy(v, y)


def seed_002_mse(z, v, y, t, a):
    return F.mse_loss(F.softmax(v, 1), F.one_hot(y, 10).float())


def seed_000_no_teacher(z, v, y, t, a):  # erratum 10: min L(f_small(x), y)
    return F.cross_entropy(z, y)


def seed_003_keras(z, v, y, t, a):  # CE + 0.1 · KLD(teacher, student), no temperature
    return F.cross_entropy(z, y) + 0.1 * kl(v, z, 1.0)


def no_t_squared(z, v, y, t, a):
    return a * kl(v, z, t) + (1 - a) * F.cross_entropy(z, y)


def t_not_t_squared(z, v, y, t, a):
    return a * t * kl(v, z, t) + (1 - a) * F.cross_entropy(z, y)


def reversed_kl(z, v, y, t, a):
    return a * t**2 * kl(z, v, t) + (1 - a) * F.cross_entropy(z, y)


def kl_div_arguments_swapped(z, v, y, t, a):  # the same mistake written with F.kl_div
    soft = F.kl_div(F.log_softmax(v / t, 1), F.softmax(z / t, 1), reduction="batchmean")
    return a * t**2 * soft + (1 - a) * F.cross_entropy(z, y)


def softmax_without_temperature(z, v, y, t, a):
    return a * t**2 * kl(v, z, 1.0) + (1 - a) * F.cross_entropy(z, y)


def temperature_on_teacher_only(z, v, y, t, a):
    soft = F.kl_div(F.log_softmax(z, 1), F.softmax(v / t, 1), reduction="batchmean")
    return a * t**2 * soft + (1 - a) * F.cross_entropy(z, y)


def hard_term_at_temperature(z, v, y, t, a):
    return a * t**2 * kl(v, z, t) + (1 - a) * F.cross_entropy(z / t, y)


def kl_summed_over_batch(z, v, y, t, a):
    return a * t**2 * kl(v, z, t, "sum") + (1 - a) * F.cross_entropy(z, y)


def everything_summed(z, v, y, t, a):
    return a * t**2 * kl(v, z, t, "sum") + (1 - a) * F.cross_entropy(z, y, reduction="sum")


def kl_div_mean_reduction(z, v, y, t, a):
    with warnings.catch_warnings():  # PyTorch warns that "mean" is not the KL's definition
        warnings.simplefilter("ignore")
        return a * t**2 * kl(v, z, t, "mean") + (1 - a) * F.cross_entropy(z, y)


def kl_div_on_probabilities(z, v, y, t, a):
    soft = F.kl_div(F.softmax(z / t, 1), F.softmax(v / t, 1), reduction="batchmean")
    return a * t**2 * soft + (1 - a) * F.cross_entropy(z, y)


def alpha_swapped(z, v, y, t, a):
    return (1 - a) * t**2 * kl(v, z, t) + a * F.cross_entropy(z, y)


def soft_cross_entropy(z, v, y, t, a):
    soft = -(F.softmax(v / t, 1) * F.log_softmax(z / t, 1)).sum(1).mean()
    return a * t**2 * soft + (1 - a) * F.cross_entropy(z, y)


def returns_a_float(z, v, y, t, a):
    return kd_ok(z, v, y, t, a).item()


def detached(z, v, y, t, a):
    return kd_ok(z.detach(), v, y, t, a)


def per_example(z, v, y, t, a):
    soft = F.kl_div(F.log_softmax(z / t, 1), F.softmax(v / t, 1), reduction="none").sum(1)
    return a * t**2 * soft + (1 - a) * F.cross_entropy(z, y, reduction="none")


def not_written(*args):
    raise NotImplementedError()


def keyword_typo(z, v, y, t, a):
    return F.kl_div(F.log_softmax(z / t, 1), F.softmax(v / t, 1), reduce_mode="batchmean")


@pytest.mark.parametrize("right", [kd_ok, kd_ok_by_hand, kd_loss])
def test_reference_versions_pass(right, capsys):
    check_kd_loss(right)
    check_kd_loss(right, seed=1)
    assert capsys.readouterr().out.count("✓") == 2


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (seed_002_teacher_as_prediction, "never uses the student's logits.*erratum 10"),
        (seed_002_mse, "never uses the student's logits.*erratum 10"),
        (seed_000_no_teacher, "no teacher in it at all.*erratum 10"),
        (seed_003_keras, "Keras loss from the seeds"),
        (no_t_squared, "missing the T² factor"),
        (t_not_t_squared, "by T, not T²"),
        (reversed_kl, "KL reversed"),
        (kl_div_arguments_swapped, "KL reversed"),
        (softmax_without_temperature, "softmax without the temperature"),
        (temperature_on_teacher_only, "only the teacher's logits"),
        (hard_term_at_temperature, "hard term at temperature T"),
        (kl_summed_over_batch, "sums the KL over the batch"),
        (everything_summed, "sums over the batch instead of averaging"),
        (kl_div_mean_reduction, "divides by N·C"),
        (kl_div_on_probabilities, "expects \\*log\\*-probabilities"),
        (alpha_swapped, "swaps the weights"),
        (soft_cross_entropy, "soft cross-entropy"),
        (returns_a_float, "return the loss as a tensor"),
        (detached, "no gradient reaches the student"),
        (per_example, "one number, averaged over the batch"),
        (not_written, "not written yet"),
        (keyword_typo, "argument names"),
    ],
)
def test_checker_rejects_wrong_versions_saying_why(wrong, message):
    with pytest.raises(LabCheckError, match=message):
        check_kd_loss(wrong)


def test_checker_reports_an_unknown_mistake_with_the_expected_value():
    def off_by_a_bit(z, v, y, t, a):
        return kd_ok(z, v, y, t, a) * 1.01

    with pytest.raises(LabCheckError, match="expected α·T²·KL"):
        check_kd_loss(off_by_a_bit)


def test_checker_catches_a_wrong_gradient_with_the_right_value():
    def wrong_gradient(z, v, y, t, a):  # right value, but the gradient is scaled by 2
        value = kd_ok(z, v, y, t, a)
        return 2 * value - value.detach()

    with pytest.raises(LabCheckError, match="gradient with respect to the student's logits"):
        check_kd_loss(wrong_gradient)
