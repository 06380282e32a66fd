"""`parity report RESULT.json`: re-render a saved result without the traces, any schema version."""

import json
import shutil

import numpy as np
import pytest

import parity
from parity.cli import main
from parity.report import load_result, render_json

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture
def saved(make_trace, tmp_path):
    ref = make_trace("ref.trace", {"a": np.ones(4), "b": np.arange(8.0).reshape(2, 4)})
    cand = make_trace("cand.trace", {"a": np.ones(4), "b": np.arange(8.0).reshape(2, 4) * 1.01})
    path = tmp_path / "result.json"
    path.write_text(render_json(parity.compare_traces(ref, cand)))
    return path, ref, cand


def older_documents(doc):
    """The same result as older parity releases wrote it (schema version 1 throughout)."""
    v1_initial = json.loads(json.dumps(doc))
    v1_initial.pop("verdict")  # added later, without a schema_version change
    for s in v1_initial["stages"]:
        s.pop("extra", None)
        s.pop("diagnoses", None)
        s.pop("expected_reason", None)
    v1_initial["tool_version"] = "0.0.9"
    return {"1 (current)": doc, "1 (before verdict, diagnoses and extra)": v1_initial}


def test_rerender_without_traces(saved, tmp_path, capsys):
    path, ref, cand = saved
    shutil.rmtree(ref)
    shutil.rmtree(cand)  # the traces are gone: the report still renders
    md, html = tmp_path / "r.md", tmp_path / "r.html"
    assert main(["report", str(path), "--md", str(md), "--html", str(html)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "DIVERGENCE FOUND" in out and "First divergence: b" in out
    text = md.read_text()
    assert text.startswith("# parity diff: DIVERGENCE FOUND") and "## First divergence: `b`" in text
    assert "unavailable" in text and "Worst" not in text  # marked, not faked
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "unavailable" in page and 'class="worst"' not in page


def test_with_traces_shows_values(saved, tmp_path):
    path, _, _ = saved
    md = tmp_path / "r.md"
    assert main(["report", str(path), "--md", str(md), "--with-traces"]) == 1
    assert "Worst" in md.read_text() and "unavailable" not in md.read_text()


def test_every_schema_version_reads(saved, tmp_path, capsys):
    path, _, _ = saved
    doc = json.loads(path.read_text())
    for label, old in older_documents(doc).items():
        p = tmp_path / "old.json"
        p.write_text(json.dumps(old))
        diff = load_result(p)
        assert diff.verdict == "divergence" and diff.first_divergence.key == "b", label
        assert main(["report", str(p), "--json"]) == 1, label
        again = json.loads(capsys.readouterr().out)
        assert again["verdict"] == "divergence" and again["first_divergence"] == "b"
        assert again["stages"][1]["metrics"] == doc["stages"][1]["metrics"], label  # metrics kept exactly


def test_exit_status_follows_the_saved_verdict(make_trace, tmp_path):
    a = make_trace("a.trace", {"x": np.ones(2)})
    p = tmp_path / "ok.json"
    p.write_text(render_json(parity.compare_traces(a, a)))
    assert main(["report", str(p)]) == 0
    b = make_trace("b.trace", {"y": np.ones(2)})
    p.write_text(render_json(parity.compare_traces(a, b)))
    assert main(["report", str(p)]) == 1  # nothing compared is never parity


@pytest.mark.parametrize("content, message", [
    ("not json", "is not JSON"),
    ("[" * 10000, "deeper than"),
    ('{"schema": "other"}', "is not a parity diff result"),
    ('{"schema": "parity.diff", "schema_version": 1}', "missing field 'ref'"),
    ('{"schema": "parity.diff", "schema_version": 99}', "schema version"),
    ('{"schema": "parity.diff", "schema_version": 1, "ref": {"path": "r"}, "cand": {"path": "c"}, "stages": [7]}',
     "damaged"),
])
def test_bad_results_exit_2_naming_the_file(tmp_path, capsys, content, message):
    p = tmp_path / "bad.json"
    p.write_text(content)
    assert main(["report", str(p)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and message in err


def test_invalid_utf8_and_missing_file(tmp_path, capsys):
    p = tmp_path / "bin.json"
    p.write_bytes(b'{"schema": "\xff"}')
    assert main(["report", str(p)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope.json")]) == 2
    assert "no such result file" in capsys.readouterr().err
