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
