"""Training and scoring a character-level language model (chapters 9 and 10).

Quality is measured in **bits per character**: the average of −log₂ p(next character) over
a text the model was not trained on. A model that knew nothing would pay log₂ 96 ≈ 6.58
bits per character on our 96-symbol alphabet; the shipped `TinyGPT` pays about 2.1.
The validation text is cut into windows of the model's context length; each window's mean
is one observation, so the standard error is their standard deviation over √(windows), and
two models are compared *paired*, window by window, as classifiers are compared image by
image in chapter "Measuring a model". `train_lm` trains the parameters that require a
gradient (all of them, or only LoRA adapters); `distill_lm` trains a student on a teacher's
next-character distributions (chapter 10).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from minicompress import _validate as check
from minicompress._progress import shown
from minicompress.distillation import kd_loss

__all__ = [
    "BitsPerChar",
    "LMConfig",
    "bits_per_char",
    "compare_bits",
    "distill_lm",
    "generate",
    "summarize",
    "window_bits",
    "train_lm",
]


@dataclass(frozen=True)
class LMConfig:
    """How the language model is trained: AdamW, linear warm-up then cosine decay.

    ``lr_t = lr · t / warmup`` for the first ``warmup`` steps, then
    ``lr · (1 + cos(π (t − warmup)/(steps − warmup))) / 2``; every step draws
    ``batch_size`` random windows of ``context + 1`` characters from the training text.
    """

    steps: int = 4000
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        check.integer(self.steps, "steps", 0)
        check.integer(self.batch_size, "batch_size", 1)
        check.integer(self.warmup, "warmup", 0)
        check.integer(self.seed, "seed", 0)
        check.number(self.lr, "lr", 0.0)
        check.number(self.weight_decay, "weight_decay", 0.0)

    def to_dict(self) -> dict:
        """The recipe as a plain dict (for JSON next to saved weights)."""
        return asdict(self)

    def rate(self, step: int) -> float:
        """The learning rate at ``step`` (0-based)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        span = max(self.steps - self.warmup, 1)
        return self.lr * (1 + math.cos(math.pi * (step - self.warmup) / span)) / 2


def _check_tokens(tokens: object, context: int, name: str = "tokens") -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.dtype != torch.int64 or tokens.dim() != 1:
        raise TypeError(f"{name} must be a 1-D int64 tensor of token ids, got "
                        f"{check.describe(tokens)}")  # fmt: skip
    if len(tokens) < context + 1:
        raise ValueError(f"{name} has {len(tokens)} tokens; need at least context + 1 = "
                         f"{context + 1}")  # fmt: skip
    return tokens


def _context(model: nn.Module) -> int:
    context = getattr(check.module(model), "context", None)
    if not isinstance(context, int):
        raise TypeError("model must have an int attribute `context` (e.g. a TinyGPT)")
    return context


def _fit(
    model: nn.Module, tokens: Tensor, config: LMConfig, progress: bool,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
) -> list[float]:  # fmt: skip
    """The loop `train_lm` and `distill_lm` share: AdamW over the parameters that require a
    gradient, ``loss_fn(logits, window)`` on ``batch_size`` random windows per step. The
    model trains in train mode and is left in eval mode; a non-finite loss raises
    FloatingPointError before it reaches the weights."""
    context = _context(model)
    _check_tokens(tokens, context)
    generator = torch.Generator().manual_seed(config.seed)
    trained = [p for p in model.parameters() if p.requires_grad]  # frozen ones stay as they are
    if not trained:
        raise ValueError("model has no parameter with requires_grad=True to train")
    decay = [p for p in trained if p.dim() >= 2]  # no decay on biases and norms
    other = [p for p in trained if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": other, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.99),
    )  # fmt: skip
    offsets = torch.arange(context + 1)
    losses = []
    model.train()
    hidden = not shown(progress)
    for step in tqdm(range(config.steps), disable=hidden, desc="training", leave=False):
        for group in optimizer.param_groups:
            group["lr"] = config.rate(step)
        starts = torch.randint(len(tokens) - context, (config.batch_size, 1), generator=generator)
        window = tokens[starts + offsets]  # (B, context + 1)
        loss = loss_fn(model(window[:, :-1]), window)
        value = loss.item()
        if not math.isfinite(value):  # before the step: the weights are still as they were
            raise FloatingPointError(f"loss became {value} at step {step} (float16 weights, "
                                     "too high a learning rate or temperature?)")  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        losses.append(value)
    model.eval()
    return losses


def train_lm(
    model: nn.Module, tokens: Tensor, config: LMConfig = LMConfig(), progress: bool = True
) -> list[float]:
    """Train ``model`` to predict the next token; return the loss (nats) of every step.

    Minimises the cross-entropy −(1/BT) Σ log p(x_{t+1} | x_≤t) over random windows (§
    "A tiny GPT, offline" of chapter "Quantizing a small language model"). Only parameters
    with ``requires_grad`` are optimised (a model with frozen parts, e.g. LoRA adapters on a
    frozen base, trains just the rest). The caller's global random generator is not
    touched: windows come from ``torch.Generator(seed)``.
    """

    def cross_entropy(logits: Tensor, window: Tensor) -> Tensor:
        return F.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten())

    return _fit(model, tokens, config, progress, cross_entropy)


