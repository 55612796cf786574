"""environment.yml (conda, Binder) must install what pyproject.toml + constraints.txt install."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def split(requirement: str) -> tuple[str, str]:
    """("Jupyter_Book", ">=1.0,<2") from "Jupyter_Book>=1.0,<2", with the name normalised."""
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    return re.sub(r"[-_.]+", "-", name).lower(), spec.replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"]
    return dict(split(r) for r in lines)


def constraints() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return dict(split(line) for line in lines if line.strip() and not line.startswith("#"))


def environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return dict(split(r) for r in pip if not r.startswith("-e"))


def test_environment_lists_every_dependency_and_nothing_else():
    assert set(environment_requirements()) == set(pyproject_requirements())


def test_environment_versions_match_pyproject_or_the_pinned_constraints():
    pins = constraints()
    for name, spec in environment_requirements().items():
        expected = pins.get(name, pyproject_requirements()[name])
        assert spec == expected, f"{name}: environment.yml says {spec!r}, expected {expected!r}"


def test_environment_installs_the_package_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-e ." in pip


def notebook_imports() -> set[str]:
    """Top-level modules imported by any code cell of any notebook in book/."""
    import ast

    import nbformat

    modules = set()
    for path in (ROOT / "book").rglob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            source = "\n".join(
                line
                for line in cell.source.splitlines()
                if not line.lstrip().startswith(("%", "!"))
            )
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    modules.add(node.module.split(".")[0])
    return modules


def test_environment_names_every_package_the_notebooks_import():
    import sys
    from importlib.metadata import packages_distributions

    provided_by = packages_distributions()
    listed = set(environment_requirements())
    modules = notebook_imports() - set(sys.stdlib_module_names) - {"minicompress"}
    assert {"torch", "matplotlib"} <= modules  # the scan found the notebooks' imports
    for module in sorted(modules):
        dists = {split(d)[0] for d in provided_by.get(module, [])}
        assert dists & listed, (
            f"notebooks import {module!r} but environment.yml lists none of {dists}"
        )
