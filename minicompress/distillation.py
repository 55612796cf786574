"""Knowledge distillation: train a small student on a large teacher's softened outputs.

Chapter "Knowledge distillation" derives each piece:

- softmax with temperature, p_i = exp(v_i / T) / Σ_j exp(v_j / T) (`soft_targets`): T > 1
  flattens the distribution and exposes how the teacher ranks the wrong classes;
- the loss  α·T²·KL(p_T^teacher ‖ p_T^student) + (1 − α)·CE(y, p_1^student)  (`kd_loss`),
  whose soft part has gradient  α·T·(q_i − p_i)/N  with respect to a student logit z_i
  (q = student, p = teacher, both at temperature T, N examples): without the T² the
  soft-target gradients shrink as 1/T² and the hard term drowns them;
- at high temperature with zero-mean logits, q_i − p_i ≈ (z_i − v_i)/(C·T) for C classes,
  so the soft gradient tends to α·(z_i − v_i)/(C·N): distillation becomes logit matching;
- the training loop (`distill`), with the teacher's logits computed once (`teacher_logits`),
  and the share of the teacher–student gap it closes (`gap_closed`);
- a transfer set beyond the labelled images: every shifted copy of them (`shifted_copies`),
  each labelled by the teacher's logits on the shifted image itself, and images without
  labels, which only the soft term uses (``labels=None`` with α = 1).

The teacher's output is the student's *target*, never its input, and the student's own
output must appear in the loss (course erratum 10).

References: Hinton, Vinyals, Dean (2015), *Distilling the Knowledge in a Neural Network*.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minicompress import _validate as check
from minicompress.train import TrainConfig, fit, predict

__all__ = ["distill", "gap_closed", "kd_loss", "shifted_copies", "soft_targets", "teacher_logits"]


def _check_logits(logits: object, what: str) -> Tensor:
    check.float_tensor(logits, what, empty=True)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] < 2:
        raise ValueError(
            f"{what} must have shape (N, C) with N >= 1 examples and C >= 2 classes, "
            f"got {tuple(logits.shape)}"
        )
    return logits


def _check_targets(targets: object, n: int, classes: int) -> Tensor:
    if not isinstance(targets, Tensor) or targets.dtype != torch.int64:
        raise TypeError(f"targets must be an int64 tensor of class indices, got "
                        f"{check.describe(targets)}")  # fmt: skip
    if targets.shape != (n,):
        raise ValueError(f"targets must have shape ({n},), got {tuple(targets.shape)}")
    if int(targets.min()) < 0 or int(targets.max()) >= classes:
        raise ValueError(
            f"targets must be class indices in [0, {classes - 1}], got values from "
            f"{int(targets.min())} to {int(targets.max())}"
        )
    return targets


def soft_targets(logits: Tensor, temperature: float) -> Tensor:
    """Softmax with temperature over the last dimension (§ "Softmax with temperature"):
    ``p_i = exp(v_i / T) / Σ_j exp(v_j / T)``.

    T = 1 is the ordinary softmax; T → ∞ tends to the uniform distribution, T → 0 to the
    one-hot of the largest logit.
    """
    check.float_tensor(logits, "logits", empty=True)
    if logits.ndim == 0 or logits.numel() == 0:
        raise ValueError(f"logits must be a non-empty tensor (..., C), got {tuple(logits.shape)}")
    temperature = check.temperature(temperature)
    p = torch.softmax(logits / temperature, dim=-1)
    if not torch.isfinite(p).all():  # v / T overflowed (tiny T): shift by the max first
        shifted = logits - logits.max(dim=-1, keepdim=True).values
        p = torch.softmax(shifted / temperature, dim=-1)
    return p


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor | None,
    temperature: float,
    alpha: float,
) -> Tensor:
    """The distillation loss of Hinton et al. (2015) (§ "The distillation loss"):

    ``α·T²·KL(p_T ‖ q_T) + (1 − α)·CE(y, q_1)``,  with p_T = softmax(v / T) the teacher's
    and q_T = softmax(z / T) the student's distribution, the KL summed over classes and
    averaged over the batch (PyTorch's ``reduction="batchmean"``), the cross-entropy at
    T = 1 averaged over the batch.

    The T² keeps the soft term's gradient, α·T·(q_i − p_i)/N, on the same scale as the hard
    term's when T changes (§ "The gradient, and why T²"). ``alpha=1`` gives the soft term
    only, and then
    ``targets`` may be None. No gradient flows into ``teacher_logits``.
    """
    student_logits = _check_logits(student_logits, "student_logits")
    teacher_logits = _check_logits(teacher_logits, "teacher_logits")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits {tuple(student_logits.shape)} and teacher_logits "
            f"{tuple(teacher_logits.shape)} must have the same shape (N, C): one row per "
            "example, one column per class, for both networks"
        )
    temperature, alpha = check.temperature(temperature), check.probability(alpha, "alpha")
    n, classes = student_logits.shape
    if targets is None:
        if alpha != 1:
            raise ValueError(f"targets may be None only for alpha = 1 (soft term only), got "
                             f"alpha = {alpha}")  # fmt: skip
    else:
        targets = _check_targets(targets, n, classes)
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    log_p = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    if not (torch.isfinite(log_q).all() and torch.isfinite(log_p).all()):
        raise ValueError(f"temperature {temperature} is too small for these logits: z / T "
                         "overflows float")  # fmt: skip
    # Σ_i p_i (log p_i − log q_i) per example, averaged over the N examples
    soft = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    loss = alpha * temperature**2 * soft
    if alpha < 1:
        loss = loss + (1 - alpha) * F.cross_entropy(student_logits, targets)
    return loss


def teacher_logits(teacher: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """The teacher's logits for ``images``, shape (N, C), computed once in eval mode
    without gradients (§ "Caching the teacher").

    Without data augmentation the teacher sees the same images every epoch, so one pass
    replaces one per epoch. The result is an ordinary tensor (not an inference tensor),
    usable as a loss target.
    """
    check.module(teacher, "teacher")
    check.integer(batch_size, "batch_size", 1)
    return predict(teacher, images, batch_size).clone()  # clone: leave inference mode


def distill(
    student: nn.Module,
    teacher: nn.Module | Tensor,
    images: Tensor,
    labels: Tensor | None,
    config: TrainConfig,
    temperature: float = 4.0,
    alpha: float = 0.9,
    *,
    progress: bool = True,
) -> list[float]:
    """Train ``student`` in place on `kd_loss` against ``teacher``; return the mean loss of
    each epoch (§ "The experiment").

    ``teacher`` is a trained model (its logits on ``images`` are computed once, in eval mode
    without gradients, by `teacher_logits`) or those logits already computed, a float
    tensor of shape (N, C) whose row k belongs to ``images[k]``. Training is
    `minicompress.train.fit` with the same seeding: the same config gives the same student.

    ``labels=None`` is allowed for ``alpha=1`` (the soft term only): the transfer set may then
    hold images nobody labelled, which only the teacher's outputs describe (Hinton et al.
    2015 §2).
    """
    check.module(student, "student")
    if teacher is student:
        raise ValueError("the teacher and the student are the same model; distillation trains "
                         "a separate student on the teacher's outputs")  # fmt: skip
    if isinstance(teacher, nn.Module):
        cached = teacher_logits(teacher, images)
    elif isinstance(teacher, Tensor):
        cached = _check_logits(teacher, "teacher logits").detach()
        if not isinstance(images, Tensor) or len(cached) != len(images):
            raise ValueError(
                f"the teacher's logits have {len(cached)} rows but there are "
                f"{len(images) if isinstance(images, Tensor) else '?'} images; "
                "row k must be the teacher's output for images[k]"
            )
    else:
        raise TypeError(f"teacher must be a torch.nn.Module or a tensor of its logits, got "
                        f"{type(teacher).__name__}")  # fmt: skip
    temperature, alpha = check.temperature(temperature), check.probability(alpha, "alpha")
    if labels is None:
        if alpha != 1:
            raise ValueError(f"labels may be None only for alpha = 1 (soft term only), got "
                             f"alpha = {alpha}")  # fmt: skip
    else:
        labels = _check_targets(labels, len(cached), cached.shape[1])
    # fit shuffles the batches and hands loss_fn (images[idx], labels[idx]): passing the
    # example indices as the "labels" lets each batch find its targets and teacher logits.
    index = torch.arange(len(cached))

    def loss_fn(model: nn.Module, x: Tensor, idx: Tensor) -> Tensor:
        targets = None if labels is None else labels[idx]
        return kd_loss(model(x), cached[idx], targets, temperature, alpha)

    return fit(student, images, index, config, loss_fn=loss_fn, progress=progress)


def shifted_copies(images: Tensor, pixels: int) -> Tensor:
    """Every image moved by every integer shift of at most ``pixels`` = p in each direction,
    zeros filling the border it leaves (§ "Caching the teacher"): the (2p + 1)² copies

    ``out[k·N + n, c, i, j] = images[n, c, i + dy_k, j + dx_k]``  (0 outside the image),

    with (dy_k, dx_k) running over {−p, …, p}² in row-major order, so copy k = p(2p + 2) is
    the unshifted one. These are the 28×28 crops of the image padded by p zeros. Augmenting
    with random shifts draws from exactly this finite set: the teacher's logits on it,
    computed once on the shifted images themselves (`teacher_logits`), are the targets it
    would give each augmented batch.
    """
    check.float_tensor(images, "images", empty=True, inf=True)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, C, H, W) with N >= 1, got "
                         f"{tuple(images.shape)}")  # fmt: skip
    height, width = images.shape[2:]
    p = check.integer(pixels, "pixels", 0, min(height, width) - 1)
    padded = F.pad(images, (p, p, p, p))  # (N, C, H + 2p, W + 2p)
    crops = [padded[:, :, p + dy : p + dy + height, p + dx : p + dx + width]
             for dy in range(-p, p + 1) for dx in range(-p, p + 1)]  # fmt: skip
    return torch.cat(crops)  # (K·N, C, H, W), copy k in rows k·N ... k·N + N − 1


def gap_closed(scratch: float, distilled: float, teacher: float) -> float:
    """The share of the teacher–student gap that distillation closes (§ "The experiment"):
    ``(distilled − scratch) / (teacher − scratch)``, from accuracies (or any score where
    higher is better).

    0 means no better than training the student alone, 1 as good as the teacher; negative
    values mean distillation hurt. Hinton et al.'s MNIST student: 146 → 74 errors against
    the teacher's 67, (146 − 74)/(146 − 67) ≈ 0.91.
    """
    values = {"scratch": scratch, "distilled": distilled, "teacher": teacher}
    for name, value in values.items():
        check.number(value, name)
    if teacher <= scratch:
        raise ValueError(
            f"the teacher ({teacher}) must score higher than the student trained from scratch "
            f"({scratch}); otherwise there is no gap to close"
        )
    return (distilled - scratch) / (teacher - scratch)
