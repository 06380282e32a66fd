"""The JSON output validates against the schema shipped in the package, and the schema documents every field."""

import json
import re
from importlib import resources

import numpy as np
import pytest

import parity
from parity.cli import main
from parity.compare import compare_stages as compare_traces  # the per-stage engine: no diagnoses in these reports
from parity.compare.diff import TraceDiff
from parity.errors import UsageError
from parity.report import diff_schema, render_json, validate_diff_document

jsonschema = pytest.importorskip("jsonschema")


def test_schema_is_package_data_and_a_valid_schema():
    path = resources.files("parity.report").joinpath("schema/parity-diff.schema.json")
    assert path.is_file()
    schema = diff_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"]["const"] == 1
    assert "://" not in json.dumps(schema).replace("https://json-schema.org/draft/2020-12/schema", "")


def test_synthetic_diff_with_every_status_validates(synth):
    doc = json.loads(render_json(synth))
    validate_diff_document(doc)
    assert TraceDiff.from_dict(doc).to_dict() == doc


def test_non_finite_numbers_validate_as_strings(tmp_path):
    r, c = str(tmp_path / "r.trace"), str(tmp_path / "c.trace")
    for path, v in ((r, [0.0, 1.0, np.inf, np.nan]), (c, [1.0, 1.0, 5.0, 2.0])):
        with parity.record(path):
            parity.tap("x", np.array(v))
            parity.tap("ints", np.arange(3))
            parity.tap("label", "ok")
    text = render_json(compare_traces(r, c))
    assert not re.search(r"[:\[,]\s*(NaN|-?Infinity)\b", text)  # JSON proper: no bare NaN / Infinity
    doc = json.loads(text)
    validate_diff_document(doc)
    m = doc["stages"][0]["metrics"]
    assert m["max_abs_err"] == "nan" and doc["stages"][1]["metrics"]["max_ulp"] is None


@pytest.mark.parametrize("path, value, fragment", [
    (("schema_version",), 2, "schema_version"),
    (("stages", 0, "status"), "maybe", "stages/0/status"),
    (("stages", 1, "metrics", "max_abs_err"), "big", "stages/1/metrics/max_abs_err"),
    (("summary", "fail"), -1, "summary/fail"),
    (("stages", 5, "cand"), {"key": "x"}, "stages/5/cand"),  # a missing stage must have no candidate side
])
def test_broken_documents_are_rejected_with_their_path(synth, path, value, fragment):
    doc = synth.to_dict()
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(UsageError, match=f"does not match the parity.diff schema: {fragment}"):
        validate_diff_document(doc)


def _schema_keys(schema, node, out, where):
    node = _resolve(schema, node)
    for sub in node.get("oneOf", []) + node.get("anyOf", []):
        _schema_keys(schema, sub, out, where)
    for k, v in node.get("properties", {}).items():
        out.add(f"{where}.{k}")
        _schema_keys(schema, v, out, f"{where}.{k}")
    if "items" in node:
        _schema_keys(schema, node["items"], out, f"{where}[]")


def _resolve(schema, node):
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _doc_keys(doc, out, where):
    if isinstance(doc, dict):
        for k, v in doc.items():
            if where.endswith((".evidence", ".extra")):
                continue  # free-form maps
            out.add(f"{where}.{k}")
            _doc_keys(v, out, f"{where}.{k}")
    elif isinstance(doc, list):
        for v in doc:
            _doc_keys(v, out, f"{where}[]")


def test_schema_documents_every_emitted_field(synth, fixed_traces):
    documented, emitted = set(), set()
    _schema_keys(diff_schema(), diff_schema(), documented, "")
    for diff in (synth, compare_traces(*fixed_traces)):
        _doc_keys(diff.to_dict(), emitted, "")
    assert emitted - documented == set(), "fields emitted by TraceDiff.to_dict() but missing from the schema"


def test_cli_json_validates(fixed_traces, capsys):
    assert main(["diff", *fixed_traces, "--json"]) == 1
    validate_diff_document(json.loads(capsys.readouterr().out))
