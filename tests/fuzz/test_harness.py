"""The fuzz harness itself: it must fail on what it is meant to catch."""

import numpy as np
import pytest

from parity.errors import ImportFormatError

from .harness import only_parity_errors


def test_parity_error_is_returned():
    def f():
        raise ImportFormatError("bad", path="x.log")
    err = only_parity_errors(f)
    assert isinstance(err, ImportFormatError) and err.path == "x.log"


def test_success_returns_none():
    assert only_parity_errors(lambda: 1) is None


def test_raw_exception_fails():
    with pytest.raises(AssertionError, match="raw ValueError"):
        only_parity_errors(lambda: int("x"))


def test_time_limit_fails():
    def spin():
        while True:
            pass
    with pytest.raises(AssertionError, match="ran past"):
        only_parity_errors(spin, time_limit=0.2)


def test_memory_limit_fails():
    with pytest.raises(AssertionError, match="MiB at peak"):
        only_parity_errors(lambda: np.ones(8 * 2**20), memory_limit=16 * 2**20)
