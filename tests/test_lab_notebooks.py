"""The exported student labs run end to end, and every check cell fails with a useful message
(not a passed check, not a dead kernel) before any code is written."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from minicompress.labs import export

LABS = Path(__file__).resolve().parent.parent / "book" / "labs"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("labs")
    export(LABS, out)
    return out


@pytest.mark.parametrize("name", sorted(p.name for p in LABS.glob("*.ipynb")))
def test_student_check_cells_fail_saying_not_written(exported, name):
    nb = nbformat.read(exported / "student" / name, as_version=4)
    resources = {"metadata": {"path": str(exported / "student")}}
    client = NotebookClient(
        nb, timeout=600, allow_errors=True, kernel_name="python3", resources=resources
    )
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "the kernel died before the last cell"
    checks = [c for c in code if c.source.lstrip().startswith("check_")]
    assert checks, "a lab without check cells"
    for cell in checks:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors, f"a check passed with no student code: {cell.source!r}"
        assert errors[0].ename == "LabCheckError", errors[0].ename
        assert "not written yet" in errors[0].evalue


@pytest.mark.parametrize("name", sorted(p.name for p in LABS.glob("*.ipynb")))
def test_instructor_version_has_solutions_and_no_markers(exported, name):
    nb = nbformat.read(exported / "instructor" / name, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "### BEGIN SOLUTION" not in text and "NotImplementedError" not in text
