"""What a reader sees of the built website: what is wider than the column, images, fonts.

Used by ``test_layout.py`` and runnable on its own, to look at every page::

    python tests/browser/layout.py --screenshots DIR   # PNGs at 1280 and 390 px + a table
    python tests/browser/layout.py                     # only the table of overflows

Both need the built site (``make build-book``) and Debian's ``chromium``. The table gives,
per page at 1280 px, how many code cells, outputs, display equations and tables are wider
than the content column, how many images have under 600 px of natural width, and whether
the page scrolls sideways at 390 px.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import shutil
import sys
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
MIN_IMAGE_PX = 600
CJK_FAMILY = "minicompress CJK"

# Per kind, the article's elements that must fit, each described by a short label: the
# section's heading, the code cell's number on the page (code cells only, from 1), the
# width in px and the first line of text. An element is too wide when its content is
# wider than its box (it scrolls) or its box passes the column's right edge. An output
# block counts once however many of its parts overflow.
OVERFLOW_JS = """() => {
  const art = document.querySelector('article.bd-article');
  if (!art) return null;
  const cs = getComputedStyle(art), box = art.getBoundingClientRect();
  const right = box.right - parseFloat(cs.paddingRight);
  const column = right - box.left - parseFloat(cs.paddingLeft);
  const wide = el => (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1)
                     || el.getBoundingClientRect().right > right + 1;
  const anyWide = el => wide(el) || Array.from(
      el.querySelectorAll('pre, table, img, div, mjx-container[display="true"]')).some(wide);
  const label = el => {
    const cell = el.closest('.cell');
    const n = cell ? Array.from(art.querySelectorAll('.cell')).indexOf(cell) + 1 : 0;
    const section = el.closest('section');
    const heading = section ? section.querySelector('h1, h2, h3, h4') : null;
    const where = heading ? heading.textContent.replace('#', '').trim().slice(0, 40) : '';
    const text = el.matches('div.math') ? '' :
      (el.innerText || el.getAttribute('alt') || '').trim().split('\\n')[0].slice(0, 60);
    const px = Math.round(Math.max(el.getBoundingClientRect().width,
      ...[el, ...el.querySelectorAll('*')].map(e => e.scrollWidth)));
    return `[${where}] ` + (n ? `code cell ${n}: ` : '') + `${px}px ` + JSON.stringify(text);
  };
  const inOutput = el => el.closest('.cell_output') !== null;
  const code = Array.from(art.querySelectorAll('div.highlight pre')).filter(e => !inOutput(e));
  const outputs = Array.from(art.querySelectorAll('.cell_output > *'));
  const equations = Array.from(art.querySelectorAll('div.math'));
  const tables = Array.from(art.querySelectorAll('table')).filter(e => !inOutput(e))
      .map(t => t.closest('.pst-scrollable-table-container') || t);
  const images = Array.from(art.querySelectorAll('img'));
  return {
    column: Math.round(column),
    code: code.filter(wide).map(label),
    code_total: code.length,
    outputs: outputs.filter(anyWide).map(label),
    outputs_total: outputs.length,
    equations: equations.filter(anyWide).map(label),
    equations_total: equations.length,
    tables: tables.filter(anyWide).map(label),
    small_images: images.filter(i => i.naturalWidth < MIN_IMAGE_PX)
      .map(i => `${i.naturalWidth}px ${i.src.split('/').pop()}`),
    images_total: images.length,
  };
}""".replace("MIN_IMAGE_PX", str(MIN_IMAGE_PX))

PAGE_SCROLL_JS = """() => {
  const edge = document.documentElement.clientWidth;
  const clipped = e => {  // inside a box that scrolls or clips, so it cannot widen the page
    for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
      if (getComputedStyle(a).overflowX !== 'visible') return true;
    }
    return false;
  };
  return {
    scroll: document.documentElement.scrollWidth, window: edge,
    widest: Array.from(document.querySelectorAll('body *'))
      .filter(e => e.getBoundingClientRect().right > edge + 1 && !clipped(e))
      .slice(0, 5).map(e => e.tagName.toLowerCase() + '.' + e.className.toString().slice(0, 40)
                       + ' ' + JSON.stringify((e.textContent || '').trim().slice(0, 40))),
  };
}"""


def toc_pages() -> list[str]:
    """Every page the table of contents lists, as paths relative to the site root."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries:
            files.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc.get("parts", []):
        walk(part["chapters"])
    return [f"{f}.html" for f in files]


