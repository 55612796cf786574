"""Fixtures of the website tests: the built site on a local port, headless Chromium."""

from __future__ import annotations

import os

import pytest
from layout import CHROMIUM, SITE, chromium, serve


def _require(condition: bool, message: str) -> None:
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def site_url():
    _require((SITE / "index.html").is_file(), f"no built site at {SITE}: run `make build-book`")
    with serve(SITE) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    _require(
        CHROMIUM is not None,
        "Chromium not found: install it (Debian/Ubuntu: sudo apt-get install chromium) "
        "to run the website test",
    )
    with chromium() as b:
        yield b
