"""A local Sphinx extension (loaded via `local_extensions` in `_config.yml`) that fixes two
console errors of the Jupyter Book 1 theme stack, found by tests/browser/test_site.py,
and one stale-build trap:

- sphinx-thebe and sphinx-togglebutton inline their configuration scripts twice on every
  page, and the second ``const THEBE_JS_URL = ...`` throws "Identifier 'THEBE_JS_URL' has
  already been declared": after the build, drop repeated identical inline scripts;
- pydata-sphinx-theme logs "Got invalid theme mode" when no default mode is configured
  (Jupyter Book sets none): use "auto", the theme's own fallback;
- Sphinx copies the static files (the site's CSS and fonts in tools/site_static) only when
  some page is rebuilt, so an edited stylesheet alone never reached `_build`: when a static
  file is newer than its copy, mark the root page outdated.

It also implements the build flag ``MINICOMPRESS_LABS_WITHOUT_SOLUTIONS=1`` (book/teaching.md):
the lab pages (``book/labs/``) are then rendered from their student version, with no
solutions, hidden tests or outputs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_HIDE_SOLUTIONS = os.environ.get("MINICOMPRESS_LABS_WITHOUT_SOLUTIONS", "") not in ("", "0")

_INLINE_SCRIPT = re.compile(r"^\s*<script>.*</script>\s*$")


def _drop_repeated_inline_scripts(html: str) -> str:
    seen, lines = set(), []
    for line in html.split("\n"):
        if _INLINE_SCRIPT.match(line):
            if line.strip() in seen:
                continue
            seen.add(line.strip())
        lines.append(line)
    return "\n".join(lines)


def _fix_pages(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    for page in Path(app.outdir).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        fixed = _drop_repeated_inline_scripts(text)
        if fixed != text:
            page.write_text(fixed, encoding="utf-8")


def _static_changed(app, env, added, changed, removed) -> list[str]:
    built = Path(app.outdir) / "_static"
    for folder in app.config.html_static_path:
        source = Path(app.confdir) / folder
        for path in source.rglob("*"):
            copy = built / path.relative_to(source)
            if path.is_file() and (
                not copy.is_file() or copy.stat().st_mtime < path.stat().st_mtime
            ):
                return [app.config.root_doc]
    return []


def _default_mode(app, config) -> None:
    config.html_context.setdefault("default_mode", "auto")


def _labs_without_solutions(app, docname: str, source: list[str]) -> None:
    if app.config.minicompress_labs_without_solutions and docname.startswith("book/labs/"):
        from minicompress.labs import without_solutions

        source[0] = without_solutions(source[0])


def setup(app):
    # a config value, so that switching the flag re-reads every page instead of reusing a cache
    app.add_config_value("minicompress_labs_without_solutions", _HIDE_SOLUTIONS, "env")
    app.connect("source-read", _labs_without_solutions)
    app.connect("config-inited", _default_mode)
    app.connect("build-finished", _fix_pages)
    app.connect("env-get-outdated", _static_changed)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
