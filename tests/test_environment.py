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
