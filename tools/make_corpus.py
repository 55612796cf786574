"""Write the text corpus of `minicompress.text` (run once; the output is shipped, not rebuilt).

Usage: ``python tools/make_corpus.py /path/to/python3.11/lib/python3.11 > corpus.txt`` then
``xz -9``. Every docstring of ≥ 40 characters of the standard library's modules, classes and
functions, in sorted file order and `ast.walk` order, cleaned by ``inspect.cleandoc``, kept to
newline and printable ASCII, separated by blank lines. We ran it on CPython 3.11.7.
"""

import ast
import pathlib
import sys

SKIP = ("test", "idlelib", "lib2to3", "site-packages", "tkinter", "turtledemo", "ensurepip",
        "pydoc_data", "encodings", "__phello__", "config-")  # fmt: skip
NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def docstrings(root: pathlib.Path) -> list[str]:
    """The cleaned docstrings of every module under ``root``."""
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(SKIP) for part in rel.split("/")):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            doc = ast.get_docstring(node, clean=True) if isinstance(node, NODES) else None
            if doc and len(doc) >= 40:
                doc = "".join(c for c in doc if c == "\n" or 32 <= ord(c) < 127)
                docs.append(doc.strip() + "\n")
    return docs


if __name__ == "__main__":
    sys.stdout.write("\n".join(docstrings(pathlib.Path(sys.argv[1]))))
