"""Classroom labs: one source notebook per chapter, exported for nbgrader, students and
instructors.

A lab's source notebook (``book/labs/*.ipynb``) is an nbgrader source notebook. Solution
cells hold the reference code between nbgrader's markers, graded check cells call the
chapter's checker (visible) and again on hidden cases drawn with the grading seed::

    # cell: nbgrader solution
    def magnitude_mask(weight, sparsity):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

    # cell: nbgrader graded test, locked
    check_magnitude_mask(magnitude_mask)
    ### BEGIN HIDDEN TESTS
    check_magnitude_mask(magnitude_mask, seed=grading_seed())
    ### END HIDDEN TESTS

`export` writes three folders: ``source/<lab>/<lab>.ipynb`` (nbgrader's ``source/`` folder,
ready for ``nbgrader generate_assignment``), ``student/`` (what nbgrader releases: solutions
replaced by ``raise NotImplementedError()``, hidden tests removed, outputs cleared) and
``instructor/`` (solutions and hidden tests in place, markers removed). Cells tagged
``website-only`` are left out of all three, and MyST-only Markdown (``{doc}`` roles, links
to the chapters) becomes plain Markdown, so the copies read well in plain JupyterLab.
Check cells call the chapter's checkers (`minicompress.labs.pruning`, ...), which test a
student's function on randomized inputs against the reference and raise `LabCheckError`
saying *what* is wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

__all__ = ["LabCheckError", "export", "grading_seed", "student_source", "without_solutions"]

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
WEBSITE_ONLY = "website-only"  # cell tag: shown on the website, left out of every export
_DEFAULT_GRADING_SEED = 20_261_203


class LabCheckError(AssertionError):
    """A student's function gave a wrong answer; the message says what and how to fix it."""


def grading_seed() -> int:
    """The seed of the hidden grading cases: ``$MINICOMPRESS_GRADING_SEED`` (set it to a
    private number when autograding, see the teaching guide), else a fixed default."""
    value = os.environ.get("MINICOMPRESS_GRADING_SEED", "").strip()
    if not value:
        return _DEFAULT_GRADING_SEED
    if not value.isdigit():
        raise ValueError(f"MINICOMPRESS_GRADING_SEED must be a non-negative integer, got {value!r}")
    return int(value)


def _call(fn: Callable, name: str, *args, **kwargs):
    """Call the student's function, turning any exception into a message about it."""
    if not callable(fn):
        raise LabCheckError(f"{name}: expected a function, got {type(fn).__name__}.")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise LabCheckError(
            f"{name} is not written yet: replace `raise NotImplementedError()` with your code."
        ) from None
    except LabCheckError:
        raise
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


def _unchanged(before: dict, after: dict, name: str) -> None:
    """Raise if a student's function modified one of its input tensors in place."""
    for arg, tensor in after.items():
        if not (tensor.shape == before[arg].shape and tensor.equal(before[arg])):
            raise LabCheckError(
                f"{name} modified its argument `{arg}` in place. A function must not change "
                "its inputs (the caller still needs them): work on a copy, e.g. `x.clone()`, "
                "or use out-of-place operations (`x * m`, not `x.mul_(m)`)."
            )


def _regions(source: str, begin: str, end: str) -> list[tuple[int, int]]:
    """(first, last) line numbers of every begin…end region; nested or unbalanced markers
    are an error, because they would leave part of a region (a solution) in the copy."""
    regions, start = [], None
    for i, line in enumerate(source.split("\n")):
        text = line.strip()
        if text.startswith(begin):
            if start is not None:
                raise ValueError(
                    f"nested {begin!r} on line {i + 1} (the region opened on line {start + 1} "
                    f"is not closed): regions cannot be nested"
                )
            start = i
        elif text.startswith(end):
            if start is None:
                raise ValueError(f"unbalanced markers: {end!r} on line {i + 1} has no {begin!r}")
            regions.append((start, i))
            start = None
    if start is not None:
        raise ValueError(f"unbalanced markers: {begin!r} on line {start + 1} has no {end!r}")
    return regions


def _replace_regions(source: str, begin: str, end: str, stub: Callable[[str], list[str]]) -> str:
    lines = source.split("\n")
    for first, last in reversed(_regions(source, begin, end)):
        indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
        lines[first : last + 1] = stub(indent)
    return "\n".join(lines)


