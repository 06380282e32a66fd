"""The CLI: exit codes 0 / 1 / 2, JSON output, show, demo."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from parity.cli import main


@pytest.fixture
def traces(make_trace):
    ref = make_trace("ref.trace", {"a": np.ones(3), "b": np.arange(3.0)})
    same = make_trace("same.trace", {"a": np.ones(3), "b": np.arange(3.0)})
    bad = make_trace("bad.trace", {"a": np.ones(3), "b": np.arange(3.0) + 1})
    return ref, same, bad


def test_exit_codes(traces, capsys):
    ref, same, bad = traces
    assert main(["diff", ref, same]) == 0
    assert "PARITY HOLDS" in capsys.readouterr().out
    assert main(["diff", ref, bad]) == 1
    out = capsys.readouterr().out
    assert "DIVERGENCE FOUND" in out and "First divergence: b" in out
    assert main(["diff", ref, ref + "-nope"]) == 2
    err = capsys.readouterr().err
    assert "ref.trace-nope: no such trace directory" in err
    assert main(["diff", ref]) == 2  # usage error: missing argument
    assert main(["diff", ref, same, "--rtol", "abc"]) == 2


def test_json_output(traces, capsys):
    ref, _, bad = traces
    assert main(["diff", ref, bad, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "parity.diff" and doc["schema_version"] == 1
    assert doc["passed"] is False and doc["first_divergence"] == "b"
    assert [s["key"] for s in doc["stages"]] == ["a", "b"]


def test_unused_config_entries_warn_and_fail_only_under_strict(traces, tmp_path, capsys):
    ref, same, _ = traces
    cfg = tmp_path / "c.toml"
    cfg.write_text('[tolerance.stages]\n"zzz*" = { rtol = 1 }\n')
    assert main(["diff", ref, same, "--config", str(cfg)]) == 0  # one project config serves several pairs
    out = " ".join(capsys.readouterr().out.split())
    assert "warning: 1 unused config entries" in out and 'pattern "zzz*" matches no stage' in out
    assert main(["diff", ref, same, "--config", str(cfg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unused_config"] == ['[tolerance.stages] pattern "zzz*" matches no stage']
    assert main(["diff", ref, same, "--config", str(cfg), "--strict"]) == 2
    assert 'pattern "zzz*" matches no stage' in capsys.readouterr().err
    cfg.write_text('[aliases]\nbb = "b"\n')  # a typo of an existing name: the closest stage is suggested
    assert main(["diff", ref, same, "--config", str(cfg), "--strict"]) == 2
    assert '"bb" matches no candidate stage (did you mean "b"?)' in capsys.readouterr().err


def test_show(traces, capsys):
    ref, _, _ = traces
    assert main(["show", ref, "--verify"]) == 0
    out = capsys.readouterr().out
    assert "2 stages, complete" in out and "F64" in out and "all 1 data files match their checksums" in out


def test_demo_points_at_injected_stage(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "First divergence: layers.0.attn_scores" in out
    assert "parity found the injected bug" in out
    assert main(["demo", "--fixed"]) == 0
    assert "holds parity" in capsys.readouterr().out


def test_console_script_runs(traces):
    ref, _, bad = traces
    exe = os.path.join(os.path.dirname(sys.executable), "parity")
    r = subprocess.run([exe, "diff", ref, bad], capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    assert r.returncode == 1 and "\x1b[" not in r.stdout


def test_show_prints_bracketed_keys_literally(make_trace, capsys, monkeypatch):
    import parity

    monkeypatch.setenv("COLUMNS", "200")
    path = make_trace("k.trace", {})
    with parity.record(path):
        parity.tap("x", 1.0, it=0)
        parity.tap("label", "[bold]not markup[/bold]")
    assert main(["show", path]) == 0
    out = capsys.readouterr().out
    assert "x[it=0]" in out and "[bold]not markup" in out
