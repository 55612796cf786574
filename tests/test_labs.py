"""The lab mechanism: export, and checkers that pass the reference and reject each seed erratum
with a message that says what is wrong."""

from __future__ import annotations

import math

import nbformat
import pytest
import torch
from torch.nn.utils import prune

from minicompress import pruning
from minicompress.labs import LabCheckError, export, student_source
from minicompress.labs.pruning import (
    check_global_masks,
    check_magnitude_mask,
    check_masked_fine_tune,
    check_pruning_rate,
)
from minicompress.train import TrainConfig, fit

# ---- wrong implementations, most of them straight from the seed blog posts --------------


def signed_threshold_mask(weight, sparsity):  # erratum 4: `x < threshold` instead of |x|
    k = round(sparsity * weight.numel())
    if k == 0:
        return torch.ones_like(weight, dtype=torch.bool)
    threshold = weight.flatten().kthvalue(k).values
    return weight > threshold


def python_if_mask(weight, sparsity):  # erratum 4: `if param.abs() < threshold:` on a tensor
    threshold = weight.abs().flatten().kthvalue(max(1, round(sparsity * weight.numel()))).values
    if weight.abs() < threshold:
        return torch.zeros_like(weight, dtype=torch.bool)
    return torch.ones_like(weight, dtype=torch.bool)


def amount_as_threshold_mask(weight, sparsity):  # erratum 6: `amount` read as a threshold
    return weight.abs() >= sparsity


def wrong_keyword_mask(weight, sparsity):  # erratum 6: prune.l1_unstructured(..., names=...)
    layer = torch.nn.Linear(1, 1)
    layer.weight = torch.nn.Parameter(weight.clone())
    prune.l1_unstructured(layer, names="weight", amount=sparsity)
    return layer.weight_mask.bool()


def inverted_mask(weight, sparsity):
    return ~pruning.magnitude_mask(weight, sparsity)


def floor_count_mask(weight, sparsity):  # int() truncates: off by one for many sizes
    k = int(sparsity * weight.numel())
    mask = torch.ones(weight.numel(), dtype=torch.bool)
    if k:
        mask[weight.abs().flatten().argsort()[:k]] = False
    return mask.view_as(weight)


def float_mask(weight, sparsity):
    return pruning.magnitude_mask(weight, sparsity).float()


def layerwise_masks(weights, sparsity):  # not global
    return {k: pruning.magnitude_mask(w, sparsity) for k, w in weights.items()}


def global_api_misuse(weights, sparsity):  # erratum 6: global_unstructured(model, name=..., ...)
    prune.global_unstructured(weights, name="weight", amount=sparsity)


def kept_l1_mass(original, pruned):  # erratum 5
    return (pruned.abs().sum() / original.abs().sum()).item()


def counts_changes(original, pruned):  # "weights that changed" ignores zeros already there
    return ((original != pruned).float().mean()).item()


def fine_tune_without_masks(model, masks, images, labels, epochs):  # erratum 7
    fit(model, images, labels, TrainConfig(epochs=epochs, lr=0.05), progress=False)


def fine_tune_masking_once_before(model, masks, images, labels, epochs):  # erratum 7 again
    pruning.apply_masks(model, masks)
    fit(model, images, labels, TrainConfig(epochs=epochs, lr=0.05), progress=False)


def no_training(model, masks, images, labels, epochs):
    pruning.apply_masks(model, masks)


def not_written(*args):
    raise NotImplementedError()


# ---- the reference passes --------------------------------------------------------------


def reference_fine_tune(model, masks, images, labels, epochs):
    config = TrainConfig(epochs=epochs, lr=0.05)
    fit(model, images, labels, config, after_step=pruning.keep_masks(masks), progress=False)


def test_the_reference_passes_every_checker(capsys):
    check_magnitude_mask(pruning.magnitude_mask)
    check_global_masks(pruning.global_magnitude_masks)
    check_pruning_rate(lambda original, pruned: (pruned == 0).float().mean().item())
    check_masked_fine_tune(reference_fine_tune)
    assert capsys.readouterr().out.count("✓") == 4