def student_source(source: str) -> str:
    """``source`` with every BEGIN/END SOLUTION region replaced by a NotImplementedError and
    every BEGIN/END HIDDEN TESTS region removed (what nbgrader releases)."""

    def solution_stub(indent: str) -> list[str]:
        return [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]

    source = _replace_regions(source, BEGIN, END, solution_stub)
    source = _replace_regions(source, BEGIN_HIDDEN, END_HIDDEN, lambda _indent: [])
    return source.rstrip("\n")


def _instructor_source(source: str) -> str:
    for begin, end in ((BEGIN, END), (BEGIN_HIDDEN, END_HIDDEN)):
        _regions(source, begin, end)  # validate
    markers = (BEGIN, END, BEGIN_HIDDEN, END_HIDDEN)
    lines = [line for line in source.split("\n") if not line.strip().startswith(markers)]
    return "\n".join(lines)


def _source_source(source: str) -> str:
    for begin, end in ((BEGIN, END), (BEGIN_HIDDEN, END_HIDDEN)):
        _regions(source, begin, end)  # validate: nbgrader would leak a nested region too
    return source


_DOC_ROLE = re.compile(r"\{doc\}`(?:(?P<text>[^<`]+?)\s*<(?P<target>[^>`]+)>|(?P<bare>[^`]+))`")
_LOCAL_LINK = re.compile(r"\[(?P<text>[^\]]+)\]\((?P<target>(?!https?:|mailto:|#)[^)\s]+)\)")


def _plain_markdown(text: str) -> str:
    """MyST-only markup as plain Markdown: ``{doc}`x``` and links to other pages of the book
    (which do not exist next to an exported notebook) become their text in italics."""
    text = _DOC_ROLE.sub(
        lambda m: f"*{m.group('text') or Path(m.group('bare')).name.replace('_', ' ')}*", text
    )
    return _LOCAL_LINK.sub(lambda m: f"*{m.group('text')}*", text)


def _transform(nb, version: str):
    """The ``version`` ("source", "student" or "instructor") of a lab notebook, in place."""
    code = {"source": _source_source, "student": student_source,
            "instructor": _instructor_source}[version]  # fmt: skip
    cells = []
    for index, cell in enumerate(nb.cells):
        tags = cell.metadata.get("tags", [])
        if WEBSITE_ONLY in tags:
            continue
        if cell.cell_type == "markdown":
            cell.source = _plain_markdown(cell.source)
        elif cell.cell_type == "code":
            try:
                cell.source = code(cell.source)
            except ValueError as err:
                raise ValueError(f"cell {index}: {err}") from None
            if version != "instructor":
                cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)  # timestamps of the last run
        cell.metadata["tags"] = [t for t in tags if t != "hide-input"]
        if not cell.metadata["tags"]:
            del cell.metadata["tags"]
        cells.append(cell)
    nb.cells = cells
    return nb


def without_solutions(notebook_json: str) -> str:
    """A lab notebook (as JSON text) with solutions and hidden tests removed and every code
    output cleared, everything else as it is: what the website shows when it is built with
    ``MINICOMPRESS_LABS_WITHOUT_SOLUTIONS=1`` (see the teaching guide)."""
    import nbformat

    nb = nbformat.reads(notebook_json, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = student_source(cell.source)
            cell.outputs, cell.execution_count = [], None
    return nbformat.writes(nb)


def export(source_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write, for every lab notebook ``<lab>.ipynb`` in ``source_dir``:
    ``out_dir/source/<lab>/<lab>.ipynb`` (an nbgrader source folder), ``out_dir/student/``
    and ``out_dir/instructor/``; return the paths written.

    Raises ValueError, naming the notebook and cell, for nested or unbalanced markers.
    """
    import nbformat

    source_dir, out_dir = Path(source_dir), Path(out_dir)
    notebooks = sorted(source_dir.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no lab notebooks (*.ipynb) in {source_dir}")
    # transform everything before writing anything: a bad notebook leaves no partial export
    results = []
    for path in notebooks:
        for version in ("source", "student", "instructor"):
            try:
                nb = _transform(nbformat.read(path, as_version=4), version)
            except ValueError as err:
                raise ValueError(f"{path.name}: {err}") from None
            sub = Path(version, path.stem) if version == "source" else Path(version)
            results.append((out_dir / sub / path.name, nb))
    for target, nb in results:
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
    return [target for target, _ in results]
