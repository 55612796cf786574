"""Training and evaluation on whole-dataset tensors.

One loop for the whole course. Chapters change what they need through two arguments
instead of writing their own loop:

- ``after_step(model)`` runs after every optimizer step (pruning re-applies its masks
  here, so pruned weights cannot grow back; binarization clips its latent weights);
- ``loss_fn(model, x, y)`` replaces cross-entropy (distillation adds the teacher's term).

Seeded: the same `TrainConfig` on the same machine gives the same weights, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from minicompress import _validate as check
from minicompress._progress import shown

__all__ = ["TrainConfig", "batches", "evaluate", "fit", "predict"]

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
StepHook = Callable[[nn.Module], None]

_OPTIMIZERS = ("sgd", "adam")
_SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """A training recipe: everything `fit` needs besides the model and the data.

    ``schedule="cosine"`` decays the learning rate per step as
    ``lr_t = lr · (1 + cos(π t / T)) / 2`` over the T steps of training.
    """

    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 128
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if self.epochs < 0 or self.batch_size < 1 or self.seed < 0:
            raise ValueError(
                f"need epochs >= 0, batch_size >= 1, seed >= 0; got epochs={self.epochs}, "
                f"batch_size={self.batch_size}, seed={self.seed}"
            )
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {self.schedule!r}")

    def to_dict(self) -> dict:
        """The recipe as a plain dict (for JSON next to saved weights)."""
        return asdict(self)


def _check_data(images: Tensor, labels: Tensor | None = None, *, labelled: bool = True) -> None:
    """``images`` (N, ...) float without NaN; ``labels`` (N,) int64 unless not ``labelled``."""
    check.float_tensor(images, "images", empty=True, inf=True)
    if images.ndim < 2 or len(images) == 0:
        raise ValueError(f"images must have shape (N, ...) with N >= 1, got {tuple(images.shape)}")
    if not labelled:
        return
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64:
        raise TypeError(f"labels must be an int64 tensor, got {check.describe(labels)}")
    if labels.shape != (len(images),):
        raise ValueError(
            f"labels must have shape ({len(images)},) to match images, got {tuple(labels.shape)}"
        )


def batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Tensor]:
    """Index tensors covering ``range(n)`` in batches; shuffled when a generator is given."""
    check.integer(n, "n", 0)  # checked on the call, not on the first batch: no generator here
    check.integer(batch_size, "batch_size", 1)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return iter(order.split(batch_size))


def _cross_entropy(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x), y)


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def fit(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    config: TrainConfig,
    *,
    loss_fn: LossFn | None = None,
    after_step: StepHook | None = None,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` in place with minibatch SGD/Adam; return the mean loss of each epoch.

    Minimises ``loss_fn(model, x, y)`` (default: cross-entropy of ``model(x)`` against
    ``y``) over shuffled batches. ``after_step(model)`` is called under ``torch.no_grad()``
    after every optimizer step. Shuffling and any randomness in the model are seeded from
    ``config.seed``; the global generator is restored afterwards, so a call leaves no trace
    on later random draws. The model is trained in train mode and left in eval mode.
    ``progress`` draws a tqdm bar where someone watches: a terminal or a notebook, not a log.
    """
    check.module(model)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    _check_data(images, labels)
    loss_fn = loss_fn or _cross_entropy
    with torch.random.fork_rng(devices=[]):  # the caller's global generator is restored after
        torch.manual_seed(config.seed)  # dropout and the like draw from the global generator
        return _fit(model, images, labels, config, loss_fn, after_step, progress)


def _fit(model: nn.Module, images: Tensor, labels: Tensor, config: TrainConfig, loss_fn: LossFn,
         after_step: StepHook | None, progress: bool) -> list[float]:  # fmt: skip
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = _optimizer(model, config)
    steps_per_epoch = math.ceil(len(images) / config.batch_size)
    total = config.epochs * steps_per_epoch
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total, 1))
        if config.schedule == "cosine"
        else None
    )
    history: list[float] = []
    model.train()
    hidden = not shown(progress)  # a bar in a log file is noise
    with tqdm(total=total, desc=type(model).__name__, disable=hidden, leave=False) as bar:
        for epoch in range(config.epochs):
            running = 0.0
            for idx in batches(len(images), config.batch_size, generator):
                loss = loss_fn(model, images[idx], labels[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                if after_step is not None:
                    with torch.no_grad():
                        after_step(model)
                running += loss.item()
                bar.update()
            history.append(running / steps_per_epoch)
            bar.set_postfix(epoch=epoch + 1, loss=f"{history[-1]:.4f}")
            if not math.isfinite(history[-1]):
                raise FloatingPointError(f"loss became {history[-1]} in epoch {epoch + 1}")
    model.eval()
    return history


@torch.inference_mode()
def predict(model: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """The model's logits for ``images``, computed in eval mode in batches, shape (N, classes)."""
    check.module(model)
    _check_data(images, labelled=False)
    check.integer(batch_size, "batch_size", 1)
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(images[idx]) for idx in batches(len(images), batch_size)])
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy: the fraction of ``images`` whose largest logit is the true label."""
    _check_data(images, labels)
    logits = predict(model, images, batch_size)
    return (logits.argmax(dim=1) == labels).float().mean().item()
