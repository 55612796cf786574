"""minicompress._validate: the one place argument checks live, and the modules that used to
carry their own copies."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import minicompress
from minicompress import _validate as check


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: check.float_tensor([1.0], "x"), TypeError,
         "x must be a floating-point tensor, got list"),
        (lambda: check.float_tensor(torch.ones(2, dtype=torch.int64), "x"), TypeError,
         "torch.int64"),
        (lambda: check.float_tensor(torch.ones(0), "x"), ValueError, "x is empty"),
        (lambda: check.float_tensor(torch.tensor([math.nan]), "x", why="because"), ValueError,
         "x contains NaN or inf; because"),
        (lambda: check.float_tensor(torch.tensor([math.nan]), "x", inf=True), ValueError,
         "contains NaN"),
        (lambda: check.float_tensor(torch.tensor([math.inf]), "x", nan=True), ValueError,
         "contains inf"),
        (lambda: check.integer(True, "n"), TypeError, "n must be an int, got bool"),
        (lambda: check.integer(0, "n", 1), ValueError, "n must be an int >= 1, got 0"),
        (lambda: check.integer(9, "n", 1, 8), ValueError, r"n must be in 1..8, got 9"),
        (lambda: check.number("1", "t"), TypeError, "t must be a number, got str"),
        (lambda: check.number(math.nan, "t", 0.0, 1.0), ValueError,
         r"t must be in \[0, 1\], got nan"),
        (lambda: check.temperature(0), ValueError, "temperature must be a finite number > 0"),
        (lambda: check.axis(2, 2), ValueError, "axis 2 is out of range"),
        (lambda: check.axis(1.0, 2), TypeError, "axis must be an int or None"),
        (lambda: check.choice("a", "mode", ("b", "c")), ValueError, "mode must be one of 'b', 'c'"),
        (lambda: check.module("m"), TypeError, "model must be a torch.nn.Module, got str"),
        (lambda: check.regular_file("/dev/zero"), ValueError, "not a regular file"),
        (lambda: check.regular_file(3), TypeError, "str or os.PathLike"),
    ],
)  # fmt: skip
def test_messages_name_the_argument_and_the_problem(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_accepted_values_come_back_usable():
    assert check.axis(-1, 3) == 2 and check.axis(None, 3) is None
    assert check.temperature(2) == 2.0 and isinstance(check.temperature(2), float)
    assert check.integer(5, "n", 1, 8) == 5


def test_read_file_reads_what_is_there(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert check.read_file(path) == b"abc"
    with pytest.raises(FileNotFoundError):
        check.read_file(tmp_path / "missing")


def test_no_module_keeps_its_own_copy_of_the_generic_checks():
    package = Path(minicompress.__file__).parent
    for path in package.glob("*.py"):
        source = path.read_text()
        for copy in ("def _describe(", "def _check_float(", "def _check_axis(",
                     "def _check_temperature(", "def _check_alpha("):  # fmt: skip
            assert copy not in source, f"{path.name} defines {copy}"
