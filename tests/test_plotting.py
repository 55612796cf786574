"""The book's figure style (minicompress.plotting) and tools/book_figures.py."""

from __future__ import annotations

import io

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _tools import load_tool  # noqa: E402

from minicompress import plotting  # noqa: E402

book_figures = load_tool("book_figures")


def test_a_figure_is_twice_the_column_in_pixels():
    rc = plotting.book_rc()
    width_in = rc["figure.figsize"][0]
    assert width_in * rc["figure.dpi"] >= plotting.PIXEL_DENSITY * plotting.COLUMN_PX


def test_every_text_is_at_least_the_body_size_on_screen():
    rc = plotting.book_rc()
    width_in = rc["figure.figsize"][0]
    for key in ("font.size", "axes.labelsize", "xtick.labelsize", "ytick.labelsize"):
        assert plotting.text_css_px(rc[key], width_in) >= plotting.BODY_TEXT_PX, key
    # the formula: 12 pt in a 7 in figure scaled to 688 px is 12 * 688 / 504 px
    assert plotting.text_css_px(12, 7) == pytest.approx(16.381, abs=1e-3)


def test_text_css_px_rejects_nonpositive_sizes():
    with pytest.raises(ValueError, match="positive"):
        plotting.text_css_px(0)
    with pytest.raises(ValueError, match="positive"):
        plotting.text_css_px(12, width_in=-1)


def test_a_drawn_figure_has_the_pixels_and_book_style_sets_them():
    before = dict(matplotlib.rcParams)
    with matplotlib.rc_context():  # book_style changes global state: keep it in here
        plotting.book_style()
        assert matplotlib.rcParams["figure.dpi"] == plotting.DPI
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")  # as Jupyter's inline backend
        plt.close(fig)
    width = int.from_bytes(buf.getvalue()[16:20], "big")  # PNG header: IHDR width
    assert width >= plotting.PIXEL_DENSITY * plotting.COLUMN_PX
    assert dict(matplotlib.rcParams) == before


def test_the_rewrite_gives_one_style_call_and_column_wide_figures():
    source = (
        'torch.manual_seed(0)\nplt.rcParams["figure.dpi"] = 80\n'
        "fig, ax = plt.subplots(figsize=(5, 2.5))\n"
        "fig, axes = plt.subplots(1, 10, figsize=(10, 1.4))"
    )
    new = book_figures.restyle(source)
    assert new == (
        "torch.manual_seed(0)\nmc.plotting.book_style()\n"
        "fig, ax = plt.subplots(figsize=(7, 3.5))\n"
        "fig, axes = plt.subplots(1, 10, figsize=(7, 1))"
    )
    assert book_figures.restyle(new) == new  # a second run changes nothing
    assert book_figures.WIDTH == plotting.FIGURE_WIDTH_IN
