"""Shared fixtures: the real Fashion-MNIST test split (required in CI, else skipped if absent)."""

from __future__ import annotations

import os

import pytest

from minicompress.data import DataNotFoundError, fashion_mnist


@pytest.fixture(scope="session")
def test_split():
    """(images, labels) of the Fashion-MNIST test split."""
    try:
        return fashion_mnist("test")
    except DataNotFoundError as err:
        if os.environ.get("CI"):
            raise  # CI installs the data; missing data there is a failure, not a skip
        pytest.skip(f"Fashion-MNIST not installed here: {err}")
