"""No chapter types a measured figure by hand (tools/typed_numbers.py), and the check works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._tools import ROOT, load_tool

typed_numbers = load_tool("typed_numbers")
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_no_measured_figure_is_typed_by_hand(chapter: Path):
    assert typed_numbers.check_notebook(chapter) == []


def notebook(tmp_path: Path, markdown: str) -> Path:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": markdown.splitlines(True)}]
    path = tmp_path / "planted.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4}))
    return path


@pytest.mark.parametrize(
    "typed",
    [
        "Pruning costs 0.31 pp here.",
        "The file is 27 KB.",
        "int8 is 4.37× faster at batch 256.",
        "It is 3x faster.",
        "Accuracy reaches 88.1 %.",
        "Training took 125 s.",
        "A batch takes 1.2 ms.",
        "The student makes 2 times fewer errors.",
        "The model has 1,070 bytes of biases.",
        "A drop of −0.54 percentage points.",
    ],
)
def test_a_planted_typed_figure_is_found(tmp_path: Path, typed: str):
    hits = typed_numbers.check_notebook(notebook(tmp_path, f"Intro.\n\n{typed}\n"))
    assert len(hits) == 1, hits


@pytest.mark.parametrize(
    "allowed",
    [
        "Pruning costs {glue:text}`loss90:.2f` pp here.",
        "The paper reports 40× {cite:p}`han2016deep`.",
        "% typed: a setting of the experiment, not a result\nWe prune 90 % of the weights.",
        "% typed: a setting\n\nWe prune 90 % of the weights.",
        "The call `prune(amount=0.9)`, in math $90\\,\\%$, in code `12×`.",
        "A 28×28 image (or 1024 × 1024 layer) has 784 pixels and 3 layers.",
        "```python\nx = 4.37  # 4.37× faster\n```",
    ],
)
def test_glue_citations_escapes_and_code_are_allowed(tmp_path: Path, allowed: str):
    assert typed_numbers.check_notebook(notebook(tmp_path, allowed)) == []


def test_an_escape_covers_only_the_next_paragraph(tmp_path: Path):
    text = "% typed: a setting\nWe prune 90 % of the weights.\n\nIt costs 0.3 pp.\n"
    hits = typed_numbers.check_notebook(notebook(tmp_path, text))
    assert len(hits) == 1 and "0.3 pp" in hits[0]


def test_the_command_line_fails_on_a_typed_figure(tmp_path: Path, capsys):
    assert typed_numbers.main([str(notebook(tmp_path, "It is 12× smaller."))]) == 1
    assert "12×" in capsys.readouterr().out
    assert typed_numbers.main([str(notebook(tmp_path, "It is smaller."))]) == 0
