"""nbgrader, end to end, on every lab: ``export`` writes a ``source/`` folder that
``nbgrader generate_assignment`` accepts; ``nbgrader autograde`` gives a correct submission
full marks, a wrong one partial credit (one graded cell per function) and a blank one 0;
``export`` writes grades.csv and ``generate_feedback`` shows the checkers' messages.

Hidden tests (between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``) are absent from
what students receive and restored by autograde, which draws their cases with the grading seed
``$MINICOMPRESS_GRADING_SEED``.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from minicompress.labs import BEGIN, BEGIN_HIDDEN, END, export

pytest.importorskip("nbgrader", reason="nbgrader is a dev dependency: pip install -e '.[dev]'")

LABS = Path(__file__).resolve().parent.parent / "book" / "labs"

# One wrong submission per lab: some functions right, some with a mistake issue 15 lists.
WRONG = {
    "pruning_lab": {
        "magnitude_mask": (
            "def magnitude_mask(weight, sparsity):\n"
            "    import math\n"
            "    k = math.ceil(sparsity * weight.numel())\n"
            "    mask = torch.ones(weight.numel(), dtype=torch.bool)\n"
            "    if k > 0:\n"
            "        mask[torch.topk(weight.abs().flatten(), k, largest=False).indices] = False\n"
            "    return mask.view_as(weight)"
        ),
        "masked_fine_tune": (
            "def masked_fine_tune(model, masks, images, labels, epochs):\n"
            "    fit(model, images, labels, TrainConfig(epochs=epochs, lr=0.05), progress=False)\n"
            "    mc.pruning.apply_masks(model, masks)  # once, after training"
        ),
    },
    "quantization_lab": {
        "quantize": (
            "def quantize(x, scale, zero_point, bits):\n"
            "    return (torch.round(x * (1.0 / scale)) + zero_point).to(torch.uint8)  # no clamp"
        ),
        "symmetric_scale": (
            "def symmetric_scale(x, bits):\n    return x.max().item() / 2**bits  # erratum 2"
        ),
    },
    "sharing_lab": {
        "huffman_code": (
            "def huffman_code(frequencies):  # Shannon-Fano\n"
            "    def split(items):\n"
            "        if len(items) == 1:\n"
            "            return {items[0][0]: ''}\n"
            "        total = sum(f for _, f in items)\n"
            "        cut = min(range(1, len(items)),\n"
            "                  key=lambda i: abs(total - 2 * sum(f for _, f in items[:i])))\n"
            "        left, right = split(items[:cut]), split(items[cut:])\n"
            "        return ({s: '0' + c for s, c in left.items()}\n"
            "                | {s: '1' + c for s, c in right.items()})\n"
            "    return split(sorted(frequencies.items(), key=lambda kv: -kv[1]))"
        ),
    },
    "binarization_lab": {
        "binarize": "def binarize(w):\n    return torch.sign(w)",
    },
    "lowrank_lab": {
        "payoff_rank": "def payoff_rank(m, n):\n    return (m * n) // (m + n)  # not strict",
    },
    "storage_lab": {
        "memory_per_device": (
            "def memory_per_device(parameters, devices, bytes_per_value=4, optimizer_states=2):\n"
            "    # copied to every device, not sharded: x N instead of / N\n"
            "    return (2 + optimizer_states) * parameters * bytes_per_value * devices"
        ),
    },
    "llm_quantization_lab": {
        "pack_int4": (
            "def pack_int4(q):  # high nibble first\n"
            "    q = q.to(torch.uint8)\n"
            "    return (q[:, 0::2] << 4) | q[:, 1::2]"
        ),
        "smoothquant_scales": (
            "def smoothquant_scales(x, w, alpha):  # alpha on the wrong side\n"
            "    x_max, w_max = x.abs().amax(dim=0), w.abs().amax(dim=0)\n"
            "    return w_max**alpha / x_max ** (1 - alpha)"
        ),
    },
    "llm_sparsity_lab": {
        "row_mask": (
            "def row_mask(scores, sparsity):  # one threshold over the whole matrix\n"
            "    k = round(sparsity * scores.numel())\n"
            "    mask = torch.ones(scores.numel(), dtype=torch.bool)\n"
            "    mask[torch.sort(scores.flatten(), stable=True).indices[:k]] = False\n"
            "    return mask.view_as(scores)"
        ),
        "merge_lora": (
            "def merge_lora(w, a, b, alpha, rank):  # the alpha / rank scale forgotten\n"
            "    return w + b @ a"
        ),
    },
    "distillation_lab": {
        "kd_loss": (
            "def kd_loss(student_logits, teacher_logits, targets, temperature, alpha):\n"
            "    T = temperature  # the teacher is not detached: gradients reach it\n"
            "    log_q = torch.log_softmax(student_logits / T, dim=1)\n"
            "    log_p = torch.log_softmax(teacher_logits / T, dim=1)\n"
            "    soft = F.kl_div(log_q, log_p, reduction='batchmean', log_target=True)\n"
            "    loss = alpha * T**2 * soft\n"
            "    if alpha < 1:\n"
            "        loss = loss + (1 - alpha) * F.cross_entropy(student_logits, targets)\n"
            "    return loss"
        ),
    },
}
# (correct, wrong, blank) scores out of the lab's total points
SCORES = {
    "pruning_lab": (6, 3, 0),
    "quantization_lab": (7, 5, 0),
    "sharing_lab": (4, 2, 0),
    "binarization_lab": (3, 2, 0),
    "distillation_lab": (3, 1, 0),
    "lowrank_lab": (4, 3, 0),
    "storage_lab": (3, 2, 0),
    "llm_quantization_lab": (7, 5, 0),
    "llm_sparsity_lab": (6, 3, 0),
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # nbgrader runs alembic from PATH; the kernels must import this checkout's package
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    repo = str(LABS.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    env["MINICOMPRESS_GRADING_SEED"] = "4242"
    return env


def _nbgrader(course: Path, *args: str) -> subprocess.Popen:
    """Start ``nbgrader ARGS`` in ``course``; `_wait` collects it."""
    return subprocess.Popen(
        [sys.executable, "-m", "nbgrader", *args], cwd=course, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _wait(process: subprocess.Popen, what: str) -> None:
    try:
        out, _ = process.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    if process.returncode != 0:
        # nbgrader logs a failed submission's traceback long before its summary: show both
        start = out.find("Traceback")
        head = out[start : start + 3000] if start >= 0 else ""
        pytest.fail(f"nbgrader {what} failed:\n{head}\n...\n{out[-1500:]}")


def _solutions(source: Path) -> dict[str, str]:
    """grade_id -> the solution cell's code without the markers."""
    nb = nbformat.read(source, as_version=4)
    out = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            lines = cell.source.split("\n")
            out[meta["grade_id"]] = "\n".join(
                line for line in lines if line.strip() not in (BEGIN, END)
            )
    return out


