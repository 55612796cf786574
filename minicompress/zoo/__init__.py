"""Trained baselines shipped with the package, so no chapter ever retrains them.

Each entry has a recipe (`TrainConfig` or `LMConfig`, seed included); ``python -m
minicompress.zoo train NAME`` trains it (the LeNets on Fashion-MNIST, ``tinygpt`` on the
shipped docstring corpus of `minicompress.text`) and writes ``weights/NAME.pt`` (the
state dict) and ``weights/NAME.json`` (recipe, test accuracy or validation bits/char,
SHA-256 of the weights, torch version, machine). `pretrained` checks the SHA-256 and
loads with ``torch.load(weights_only=True)``, which refuses to unpickle code.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from minicompress import text
from minicompress.data import fashion_mnist
from minicompress.lm import LMConfig, bits_per_char, train_lm
from minicompress.measure import count_parameters, machine
from minicompress.models import LeNet5, LeNet300100, TinyGPT
from minicompress.train import TrainConfig, evaluate, fit

__all__ = ["RECIPES", "Recipe", "build", "info", "names", "pretrained", "train"]

WEIGHTS = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class Recipe:
    """How a baseline is made: its architecture and its training configuration."""

    build: Callable[[], nn.Module]
    config: TrainConfig | LMConfig
    description: str

    @property
    def is_language_model(self) -> bool:
        """Trained on text (`LMConfig`) rather than on Fashion-MNIST."""
        return isinstance(self.config, LMConfig)


RECIPES: dict[str, Recipe] = {
    "lenet300": Recipe(
        LeNet300100,
        TrainConfig(epochs=40, lr=0.05, batch_size=128, momentum=0.9, weight_decay=1e-4, seed=0),
        "LeNet-300-100 (784-300-100-10 MLP), Han et al. 2015",
    ),
    "lenet5": Recipe(
        LeNet5,
        TrainConfig(epochs=25, lr=0.05, batch_size=128, momentum=0.9, weight_decay=5e-4, seed=0),
        "LeNet-5 (Caffe LeNet: conv20-conv50-fc500-fc10), Han et al. 2015",
    ),
    "tinygpt": Recipe(
        TinyGPT,
        LMConfig(steps=3000, batch_size=32, lr=3e-3, warmup=100, weight_decay=0.01, seed=0),
        "character-level GPT (4 layers, d=64, 4 heads, context 128) on CPython docstrings",
    ),
}


def names() -> list[str]:
    """The names `pretrained` accepts."""
    return sorted(RECIPES)


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown model {name!r}; the zoo has {names()}")
    return RECIPES[name]


def build(name: str) -> nn.Module:
    """A fresh, untrained model of the zoo entry ``name`` (initialised from its seed).

    The caller's global random generator is left as it was."""
    recipe = _recipe(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.config.seed)
        return recipe.build()


def info(name: str, weights_dir: Path = WEIGHTS) -> dict:
    """The record stored next to the weights: recipe, test accuracy, SHA-256, versions."""
    _recipe(name)
    path = Path(weights_dir) / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: train it with `python -m minicompress.zoo train {name}`"
        )
    return json.loads(path.read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pretrained(name: str, weights_dir: Path = WEIGHTS) -> nn.Module:
    """The trained baseline ``name`` in eval mode, loaded safely (``weights_only=True``).

    Raises `ValueError` if the weights file does not match the SHA-256 recorded when it was
    trained (a corrupted or replaced file).
    """
    record = info(name, weights_dir)
    path = Path(weights_dir) / f"{name}.pt"
    data = path.read_bytes()  # hashed and loaded from the same bytes: no swap in between
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise ValueError(
            f"{path}: SHA-256 does not match {path.with_suffix('.json').name}; the file is "
            f"corrupt or was replaced. Retrain with `python -m minicompress.zoo train {name}`."
        )
    model = _recipe(name).build()
    model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return model.eval()


def _record(name: str, model: nn.Module, path: Path, seconds: float, results: dict) -> dict:
    """Write ``NAME.json`` next to the saved weights ``path``: recipe, results, hash, machine."""
    recipe = _recipe(name)
    record = {
        "name": name,
        "description": recipe.description,
        "model": type(model).__name__,
        "parameters": count_parameters(model),
        **results,
        "sha256": _sha256(path),
        "torch": torch.__version__,
        "machine": machine(),
        "train_seconds": round(seconds, 1),
    }
    path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


# A trainer trains the model in place and returns how to score it (run after the timing).
Trainer = Callable[[str, nn.Module, bool], Callable[[], dict]]


def _train_image_model(name: str, model: nn.Module, progress: bool) -> Callable[[], dict]:
    config = _recipe(name).config
    losses = fit(model, *fashion_mnist("train"), config, progress=progress)
    test_x, test_y = fashion_mnist("test")

    def results() -> dict:
        accuracy = evaluate(model, test_x, test_y)
        return {
            "data": "Fashion-MNIST train (60000), no augmentation; accuracy on test (10000)",
            "recipe": config.to_dict(),
            "final_train_loss": round(losses[-1], 6) if losses else None,
            "test_accuracy": accuracy,
            "test_correct": round(accuracy * len(test_y)),
        }

    return results


def _train_language_model(name: str, model: nn.Module, progress: bool) -> Callable[[], dict]:
    config = _recipe(name).config
    losses = train_lm(model, text.split("train"), config, progress=progress)

    def results() -> dict:
        score = bits_per_char(model, text.split("validation"))
        last = losses[-50:]
        return {
            "data": "minicompress.text corpus: train split; bits/char on the validation split",
            "corpus_sha256": text.CORPUS_SHA256,
            "recipe": config.to_dict(),
            "final_train_loss": round(sum(last) / len(last), 6) if last else None,
            "validation_bits_per_char": round(score.mean, 6),
            "validation_standard_error": round(score.standard_error, 6),
        }

    return results


def train(name: str, weights_dir: Path = WEIGHTS, progress: bool = True) -> dict:
    """Train ``name`` from its recipe, save weights and record; return the record.

    The LeNets train on Fashion-MNIST (record: test accuracy), ``tinygpt`` on the text
    corpus (record: validation bits per character with its standard error)."""
    recipe = _recipe(name)
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    model = build(name)
    trainer: Trainer = _train_language_model if recipe.is_language_model else _train_image_model
    start = time.perf_counter()
    results = trainer(name, model, progress)
    seconds = time.perf_counter() - start
    path = weights_dir / f"{name}.pt"
    torch.save(model.state_dict(), path)
    return _record(name, model, path, seconds, results())
