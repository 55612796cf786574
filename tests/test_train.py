"""minicompress.train: learning happens, seeds reproduce, hooks run, bad input is refused."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from minicompress.models import MLP
from minicompress.train import TrainConfig, batches, evaluate, fit, predict


def separable(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes told apart by the mean brightness of the image."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.rand(n, 1, 28, 28, generator=g) * 0.5 + 0.5 * labels.view(-1, 1, 1, 1)
    return images, labels


def test_fit_learns_a_separable_problem():
    x, y = separable()
    torch.manual_seed(0)
    model = MLP((16,))
    before = evaluate(model, x, y)
    losses = fit(model, x, y, TrainConfig(epochs=20, lr=0.01), progress=False)
    assert losses[-1] < losses[0]
    assert evaluate(model, x, y) > max(before, 0.95)


def test_same_seed_same_weights_other_seed_other_weights():
    x, y = separable()

    def run(seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        model = MLP((16,))
        fit(model, x, y, TrainConfig(epochs=2, seed=seed), progress=False)
        return model.fc1.weight.detach().clone()

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_after_step_runs_after_every_step_and_its_changes_stick():
    x, y = separable(n=100)
    model = MLP((8,))
    calls = []

    def zero_first_row(m):
        calls.append(1)
        m.fc1.weight[0] = 0.0

    fit(
        model, x, y, TrainConfig(epochs=3, batch_size=32), after_step=zero_first_row, progress=False
    )
    assert len(calls) == 3 * 4  # ceil(100 / 32) = 4 steps per epoch
    assert torch.all(model.fc1.weight[0] == 0)


def test_custom_loss_is_used():
    x, y = separable(n=64)
    model = MLP((8,))
    seen = []

    def loss_fn(m, xb, yb):
        seen.append(len(xb))
        return m(xb).pow(2).mean()

    fit(model, x, y, TrainConfig(epochs=1, batch_size=64), loss_fn=loss_fn, progress=False)
    assert seen == [64]


def test_adam_and_constant_schedule_also_train():
    x, y = separable()
    torch.manual_seed(0)
    model = MLP((16,))
    config = TrainConfig(epochs=20, lr=1e-2, optimizer="adam", schedule="constant")
    fit(model, x, y, config, progress=False)
    assert evaluate(model, x, y) > 0.9


def test_diverging_loss_raises():
    x, y = separable(n=64)
    with pytest.raises(FloatingPointError):
        config = TrainConfig(epochs=2, lr=1e30, batch_size=16, schedule="constant")
        fit(MLP((8,)), x, y, config, progress=False)


def test_batches_cover_every_index_once():
    g = torch.Generator().manual_seed(0)
    parts = list(batches(10, 3, g))
    assert [len(p) for p in parts] == [3, 3, 3, 1]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))


def test_predict_restores_training_mode_and_returns_logits():
    model = MLP((8,)).train()
    assert predict(model, torch.rand(7, 1, 28, 28), batch_size=3).shape == (7, 10)
    assert model.training


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epochs": -1}, ValueError, "epochs"),
        ({"epochs": 1.5}, TypeError, "epochs"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"lr": float("nan")}, ValueError, "lr"),
        ({"momentum": -0.1}, ValueError, "momentum"),
        ({"optimizer": "rmsprop"}, ValueError, "optimizer"),
        ({"schedule": "step"}, ValueError, "schedule"),
    ],
)
def test_bad_configs_are_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    ("images", "labels", "error", "match"),
    [
        (torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.long),
         TypeError, "floating-point"),
        (torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.int32), TypeError, "int64"),
        (torch.zeros(4, 1, 28, 28), torch.zeros(3, dtype=torch.long), ValueError, "shape"),
        (torch.full((4, 1, 28, 28), float("nan")), torch.zeros(4, dtype=torch.long),
         ValueError, "NaN"),
        (torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long), ValueError, "N >= 1"),
    ],
)  # fmt: skip
def test_bad_data_is_rejected(images, labels, error, match):
    with pytest.raises(error, match=match):
        fit(MLP((4,)), images, labels, TrainConfig(epochs=1), progress=False)
    with pytest.raises(error, match=match):
        evaluate(MLP((4,)), images, labels)


def test_fit_checks_model_and_config_types():
    x, y = separable(n=8)
    with pytest.raises(TypeError, match="Module"):
        fit("model", x, y, TrainConfig())
    with pytest.raises(TypeError, match="TrainConfig"):
        fit(MLP((4,)), x, y, {"epochs": 1})


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [False, True])
def test_progress_bar_only_where_someone_watches(monkeypatch, tty):
    # a log file or a CI transcript gets no bar; a terminal does (README: progress bars)
    stream = _Stream(tty)
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    fit(MLP((8,)), x, y, TrainConfig(epochs=1, batch_size=32))
    assert bool(stream.getvalue()) == tty
