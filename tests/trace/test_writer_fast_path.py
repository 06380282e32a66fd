"""The writer's fast manifest encoder gives exactly the bytes of json.dumps(indent=1, sort_keys=True)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity.trace.writer import _dump, _dump_fast

_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
                  st.text(max_size=8))
_json = st.recursive(_leaf, lambda kids: st.one_of(st.lists(kids, max_size=4), st.tuples(kids, kids),
                                                   st.dictionaries(st.text(max_size=6), kids, max_size=4)), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_fast_dump_is_byte_identical(obj):
    assert _dump_fast(obj) == _dump(obj)


def test_fast_dump_of_a_manifest_like_document_and_its_errors():
    stage = {"key": "x[it=3]#2", "kind": "tensor", "dtype": "F64", "shape": [3, 2], "file": "data/000000.safetensors",
             "provenance": {"line": 12, "stream": "stdout"}, "indices": {"it": 3}, "occurrence": 2, "flag": True,
             "axes": [], "text": "é\n\"q\""}
    doc = {"stages": [stage, {"key": "t", "kind": "text", "text": ""}], "meta": {}, "complete": False}
    assert _dump_fast(doc) == _dump(doc)
    for bad in ({"x": float("nan")}, {"x": object()}):
        with pytest.raises((ValueError, TypeError)):
            _dump_fast(bad)
    assert json.loads(_dump_fast(doc)) == json.loads(_dump(doc))
