"""Regenerate the website's CJK webfont: the Chinese characters the book uses, and no others.

Every chapter title and glossary entry carries its Chinese term (量化, 剪枝, ...). A reader's
machine may have no CJK font, so the site ships the glyphs it needs as a subset of Noto Sans
CJK SC (SIL Open Font License 1.1), served from the site itself and used as a fallback in
``tools/site_static/minicompress.css``. Run this when the book gains a character (the unit
test ``tests/test_site_font.py`` fails until you do)::

    sudo apt-get install fonts-noto-cjk     # the source font (Debian/Ubuntu)
    python tools/cjk_font.py                # rewrites tools/site_static/fonts/

It needs fontTools (installed with matplotlib). The font is written as WOFF (zlib), which
fontTools reads and writes with no extra dependency; WOFF2 would need ``brotli``.

The subset is a Modified Version under the OFL, so it carries its own family name: the
upstream font reserves the name "Source", and "Noto" is a trademark.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FONT_DIR = ROOT / "tools" / "site_static" / "fonts"
FONT = FONT_DIR / "minicompress-cjk.woff"
FAMILY = "minicompress CJK"
SOURCE = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
SOURCE_FAMILY = "Noto Sans CJK SC"

# Ranges a Latin font lacks and the book uses: CJK punctuation (、。「」), ideographs
# (main block, extension A, compatibility) and full-width forms (（）：，).
CJK_RANGES = (
    (0x3000, 0x303F),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0xFF00, 0xFFEF),
)


def is_cjk(char: str) -> bool:
    """Whether ``char`` lies in one of ``CJK_RANGES``."""
    return any(lo <= ord(char) <= hi for lo, hi in CJK_RANGES)


def book_sources(root: Path = ROOT) -> list[Path]:
    """Every file the website is built from that can carry text: pages, notebooks, config."""
    pages = sorted(p for p in (root / "book").rglob("*") if p.suffix in {".md", ".ipynb"})
    pages = [p for p in pages if ".ipynb_checkpoints" not in p.parts]
    return pages + [root / "_toc.yml", root / "_config.yml"]


def book_cjk_chars(root: Path = ROOT) -> set[str]:
    """The CJK characters used anywhere in the book's sources (text, code and outputs)."""
    chars: set[str] = set()
    for path in book_sources(root):
        # json.load would decode \\uXXXX escapes too, but notebooks store CJK as UTF-8
        # (nbformat writes ensure_ascii=False); decode escapes anyway to be safe.
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb" and "\\u" in text:
            import json

            text = json.dumps(json.loads(text), ensure_ascii=False)
        chars.update(c for c in text if is_cjk(c))
    return chars


def font_chars(font_path: Path = FONT) -> set[str]:
    """The characters the font has a glyph for (its Unicode cmap)."""
    from fontTools.ttLib import TTFont

    with TTFont(font_path) as font:
        return {chr(code) for code in font.getBestCmap()}


def _source_font(path: Path):
    from fontTools.ttLib import TTCollection, TTFont

    if path.suffix.lower() in {".ttc", ".otc"}:
        for font in TTCollection(path).fonts:
            if font["name"].getDebugName(1) == SOURCE_FAMILY:
                return font
        raise ValueError(f"{path} has no face named {SOURCE_FAMILY!r}")
    return TTFont(path)


def _rename(font) -> None:
    """Give the subset its own names (OFL condition 3), keeping copyright and license."""
    names = font["name"]
    keep = {0, 7, 13, 14}  # copyright, trademark, license, license URL
    names.names = [n for n in names.names if n.nameID in keep]
    for name_id, value in {
        1: FAMILY,
        2: "Regular",
        3: f"{FAMILY} Regular; subset of {SOURCE_FAMILY} for the minicompress website",
        4: f"{FAMILY} Regular",
        6: FAMILY.replace(" ", "") + "-Regular",
    }.items():
        names.setName(value, name_id, 3, 1, 0x409)
        names.setName(value, name_id, 1, 0, 0)
    if "CFF " in font:  # the PostScript name inside CFF must match name ID 6
        cff = font["CFF "].cff
        cff.fontNames = [FAMILY.replace(" ", "") + "-Regular"]


def build(source: Path = SOURCE, out: Path = FONT, root: Path = ROOT) -> set[str]:
    """Subset ``source`` to the book's CJK characters and write it to ``out`` as WOFF."""
    from fontTools import subset

    chars = book_cjk_chars(root)
    if not chars:
        raise ValueError(f"no CJK characters found under {root / 'book'}")
    font = _source_font(source)
    missing = {c for c in chars if ord(c) not in font.getBestCmap()}
    if missing:
        raise ValueError(f"{source} has no glyph for {''.join(sorted(missing))}")
    options = subset.Options()
    options.flavor = "woff"
    options.layout_features = ["kern", "palt", "vert"]  # no CJK shaping needed beyond these
    options.hinting = False  # screens render CJK unhinted; hints are half the CFF bytes
    options.desubroutinize = True  # compresses better once the subset is small
    options.name_IDs = ["*"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=[ord(c) for c in chars])
    subsetter.subset(font)
    _rename(font)
    out.parent.mkdir(parents=True, exist_ok=True)
    font.flavor = "woff"
    font.recalcTimestamp = False  # same characters, same bytes: no spurious diffs
    font.save(out)
    return chars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help="Noto Sans CJK .ttc/.otf")
    parser.add_argument("--out", type=Path, default=FONT)
    args = parser.parse_args(argv)
    if not args.source.is_file():
        print(
            f"{args.source} not found: install Debian's fonts-noto-cjk, or pass --source "
            "NotoSansCJKsc-Regular.otf (github.com/notofonts/noto-cjk)",
            file=sys.stderr,
        )
        return 1
    chars = build(args.source, args.out)
    print(f"{args.out}: {len(chars)} characters, {args.out.stat().st_size} bytes")
    print("".join(sorted(chars)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