def _submit(release: Path, target: Path, answers: dict[str, str]) -> None:
    nb = nbformat.read(release, as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.metadata.get("nbgrader", {}).get("solution") and grade_id in answers:
            cell.source = answers[grade_id]
    target.parent.mkdir(parents=True)
    nbformat.write(nb, target)


def _course(root: Path, lab: str, exported: Path) -> Path:
    course = root / lab
    course.mkdir()
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        "c.CourseDirectory.root = '.'\n"
        "c.CourseDirectory.course_id = 'minicompress'\n"
        "c.ExecutePreprocessor.timeout = 300\n"
        # eight courses start kernels at once on two cores: over TCP two of them can race for
        # one free port, and a loaded machine can take over the default 60 s to answer; a
        # socket file per course (absolute: kernel and grader run in different folders) and a
        # longer start-up limit take both chances away
        "c.KernelManager.transport = 'ipc'\n"
        f"c.KernelManager.ip = {str(course / 'kernel')!r}\n"
        "c.ExecutePreprocessor.startup_timeout = 300\n"
    )
    shutil.copytree(exported / "source" / lab, course / "source" / lab)
    return course


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One course folder per lab (graded in parallel: they share no gradebook), each with the
    lab generated, submitted three times and autograded."""
    root = tmp_path_factory.mktemp("courses")
    export(LABS, root / "export")
    labs = sorted(p.name for p in (root / "export" / "source").iterdir())
    courses = {lab: _course(root, lab, root / "export") for lab in labs}
    generating = {
        lab: _nbgrader(c, "generate_assignment", lab, "--force") for lab, c in courses.items()
    }
    for lab, process in generating.items():
        _wait(process, f"generate_assignment {lab}")
    grading = {}
    for lab, course in courses.items():
        source = course / "source" / lab / f"{lab}.ipynb"
        release = course / "release" / lab / f"{lab}.ipynb"
        right = _solutions(source)
        wrong = right | WRONG[lab]
        for student, answers in (("correct", right), ("wrong", wrong), ("blank", {})):
            _submit(release, course / "submitted" / student / lab / f"{lab}.ipynb", answers)
        grading[lab] = _nbgrader(course, "autograde", lab, "--create", "--force")
    for lab, process in grading.items():
        _wait(process, f"autograde {lab}")
    return root, labs


def test_every_lab_is_graded(graded):
    _, labs = graded
    assert labs == sorted(SCORES)


@pytest.mark.parametrize("lab", sorted(SCORES))
def test_autograde_scores_correct_wrong_and_blank(graded, lab):
    from nbgrader.api import Gradebook

    root, _ = graded
    with Gradebook(f"sqlite:///{root / lab / 'gradebook.db'}") as gb:
        scores = tuple(
            gb.find_submission_notebook(lab, lab, student).score
            for student in ("correct", "wrong", "blank")
        )
        total = gb.find_notebook(lab, lab).max_score
    assert (scores, total) == (SCORES[lab], SCORES[lab][0])


@pytest.mark.parametrize("lab", sorted(SCORES))
def test_release_has_no_solutions_and_no_hidden_tests(graded, lab):
    root, _ = graded
    text = (root / lab / "release" / lab / f"{lab}.ipynb").read_text()
    assert BEGIN not in text and BEGIN_HIDDEN not in text and "grading_seed" not in text
    student = (root / "export" / "student" / f"{lab}.ipynb").read_text()
    assert BEGIN not in student and "grading_seed" not in student and "labs_out" not in student


def test_export_grades_and_feedback_show_the_checkers_messages(graded):
    root, _ = graded
    course = root / "binarization_lab"
    _wait(_nbgrader(course, "export"), "export")
    with open(course / "grades.csv", newline="") as f:
        rows = {(r["assignment"], r["student_id"]): float(r["score"]) for r in csv.DictReader(f)}
    students = ("correct", "wrong", "blank")
    expected = dict(zip(students, SCORES["binarization_lab"], strict=True))
    assert rows == {("binarization_lab", s): p for s, p in expected.items()}
    feedback = _nbgrader(course, "generate_feedback", "binarization_lab", "--student", "wrong")
    _wait(feedback, "generate_feedback")
    html = course / "feedback" / "wrong" / "binarization_lab" / "binarization_lab.html"
    assert "torch.sign maps 0 to 0" in html.read_text()
