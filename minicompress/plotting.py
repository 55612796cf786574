"""The book's figure style: every figure fills the website's column, sharp and legible.

The website shows a notebook's PNG at most as wide as its content column, 688 CSS pixels
in a 1280 px window. A figure W = 7 inches wide at 240 dots per inch has 1680 pixels, and
about 1400 once Jupyter crops its empty margins (``bbox_inches="tight"``), so the browser
shrinks it to the column with two image pixels per CSS pixel: sharp on a high-density
screen. Text of s points is s · dpi / 72 image pixels, shown at

    h = s · (dpi / 72) · column / (W · dpi) = s · column / (72 · W)  CSS pixels,

so 12 pt in a 7 in figure is 16.4 px, the body text's 16 px (more once the margins are
cropped). The dpi cancels (it sets
sharpness; the width in inches sets the text's size), so every figure of the book is
7 in wide: ``tools/book_figures.py`` rewrites a notebook's ``figsize=(w, h)`` to
``(7, 7·h/w)``. The API reference page "The book's figure style" shows the settings.
"""

from __future__ import annotations

from typing import Any

COLUMN_PX = 688  # the content column at a 1280 px window (tests/browser measures it)
BODY_TEXT_PX = 16  # the theme's body text
PIXEL_DENSITY = 2  # image pixels per CSS pixel
FIGURE_WIDTH_IN = 7.0
DPI = 240  # 2 x 688 px of column after Jupyter crops the margins
FONT_PT = 12.0


def text_css_px(points: float, width_in: float = FIGURE_WIDTH_IN) -> float:
    """Height in CSS px of ``points``-pt text in a ``width_in``-inch figure shown at the column.

    h = s · column / (72 · W), the figure scaled to ``COLUMN_PX`` whatever its dpi.
    Section: API reference, "The book's figure style".
    """
    if points <= 0 or width_in <= 0:
        raise ValueError(f"points and width_in must be positive, got {points}, {width_in}")
    return points * COLUMN_PX / (72 * width_in)


def book_rc() -> dict[str, Any]:
    """The matplotlib settings of the book's figures (also for ``matplotlib.rc_context``).

    Width W = 7 in at 240 dpi: W · dpi = 1680 px, ≥ 2 · 688 (two image pixels per CSS pixel
    of the column) after the margins are cropped; all text 12 pt or more:
    12 · 688 / (72 · 7) = 16.4 px ≥ the body's 16 px.
    Section: API reference, "The book's figure style".
    """
    return {
        "figure.figsize": (FIGURE_WIDTH_IN, FIGURE_WIDTH_IN / 2),
        "figure.dpi": DPI,
        "savefig.dpi": "figure",
        "font.size": FONT_PT,
        "axes.titlesize": FONT_PT + 1,
        "axes.labelsize": FONT_PT,
        "xtick.labelsize": FONT_PT,
        "ytick.labelsize": FONT_PT,
        "legend.fontsize": FONT_PT,
        "figure.titlesize": FONT_PT + 1,
        "lines.linewidth": 2.0,  # 1.5 px at 100 dpi looks thin once scaled to the column
    }


def book_style() -> None:
    """Set matplotlib's global ``rcParams`` to :func:`book_rc` (each chapter's first cell).

    Changes global state on purpose, as ``plt.style.use`` does: a notebook calls it once.
    Use ``with matplotlib.rc_context(book_rc()):`` for a scoped change.
    Section: API reference, "The book's figure style".
    """
    import matplotlib as mpl

    mpl.rcParams.update(book_rc())
