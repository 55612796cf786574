"""Checkers for the distillation lab: test a student's loss against
`minicompress.distillation.kd_loss` on randomized logits and raise `LabCheckError` saying
what is wrong, naming the source blog posts' mistakes (course erratum 10) when it sees them.

The lab's function has the package's signature:

- ``kd_loss(student_logits, teacher_logits, targets, temperature, alpha) -> 0-d tensor``,
  α·T²·KL(softmax(v/T) ‖ softmax(z/T)) averaged over the batch + (1 − α)·CE(z, y).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from minicompress import distillation as reference
from minicompress.labs import LabCheckError, _call, _unchanged

__all__ = ["check_kd_loss"]

Case = tuple[Tensor, Tensor, Tensor, float, float]


def _cases(seed: int) -> list[Case]:
    """(z, v, y, T, α). The first case tells every known mistake apart (T ≠ 1, α ∉ {0, ½, 1},
    N ≠ C); the others cover α = 1, α = 0, T = 1 and one example."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for n, temperature, alpha in ((16, 4.0, 0.7), (5, 2.5, 0.25), (32, 8.0, 1.0), (8, 1.0, 0.0),
                                  (1, 3.0, 0.6)):  # fmt: skip
        z = torch.randn(n, 10, generator=g) * 2.0
        v = torch.randn(n, 10, generator=g) * 4.0
        y = torch.randint(0, 10, (n,), generator=g)
        cases.append((z, v, y, temperature, alpha))
    return cases


def _kl(p_logits: Tensor, q_logits: Tensor, t: float, reduction: str = "batchmean") -> Tensor:
    """KL(softmax(p_logits / t) ‖ softmax(q_logits / t)), reduced over the batch."""
    log_q = F.log_softmax(q_logits / t, dim=1)
    return F.kl_div(log_q, F.log_softmax(p_logits / t, dim=1), reduction=reduction,
                    log_target=True)  # fmt: skip


