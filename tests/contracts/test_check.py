"""parity contract check: each rule on small Python and Rust fixture projects."""

import json
import os

import pytest

import parity
from parity.bundle import bundle_command, close_bundle, invocation, new_bundle
from parity.contracts import check_contracts
from parity.contracts.symbols import tree_sitter_languages

from contract_fixtures import write

HEAD = "parity_contract: 1\nid: fx\nclaims:\n"


def claim(cid, status, evidence, extra=""):
    return f"  - id: {cid}\n    statement: {cid} holds\n    status: {status}\n{extra}    evidence:\n" + \
        "".join(f"      {line}\n" for line in evidence.strip("\n").splitlines())


def check(root, *claims, **kw):
    path = write(root, "contracts/c.yaml", HEAD + "".join(claims))
    return check_contracts([path], root=root, **kw)


def only(report):
    assert len(report.results) == 1
    return report.results[0]


# -- code evidence -------------------------------------------------------------------------------

def test_python_symbols_functions_methods_assignments(py_project):
    r = only(check(py_project, claim("ok", "proposed", """
code:
  - src/scaler/ops.py::scale
  - src/scaler/ops.py::Normalizer::apply
  - files: [src/scaler/ops.py]
    symbols: [THRESHOLD, Normalizer.eps, "scale (gains a k argument)", "`Normalizer`"]
""")))
    assert (r.supported, r.verdict) == ("proposed", "ok")
    assert all(f.outcome == "ok" for f in r.findings) and len(r.findings) == 6


def test_renamed_python_function_demotes_and_says_where(py_project):
    # load_rows moved from io.py to ops.py under the same name
    write(py_project, "src/scaler/io.py", "def read_rows(path):\n    return []\n")
    with open(os.path.join(py_project, "src/scaler/ops.py"), "a") as f:
        f.write("\ndef load_rows(path):\n    return []\n")
    r = only(check(py_project, claim("io", "algorithm", """
code: [src/scaler/io.py::load_rows]
tests:
  pytest: [tests/test_ops.py::test_scale]
""")))
    assert (r.claimed, r.supported, r.verdict) == ("algorithm", "proposed", "overstated")
    assert "load_rows is not defined in src/scaler/io.py; it is now defined in src/scaler/ops.py:12 as load_rows" in r.reason


def test_renamed_in_place_names_the_closest(py_project):
    write(py_project, "src/scaler/ops.py", "def scale_by(x, k=2.0):\n    return x * k\n")
    r = only(check(py_project, claim("s", "algorithm", "code: [src/scaler/ops.py::scale]")))
    assert r.verdict == "overstated"
    assert "closest names there: scale_by (renamed?)" in r.reason


@pytest.mark.parametrize("use_tree_sitter", [True, False], ids=["tree-sitter", "text-rule"])
def test_renamed_rust_function_demotes_and_says_where(rust_project, use_tree_sitter):
    if use_tree_sitter and "rust" not in tree_sitter_languages():
        pytest.skip("tree-sitter-rust is not installed")
    ev = """
code:
  - files: [src/diff.rs]
    symbols: ["Loader::load_tensor_apr_aprt", "run_diff (the entry point)"]
  - src/stage.rs::parse_stage_list
"""
    r = only(check(rust_project, claim("aprt", "proposed", ev), use_tree_sitter=use_tree_sitter))
    assert r.verdict == "ok" and all(f.outcome == "ok" for f in r.findings)
    method = "tree-sitter" if use_tree_sitter else "text rule"
    assert f"src/diff.rs:4 defines Loader::load_tensor_apr_aprt ({method})" in [f.message for f in r.findings]
    # The real case: the function moved to another file under another impl.
    write(rust_project, "src/diff.rs", "pub fn run_diff(a: &[f32], b: &[f32]) -> f32 { 0.0 }\n")
    write(rust_project, "src/aprt.rs", "pub struct AprtReader;\n\nimpl AprtReader {\n    pub fn load_tensor_apr_aprt(&self) {}\n}\n")
    r = only(check(rust_project, claim("aprt", "proposed", ev), use_tree_sitter=use_tree_sitter))
    assert r.verdict == "ok" and r.supported == "proposed"  # proposed states nothing, but the finding is broken
    broken = [f for f in r.findings if f.outcome == "broken"]
    assert [f.message for f in broken] == ["Loader::load_tensor_apr_aprt is not defined in src/diff.rs; it is now "
                                           "defined in src/aprt.rs:4 as AprtReader::load_tensor_apr_aprt"]
    r = only(check(rust_project, claim("aprt", "algorithm", ev + "tests:\n  commands: [cargo test aprt]\n"),
                   use_tree_sitter=use_tree_sitter))
    assert r.verdict == "overstated" and "now defined in src/aprt.rs:4" in r.reason