@contextlib.contextmanager
def serve(site: Path = SITE):
    """Serve ``site`` on a free local port; yield its URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def chromium():
    """Headless Chromium (Debian's ``chromium``) through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, url: str, viewport: dict):
    """A page at ``url`` with every request off this machine blocked, fonts and math ready."""
    page = browser.new_page(viewport=viewport)
    host = urlparse(url).netloc
    page.route(
        "**/*",
        lambda r: (
            r.continue_()
            if urlparse(r.request.url).netloc == host or r.request.url.startswith("data:")
            else r.abort()
        ),
    )
    page.goto(url, wait_until="networkidle")
    if page.locator(".math").count():  # MathJax typesets asynchronously
        page.wait_for_function(
            "document.querySelectorAll('.math mjx-container').length === "
            "document.querySelectorAll('.math').length",
            timeout=30_000,
        )
    page.evaluate("document.fonts.ready.then(() => true)")
    return page


def overflows(page) -> dict:
    """What in the article is wider than the column (see ``OVERFLOW_JS``)."""
    return page.evaluate(OVERFLOW_JS)


def page_scroll(page) -> dict:
    """The page's scroll width against the window's, and a few elements past the edge."""
    return page.evaluate(PAGE_SCROLL_JS)


def platform_fonts(page, selector: str) -> list[dict]:
    """The fonts Chromium actually drew the element's own text with (DevTools protocol).

    Each entry has ``familyName``, ``isCustomFont`` (a web font) and ``glyphCount``.
    """
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("DOM.enable")
        cdp.send("CSS.enable")
        root = cdp.send("DOM.getDocument")["root"]["nodeId"]
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        if not node:
            raise LookupError(f"no element matches {selector!r}")
        return cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    finally:
        cdp.detach()


def shot_name(path: str, width: int) -> str:
    return f"{path.replace('/', '_').removesuffix('.html')}-{width}.png"


def report(site: Path = SITE, screenshots: Path | None = None, pages: list[str] | None = None):
    """Print one line per page; save full-page screenshots at both widths if asked."""
    pages = pages or toc_pages()
    if screenshots:
        screenshots.mkdir(parents=True, exist_ok=True)
    header = "page", "code", "outputs", "equations", "tables", "small img", "390 scroll"
    print("{:<38} {:>9} {:>9} {:>9} {:>6} {:>9} {:>10}".format(*header))
    details = []
    with serve(site) as url, chromium() as browser:
        for path in pages:
            page = open_page(browser, urljoin(url, path), DESKTOP)
            o = overflows(page)
            if o is None:
                print(f"{path:<38} not in the built site", flush=True)
                page.close()
                continue
            if screenshots:
                page.screenshot(path=str(screenshots / shot_name(path, 1280)), full_page=True)
            page.close()
            page = open_page(browser, urljoin(url, path), PHONE)
            s = page_scroll(page)
            if screenshots:
                page.screenshot(path=str(screenshots / shot_name(path, 390)), full_page=True)
            page.close()
            if s["scroll"] > s["window"]:
                details.append(f"{path} at 390 px, past the edge: {s['widest']}")
            row = (
                path,
                f"{len(o['code'])}/{o['code_total']}",
                f"{len(o['outputs'])}/{o['outputs_total']}",
                f"{len(o['equations'])}/{o['equations_total']}",
                len(o["tables"]),
                f"{len(o['small_images'])}/{o['images_total']}",
                "yes" if s["scroll"] > s["window"] else "no",
            )
            print("{:<38} {:>9} {:>9} {:>9} {:>6} {:>9} {:>10}".format(*row), flush=True)
            for kind in ("code", "outputs", "equations", "tables", "small_images"):
                details += [f"{path} {kind}: {item}" for item in o[kind]]
    print("\n".join(["", *details]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--screenshots", type=Path, help="folder for the PNGs")
    parser.add_argument("--site", type=Path, default=SITE, help="the built site")
    parser.add_argument("pages", nargs="*", help="e.g. book/pruning.html (default: all)")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"no built site at {args.site}: run `make build-book`", file=sys.stderr)
        return 1
    if CHROMIUM is None:
        print("Chromium not found (Debian/Ubuntu: sudo apt-get install chromium)", file=sys.stderr)
        return 1
    report(args.site, args.screenshots, args.pages or None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
