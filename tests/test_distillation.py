"""minicompress.distillation: the KD loss against a hand-written closed form and PyTorch's
kl_div/cross_entropy, its gradient α·T·(q − p)/N, the high-temperature limit (logit
matching), hypothesis invariants, bad input, and the training loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minicompress.distillation import (
    distill,
    gap_closed,
    kd_loss,
    shifted_copies,
    soft_targets,
    teacher_logits,
)
from minicompress.models import MLP
from minicompress.train import TrainConfig, fit


def logits(seed: int, n: int = 8, classes: int = 10, scale: float = 3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, classes, generator=g, dtype=dtype) * scale


def labels(seed: int, n: int = 8, classes: int = 10) -> torch.Tensor:
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def closed_form(z, v, y, temperature, alpha) -> float:
    """α·T²·(1/N)·Σ_n Σ_i p_i log(p_i / q_i) + (1 − α)·(1/N)·Σ_n −log softmax(z_n)_{y_n},
    written out with explicit loops over examples and classes."""
    n, classes = z.shape
    soft = hard = 0.0
    for k in range(n):
        ez = [math.exp(float(z[k, i]) / temperature) for i in range(classes)]
        ev = [math.exp(float(v[k, i]) / temperature) for i in range(classes)]
        q = [e / sum(ez) for e in ez]
        p = [e / sum(ev) for e in ev]
        soft += sum(p[i] * math.log(p[i] / q[i]) for i in range(classes))
        e1 = [math.exp(float(z[k, i])) for i in range(classes)]
        hard += -math.log(e1[int(y[k])] / sum(e1))
    return alpha * temperature**2 * soft / n + (1 - alpha) * hard / n


# ---- the loss ------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 20.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.9, 1.0])
def test_kd_loss_equals_the_closed_form(temperature, alpha):
    z, v, y = logits(0, n=5, classes=4), logits(1, n=5, classes=4), labels(2, n=5, classes=4)
    got = kd_loss(z, v, y, temperature, alpha).item()
    assert got == pytest.approx(closed_form(z, v, y, temperature, alpha), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_kd_loss_equals_torch_kl_div_and_cross_entropy(seed):
    z, v, y = (
        logits(seed, dtype=torch.float32),
        logits(seed + 10, dtype=torch.float32),
        labels(seed),
    )
    temperature, alpha = 1.0 + seed * 2.5, 0.25 * seed
    soft = F.kl_div(F.log_softmax(z / temperature, 1), F.softmax(v / temperature, 1),
                    reduction="batchmean")  # fmt: skip
    expected = alpha * temperature**2 * soft + (1 - alpha) * F.cross_entropy(z, y)
    torch.testing.assert_close(kd_loss(z, v, y, temperature, alpha), expected)


def test_alpha_one_is_the_soft_term_only_and_alpha_zero_plain_cross_entropy():
    z, v, y = logits(0), logits(1), labels(2)
    soft = 9.0 * F.kl_div(F.log_softmax(z / 3, 1), F.log_softmax(v / 3, 1),
                          reduction="batchmean", log_target=True)  # fmt: skip
    torch.testing.assert_close(kd_loss(z, v, y, 3.0, 1.0), soft)
    torch.testing.assert_close(kd_loss(z, v, None, 3.0, 1.0), soft)
    other_labels = (y + 1) % 10
    torch.testing.assert_close(kd_loss(z, v, other_labels, 3.0, 1.0), soft)
    torch.testing.assert_close(kd_loss(z, v, y, 3.0, 0.0), F.cross_entropy(z, y))


def test_kd_loss_is_stable_for_large_logits():
    z, v = logits(0, scale=300.0, dtype=torch.float32), logits(1, scale=300.0, dtype=torch.float32)
    loss = kd_loss(z, v, labels(2), 1.0, 0.5)
    assert torch.isfinite(loss)


# ---- the gradient --------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0, 20.0])
@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_gradient_is_alpha_t_q_minus_p_over_n_plus_the_hard_term(temperature, alpha):
    n = 8
    z = logits(0, n=n).requires_grad_()
    v, y = logits(1, n=n), labels(2, n=n)
    kd_loss(z, v, y, temperature, alpha).backward()
    q, p = torch.softmax(z.detach() / temperature, 1), torch.softmax(v / temperature, 1)
    hard = torch.softmax(z.detach(), 1) - F.one_hot(y, 10).double()
    expected = alpha * temperature * (q - p) / n + (1 - alpha) * hard / n
    torch.testing.assert_close(z.grad, expected, rtol=1e-10, atol=1e-14)


def test_without_t_squared_the_soft_gradient_would_shrink_as_one_over_t_squared():
    """KL alone has gradient (q − p)/(T·N), and q − p itself is O(1/T): overall O(1/T²).
    The T² factor makes the gradient tend to a T-independent limit instead."""
    z0 = logits(0) - logits(0).mean(1, keepdim=True)
    v = logits(1) - logits(1).mean(1, keepdim=True)
    norms = {}
    for temperature in (10.0, 100.0):
        z = z0.clone().requires_grad_()
        kd_loss(z, v, None, temperature, 1.0).backward()
        norms[temperature] = z.grad.norm().item()
    assert norms[100.0] == pytest.approx(norms[10.0], rel=0.05)  # with T²: about the same
    kl_only = {t: g / t**2 for t, g in norms.items()}
    assert kl_only[100.0] / kl_only[10.0] == pytest.approx(1e-2, rel=0.05)


@pytest.mark.parametrize("seed", range(3))
def test_high_temperature_limit_is_logit_matching(seed):
    """With zero-mean logits, q_i − p_i ≈ (z_i − v_i)/(C·T), so the soft gradient tends to
    α·(z_i − v_i)/(C·N): the gradient of α/(2·C·N)·Σ‖z − v‖², matching logits."""
    n, classes, alpha = 6, 10, 0.8
    z = logits(seed, n, classes) - logits(seed, n, classes).mean(1, keepdim=True)
    v = logits(seed + 5, n, classes) - logits(seed + 5, n, classes).mean(1, keepdim=True)
    matching = alpha * (z - v) / (classes * n)
    errors = []
    for temperature in (10.0, 100.0, 1000.0):
        zz = z.clone().requires_grad_()
        (alpha * kd_loss(zz, v, None, temperature, 1.0)).backward()
        errors.append(((zz.grad - matching).norm() / matching.norm()).item())
    assert errors[-1] < 1e-2
    assert errors[0] > errors[1] > errors[2]  # the error falls as 1/T
    assert errors[1] / errors[2] == pytest.approx(10.0, rel=0.1)


def test_no_gradient_reaches_the_teacher():
    z, v = logits(0).requires_grad_(), logits(1).requires_grad_()
    kd_loss(z, v, labels(2), 4.0, 0.5).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert v.grad is None


# ---- invariants ----------------------------------------------------------------------------

finite = st.floats(-30, 30, allow_nan=False, width=32)
rows = st.lists(st.lists(finite, min_size=3, max_size=3), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(rows, st.integers(0, 2**31 - 1), st.floats(0.1, 50.0), st.floats(0.0, 1.0))
def test_loss_is_non_negative(student, seed, temperature, alpha):
    z = torch.tensor(student, dtype=torch.float64)
    v = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = labels(seed, n=len(z), classes=3)
    assert kd_loss(z, v * 10, y, temperature, alpha).item() >= -1e-9


@settings(max_examples=60, deadline=None)
@given(rows, st.floats(0.1, 50.0))
def test_soft_loss_is_zero_when_the_student_equals_the_teacher(student, temperature):
    z = torch.tensor(student, dtype=torch.float64)
    assert kd_loss(z, z.clone(), None, temperature, 1.0).item() == pytest.approx(0.0, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(rows, st.lists(finite, min_size=1, max_size=5), st.floats(0.5, 20.0))
def test_soft_loss_ignores_a_constant_added_to_each_row(student, shifts, temperature):
    z = torch.tensor(student, dtype=torch.float64)
    c = torch.tensor((shifts * len(z))[: len(z)], dtype=torch.float64).view(-1, 1)
    v = z.flip(1) + 1.0
    assert kd_loss(z + c, v - 2 * c, None, temperature, 1.0).item() == pytest.approx(
        kd_loss(z, v, None, temperature, 1.0).item(), rel=1e-9, abs=1e-9
    )


@settings(max_examples=60, deadline=None)
@given(rows, st.floats(0.1, 100.0))
def test_soft_targets_are_distributions_that_keep_the_order(values, temperature):
    x = torch.tensor(values, dtype=torch.float64)
    p = soft_targets(x, temperature)
    torch.testing.assert_close(p.sum(1), torch.ones(len(x), dtype=torch.float64))
    assert torch.all(p >= 0)
    order = x.argsort(1)  # ties may break either way, so compare sorted values instead
    assert torch.all(p.gather(1, order).diff(dim=1) >= -1e-12)


def test_soft_targets_at_t1_is_softmax_and_flattens_as_t_grows():
    x = logits(0)
    torch.testing.assert_close(soft_targets(x, 1.0), torch.softmax(x, 1))
    torch.testing.assert_close(soft_targets(x, 1e6), torch.full_like(x, 0.1), atol=1e-5, rtol=0)
    entropy = [-(p * p.log()).sum(1).mean().item() for p in
               (soft_targets(x, t) for t in (0.5, 1, 2, 4, 8))]  # fmt: skip
    assert entropy == sorted(entropy)


# ---- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"temperature": 0.0}, ValueError, "temperature must be a finite number > 0"),
        ({"temperature": -2.0}, ValueError, "temperature must be a finite number > 0"),
        ({"temperature": math.nan}, ValueError, "temperature"),
        ({"temperature": math.inf}, ValueError, "temperature"),
        ({"temperature": True}, TypeError, "temperature must be a number"),
        ({"temperature": torch.tensor(2.0)}, TypeError, "temperature must be a number"),
        ({"alpha": -0.1}, ValueError, r"alpha must be in \[0, 1\]"),
        ({"alpha": 1.5}, ValueError, r"alpha must be in \[0, 1\]"),
        ({"alpha": math.nan}, ValueError, r"alpha must be in \[0, 1\]"),
        ({"teacher_logits": logits(1, n=8, classes=5)}, ValueError, "same shape"),
        ({"teacher_logits": logits(1, n=7)}, ValueError, "same shape"),
        ({"student_logits": logits(0)[0]}, ValueError, r"shape \(N, C\)"),
        ({"student_logits": logits(0)[:0]}, ValueError, r"shape \(N, C\)"),
        ({"student_logits": labels(0)}, TypeError, "floating-point"),
        (
            {"teacher_logits": logits(1).masked_fill(torch.eye(8, 10) > 0, math.nan)},
            ValueError,
            "NaN or inf",
        ),  # fmt: skip
        ({"targets": labels(2).float()}, TypeError, "int64"),
        ({"targets": labels(2).int()}, TypeError, "int64"),
        ({"targets": torch.full((8,), 10)}, ValueError, r"class indices in \[0, 9\]"),
        ({"targets": torch.full((8,), -1)}, ValueError, r"class indices in \[0, 9\]"),
        ({"targets": labels(2)[:5]}, ValueError, r"shape \(8,\)"),
        ({"targets": None}, ValueError, "None only for alpha = 1"),
    ],
)
def test_kd_loss_rejects_bad_input(change, error, message):
    args = {"student_logits": logits(0), "teacher_logits": logits(1), "targets": labels(2),
            "temperature": 2.0, "alpha": 0.5} | change  # fmt: skip
    with pytest.raises(error, match=message):
        kd_loss(**args)


def test_soft_targets_rejects_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        soft_targets(logits(0), 0.0)
    with pytest.raises(TypeError, match="floating-point"):
        soft_targets(labels(0), 1.0)
    with pytest.raises(ValueError, match="NaN or inf"):
        soft_targets(torch.tensor([1.0, math.inf]), 1.0)


def test_gap_closed_reproduces_hinton_and_rejects_no_gap():
    # Hinton et al. 2015, MNIST test errors out of 10 000: student 146, distilled 74, teacher 67
    acc = {k: 1 - e / 10_000 for k, e in {"s": 146, "d": 74, "t": 67}.items()}
    assert gap_closed(acc["s"], acc["d"], acc["t"]) == pytest.approx(72 / 79)
    assert gap_closed(0.8, 0.78, 0.9) == pytest.approx(-0.2)  # distillation hurt
    with pytest.raises(ValueError, match="no gap to close"):
        gap_closed(0.9, 0.91, 0.9)
    with pytest.raises(ValueError, match="finite"):
        gap_closed(0.8, math.nan, 0.9)
    with pytest.raises(TypeError, match="number"):
        gap_closed("0.8", 0.85, 0.9)


# ---- the training loop ---------------------------------------------------------------------


def blobs(n: int = 240, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class sets which quarter of the image is bright, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.6
    for c in range(classes):
        r, col = divmod(c, 2)
        x[y == c, :, 14 * r : 14 * r + 14, 14 * col : 14 * col + 14] += 0.4
    return x, y


@pytest.fixture(scope="module")
def trained_teacher():
    x, y = blobs()
    torch.manual_seed(0)
    teacher = MLP((32,), classes=4)
    fit(teacher, x, y, TrainConfig(epochs=5, lr=0.05), progress=False)
    return teacher


def student(seed: int = 1) -> MLP:
    torch.manual_seed(seed)
    return MLP((8,), classes=4)


def test_teacher_logits_are_eval_mode_no_grad_ordinary_tensors():
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5),
                                  torch.nn.Linear(784, 4))  # fmt: skip
    x, _ = blobs(n=50)
    teacher.train()
    out = teacher_logits(teacher, x, batch_size=16)
    assert teacher.training  # its mode is restored
    with torch.no_grad():
        torch.testing.assert_close(out, teacher.eval()(x))  # no dropout: eval mode was used
    assert not out.requires_grad and not out.is_inference()
    z = torch.zeros(50, 4, requires_grad=True)
    kd_loss(z, out, None, 2.0, 1.0).backward()  # usable as a target in autograd


def test_distill_trains_the_student_and_leaves_the_teacher_alone(trained_teacher):
    x, y = blobs()
    model = student()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in trained_teacher.state_dict().items()}
    trained_teacher.zero_grad(set_to_none=True)
    losses = distill(model, trained_teacher, x, y, TrainConfig(epochs=4, lr=0.05), 4.0, 0.9,
                     progress=False)  # fmt: skip
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert all(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(teacher_before[k], v) for k, v in trained_teacher.state_dict().items())
    assert not model.training
    assert all(p.grad is None for p in trained_teacher.parameters())


def test_distill_is_reproducible_with_the_same_seed(trained_teacher):
    x, y = blobs()

    def run(seed: int) -> torch.Tensor:
        model = student()
        distill(model, trained_teacher, x, y, TrainConfig(epochs=2, lr=0.05, seed=seed),
                2.0, 0.5, progress=False)  # fmt: skip
        return model.fc1.weight.detach().clone()

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_cached_logits_follow_the_shuffled_batches(trained_teacher):
    """Precomputed logits must give the same student as asking the teacher for each batch."""
    x, y = blobs()
    config = TrainConfig(epochs=3, lr=0.05, batch_size=32, seed=7)
    cached = student()
    distill(cached, teacher_logits(trained_teacher, x), x, y, config, 3.0, 0.7, progress=False)
    online = student()

    def loss_fn(model, xb, yb):
        with torch.no_grad():
            target = trained_teacher(xb)
        return kd_loss(model(xb), target, yb, 3.0, 0.7)

    fit(online, x, y, config, loss_fn=loss_fn, progress=False)
    for name, value in cached.state_dict().items():
        torch.testing.assert_close(value, online.state_dict()[name], rtol=1e-4, atol=1e-5)
    shuffled = student()  # logits in the wrong rows give a different student
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    logits_wrong = teacher_logits(trained_teacher, x)[perm]
    distill(shuffled, logits_wrong, x, y, config, 3.0, 0.7, progress=False)
    assert not torch.allclose(shuffled.fc1.weight, cached.fc1.weight, atol=1e-3)


def test_distill_rejects_bad_input(trained_teacher):
    x, y = blobs()
    config = TrainConfig(epochs=1)
    with pytest.raises(ValueError, match="row k must be the teacher's output for images"):
        distill(student(), teacher_logits(trained_teacher, x)[:-1], x, y, config, progress=False)
    with pytest.raises(ValueError, match="same model"):
        distill(trained_teacher, trained_teacher, x, y, config, progress=False)
    with pytest.raises(TypeError, match="teacher must be"):
        distill(student(), "teacher.pt", x, y, config, progress=False)
    with pytest.raises(TypeError, match="student must be"):
        distill(None, trained_teacher, x, y, config, progress=False)
    with pytest.raises(ValueError, match="temperature"):
        distill(student(), trained_teacher, x, y, config, temperature=0, progress=False)
    with pytest.raises(ValueError, match="alpha"):
        distill(student(), trained_teacher, x, y, config, alpha=2, progress=False)
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\]"):
        distill(student(), trained_teacher, x, y + 4, config, progress=False)
    with pytest.raises(ValueError, match="same shape"):  # a 10-class student, 4-class teacher
        distill(MLP((8,)), trained_teacher, x, y, config, progress=False)


def test_distill_without_labels_is_the_soft_term_alone(trained_teacher):
    """labels=None (a transfer set nobody labelled) gives the student that α = 1 gives with
    any labels: the hard term is absent either way."""
    x, y = blobs()
    config = TrainConfig(epochs=2, lr=0.05, batch_size=32, seed=5)
    unlabelled, labelled = student(), student()
    distill(unlabelled, trained_teacher, x, None, config, 3.0, 1.0, progress=False)
    distill(labelled, trained_teacher, x, (y + 1) % 4, config, 3.0, 1.0, progress=False)
    for name, value in unlabelled.state_dict().items():
        torch.testing.assert_close(value, labelled.state_dict()[name], rtol=0, atol=0)
    with pytest.raises(ValueError, match="None only for alpha = 1"):
        distill(student(), trained_teacher, x, None, config, 3.0, 0.9, progress=False)


# ---- the shifted transfer set --------------------------------------------------------------


def shifted_reference(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[c, i, j] = image[c, i + dy, j + dx], 0 outside: written out pixel by pixel."""
    channels, height, width = image.shape
    out = torch.zeros_like(image)
    for c in range(channels):
        for i in range(height):
            for j in range(width):
                if 0 <= i + dy < height and 0 <= j + dx < width:
                    out[c, i, j] = image[c, i + dy, j + dx]
    return out


