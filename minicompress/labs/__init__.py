"""Classroom labs: one source notebook per chapter, exported as student and instructor versions.

A lab's source notebook (``book/labs/*.ipynb``) holds the reference solutions between
nbgrader's markers::

    def magnitude_mask(weight, sparsity):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

`export` writes two copies: ``student/`` with each marked region replaced by
``raise NotImplementedError`` (and outputs cleared), and ``instructor/`` with the solutions
in place and the markers removed. Check cells call the chapter's checkers
(`minicompress.labs.pruning`, ...), which test a student's function on randomized inputs
against the reference and raise `LabCheckError` saying *what* is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

__all__ = ["LabCheckError", "export", "student_source"]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
_MARKED = re.compile(
    rf"^(?P<indent>[ \t]*){re.escape(BEGIN)}[^\n]*\n.*?^[ \t]*{re.escape(END)}[^\n]*(\n|$)",
    re.MULTILINE | re.DOTALL,
)


class LabCheckError(AssertionError):
    """A student's function gave a wrong answer; the message says what and how to fix it."""


def _call(fn: Callable, name: str, *args):
    """Call the student's function, turning any exception into a message about it."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise LabCheckError(
            f"{name} is not written yet: replace `raise NotImplementedError()` with your code."
        ) from None
    except Exception as err:
        hint = ""
        if isinstance(err, RuntimeError) and "ambiguous" in str(err):
            hint = (
                " A comparison of a whole tensor cannot be a Python `if`: compute the mask "
                "elementwise, e.g. `weight.abs() >= t` (course erratum 4)."
            )
        elif isinstance(err, TypeError) and "keyword" in str(err):
            hint = " Check the argument names of the function you call (course erratum 6)."
        detail = str(err).rstrip(".")
        raise LabCheckError(f"{name} raised {type(err).__name__}: {detail}.{hint}") from err


def student_source(source: str) -> str:
    """``source`` with every BEGIN/END SOLUTION region replaced by a NotImplementedError."""
    if source.count(BEGIN) != source.count(END):
        raise ValueError(f"unbalanced solution markers: {source.count(BEGIN)} BEGIN, "
                         f"{source.count(END)} END")  # fmt: skip

    def stub(match: re.Match) -> str:
        indent = match.group("indent")
        return f"{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError()\n"

    return _MARKED.sub(stub, source).rstrip("\n")


def _instructor_source(source: str) -> str:
    lines = [line for line in source.split("\n") if line.strip() not in (BEGIN, END)]
    return "\n".join(lines)


def export(source_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``out_dir/student/*.ipynb`` and ``out_dir/instructor/*.ipynb`` for every lab
    notebook in ``source_dir``; return the paths written."""
    import nbformat

    source_dir, out_dir = Path(source_dir), Path(out_dir)
    notebooks = sorted(source_dir.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no lab notebooks (*.ipynb) in {source_dir}")
    written = []
    for path in notebooks:
        for version, transform in (("student", student_source), ("instructor", _instructor_source)):
            nb = nbformat.read(path, as_version=4)
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.source = transform(cell.source)
                    if version == "student":
                        cell.outputs, cell.execution_count = [], None
                        tags = cell.metadata.get("tags", [])
                        cell.metadata["tags"] = [t for t in tags if t != "hide-input"]
            target = out_dir / version / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, target)
            written.append(target)
    return written
