"""aprender-style ledgers: mapped onto claims, drift caught, unknown fields reported (never dropped)."""

import os

from parity.cli import main
from parity.contracts import check_contracts, convert_file, load_contract, load_contracts

from contract_fixtures import write

LEDGER = """\
metadata:
  version: 1.3.0
  status: PROPOSED
  created: '2026-04-28'
  author: Engineering
  references:
  - 'SPEC-SHIP-TWO-001 §15'
  description: >
    Extend trace with --save-tensor.
equations:
  byte_format:
    formula: |
      offset 0-3: magic "APRT"
    domain: file format
    codomain: bool
    invariants:
    - "NaN values preserved verbatim"
falsification_tests:
- id: FALSIFY-APR-TRACE-SAVE-009
  rule: "`apr diff --values` recognizes APRT magic"
  prediction: identical files give max_abs_diff=0
  test: "cargo test -p apr-cli --lib commands::diff::aprt_stage_diff_tests (11/11 PASS)"
  if_fails: stage tensors cannot be compared
  binds_to: byte_format
  status: PARTIAL_ALGORITHM_LEVEL
  algorithm_evidence:
    file_paths: [src/diff.rs]
    function_names:
      - load_tensor_apr_aprt
      - "run_diff (dispatch gains the APRT branch)"
    invariants_enforced: [header is 12 bytes]
    notes: three unit tests
    reviewer: someone
- id: FALSIFY-APR-TRACE-SAVE-010
  rule: stage list parser
  test: "ls D/ should show only layer-3/"
  status: FUNCTIONAL
  functional_evidence:
    - "Implementation: src/stage.rs::parse_stage_list (gains 2 entries)"
- id: FALSIFY-APR-TRACE-SAVE-011
  rule: live discharge on the 7B teacher
  status: BLOCKER_FIXTURE_ABSENT
- id: FALSIFY-APR-TRACE-SAVE-012
  rule: odd status
  status: SHIPPED
  severity: high
proof_obligations:
- type: invariant
  property: save-tensor preserves bit-exact f32 values
  applies_to: src/diff.rs::Loader::load_tensor_apr_aprt
  formal: kani
verification_summary:
  total_obligations: 4
  proven: 0
"""


def test_ledger_maps_onto_claims(rust_project):
    path = write(rust_project, "contracts/trace-save-tensor-v1.yaml", LEDGER)
    c = load_contract(path)
    assert c.source_format == "aprender" and c.id == "trace-save-tensor-v1" and c.status == "proposed"
    assert [(cl.id, cl.status) for cl in c.claims] == [
        ("FALSIFY-APR-TRACE-SAVE-009", "algorithm"), ("FALSIFY-APR-TRACE-SAVE-010", "functional"),
        ("FALSIFY-APR-TRACE-SAVE-011", "blocked"), ("FALSIFY-APR-TRACE-SAVE-012", "proposed")]
    first = c.claims[0]
    assert first.binds_to == ("byte_format",) and first.line == 19
    assert first.falsification["if_fails"] == "stage tensors cannot be compared"
    assert first.evidence.code[0].files == ("src/diff.rs",)
    assert first.evidence.code[0].symbols == ("load_tensor_apr_aprt", "run_diff (dispatch gains the APRT branch)")
    assert [cmd.run for cmd in first.evidence.commands] == ["cargo test -p apr-cli --lib commands::diff::aprt_stage_diff_tests"]
    assert "invariant enforced: header is 12 bytes" in first.evidence.notes
    assert not c.claims[1].evidence.commands  # prose / shell globs never become commands
    assert c.claims[1].evidence.code[0].symbols == ("parse_stage_list",)
    assert "fixture" in c.claims[2].reason
    assert c.equations[0]["invariants"] == ["NaN values preserved verbatim"]
    assert c.obligations[0].applies_to[0].symbols == ("Loader::load_tensor_apr_aprt",)


def test_unknown_fields_are_reported_with_lines_and_kept(rust_project):
    path = write(rust_project, "contracts/l.yaml", LEDGER)
    r = load_contracts([path])
    got = {(w.line, w.message.split("'")[1]) for w in r.warnings}
    assert {(4, "created"), (5, "author"), (33, "reviewer"), (46, "severity"), (51, "formal"),
            (52, "verification_summary")} <= got
    assert any("status 'SHIPPED' is not one parity knows" in w.message and w.line == 45 for w in r.warnings)
    c, _ = convert_file(path)
    d = c.to_dict()
    assert d["extra"]["metadata"] == {"created": "2026-04-28", "author": "Engineering"}
    assert d["extra"]["verification_summary"] == {"total_obligations": 4, "proven": 0}
    assert d["claims"][0]["extra"]["algorithm_evidence"] == {"reviewer": "someone"}
    assert d["claims"][3]["extra"] == {"severity": "high"}
    assert d["obligations"][0]["extra"] == {"formal": "kani"}


def test_drifted_function_name_is_caught(rust_project):
    path = write(rust_project, "contracts/l.yaml", LEDGER)
    # the wired functions moved to another file under other names (the real case)
    write(rust_project, "src/diff.rs", "pub fn run_diff(a: &[f32], b: &[f32]) -> f32 { 0.0 }\n")
    write(rust_project, "src/commands/diff_05_aprt_stage.rs",
          "pub fn is_aprt_stage_file() -> bool { true }\npub fn load_tensor_apr_aprt() {}\n")
    rep = check_contracts([path], root=rust_project)
    by = {r.claim: r for r in rep.results}
    r = by["FALSIFY-APR-TRACE-SAVE-009"]
    assert r.verdict == "overstated" and r.supported == "proposed"
    assert ("load_tensor_apr_aprt is not defined in src/diff.rs; it is now defined in "
            "src/commands/diff_05_aprt_stage.rs:2 as load_tensor_apr_aprt") in r.reason
    assert by["obligation 1"].verdict == "stale"
    # FUNCTIONAL with only prose evidence: no live run kept
    assert by["FALSIFY-APR-TRACE-SAVE-010"].verdict == "overstated"
    assert "no verified bundle or trace" in by["FALSIFY-APR-TRACE-SAVE-010"].reason
    assert by["FALSIFY-APR-TRACE-SAVE-011"].verdict == "blocked"
    assert rep.warnings and not rep.passed


def test_convert_writes_our_schema_and_round_trips(rust_project, capsys):
    src = write(rust_project, "contracts/l.yaml", LEDGER)
    out = os.path.join(rust_project, "converted.yaml")
    assert main(["contract", "convert", src, "-o", out]) == 0
    err = capsys.readouterr().err
    assert "l.yaml:5:3: aprender field metadata.'author' is not understood by parity; kept under extra" in err
    converted = load_contract(out)
    original = load_contract(src)
    assert converted.source_format == "parity"
    assert converted.to_dict() == original.to_dict()
    assert main(["contract", "convert", src, "-o", out]) == 2  # never overwrites without --force
    assert main(["contract", "validate", out]) == 0