def distill_lm(
    student: nn.Module, teacher: nn.Module, tokens: Tensor, config: LMConfig = LMConfig(),
    temperature: float = 1.0, alpha: float = 1.0, progress: bool = True,
) -> list[float]:  # fmt: skip
    """Train ``student`` on ``teacher``'s next-character distributions; return each step's loss.

    The loop of `train_lm` (same windows for the same seed), with the loss of chapter
    "Knowledge distillation", `minicompress.distillation.kd_loss`, applied per token: the
    (B, T, vocab) logits of both models on the same windows are flattened to (B·T, vocab),
    so each position is one example,
    α·T²·KL(p_T^teacher ‖ q_T^student) + (1 − α)·CE(next character, q_1^student).
    ``alpha=0`` is `train_lm`'s loss. The teacher runs in eval mode without gradients and
    is not changed; its context must cover the student's.
    Chapter "Pruning, adapting and distilling a small language model", section Distilling
    the language model.
    """
    check.module(student, "student")
    check.module(teacher, "teacher")
    if teacher is student:
        raise ValueError("the teacher and the student are the same model; distillation trains "
                         "a separate student on the teacher's outputs")  # fmt: skip
    if _context(teacher) < _context(student):
        raise ValueError(f"the teacher's context {_context(teacher)} is shorter than the "
                         f"student's {_context(student)}")  # fmt: skip
    temperature, alpha = check.temperature(temperature), check.probability(alpha, "alpha")
    was_training = teacher.training
    teacher.eval()

    def distillation(logits: Tensor, window: Tensor) -> Tensor:
        with torch.no_grad():
            target = teacher(window[:, :-1])
        if target.shape != logits.shape:
            raise ValueError(f"the teacher's logits {tuple(target.shape)} and the student's "
                             f"{tuple(logits.shape)} differ: vocabularies must match")  # fmt: skip
        labels = window[:, 1:].flatten()
        return kd_loss(logits.flatten(0, 1), target.flatten(0, 1), labels, temperature, alpha)

    try:
        return _fit(student, tokens, config, progress, distillation)
    finally:
        teacher.train(was_training)


@torch.no_grad()
def window_bits(
    model: nn.Module, tokens: Tensor, batch_size: int = 64, max_windows: int | None = None
) -> Tensor:
    """Bits per character of each non-overlapping window of ``context + 1`` tokens.

    Window w predicts its characters 2 … context + 1 from the ones before them, so its
    value is −(1/context) Σ_t log₂ p(x_{t+1} | window's x_≤t). Returns a float64 tensor,
    one value per window (the last partial window is dropped).
    """
    context = _context(model)
    _check_tokens(tokens, context)
    check.integer(batch_size, "batch_size", 1)
    n = (len(tokens) - 1) // context
    if max_windows is not None:
        n = min(n, check.integer(max_windows, "max_windows", 1))
    starts = torch.arange(n) * context
    offsets = torch.arange(context + 1)
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, n, batch_size):
        window = tokens[starts[i : i + batch_size, None] + offsets]
        logits = model(window[:, :-1]).double()
        nats = F.cross_entropy(logits.transpose(1, 2), window[:, 1:], reduction="none")
        out.append(nats.mean(dim=1) / math.log(2))
    model.train(was_training)
    return torch.cat(out)


@dataclass(frozen=True)
class BitsPerChar:
    """Mean bits per character over ``windows`` windows, and its standard error."""

    mean: float
    standard_error: float
    windows: int


def summarize(values: Tensor) -> BitsPerChar:
    """Mean of per-window bits/char (or of their paired differences) and its standard error
    std/√windows (chapter "Quantizing a small language model", § "A tiny GPT, offline")."""
    n = len(values)
    se = float(values.std() / math.sqrt(n)) if n > 1 else float("nan")
    return BitsPerChar(float(values.mean()), se, n)


def bits_per_char(model: nn.Module, tokens: Tensor, **kwargs) -> BitsPerChar:
    """The model's bits per character on ``tokens``, with a standard error over windows.

    Arguments as `window_bits`."""
    return summarize(window_bits(model, tokens, **kwargs))


def compare_bits(model_a: nn.Module, model_b: nn.Module, tokens: Tensor, **kwargs) -> BitsPerChar:
    """bits/char of ``model_a`` minus ``model_b``, paired window by window.

    The difference of two models scored on the same windows varies much less than either
    score, so its standard error (over the per-window differences) is small enough to
    detect the +0.01 bits/char a good 4-bit quantizer costs.
    """
    return summarize(
        window_bits(model_a, tokens, **kwargs) - window_bits(model_b, tokens, **kwargs)
    )


@torch.no_grad()
def generate(
    model: nn.Module, prompt: Tensor, length: int, temperature: float = 0.8, seed: int = 0,
    decode: Callable[[Tensor], str] | None = None,
) -> Tensor | str:  # fmt: skip
    """Sample ``length`` tokens after ``prompt`` (1-D ids) from softmax(logits / temperature).

    Returns the new ids, or their text if ``decode`` is given. Uses its own generator.
    """
    context = _context(model)
    if not isinstance(prompt, Tensor) or prompt.dtype != torch.int64 or prompt.dim() != 1:
        raise TypeError(f"prompt must be a 1-D int64 tensor, got {check.describe(prompt)}")
    check.integer(length, "length", 0)
    temperature = check.temperature(temperature)
    generator = torch.Generator().manual_seed(check.integer(seed, "seed", 0))
    ids = prompt.clone()
    for _ in range(length):
        logits = model(ids[-context:][None])[0, -1].double()
        probs = (logits / temperature).softmax(-1)
        ids = torch.cat([ids, torch.multinomial(probs, 1, generator=generator)])
    new = ids[len(prompt) :]
    return decode(new) if decode is not None else new