@pytest.mark.parametrize(
    ("checker", "wrong", "message"),
    [
        (check_magnitude_mask, signed_threshold_mask, "negative weights were removed"),
        (check_magnitude_mask, python_if_mask, "cannot be a Python `if`"),
        (check_magnitude_mask, amount_as_threshold_mask, "kept \\d+ weights, expected \\d+"),
        (check_magnitude_mask, wrong_keyword_mask, "argument names"),
        (check_magnitude_mask, inverted_mask, "inverted"),
        (check_magnitude_mask, floor_count_mask, "kept \\d+ weights, expected \\d+"),
        (check_magnitude_mask, float_mask, "bool tensor"),
        (check_magnitude_mask, not_written, "not written yet"),
        (check_global_masks, layerwise_masks, "layer-wise"),
        (check_global_masks, global_api_misuse, "raised TypeError"),
        (check_global_masks, not_written, "not written yet"),
        (check_pruning_rate, kept_l1_mass, "L1 mass \\*kept\\*"),
        (check_pruning_rate, counts_changes, "expected zeros / weights"),
        (check_pruning_rate, not_written, "not written yet"),
        (check_masked_fine_tune, fine_tune_without_masks, "grew back"),
        (check_masked_fine_tune, fine_tune_masking_once_before, "grew back"),
        (check_masked_fine_tune, no_training, "did it train"),
        (check_masked_fine_tune, not_written, "not written yet"),
    ],
)
def test_checkers_reject_wrong_versions_saying_why(checker, wrong, message):
    with pytest.raises(LabCheckError, match=message):
        checker(wrong)


def test_student_source_replaces_only_the_marked_region():
    source = (
        "def f(x):\n"
        '    """Doc."""\n'
        "    ### BEGIN SOLUTION\n"
        "    y = x + 1\n"
        "    return y\n"
        "    ### END SOLUTION\n"
        "\n"
        "f_checked = True"
    )
    assert student_source(source) == (
        'def f(x):\n    """Doc."""\n    # YOUR CODE HERE\n    raise NotImplementedError()\n'
        "\nf_checked = True"
    )
    with pytest.raises(ValueError, match="unbalanced"):
        student_source("### BEGIN SOLUTION\nx = 1\n")
    with pytest.raises(ValueError, match="unbalanced"):
        student_source("x = 1\n### END SOLUTION\n")


def test_nested_solution_markers_are_an_error_not_a_leak():
    nested = (
        "def f(x):\n    ### BEGIN SOLUTION\n    a = 1\n    ### BEGIN SOLUTION\n"
        "    b = 2\n    ### END SOLUTION\n    secret = 3\n    ### END SOLUTION"
    )
    with pytest.raises(ValueError, match="nested"):
        student_source(nested)


def test_student_source_removes_hidden_tests():
    source = "check(f)\n### BEGIN HIDDEN TESTS\ncheck(f, seed=grading_seed())\n### END HIDDEN TESTS"
    assert student_source(source) == "check(f)"


def test_export_names_the_notebook_and_cell_of_bad_markers(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("### BEGIN SOLUTION\n### BEGIN SOLUTION\nx\n")]
    (tmp_path / "src").mkdir()
    nbformat.write(nb, tmp_path / "src" / "bad.ipynb")
    with pytest.raises(ValueError, match="bad.ipynb: cell 0: nested"):
        export(tmp_path / "src", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_export_writes_student_and_instructor_versions(tmp_path):
    nb = nbformat.v4.new_notebook()
    solution = nbformat.v4.new_code_cell(
        "def g():\n    ### BEGIN SOLUTION\n    return 42\n    ### END SOLUTION",
        metadata={"tags": ["hide-input"]},
    )
    solution.outputs = [nbformat.v4.new_output("stream", text="secret")]
    nb.cells = [nbformat.v4.new_markdown_cell("# Lab"), solution]
    (tmp_path / "src").mkdir()
    nbformat.write(nb, tmp_path / "src" / "lab.ipynb")
    paths = export(tmp_path / "src", tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in paths) == [
        "instructor/lab.ipynb",
        "source/lab/lab.ipynb",
        "student/lab.ipynb",
    ]
    student = nbformat.read(tmp_path / "out" / "student" / "lab.ipynb", 4).cells[1]
    assert "return 42" not in student.source and "NotImplementedError" in student.source
    assert student.outputs == [] and "hide-input" not in student.metadata.get("tags", [])
    teacher = nbformat.read(tmp_path / "out" / "instructor" / "lab.ipynb", 4).cells[1]
    assert teacher.source == "def g():\n    return 42"


def test_export_of_an_empty_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no lab notebooks"):
        export(tmp_path, tmp_path / "out")


def test_pruning_rate_on_the_blog_example_is_one_third_not_one_half():
    # The blog zeroes 1.2 and 0.3 of six weights and calls it 50 %; it is 2/6.
    pruned = torch.tensor([0.5, 0.0, 0.0, 0.8, 0.6, 1.5])
    assert math.isclose((pruned == 0).float().mean().item(), 1 / 3, rel_tol=1e-6)
