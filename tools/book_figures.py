"""Put notebooks in the book's figure style (minicompress/plotting.py); prints what it changed.

    python tools/book_figures.py book/*.ipynb

In code cells:

- ``plt.rcParams["figure.dpi"] = 80`` (any number) becomes ``mc.plotting.book_style()``;
- ``figsize=(w, h)`` becomes ``figsize=(7, 7·h/w)``: every figure as wide as the column,
  with its aspect ratio kept (heights rounded to 0.1 in).

Only the sources change: re-execute the notebooks afterwards (their figure outputs and the
``<Figure size WxH ...>`` text that nbval compares change). Run it again: it changes nothing.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

WIDTH = 7  # minicompress.plotting.FIGURE_WIDTH_IN
NUMBER = r"\d+(?:\.\d*)?"
FIGSIZE = re.compile(rf"figsize=\(\s*({NUMBER})\s*,\s*({NUMBER})\s*\)")
DPI_LINE = re.compile(r"^(\s*)plt\.rcParams\[[\"']figure\.dpi[\"']\]\s*=\s*\d+\s*$", re.M)
STYLE_CALL = "mc.plotting.book_style()"


def _figsize(match: re.Match) -> str:
    w, h = float(match[1]), float(match[2])
    if w == WIDTH:
        return match[0]
    height = round(h * WIDTH / w, 1)
    return f"figsize=({WIDTH}, {height:g})"


def restyle(source: str) -> str:
    """One code cell's source in the book's figure style."""
    source = DPI_LINE.sub(lambda m: m[1] + STYLE_CALL, source)
    return FIGSIZE.sub(_figsize, source)


def restyle_notebook(path: Path) -> list[str]:
    """Rewrite ``path`` in place; return one line per changed cell."""
    import nbformat

    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    changes = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        new = restyle(cell.source)
        if new != cell.source:
            # both rewrites keep the number of lines, so lines pair up
            pairs = zip(cell.source.split("\n"), new.split("\n"), strict=True)
            changes += [
                f"{path} cell {i}: {a.strip()}  ->  {b.strip()}" for a, b in pairs if a != b
            ]
            cell.source = new
    if changes:
        nbformat.write(nb, path)
    if STYLE_CALL not in "".join(c.source for c in nb.cells if c.cell_type == "code"):
        uses_plt = any("plt." in c.source for c in nb.cells if c.cell_type == "code")
        if uses_plt:
            changes.append(f"{path}: WARNING draws figures but never calls {STYLE_CALL}")
    return changes


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    for name in argv:
        for line in restyle_notebook(Path(name)):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
