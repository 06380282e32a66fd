"""iter_json (what parity diff --json writes as it goes) is render_json's text, byte for byte."""

import json

import numpy as np
import pytest

import parity
from parity.report.json import _pretty, iter_json, render_json
from parity.results import Diagnosis, StageDiff, TraceDiff
from parity.trace.writer import TraceWriter


def _reference(doc, indent):
    return json.dumps(doc.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)


@pytest.mark.parametrize("indent", [2, None, 0, 4, "\t"])
def test_pieces_join_to_json_dumps(tmp_path, indent):
    with TraceWriter(tmp_path / "r.trace") as r, TraceWriter(tmp_path / "c.trace") as c:
        for i in range(50):
            v = np.linspace(-1, 1, 1 + i % 5).astype(np.float32)
            r.add(f"iter.{i}.x", v)
            c.add(f"iter.{i}.x", v + np.float32(i == 30))
        r.add("inf", np.array([np.inf, 0.0]), units="µm")
        c.add("inf", np.array([np.inf, -0.0]), units="Å")
        r.add("only.ref", "text")
    diff = parity.compare_traces(tmp_path / "r.trace", tmp_path / "c.trace")
    assert "".join(iter_json(diff, indent=indent)) == _reference(diff, indent)
    empty = parity.compare_traces(tmp_path / "r.trace", tmp_path / "c.trace", ignore=["*"])
    assert "".join(iter_json(empty, indent=indent)) == _reference(empty, indent)


def test_values_json_renders_itself_take_the_fallback():
    odd = StageDiff("s", "fail", diagnoses=(Diagnosis("k", "x", {"t": (1, 2), 3: "int key", "f": 1.5}),),
                    extra={"nested": [[{"deep": "\u2028"}]], "big": 10**40})
    diff = TraceDiff("r", "c", (odd, StageDiff("t", "missing")))
    assert render_json(diff) == _reference(diff, 2)
    with pytest.raises(ValueError):  # NaN refused, as json.dumps(allow_nan=False) refuses it
        render_json(TraceDiff("r", "c", (StageDiff("s", "fail", extra={"x": float("nan")}),)))


@pytest.mark.parametrize("obj", [{"a": [1, 2.5, {"b": None, "c": True, "d": False}], "é\n\"": "x", "z": [], "w": {}},
                                 [1e300, -0.0, 5e-324, 10**30, "\x00\x1f"], [], {}, "s", 3])
def test_pretty_is_json_dumps(obj):
    for ind in ("  ", "", "\t"):
        assert _pretty(obj, "\n", ind, 0) == json.dumps(obj, indent=ind, ensure_ascii=False)
