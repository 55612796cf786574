"""Copy MathJax 3 from the installed `django-static-mathjax` package into `_offline_static/`.

The book serves MathJax from its own `_static/mathjax/` (see `mathjax_path` in
`_config.yml`), so the website renders equations with no network, e.g. in a classroom
behind a firewall. The files come from PyPI with the rest of the setup; nothing is fetched
at build time. `_offline_static/` is generated and git-ignored. (Not `_static/`: Jupyter
Book would add every .js file found there to every page.)
"""

from __future__ import annotations

import shutil
import sys
from importlib.util import find_spec
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "_offline_static" / "mathjax"


def main() -> int:
    spec = find_spec("mathjax")
    if spec is None or spec.origin is None:
        print("MathJax not installed: pip install django-static-mathjax", file=sys.stderr)
        return 1
    source = Path(spec.origin).parent / "static" / "mathjax" / "es5"
    if not (source / "tex-mml-chtml.js").is_file():
        print(f"{source} has no tex-mml-chtml.js: unexpected package layout", file=sys.stderr)
        return 1
    if TARGET.exists():
        shutil.rmtree(TARGET)
    shutil.copytree(source, TARGET, ignore=shutil.ignore_patterns("sre", "*-full*", "*speech*"))
    print(f"MathJax copied to {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