def _mistakes(z: Tensor, v: Tensor, y: Tensor, t: float, a: float) -> list[tuple[Tensor, str]]:
    """What the common wrong versions return on this case, with what to tell the student."""
    n, classes = z.shape
    ce = F.cross_entropy(z, y)
    p, q = F.softmax(v / t, dim=1), F.softmax(z / t, dim=1)
    teacher_entropy = -(p * p.log()).sum(dim=1).mean()
    return [
        (
            F.cross_entropy(v, y),
            "never uses the student's logits: it scores the teacher's output against the labels, "
            "so the student's weights get no gradient and never change. The teacher's softened "
            "output is the student's *target*, not its input or its prediction (course erratum 10, "
            "the seeds' distillation code).",
        ),
        (
            F.mse_loss(F.softmax(v, dim=1), F.one_hot(y, classes).float()),
            "never uses the student's logits (it compares the teacher's output with the labels, as "
            "the seeds' code does): the student learns nothing. The teacher's output is the "
            "*target* for the student's output (course erratum 10).",
        ),
        (
            ce,
            "is plain cross-entropy with the labels: there is no teacher in it at all, as in the "
            "seeds' formula min L(f_small(x), y) (course erratum 10). Add the soft term "
            "α·T²·KL(p_T^teacher ‖ p_T^student).",
        ),
        (
            ce + 0.1 * _kl(v, z, 1.0),
            "is the Keras loss from the seeds: CE + 0.1·KL at T = 1. It ignores both temperature "
            "and alpha; use α·T²·KL(softmax(v/T) ‖ softmax(z/T)) + (1 − α)·CE(z, y) (course "
            "erratum 10).",
        ),
        (
            a * _kl(v, z, t) + (1 - a) * ce,
            "is missing the T² factor on the soft term. The gradient of KL at temperature T is (q "
            "− p)/T and q − p shrinks like 1/T too, so without T² the soft targets' gradients fall "
            "as 1/T² and the hard term drowns them (Hinton et al. 2015 §2).",
        ),
        (
            a * t * _kl(v, z, t) + (1 - a) * ce,
            "multiplies the soft term by T, not T²: the soft-target gradients need T² to keep "
            "their scale as T changes.",
        ),
        (
            a * t**2 * _kl(z, v, t) + (1 - a) * ce,
            "has the KL reversed: KL(student ‖ teacher). The teacher's distribution p is the "
            "target: KL(p ‖ q) = Σ p_i (log p_i − log q_i). With F.kl_div the student's "
            "log-probabilities are the first argument and the teacher's probabilities the second.",
        ),
        (
            a * t**2 * _kl(v, z, 1.0) + (1 - a) * ce,
            "uses softmax without the temperature: divide both networks' logits by T before the "
            "softmax (softmax(z / T)), only the hard term is at T = 1.",
        ),
        (
            a * t**2 * F.kl_div(F.log_softmax(z, 1), p, reduction="batchmean") + (1 - a) * ce,
            "divides only the teacher's logits by T: the student's must be softened with the same "
            "temperature, softmax(z / T).",
        ),
        (
            a * t**2 * _kl(v, z, t) + (1 - a) * F.cross_entropy(z / t, y),
            "computes the hard term at temperature T: the cross-entropy with the true labels uses "
            "the student's ordinary softmax, T = 1.",
        ),
        (
            a * t**2 * _kl(v, z, t, "sum") + (1 - a) * ce,
            'sums the KL over the batch: average it over the N examples (reduction="batchmean"), '
            "as the cross-entropy is, or the loss and its gradient grow with the batch size.",
        ),
        (
            a * t**2 * _kl(v, z, t, "sum") + (1 - a) * ce * n,
            "sums over the batch instead of averaging: divide by the number of examples N, or the "
            'loss and the gradient grow with the batch size (reduction="batchmean" for F.kl_div, '
            'the default "mean" for F.cross_entropy).',
        ),
        (
            a * t**2 * _kl(v, z, t) / classes + (1 - a) * ce,
            'uses F.kl_div\'s reduction="mean", which divides by N·C (every entry), not by the N '
            'examples: use reduction="batchmean" (the KL is a sum over classes).',
        ),
        (
            a * t**2 * F.kl_div(q, p, reduction="batchmean") + (1 - a) * ce,
            "passes probabilities to F.kl_div as its first argument: it expects "
            "*log*-probabilities there, F.log_softmax(z / T, dim=1).",
        ),
        (
            (1 - a) * t**2 * _kl(v, z, t) + a * ce,
            "swaps the weights: alpha multiplies the soft (teacher) term and 1 − alpha the hard "
            "(label) term, so alpha = 1 is pure distillation.",
        ),
        (
            a * t**2 * (_kl(v, z, t) + teacher_entropy) + (1 - a) * ce,
            "uses the soft cross-entropy −Σ p log q instead of the KL. Its gradient is the same, "
            "but it is larger by the teacher's entropy Σ p log(1/p) and is not 0 when the student "
            "equals the teacher; subtract that entropy, or use F.kl_div.",
        ),
    ]


def _describe(z: Tensor, t: float, a: float) -> str:
    n, classes = z.shape
    return f"kd_loss(N={n} examples × {classes} classes, temperature={t}, alpha={a})"


