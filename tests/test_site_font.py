"""The website's CJK webfont (tools/cjk_font.py) covers every CJK character the book uses."""

from __future__ import annotations

import pytest
from _tools import ROOT, load_tool

cjk_font = load_tool("cjk_font")


def test_the_book_uses_chinese_terms():
    chars = cjk_font.book_cjk_chars()
    assert {"量", "化", "剪", "枝"} <= chars
    assert all(cjk_font.is_cjk(c) for c in chars)
    assert not cjk_font.is_cjk("a") and not cjk_font.is_cjk("×")


def test_the_font_has_every_cjk_character_the_book_uses():
    missing = cjk_font.book_cjk_chars() - cjk_font.font_chars()
    assert not missing, (
        f"the website's CJK font lacks {''.join(sorted(missing))}: "
        "run `python tools/cjk_font.py` (needs Debian's fonts-noto-cjk) and commit the font"
    )


def test_the_font_is_a_small_renamed_subset_with_its_license():
    from fontTools.ttLib import TTFont

    assert cjk_font.FONT.stat().st_size < 100_000  # tens of KB, not the 20 MB original
    assert len(cjk_font.font_chars()) < 500
    with TTFont(cjk_font.FONT) as font:
        names = {font["name"].getDebugName(i) for i in (1, 4, 6)}
    # OFL: a Modified Version may not use the Reserved Font Name ("Source")
    assert cjk_font.FAMILY in names and not any("Source" in n for n in names)
    assert "SIL OPEN FONT LICENSE Version 1.1" in (cjk_font.FONT_DIR / "OFL.txt").read_text()


def test_the_sites_css_uses_the_font_as_a_fallback():
    css = (ROOT / "tools" / "site_static" / "minicompress.css").read_text()
    assert f'font-family: "{cjk_font.FAMILY}"' in css
    assert f'url("fonts/{cjk_font.FONT.name}")' in css
    base = css.split("--pst-font-family-base:")[1].split(";")[0]
    assert base.index(cjk_font.FAMILY) < base.index("sans-serif")


def test_a_missing_source_font_is_reported(tmp_path, capsys):
    assert cjk_font.main(["--source", str(tmp_path / "none.ttc")]) == 1
    assert "fonts-noto-cjk" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["剪枝（pruning）", "「量化」、"])
def test_scanning_finds_ideographs_and_full_width_punctuation(tmp_path, text):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "page.md").write_text(f"# Title {text}\n", encoding="utf-8")
    for name in ("_toc.yml", "_config.yml"):
        (tmp_path / name).write_text("title: x\n")
    assert cjk_font.book_cjk_chars(tmp_path) == {c for c in text if not c.isascii()}
