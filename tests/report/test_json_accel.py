"""The C writer of a stage's JSON text (parity.report._json) gives exactly the text of the Python
one (parity.report.json._pretty), which is exactly json.dumps's, or gives up on the same values."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity.report import json as rj

accel = pytest.importorskip("parity.report._json")

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 5e-324, 1e300, 1e16, 0.1, 1.5e-7]),
    st.text(), st.text(alphabet=st.characters(max_codepoint=0x3f)), st.sampled_from(['"\\\b\f\n\r\t\x00\x1f\x7f', "é😀\u2028"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                      max_leaves=30)


def _python(obj, pad, ind):
    try:
        return rj._pretty(obj, pad, ind, 0)
    except rj._Unusual:
        return None


@settings(max_examples=600, deadline=None)
@given(values, st.sampled_from(["\n", "\n    ", "\n\t"]), st.sampled_from(["  ", " ", "\t", "ab"]))
def test_c_and_python_write_the_same_text(obj, pad, ind):
    got, want = accel.pretty(obj, pad, ind), _python(obj, pad, ind)
    assert got == want
    if want is not None and pad == "\n":
        assert want == json.dumps(obj, indent=ind, allow_nan=False, ensure_ascii=False)


class Str(str):
    pass


class Int(int):
    pass


@pytest.mark.parametrize("obj", [{"a": Str("x")}, {"a": Int(3)}, {1: "x"}, [math.nan], {"a": [math.inf]},
                                 {"a": (1, 2)}, {"a": {"b": float("-inf")}}])
def test_what_only_json_renders_is_left_to_it(obj):
    assert accel.pretty(obj, "\n", "  ") is None and _python(obj, "\n", "  ") is None


def test_nesting_beyond_the_limit_is_left_to_json():
    deep = ok = 1
    for _ in range(66):
        deep = [deep]
    for _ in range(65):
        ok = [ok]
    assert accel.pretty(deep, "\n", " ") is None and _python(deep, "\n", " ") is None
    assert accel.pretty(ok, "\n", " ") == _python(ok, "\n", " ") == json.dumps(ok, indent=" ")


def test_the_json_report_is_the_same_with_and_without_the_accelerator(tmp_path, monkeypatch):
    import numpy as np

    import parity
    from parity.report.json import render_json

    r, c = tmp_path / "r.trace", tmp_path / "c.trace"
    for path, bump in ((r, 0.0), (c, 1.0)):
        with parity.record(path):
            parity.tap("x", np.array([1.0, 2.0 + bump])), parity.tap("note", "línea\n2" if bump else "línea")
            parity.tap("nan", np.array([np.nan, 1.0 + bump])), parity.tap("inf", np.array([np.inf, 1.0]) * (1 + bump))
    d = parity.compare_traces(r, c)
    fast = render_json(d)
    monkeypatch.setattr(rj, "_accel", None)
    assert render_json(d) == fast == json.dumps(d.to_dict(), indent=2, allow_nan=False, ensure_ascii=False)