def test_missing_file_is_broken_and_a_moved_file_is_found(py_project):
    os.makedirs(os.path.join(py_project, "src/scaler/legacy"))
    os.rename(os.path.join(py_project, "src/scaler/io.py"), os.path.join(py_project, "src/scaler/legacy/io.py"))
    r = only(check(py_project, claim("f", "algorithm", "code: [src/scaler/io.py, src/scaler/io.py::load_rows]")))
    assert r.verdict == "overstated"
    assert "a file named io.py is at src/scaler/legacy/io.py" in r.reason
    assert "now defined in src/scaler/legacy/io.py:1 as load_rows" in " ".join(f.message for f in r.findings)


def test_paths_outside_root_are_refused(py_project):
    r = only(check(py_project, claim("o", "algorithm", "code: [../outside.py::f]")))
    assert r.verdict == "overstated" and "outside --root" in r.reason


# -- tests evidence ------------------------------------------------------------------------------

def test_test_ids_collect_in_one_invocation(py_project):
    rep = check(py_project,
                claim("a", "algorithm", "tests:\n  pytest: [tests/test_ops.py::test_scale, tests/test_ops.py::test_scale_k]"),
                claim("b", "algorithm", "tests:\n  pytest: [tests/test_ops.py::TestNormalizer::test_apply, tests/test_ops.py]"),
                claim("c", "algorithm", "tests:\n  pytest: [tests/test_ops.py::test_gone]"),
                claim("d", "algorithm", "tests:\n  pytest: [tests/test_missing.py::test_x]"))
    by = {r.claim: r for r in rep.results}
    assert [by[k].verdict for k in "abcd"] == ["ok", "ok", "overstated", "overstated"]
    assert "test_gone is not defined in tests/test_ops.py" in by["c"].reason
    assert "test file tests/test_missing.py does not exist" in by["d"].reason
    assert rep.pytest_invocations == 1 and not rep.passed


def test_an_id_that_only_pytest_can_refuse_does_not_collect(py_project):
    # defined (ast sees it) but not collected: the class is not named Test*, so pytest ignores it
    with open(os.path.join(py_project, "tests/test_ops.py"), "a") as f:
        f.write("\nclass Helper:\n    def test_hidden(self):\n        pass\n")
    write(py_project, "tests/test_broken.py", "import no_such_module_xyz\n\ndef test_b():\n    pass\n")
    rep = check(py_project, claim("h", "algorithm", "tests:\n  pytest: [tests/test_ops.py::Helper::test_hidden]"),
                claim("b", "algorithm", "tests:\n  pytest: [tests/test_broken.py::test_b]"),
                claim("g", "algorithm", "tests:\n  pytest: [tests/test_ops.py::test_scale]"))
    by = {r.claim: r for r in rep.results}
    assert by["h"].verdict == "overstated" and "does not collect" in by["h"].reason
    assert by["b"].verdict == "overstated" and "fails to collect" in by["b"].reason
    assert by["g"].verdict == "ok"  # one broken module never hides the others


def test_no_collect_is_static_and_spawns_nothing(py_project):
    rep = check(py_project, claim("a", "algorithm", "tests:\n  pytest: [tests/test_ops.py::test_scale]"), collect=False)
    assert rep.passed and rep.pytest_invocations == 0


