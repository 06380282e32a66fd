"""The contract schema: strict loading with file, line and column for every problem."""

import json
import os

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity.contracts import ContractError, dump_yaml, load_contract, load_contracts, schema
from parity.contracts._yaml import parse_yaml
from parity.contracts.aprender import from_aprender

from contract_fixtures import write

GOOD = """\
parity_contract: 1
id: scaler
version: "1.2"
equations:
  - id: scale
    formula: "y = k x"
claims:
  - id: scale-doubles
    statement: scale multiplies by k
    status: algorithm
    binds_to: [scale]
    evidence:
      code: [src/scaler/ops.py::scale]
      tests:
        pytest: [tests/test_ops.py::test_scale]
      parity:
        - ref: traces/ref.trace
          cand: traces/cand.trace
          rtol: 1e-4
          atol: 1e-6
"""


def _problems(tmp_path, text, name="c.yaml"):
    path = write(str(tmp_path), name, text)
    with pytest.raises(ContractError) as e:
        load_contract(path)
    return path, e.value


def test_good_contract_loads_with_yaml12_numbers(tmp_path):
    c = load_contract(write(str(tmp_path), "c.yaml", GOOD))
    p = c.claims[0].evidence.parity[0]
    assert (c.id, c.version, p.rtol, p.atol) == ("scaler", "1.2", 1e-4, 1e-6)
    assert c.claims[0].line == 8 and c.claims[0].evidence.code[0].symbols == ("scale",)


def test_misspelled_key_fails_with_its_line_and_column(tmp_path):
    path, e = _problems(tmp_path, GOOD.replace("    statement: scale", "    statment: scale"))
    msgs = [str(p) for p in e.problems]
    assert f"{path}:9:5: unknown key 'statment' in a claim; did you mean 'statement'?" in msgs
    assert (e.path, e.line, e.column) == (path, 9, 5)
    assert any("needs the key 'statement'" in m for m in msgs)


def test_misspelled_evidence_key_is_named_in_its_context(tmp_path):
    _, e = _problems(tmp_path, GOOD.replace("      tests:", "      test:"))
    assert "14:7: unknown key 'test' in evidence; did you mean 'tests'?" in str(e)


def test_duplicate_key_fails_naming_both_lines(tmp_path):
    path, e = _problems(tmp_path, GOOD.replace("    status: algorithm\n", "    status: algorithm\n    status: discharged\n"))
    assert str(e.problems[0]) == f"{path}:11:5: duplicate key 'status' (first at line 10); each key may appear once"


def test_wrong_type_fails_with_line(tmp_path):
    _, e = _problems(tmp_path, GOOD.replace("rtol: 1e-4", "rtol: [1]"))
    assert "19:17: claims[0].evidence.parity[0].rtol must be a number, not a list" in str(e)


def test_unknown_status_suggests_the_closest(tmp_path):
    _, e = _problems(tmp_path, GOOD.replace("status: algorithm", "status: functionl"))
    assert "did you mean 'functional'?" in str(e)


def test_blocked_needs_a_reason(tmp_path):
    _, e = _problems(tmp_path, GOOD.replace("status: algorithm", "status: blocked"))
    assert "needs the key 'reason'" in str(e)


def test_binds_to_and_duplicate_claim_ids_are_checked(tmp_path):
    text = GOOD.replace("binds_to: [scale]", "binds_to: [scaling]") + GOOD[GOOD.index("  - id: scale-doubles"):]
    _, e = _problems(tmp_path, text.replace("binds_to: [scaling]\n", "binds_to: [scaling]\n", 1))
    text_all = str(e)
    assert "binds_to 'scaling', which is not an equation" in text_all
    assert "duplicate claim id 'scale-doubles' (first at line 8)" in text_all


def test_aliases_tags_and_code_strings_without_path_are_refused(tmp_path):
    _, e = _problems(tmp_path, "parity_contract: 1\nid: &a x\ndescription: *a\nclaims: []\n")
    assert "anchors and aliases" in str(e)
    _, e = _problems(tmp_path, "parity_contract: 1\nid: !!python/object:os.system x\nclaims: []\n", "t.yaml")
    assert "tag" in str(e) and "not allowed" in str(e)
    _, e = _problems(tmp_path, GOOD.replace("code: [src/scaler/ops.py::scale]", "code: [Normalizer::apply]"), "n.yaml")
    assert "must start with a file path" in str(e)


def test_yaml_syntax_error_has_position(tmp_path):
    path, e = _problems(tmp_path, "parity_contract: 1\nid: [x\n")
    assert e.problems[0].path == path and e.problems[0].line >= 2


def test_cross_file_ids_and_dependencies(tmp_path):
    root = str(tmp_path)
    write(root, "a.yaml", GOOD.replace("version:", "depends_on: [base, missing]\nversion:"))
    write(root, "b.yaml", GOOD.replace("id: scaler", "id: base").replace('version: "1.2"', "depends_on: [scaler]"))
    r = load_contracts([root])
    msgs = " | ".join(str(p) for p in r.errors)
    assert "depends_on 'missing': no contract with that id" in msgs
    assert "depends_on forms a cycle" in msgs


def test_shipped_json_schema_agrees_with_the_loader(tmp_path):
    s = schema()
    jsonschema.Draft202012Validator.check_schema(s)
    good = parse_yaml(GOOD).plain()
    jsonschema.validate(good, s)
    for bad_text in (GOOD.replace("statement:", "statment:"), GOOD.replace("status: algorithm", "status: blocked"),
                     GOOD.replace("rtol: 1e-4", "rtol: -1"), GOOD.replace("          cand: traces/cand.trace\n", "")):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(parse_yaml(bad_text).plain(), s)
        with pytest.raises(ContractError):
            load_contract(write(str(tmp_path), "x.yaml", bad_text))


def test_schema_file_is_package_data():
    from parity.contracts import schema_path

    assert os.path.isfile(schema_path()) and json.load(open(schema_path()))["properties"]["parity_contract"]["const"] == 1


_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False), _text)
_value = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(_text, inner, max_size=3)), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_text, _value, max_size=4))
def test_writer_round_trips_through_the_strict_loader(doc):
    text = dump_yaml(doc)
    assert parse_yaml(text).plain() == doc
    assert dump_yaml(doc) == text  # deterministic


def test_converted_aprender_tree_validates_against_json_schema():
    src = "metadata:\n  version: 1.0.0\nfalsification_tests:\n- id: F-1\n  rule: r\n  status: BLOCKER_FIXTURE_ABSENT\n"
    tree, _ = from_aprender(parse_yaml(src, "l.yaml"), "l.yaml")
    d = tree.plain()
    jsonschema.validate(d, schema())
    assert d["claims"][0]["status"] == "blocked" and "fixture" in d["claims"][0]["reason"]