@pytest.mark.parametrize("pixels", [0, 1, 2])
def test_shifted_copies_are_every_shift_in_row_major_order(pixels):
    g = torch.Generator().manual_seed(pixels)
    images = torch.rand(3, 2, 6, 5, generator=g)
    out = shifted_copies(images, pixels)
    shifts = [(dy, dx) for dy in range(-pixels, pixels + 1) for dx in range(-pixels, pixels + 1)]
    assert out.shape == (len(shifts) * 3, 2, 6, 5)
    for k, (dy, dx) in enumerate(shifts):
        for n in range(3):
            torch.testing.assert_close(out[k * 3 + n], shifted_reference(images[n], dy, dx),
                                       rtol=0, atol=0)  # fmt: skip
    middle = pixels * (2 * pixels + 2)  # the unshifted copy
    assert torch.equal(out[middle * 3 : middle * 3 + 3], images)


def test_shifted_copies_match_the_teacher_on_each_shifted_batch(trained_teacher):
    """The cached logits of the copies are what the teacher says about each shifted image."""
    x, _ = blobs(n=16)
    copies = shifted_copies(x, 1)
    cached = teacher_logits(trained_teacher, copies)
    with torch.no_grad():
        for k, (dy, dx) in enumerate((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
            moved = torch.stack([shifted_reference(image, dy, dx) for image in x])
            torch.testing.assert_close(cached[k * 16 : k * 16 + 16], trained_teacher(moved))


def test_shifted_copies_reject_bad_input():
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
        shifted_copies(torch.zeros(4, 28, 28), 1)
    with pytest.raises(TypeError, match="floating-point"):
        shifted_copies(torch.zeros(4, 1, 28, 28, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match=r"pixels must be in 0..27"):
        shifted_copies(torch.zeros(4, 1, 28, 28), 28)
    with pytest.raises(TypeError, match="pixels must be an int"):
        shifted_copies(torch.zeros(4, 1, 28, 28), 1.0)
