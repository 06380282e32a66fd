"""A diff in which no stage is present on both sides is never parity (exit 1, its own verdict)."""

import json

import numpy as np
import pytest

import parity
from parity.cli import main
from parity.compare import Verdict
from parity.report import render_html, render_markdown


@pytest.fixture
def disjoint(make_trace):
    ref = make_trace("ref.trace", {f"ref_{i}": np.full(3, float(i)) for i in range(30)})
    cand = make_trace("cand.trace", {f"cand_{i}": np.full(3, float(i)) for i in range(40)})
    return ref, cand


def test_no_common_stage_is_not_parity(disjoint):
    diff = parity.compare_traces(*disjoint)
    assert diff.nothing_compared and diff.verdict == Verdict.NOTHING_COMPARED
    assert not diff.passed and not bool(diff)
    assert len(diff.missing) == 30 and len(diff.extra) == 40 and diff.first_divergence is None


def test_cli_exits_1_with_message_and_json_verdict(disjoint, capsys):
    ref, cand = disjoint
    assert main(["diff", ref, cand]) == 1
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal width
    assert "NOTHING COMPARED" in out and "PARITY HOLDS" not in out
    assert "30 only in the reference, 40 only in the candidate" in out and "parity align" in out
    assert main(["diff", ref, cand, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "nothing_compared" and doc["passed"] is False
    assert doc["summary"]["missing"] == 30 and doc["summary"]["extra"] == 40


def test_saved_result_keeps_verdict(disjoint):
    diff = parity.compare_traces(*disjoint)
    again = parity.TraceDiff.from_dict(json.loads(json.dumps(diff.to_dict())))
    assert again.verdict == Verdict.NOTHING_COMPARED and not again.passed


def test_empty_traces_are_not_parity(make_trace, capsys):
    a, b = make_trace("a.trace", {}), make_trace("b.trace", {})
    diff = parity.compare_traces(a, b)
    assert diff.verdict == Verdict.NOTHING_COMPARED
    assert main(["diff", a, b]) == 1
    assert "both traces are empty" in capsys.readouterr().out


def test_everything_ignored_is_not_parity(make_trace, tmp_path):
    a = make_trace("a.trace", {"x": np.ones(2)})
    b = make_trace("b.trace", {"x": np.ones(2)})
    cfg = tmp_path / "c.toml"
    cfg.write_text('[ignore]\nstages = ["x"]\n')
    diff = parity.compare_traces(a, b, config=str(cfg))
    assert diff.ignored == 1 and diff.verdict == Verdict.NOTHING_COMPARED


def test_one_common_stage_is_enough(make_trace):
    a = make_trace("a.trace", {"x": np.ones(2), "only_ref": np.ones(1)})
    b = make_trace("b.trace", {"x": np.ones(2), "only_cand": np.ones(1)})
    diff = parity.compare_traces(a, b)
    assert diff.verdict == Verdict.PARITY and diff.passed


def test_reports_say_nothing_compared(disjoint):
    diff = parity.compare_traces(*disjoint)
    md = render_markdown(diff, traces=None)
    assert md.startswith("# parity diff: NOTHING COMPARED") and "## Nothing compared" in md
    html = render_html(diff, traces=None)
    assert "NOTHING COMPARED" in html and "Nothing compared" in html and "PARITY HOLDS" not in html