def test_commands_run_only_with_run(py_project):
    write(py_project, "tools/fail.py", "import sys\nsys.exit(3)\n")
    write(py_project, "tools/slow.py", "import time\ntime.sleep(30)\n")
    ev = "tests:\n  commands:\n    - python tools/fail.py\n    - run: python tools/fail.py\n      expect_exit: 3\n"
    r = only(check(py_project, claim("c", "algorithm", ev)))
    assert r.verdict == "ok" and "2 command(s) not run (pass --run)" in r.reason
    assert {f.outcome for f in r.findings} == {"unverified"}
    r = only(check(py_project, claim("c", "algorithm", ev), run=True))
    assert r.verdict == "overstated" and "`python tools/fail.py` exited 3, expected 0" in r.reason
    assert [f.result["exit"] for f in r.findings] == [3, 3]
    r = only(check(py_project, claim("t", "algorithm", "tests:\n  commands:\n    - run: python tools/slow.py\n      timeout: 0.5\n"),
                   run=True))
    assert r.verdict == "overstated" and "timed out after 0.5 s" in r.reason


def test_run_runs_pytest_ids(py_project):
    with open(os.path.join(py_project, "tests/test_ops.py"), "a") as f:
        f.write("\ndef test_wrong():\n    assert 1 == 2\n")
    rep = check(py_project, claim("w", "algorithm", "tests:\n  pytest: [tests/test_ops.py::test_wrong]"),
                claim("g", "algorithm", "tests:\n  pytest: [tests/test_ops.py::test_scale_k]"), run=True)
    by = {r.claim: r for r in rep.results}
    assert by["w"].verdict == "overstated" and "failed under --run" in by["w"].reason
    assert by["g"].verdict == "ok"


# -- parity evidence -----------------------------------------------------------------------------

def test_claim_whose_trace_diff_passes_is_supported_at_discharged(py_project, trace_pair):
    ref, cand = trace_pair
    ok = check(py_project, claim("d", "discharged", f"parity:\n  - ref: {ref}\n    cand: {cand}\n    atol: 0.01\n    rtol: 0"))
    r = only(ok)
    assert (r.supported, r.verdict) == ("discharged", "ok") and "diff passes at rtol=0, atol=0.01: 2/2" in r.reason
    tight = only(check(py_project, claim("d", "discharged", f"parity:\n  - ref: {ref}\n    cand: {cand}\n    atol: 1e-6\n    rtol: 0")))
    assert (tight.supported, tight.verdict) == ("functional", "overstated")
    assert "first divergence b" in tight.reason
    stage_a = only(check(py_project, claim("a", "discharged", f"parity:\n  - ref: {ref}\n    cand: {cand}\n    stages: [a]\n    atol: 1e-9")))
    assert stage_a.verdict == "ok"
    nostage = only(check(py_project, claim("z", "discharged", f"parity:\n  - ref: {ref}\n    cand: {cand}\n    stages: [zz]")))
    assert nostage.verdict == "overstated" and nostage.supported == "proposed"


def test_a_trace_supports_functional_and_a_corrupt_one_is_broken(py_project, trace_pair):
    ref, _ = trace_pair
    assert only(check(py_project, claim("f", "functional", f"parity:\n  - trace: {ref}"))).verdict == "ok"
    data_dir = os.path.join(py_project, ref, "data")
    data = sorted(os.listdir(data_dir))[0]
    with open(os.path.join(data_dir, data), "r+b") as f:
        f.seek(-1, 2)
        b = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([b[0] ^ 0xFF]))
    r = only(check(py_project, claim("f", "functional", f"parity:\n  - trace: {ref}")))
    assert (r.supported, r.verdict) == ("proposed", "overstated") and "fails its checksums" in r.reason


@pytest.fixture
def sealed_bundle(py_project, trace_pair, monkeypatch):
    import parity.bundle.folder as bundle_mod  # where new_bundle looks collect_environment up

    real = bundle_mod.collect_environment
    monkeypatch.setattr(bundle_mod, "collect_environment", lambda **kw: real(**{**kw, "probe_torch": False}))
    b = new_bundle("live", py_project, probe_torch=False)
    ref, cand = trace_pair
    d = parity.compare_traces(os.path.join(py_project, ref), os.path.join(py_project, cand), atol=0.01, rtol=0)
    with invocation(["diff", ref, cand]), bundle_command(b.path, "diff") as cmd:
        cmd.write("json", json.dumps(d.to_dict()))
    close_bundle(b.path)
    return os.path.relpath(b.path, py_project)


