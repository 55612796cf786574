"""Every `§ "…"` in the package's docstrings names a heading that exists in the book.

A reference matches a heading when, after dropping Markdown/LaTeX markup and case, it is the
heading or its beginning (`§ "Magnitude pruning"` names "Magnitude pruning is the best
k-sparse approximation"). So the docstrings stay readable and still point somewhere real.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r'§ "([^"\n]+)"')
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.M)


def normalise(text: str) -> str:
    text = text.replace("²", "^2").replace("`", "").replace("$", "").replace("\\", "")
    return re.sub(r"\s+", " ", text).strip().lower()


def headings(book: Path) -> set[str]:
    found = set()
    for path in book.rglob("*"):
        if path.suffix == ".ipynb":
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
            texts = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
        elif path.suffix == ".md":
            texts = [path.read_text(encoding="utf-8")]
        else:
            continue
        for text in texts:
            found |= {normalise(h) for h in HEADING.findall(text)}
    return found


def stale_references(package: Path, book: Path) -> list[str]:
    """'file: § "…"' for every reference that names no heading of the book."""
    known = headings(book)
    stale = []
    for path in sorted(package.rglob("*.py")):
        for ref in REFERENCE.findall(path.read_text(encoding="utf-8")):
            if not any(h.startswith(normalise(ref)) for h in known):
                stale.append(f'{path.relative_to(package.parent)}: § "{ref}"')
    return stale


def test_every_section_reference_names_a_heading():
    assert stale_references(ROOT / "minicompress", ROOT / "book") == []


def test_the_check_finds_a_planted_stale_reference(tmp_path):
    book, package = tmp_path / "book", tmp_path / "pkg"
    book.mkdir()
    package.mkdir()
    (book / "ch.md").write_text("# Chapter\n\n## The gradient, and why $T^2$\n")
    (package / "m.py").write_text(
        '"""§ "The gradient, and why T²" is fine; § "Why T squared" is stale."""\n'
    )
    assert stale_references(package, book) == ['pkg/m.py: § "Why T squared"']
