"""minicompress.zoo: shipped baselines load safely and still score what their records say."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from minicompress import lm, text, zoo
from minicompress.train import evaluate

TARGETS = {"lenet300": 0.89, "lenet5": 0.90}  # issue targets on Fashion-MNIST
IMAGE_MODELS = [name for name in zoo.names() if not zoo.RECIPES[name].is_language_model]


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_shipped_model_scores_its_recorded_accuracy(name, test_split):
    images, labels = test_split
    record = zoo.info(name)
    correct = round(evaluate(zoo.pretrained(name), images, labels) * len(labels))
    # Bit-identical on the machine that trained it; another CPU's float rounding may flip
    # the odd borderline image, hence a tolerance of two images out of 10 000.
    assert abs(correct - record["test_correct"]) <= 2
    assert record["test_accuracy"] >= TARGETS[name]


def test_tinygpt_scores_its_recorded_bits_per_char():
    record = zoo.info("tinygpt")
    score = lm.bits_per_char(zoo.pretrained("tinygpt"), text.split("validation"))
    # float64 mean of float32 logits: other CPUs' kernels move it by ~1e-6, not 1e-3
    assert abs(score.mean - record["validation_bits_per_char"]) < 1e-3
    assert record["corpus_sha256"] == text.CORPUS_SHA256
    # the reference model reached 2.33; uniform guessing pays log2(96) = 6.58
    assert score.mean < 2.5
    assert score.standard_error < 0.02


@pytest.mark.parametrize("name", zoo.names())
def test_record_describes_the_weights(name):
    record = zoo.info(name)
    model = zoo.pretrained(name)
    assert not model.training
    assert record["parameters"] == sum(p.numel() for p in model.parameters())
    assert record["recipe"] == zoo.RECIPES[name].config.to_dict()
    assert type(model).__name__ == record["model"]


def test_a_tampered_weights_file_is_refused(tmp_path):
    for suffix in (".pt", ".json"):
        shutil.copy(zoo.WEIGHTS / f"lenet300{suffix}", tmp_path / f"lenet300{suffix}")
    state = torch.load(tmp_path / "lenet300.pt", weights_only=True)
    state["fc1.bias"][0] += 1.0
    torch.save(state, tmp_path / "lenet300.pt")
    with pytest.raises(ValueError, match="SHA-256"):
        zoo.pretrained("lenet300", weights_dir=tmp_path)


def test_a_pickled_object_in_the_weights_is_never_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('payload ran')",))

    torch.save({"fc1.weight": Payload()}, tmp_path / "lenet300.pt")
    record = zoo.info("lenet300")
    record["sha256"] = zoo._sha256(tmp_path / "lenet300.pt")  # even with a matching hash
    (tmp_path / "lenet300.json").write_text(json.dumps(record))
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        zoo.pretrained("lenet300", weights_dir=tmp_path)


def test_unknown_name_and_missing_files_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="lenet300"):
        zoo.pretrained("resnet50")
    with pytest.raises(FileNotFoundError, match="python -m minicompress.zoo train lenet5"):
        zoo.pretrained("lenet5", weights_dir=tmp_path)


def test_build_is_seeded():
    a, b = zoo.build("lenet300"), zoo.build("lenet300")
    assert torch.equal(a.fc1.weight, b.fc1.weight)


def test_shipped_files_are_small():
    sizes = {p.name: p.stat().st_size for p in zoo.WEIGHTS.glob("*.pt")}
    assert sizes and all(size < 2_000_000 for size in sizes.values()), sizes