def test_bundle_supports_functional_and_its_passing_diff_discharged(py_project, sealed_bundle):
    r = only(check(py_project, claim("b", "functional", f"parity:\n  - bundle: {sealed_bundle}")))
    assert (r.supported, r.verdict) == ("functional", "ok")
    r = only(check(py_project, claim("b", "discharged", f"parity:\n  - bundle: {sealed_bundle}\n    diff: 01-diff.json")))
    assert (r.supported, r.verdict) == ("discharged", "ok")


def test_missing_bundle_demotes_functional(py_project, sealed_bundle):
    r = only(check(py_project, claim("b", "functional", "parity:\n  - bundle: reports/live/19990101T000000Z",
                                     ), ))
    assert (r.supported, r.verdict) == ("proposed", "overstated")
    assert "functional needs evidence this claim lacks: no verified bundle or trace" in r.reason
    assert "bundle reports/live/19990101T000000Z not found" in r.reason
    r = only(check(py_project, claim("b", "functional", "tests:\n  pytest: [tests/test_ops.py::test_scale]\n"
                                                         f"parity:\n  - bundle: {sealed_bundle}x")))
    assert (r.supported, r.verdict) == ("algorithm", "overstated")


def test_tampered_bundle_fails(py_project, sealed_bundle):
    with open(os.path.join(py_project, sealed_bundle, "01-diff.json"), "a") as f:
        f.write(" ")
    r = only(check(py_project, claim("b", "functional", f"parity:\n  - bundle: {sealed_bundle}")))
    assert (r.supported, r.verdict) == ("proposed", "overstated")
    assert "does not match its sha256.txt (tampered?): changed: 01-diff.json" in r.reason


# -- statuses ------------------------------------------------------------------------------------

def test_blocked_understated_and_no_evidence(py_project):
    rep = check(py_project,
                claim("blk", "blocked", "code: [src/scaler/ops.py::scale]", extra="    reason: the GPU fixture is absent\n"),
                claim("low", "proposed", "tests:\n  pytest: [tests/test_ops.py::test_scale]"),
                "  - id: bare\n    statement: s\n    status: functional\n")
    by = {r.claim: r for r in rep.results}
    assert by["blk"].verdict == "blocked" and by["blk"].reason == "blocked: the GPU fixture is absent"
    assert by["low"].verdict == "understated" and "could be promoted" in by["low"].reason
    assert by["bare"].verdict == "overstated" and not rep.passed


def test_stale_obligation_fails(py_project):
    text = ("parity_contract: 1\nid: ob\nobligations:\n  - type: invariant\n    property: scale is linear\n"
            "    applies_to: [src/scaler/ops.py::scale, src/scaler/ops.py::unscale]\nclaims: []\n")
    path = write(py_project, "contracts/o.yaml", text)
    rep = check_contracts([path], root=py_project)
    assert [(r.claim, r.verdict) for r in rep.results] == [("obligation 1", "stale")] and not rep.passed


def test_report_round_trips_through_json(py_project, trace_pair):
    from parity.contracts import CheckReport

    rep = check(py_project, claim("a", "algorithm", "tests:\n  pytest: [tests/test_ops.py::test_scale]\n"
                                                     "code: [src/scaler/ops.py::nope]"))
    assert CheckReport.from_dict(json.loads(rep.to_json())) == rep


def test_the_repository_ledger_is_supported_statically():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rep = check_contracts([os.path.join(root, "contracts")], root=root, collect=False)
    assert rep.passed, [r.reason for r in rep.failures]
    assert {r.claim for r in rep.results} >= {"bit-exact-round-trip", "byte-determinism", "crash-safety", "key-safety",
                                              "exit-codes"}
