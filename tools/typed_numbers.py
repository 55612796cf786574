"""Find measured figures typed by hand in the book's prose.

Every measured number in a chapter's Markdown must come from code through MyST-NB's
`{glue:text}` role, so that the sentence changes when the result does. A paper's
number may be typed, but then the paragraph carries a citation (`{cite:p}`...).

The rule: in a Markdown cell, a number followed by a unit that measurements come in
(%, pp, percentage points, × (not a×b), x, times, B, KB, KiB, MB, MiB, bytes, ms, µs, s,
seconds, minutes) is
flagged, unless it is

- inside inline code, math (`$...$`), or a MyST role such as `{glue:text}`;
- in a paragraph that cites a paper (`{cite}`, `{cite:p}`, `{cite:t}`);
- in a paragraph preceded by a MyST comment line `% typed: <why>` (say why: a
  definition such as "float32 is 32 bits", a hardware datasheet figure, ...).

Usage: ``python tools/typed_numbers.py [NOTEBOOK ...]`` (default: the chapters,
book/*.ipynb). Prints each hit with its cell and exits 1 if there is any.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

UNITS = (
    r"(?:%|pp\b|percentage points\b|×(?!\s?\d)|x\b|times\b"
    r"|KiB\b|MiB\b|GiB\b|KB\b|kB\b|MB\b|GB\b|B\b|bytes\b"
    r"|ms\b|µs\b|us\b|s\b|seconds\b|minutes\b)"
)
# A figure: 12, 12.5, 1,234, 0.96; optionally signed; unit after an optional space.
FIGURE = re.compile(r"(?<![\w.$/^_-])[+−-]?\d[\d,]*(?:\.\d+)?\s?" + UNITS)
CITATION = re.compile(r"\{cite(?::[a-z]+)?\}`")
ESCAPE = re.compile(r"^%\s*typed:\s*\S", re.MULTILINE)
# Removed before matching: fenced code, inline code, display and inline math, roles.
STRIP = [
    re.compile(r"```.*?```", re.DOTALL),
    re.compile(r"\$\$.*?\$\$", re.DOTALL),
    re.compile(r"\{[\w:.-]+\}`[^`]*`"),
    re.compile(r"`[^`]*`"),
    re.compile(r"\$[^$\n]+\$"),
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"^\(.*\)=\s*$", re.MULTILINE),  # MyST labels
]


def paragraphs(markdown: str) -> list[str]:
    """Split a Markdown cell into paragraphs (blank-line separated, comments kept)."""
    return [p for p in re.split(r"\n\s*\n", markdown) if p.strip()]


def typed_figures(paragraph: str) -> list[str]:
    """Return the hand-typed measured figures in one paragraph (empty if exempt)."""
    if CITATION.search(paragraph) or ESCAPE.search(paragraph):
        return []
    text = paragraph
    for pattern in STRIP:
        text = pattern.sub(" ", text)
    return [m.group(0) for m in FIGURE.finditer(text)]


def check_notebook(path: Path) -> list[str]:
    """Return one line per hand-typed figure in the notebook's Markdown cells."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    hits = []
    for index, cell in enumerate(cells):
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"])
        # A `% typed:` line exempts the paragraph after it: join them first.
        source = re.sub(r"^(%\s*typed:.*)\n\s*\n", r"\1\n", source, flags=re.MULTILINE)
        for para in paragraphs(source):
            for figure in typed_figures(para):
                first = para.strip().splitlines()[0][:70]
                hits.append(f"{path}: cell {index}: {figure!r} in «{first}…»")
    return hits


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    paths = [Path(a) for a in argv] or sorted((root / "book").glob("*.ipynb"))
    hits = [hit for path in paths for hit in check_notebook(path)]
    for hit in hits:
        print(hit)
    if hits:
        print(
            f"\n{len(hits)} measured figure(s) typed by hand: glue them from code "
            "({glue:text}`name:.2f`), cite the paper in the paragraph, or put a "
            "`% typed: <why>` line before a paragraph whose number is not measured."
        )
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
