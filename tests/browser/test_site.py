"""Open every page of the built website in headless Chromium with the network blocked.

Checks, per page: it loads with no console errors and no request leaving the machine;
MathJax rendered every equation (no raw TeX left); every image loaded. Across pages: the
navigation reaches every page of the table of contents. Screenshots of a few pages go to
``_build/screenshots/``.

Needs the built site (``make build-book``) and Debian's ``chromium``. Without Chromium the
test skips locally with instructions; in CI (``CI=true``) it fails instead (conftest.py).
What a reader sees (widths, figures, fonts) is checked in test_layout.py.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlparse

import pytest
from layout import ROOT, toc_pages

SHOTS = ROOT / "_build" / "screenshots"


def visit(browser, url: str, screenshot: str | None = None) -> dict:
    """Load ``url`` with off-machine requests blocked; return what the page showed."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors, blocked = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    host = urlparse(url).netloc

    def route(r):
        if urlparse(r.request.url).netloc == host or r.request.url.startswith("data:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(url, wait_until="networkidle")
    n_math = page.locator(".math").count()
    if n_math:  # MathJax typesets asynchronously
        page.wait_for_function(
            "document.querySelectorAll('.math mjx-container').length === "
            "document.querySelectorAll('.math').length",
            timeout=30_000,
        )
    result = {
        "errors": errors,
        "blocked": blocked,
        "math": n_math,
        "rendered": page.locator(".math mjx-container").count(),
        "raw_tex": page.evaluate(
            "Array.from(document.querySelectorAll('.math')).filter("
            "e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 60))"
        ),
        "broken_images": page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
            ".map(i => i.src.slice(0, 80))"
        ),
        "links": page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"),
    }
    if screenshot:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / screenshot), full_page=False)
    page.close()
    return result


@pytest.mark.parametrize("path", toc_pages())
def test_page_renders_offline(browser, site_url, path):
    shot = path.replace("/", "_").replace(".html", ".png")
    seen = visit(browser, urljoin(site_url, path), screenshot=shot)
    assert not seen["errors"], f"console errors on {path}: {seen['errors'][:5]}"
    assert not seen["blocked"], f"{path} tried to load from the network: {seen['blocked'][:5]}"
    assert not seen["raw_tex"], f"unrendered math on {path}: {seen['raw_tex'][:3]}"
    assert seen["rendered"] == seen["math"]
    assert not seen["broken_images"], f"images that did not load on {path}: {seen['broken_images']}"


def test_navigation_reaches_every_page(browser, site_url):
    wanted = {urljoin(site_url, p) for p in toc_pages()}
    seen, queue = set(), [urljoin(site_url, "index.html")]
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        for link in visit(browser, url)["links"]:
            target = link.split("#")[0]
            if target.startswith(site_url) and target.endswith(".html") and target in wanted:
                queue.append(target)
    assert wanted <= seen, f"not reachable from the landing page: {sorted(wanted - seen)}"


def test_chapters_have_equations_that_render(browser, site_url):
    seen = visit(browser, urljoin(site_url, "book/pruning.html"))
    assert seen["math"] > 10 and seen["rendered"] == seen["math"]
