import os

import numpy as np
import pytest

import parity


@pytest.fixture
def make_trace(tmp_path):
    """make_trace(name, {key: value, ...}, **record_kwargs) -> path of a recorded trace."""

    def _make(name, stages, **kwargs):
        path = os.path.join(tmp_path, name)
        with parity.record(path, **kwargs):
            for key, value in stages.items():
                parity.tap(key, value)
        return path

    return _make


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_addoption(parser):
    parser.addoption(
        "--fuzz-long", action="store_true", default=False,
        help="run the fuzz suite (tests/fuzz) with a long budget instead of CI's small one",
    )


def pytest_configure(config):
    # tests/fuzz/harness.py reads this to size each hypothesis run.
    os.environ["PARITY_FUZZ_LONG"] = "1" if config.getoption("--fuzz-long") else os.environ.get("PARITY_FUZZ_LONG", "0")