def check_kd_loss(fn: Callable[[Tensor, Tensor, Tensor, float, float], Tensor],
                  seed: int = 0) -> None:  # fmt: skip
    """Check ``fn(student_logits, teacher_logits, targets, temperature, alpha)``:
    α·T²·KL(p_T^teacher ‖ p_T^student) (batch mean) + (1 − α)·CE(y, p_1^student)."""
    cases = _cases(seed)
    for z, v, y, t, a in cases:
        where = _describe(z, t, a)
        student = z.clone().requires_grad_()
        teacher = v.clone().requires_grad_()  # a frozen teacher must get no gradient
        labels = y.clone()
        loss = _call(fn, where, student, teacher, labels, t, a)
        _unchanged({"student_logits": z, "teacher_logits": v, "targets": y},
                   {"student_logits": student.detach(), "teacher_logits": teacher.detach(),
                    "targets": labels}, where)  # fmt: skip
        if not isinstance(loss, Tensor):
            raise LabCheckError(
                f"{where} returned a {type(loss).__name__}; return the loss as a tensor "
                "(no .item()), so that loss.backward() can train the student."
            )
        if loss.numel() != 1:
            raise LabCheckError(
                f"{where} returned shape {tuple(loss.shape)}; the loss is one number, "
                "averaged over the batch."
            )
        expected = reference.kd_loss(z, v, y, t, a)
        got = loss.detach().double().reshape(())
        if torch.isnan(got):
            raise LabCheckError(
                f"{where} returned nan. The usual cause: F.kl_div(log_q, log_p) without "
                "log_target=True reads the teacher's *log*-probabilities as probabilities and "
                "takes the log of negative numbers. Pass log_target=True, or give F.kl_div the "
                "teacher's probabilities softmax(v / T) as its target."
            )
        if not torch.isclose(got, expected.double(), rtol=1e-4, atol=1e-6):
            for value, hint in _mistakes(z, v, y, t, a):
                if torch.isclose(got, value.detach().double(), rtol=1e-4, atol=1e-6):
                    raise LabCheckError(f"{where}: your loss {hint}")
            raise LabCheckError(
                f"{where} returned {got.item():.6g}, expected "
                f"α·T²·KL(softmax(v/T) ‖ softmax(z/T)) + (1 − α)·CE(z, y) = "
                f"{expected.item():.6g}."
            )
        if not loss.requires_grad:
            raise LabCheckError(
                f"{where}: the value is right but no gradient reaches the student's logits. "
                "Do not detach them, leave autograd (.numpy(), .item()) or use torch.no_grad(); "
                "only the teacher's side needs no gradient."
            )
        grad, teacher_grad = torch.autograd.grad(
            loss.reshape(()), (student, teacher), allow_unused=True
        )
        if grad is None:
            raise LabCheckError(f"{where}: no gradient reaches the student's logits.")
        if teacher_grad is not None and teacher_grad.any():
            raise LabCheckError(
                f"{where}: gradients reach the teacher's logits, so training would change the "
                "teacher too. The teacher is frozen: use teacher_logits.detach() (or compute "
                "them under torch.no_grad())."
            )
        ref_student = z.clone().requires_grad_()
        (ref_grad,) = torch.autograd.grad(reference.kd_loss(ref_student, v, y, t, a),
                                          ref_student)  # fmt: skip
        if not torch.allclose(grad, ref_grad, rtol=1e-3, atol=1e-6):
            raise LabCheckError(
                f"{where}: the value is right but the gradient with respect to the student's "
                f"logits is off by up to {(grad - ref_grad).abs().max().item():.3g}; expected "
                "α·T·(q − p)/N + (1 − α)·(softmax(z) − onehot(y))/N."
            )
    _check_no_targets(fn, seed)
    print(f"✓ kd_loss passed {len(cases) + 1} randomized checks (value and gradient)")


def _check_no_targets(fn: Callable, seed: int) -> None:
    """With alpha = 1 the hard term has weight 0 and ``targets`` may be None."""
    z, v, y, t, _ = _cases(seed)[0]
    where = f"kd_loss(N={len(z)} examples, targets=None, temperature={t}, alpha=1.0)"
    try:
        loss = fn(z.clone().requires_grad_(), v.clone(), None, t, 1.0)
    except NotImplementedError:
        raise LabCheckError(f"{where} is not written yet.") from None
    except Exception as err:
        raise LabCheckError(
            f"{where} raised {type(err).__name__}: {str(err).rstrip('.')}. With alpha = 1 the "
            "cross-entropy term has weight 1 − alpha = 0 and there may be no labels: compute "
            "it only when alpha < 1."
        ) from err
    expected = reference.kd_loss(z, v, y, t, 1.0)
    if not isinstance(loss, Tensor) or not torch.isclose(
        loss.detach().double().reshape(()), expected.double(), rtol=1e-4, atol=1e-6
    ):
        raise LabCheckError(f"{where} should be the soft term alone, {expected.item():.6g}.")
