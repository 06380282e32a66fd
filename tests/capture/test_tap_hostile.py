"""A bad tap() raises at the call, naming the stage; the recording stays complete.

Before: ``tap("x", v, i=float("nan"))`` returned normally, and the recording failed when it was
closed (NaN is not JSON), leaving an incomplete trace that lost every later stage.
"""

import numpy as np
import pytest

import parity
from parity.errors import StageKeyError, UsageError
from parity.trace.keys import make_key


def _record_around(path, bad_call):
    """Record a stage, make one bad call (which must raise), record another, close."""
    with parity.record(path):
        parity.tap("before", np.arange(3.0))
        with pytest.raises((StageKeyError, UsageError)) as e:
            bad_call()
        parity.tap("after", np.ones(2, np.float32))
    trace = parity.load_trace(path)
    assert trace.keys() == ["before", "after"]
    assert trace.complete
    assert trace.verify() == []
    return e.value


@pytest.mark.parametrize("value, expected", [
    (float("nan"), "finite"),
    (float("inf"), "finite"),
    (-float("inf"), "finite"),
    (np.float64("nan"), "finite"),
    (10**20, "20 digits"),
    (-(10**20), "20 digits"),
    pytest.param(10**5000, "20 digits", id="int5000"),
    ("a,b", "may only use"),
    ("a=b", "may only use"),
    ("a]b", "may only use"),
    ("a/b", "may only use"),
    ("", "may only use"),
    (None, "must be an int, float, bool or str"),
    (b"x", "must be an int, float, bool or str"),
    (1j, "must be an int, float, bool or str"),
])
def test_bad_index_raises_at_the_call_and_keeps_the_recording(tmp_path, value, expected):
    err = _record_around(tmp_path / "t.trace", lambda: parity.tap("x", np.ones(2), i=value))
    assert isinstance(err, StageKeyError)
    assert err.stage == "x" and 'stage "x"' in str(err) and '"i"' in str(err) and expected in str(err)


def test_bad_index_inside_a_scope_names_the_full_stage(tmp_path):
    def bad():
        with parity.scope("layers", 3):
            parity.tap("attn", np.ones(2), step=float("nan"))
    err = _record_around(tmp_path / "t.trace", bad)
    assert err.stage == "layers.3.attn"


@pytest.mark.parametrize("name", [123, None, 1.5, b"x", "a b", "../x", "a/b", "x" * 600, "a..b", ""])
def test_bad_names_raise_at_the_call(tmp_path, name):
    err = _record_around(tmp_path / "t.trace", lambda: parity.tap(name, np.ones(2)))
    assert isinstance(err, StageKeyError) and err.stage is not None and "stage" in str(err)


def test_non_string_name_inside_a_scope_is_refused(tmp_path):
    def bad():
        with parity.scope("s"):
            parity.tap(7, np.ones(2))
    assert isinstance(_record_around(tmp_path / "t.trace", bad), StageKeyError)


def test_bad_index_name_raises_at_the_call(tmp_path):
    err = _record_around(tmp_path / "t.trace", lambda: parity.tap("x", np.ones(2), **{"a b": 1}))
    assert isinstance(err, StageKeyError) and err.stage == "x"


@pytest.mark.parametrize("kwargs, value", [
    ({"units": "\ud800"}, np.ones(1)),
    ({"axes": ["a\udcff"]}, np.ones(1)),
    ({"axes": 5}, np.ones(1)),
    ({"axes": "seq"}, np.ones(3)),
    ({}, "text \ud800"),
])
def test_unwritable_text_raises_at_the_call(tmp_path, kwargs, value):
    err = _record_around(tmp_path / "t.trace", lambda: parity.tap("x", value, **kwargs))
    assert isinstance(err, UsageError) and err.stage == "x"


@pytest.mark.parametrize("value, text", [
    (-3, "-3"), (True, "true"), (10**20 - 1, str(10**20 - 1)), (1e308, "1e+308"), (-0.0, "-0.0"),
    (np.int64(4), "4"), (np.float64(1.5), "1.5"), ("a.b:c@d+e-f_g", "a.b:c@d+e-f_g"),
])
def test_good_indices_still_record(tmp_path, value, text):
    path = tmp_path / "t.trace"
    with parity.record(path):
        parity.tap("x", np.ones(2), i=value)
    trace = parity.load_trace(path)
    assert trace.keys() == [f"x[i={text}]"] and trace.complete and trace.verify() == []


def test_make_key_refuses_non_string_index_names_without_type_error():
    with pytest.raises(StageKeyError, match="must be an identifier"):
        make_key("x", {1: 2, "a": 3})  # type: ignore[dict-item]
