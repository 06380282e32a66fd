"""parity contract validate|check|new on the command line: exit codes, JSON, Markdown, bundles."""

import json
import os

import pytest

from parity.bundle import verify_bundle
from parity.cli import main

from contract_fixtures import write

OK = """\
parity_contract: 1
id: cli
claims:
  - id: scale
    statement: scale exists and is tested
    status: algorithm
    evidence:
      code: [src/scaler/ops.py::scale]
      tests:
        pytest: [tests/test_ops.py::test_scale]
"""


@pytest.fixture
def fast_env(monkeypatch):
    import parity.bundle.folder as bundle_mod  # where new_bundle looks collect_environment up

    real = bundle_mod.collect_environment
    monkeypatch.setattr(bundle_mod, "collect_environment", lambda **kw: real(**{**kw, "probe_torch": False}))


def test_validate_exit_codes(py_project, capsys):
    good = write(py_project, "contracts/ok.yaml", OK)
    assert main(["contract", "validate", good]) == 0
    assert "1 contract(s), 1 claim(s): valid" in capsys.readouterr().out
    bad = write(py_project, "contracts/bad.yaml", OK.replace("statement:", "statment:"))
    assert main(["contract", "validate", os.path.join(py_project, "contracts")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5:5: unknown key 'statment' in a claim; did you mean 'statement'?" in err
    assert "Traceback" not in err
    assert main(["contract", "validate", os.path.join(py_project, "nope.yaml")]) == 2


def test_check_exit_codes_table_and_json(py_project, capsys):
    good = write(py_project, "contracts/ok.yaml", OK)
    assert main(["contract", "check", good, "--root", py_project]) == 0
    out = capsys.readouterr().out
    assert "scale" in out and "algorithm" in out and "every claim is supported" in out
    write(py_project, "src/scaler/ops.py", "def scale_by(x):\n    return x\n")
    assert main(["contract", "check", good, "--root", py_project, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "parity.contract-check" and doc["passed"] is False
    assert doc["results"][0]["verdict"] == "overstated" and doc["results"][0]["supported"] == "proposed"
    assert main(["contract", "check", write(py_project, "contracts/x.yaml", "id: [\n"), "--root", py_project]) == 2


def test_check_md_and_bundle(py_project, capsys, fast_env):
    good = write(py_project, "contracts/ok.yaml", OK)
    md = os.path.join(py_project, "check.md")
    from parity.bundle import close_bundle, new_bundle

    b = new_bundle("ledger", py_project, probe_torch=False)
    assert main(["contract", "check", good, "--root", py_project, "--md", md, "--bundle", b.path]) == 0
    text = open(md).read()
    assert text.startswith("# parity contract check") and "| cli | scale | algorithm | algorithm | ok |" in text
    assert sorted(n for n in os.listdir(b.path) if n.startswith("01-")) == ["01-contract.json", "01-contract.md",
                                                                           "01-contract.txt"]
    assert "exit 0" in open(os.path.join(b.path, "commands.txt")).read()
    assert verify_bundle(close_bundle(b.path).path).ok


def test_new_scaffolds_claims_that_check_discharged(py_project, trace_pair, capsys):
    ref, cand = trace_pair
    out = os.path.join(py_project, "contracts", "pair.yaml")
    assert main(["contract", "new", "--ref", os.path.join(py_project, ref), "--cand", os.path.join(py_project, cand),
                 "--root", py_project, "-o", out]) == 2  # no such folder: a usage error, nothing written
    os.makedirs(os.path.dirname(out))
    assert main(["contract", "new", "--ref", os.path.join(py_project, ref), "--cand", os.path.join(py_project, cand),
                 "--root", py_project, "-o", out]) == 0
    text = open(out).read()
    assert "id: stage-b" in text and "atol: 0.005" in text and "status: discharged" in text
    assert main(["contract", "check", out, "--root", py_project]) == 0
    rep = capsys.readouterr().out
    assert "discharged" in rep
    assert main(["contract", "new", "--ref", os.path.join(py_project, ref), "--cand", os.path.join(py_project, cand),
                 "--root", py_project, "-o", out]) == 2  # refuses to overwrite


def test_new_refuses_traces_outside_root(py_project, trace_pair, tmp_path):
    ref, cand = trace_pair
    other = str(tmp_path / "elsewhere")
    os.makedirs(other)
    assert main(["contract", "new", "--ref", os.path.join(py_project, ref), "--cand", os.path.join(py_project, cand),
                 "--root", other]) == 2
