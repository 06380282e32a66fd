"""``parity events`` on the command line: exit codes, gates and report files."""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from parity.cli import main  # noqa: E402
from sessions import edited, lines, session, write  # noqa: E402


def test_import_diff_and_exit_codes(tmp_path, capsys):
    ref = write(tmp_path / "ref.jsonl", session("a"))
    assert main(["events", "import", ref, "--out", str(tmp_path / "ref.trace"), "--preset", "ccpa"]) == 0
    assert "14 events" in capsys.readouterr().out
    same = write(tmp_path / "same.jsonl", session("b"))
    assert main(["events", "diff", str(tmp_path / "ref.trace"), same]) == 0
    assert "PARITY HOLDS" in capsys.readouterr().out
    recs = edited(session("b"))
    recs[2]["content"][1]["input"]["file_path"] = "src/time.py"
    cand = write(tmp_path / "cand.jsonl", recs)
    md, page = tmp_path / "r.md", tmp_path / "r.html"
    assert main(["events", "diff", str(tmp_path / "ref.trace"), cand, "--md", str(md), "--html", str(page)]) == 1
    out = capsys.readouterr().out
    assert "DIVERGENCE FOUND" in out and "content[1].input.file_path" in out
    assert "content[1].input.file_path" in md.read_text() and "<!DOCTYPE html>" in page.read_text()
    assert main(["events", "diff", str(tmp_path / "ref.trace"), cand, "--min-score", "0.9"]) == 0
    capsys.readouterr()
    assert main(["events", "diff", str(tmp_path / "ref.trace"), cand, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["first_divergence"]["ref"]["key"] == "events.0002.assistant_turn[turn=1]"


def test_input_errors_exit_2(tmp_path, capsys):
    bad = write(tmp_path / "bad.jsonl", lines(session("a")) + "oops\n")
    assert main(["events", "import", bad, "--out", str(tmp_path / "b.trace")]) == 2
    assert "line 15: not valid JSON" in capsys.readouterr().err
    assert main(["events", "import", bad, "--out", str(tmp_path / "b.trace"), "--skip-malformed"]) == 0
    assert "malformed line 15 left out" in capsys.readouterr().err
    assert main(["events", "diff", bad, bad]) == 2
    assert main(["events", "diff", bad, bad, "--skip-malformed"]) == 0
    capsys.readouterr()
    cfg = tmp_path / "c.toml"
    cfg.write_text("[events]\nmin_score = 3\n")
    assert main(["events", "diff", bad, bad, "--skip-malformed", "--config", str(cfg)]) == 2
    assert "min_score must be a number from 0 to 1" in capsys.readouterr().err


def test_export_round_trip(tmp_path, capsys):
    src = tmp_path / "s.jsonl"
    src.write_bytes(lines(session("a")).encode() + b"\n{bad json\n")
    assert main(["events", "import", str(src), "--out", str(tmp_path / "s.trace"), "--skip-malformed"]) == 0
    assert main(["events", "export", str(tmp_path / "s.trace"), "--out", str(tmp_path / "back.jsonl")]) == 0
    assert (tmp_path / "back.jsonl").read_bytes() == src.read_bytes()


def test_diff_dirs(tmp_path, capsys):
    r, c = tmp_path / "r", tmp_path / "c"
    r.mkdir()
    c.mkdir()
    for name in ("s1", "s2"):
        write(r / f"{name}.jsonl", session("a"))
        write(c / f"{name}.jsonl", session("b"))
    assert main(["events", "diff-dirs", str(r), str(c), "--preset", "ccpa"]) == 0
    assert "mean score 1.000" in capsys.readouterr().out
    recs = edited(session("b"))
    del recs[4]
    write(c / "s2.jsonl", recs)
    assert main(["events", "diff-dirs", str(r), str(c), "--preset", "ccpa", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in doc["fixtures"]] == ["s1", "s2"] and doc["aggregate"]["passed"] == 1
    assert main(["events", "diff-dirs", str(r), str(c), "--preset", "ccpa", "--min-score", "0.9"]) == 0
    capsys.readouterr()
    write(c / "s1.jsonl", "garbage\n")
    assert main(["events", "diff-dirs", str(r), str(c), "--preset", "ccpa", "--md", str(tmp_path / "d.md")]) == 2
    assert "s1" in capsys.readouterr().err and "| s1 | 0.000 | error |" in (tmp_path / "d.md").read_text()


def test_parity_import_and_plain_diff_dispatch_to_events(tmp_path, capsys):
    ref = write(tmp_path / "ref.jsonl", session("a"))
    recs = edited(session("b"))
    recs[2]["content"][1]["input"]["file_path"] = "src/time.py"
    cand = write(tmp_path / "cand.jsonl", recs)
    r, c = str(tmp_path / "r.trace"), str(tmp_path / "c.trace")
    assert main(["import", ref, "--format", "events", "--preset", "ccpa", "--out", r]) == 0
    assert main(["import", cand, "--format", "events", "--preset", "ccpa", "--out", c]) == 0
    capsys.readouterr()
    assert main(["diff", r, c]) == 1
    assert "content[1].input.file_path" in capsys.readouterr().out
    assert main(["diff", r, c, "--min-score", "0.9"]) == 0
    assert main(["import", ref, "--preset", "ccpa", "--out", str(tmp_path / "x.trace")]) == 2  # --preset needs --format events
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"v": 1, "kind": "user_prompt", "turn": 1, "text": "hi"}\nnot json\n')
    assert main(["import", str(bad), "--format", "events", "--out", str(tmp_path / "b.trace")]) == 2
    assert "line 2" in capsys.readouterr().err


def test_compare_traces_aligns_event_traces(tmp_path):
    import parity
    from parity.events import EventDiff

    ref = write(tmp_path / "ref.jsonl", session("a"))
    recs = edited(session("b"))
    del recs[3]  # one dropped event: one deletion, the rest aligned
    cand = write(tmp_path / "cand.jsonl", recs)
    r, c = str(tmp_path / "r.trace"), str(tmp_path / "c.trace")
    assert main(["import", ref, "--format", "events", "--preset", "ccpa", "--out", r]) == 0
    assert main(["import", cand, "--format", "events", "--preset", "ccpa", "--out", c]) == 0
    diff = parity.compare_traces(r, c)
    assert isinstance(diff, EventDiff) and not diff.passed
    assert diff.first_divergence is not None
