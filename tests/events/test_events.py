"""Event traces: import, normalization, alignment, field diffs, score, directories, round trip."""

from __future__ import annotations

import json
import os
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))

import parity  # noqa: E402
import parity.events as ev  # noqa: E402
from parity.errors import ConfigError, ImportFormatError, UsageError  # noqa: E402
from sessions import edited, lines, session, write  # noqa: E402


@pytest.fixture
def ref(tmp_path):
    return write(tmp_path / "ref.jsonl", session("alice"))


# -- parity after normalization ------------------------------------------------------------------------

def test_identical_after_normalization_is_parity(tmp_path, ref):
    # another session id, other timestamps, other tool-call ids, another cwd hash, other JSON spacing
    cand = write(tmp_path / "cand.jsonl", session("bob-on-another-machine", ts0=1_800_000_000_000), spaced=True)
    d = ev.compare_events(ref, cand, preset="ccpa")
    assert d.passed and d.exact and d.verdict == "parity"
    assert d.score == 1.0
    assert (d.n_ref, d.n_cand, d.equal, d.changed, d.deleted, d.inserted) == (14, 14, 14, 0, 0, 0)
    assert d.first_divergence is None
    assert d.kinds["tool_result"].to_dict() == {"ref": 4, "cand": 4, "equal": 4, "changed": 0, "deleted": 0,
                                                "inserted": 0}
    assert d.unused_rules == []


def test_without_the_preset_volatile_fields_diverge(tmp_path, ref):
    cand = write(tmp_path / "cand.jsonl", session("bob"))
    d = ev.compare_events(ref, cand)
    assert not d.passed
    assert d.first_divergence.ref.index == 0
    assert {f.path for f in d.first_divergence.fields} >= {"session_id", "ts", "cwd_sha256"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.text(min_size=1, max_size=12), ts0=st.integers(0, 2**52), elapsed=st.integers(20_000, 120_000),
       tokens=st.integers(17_000, 20_000))
def test_volatile_ids_and_timestamps_never_diverge(tmp_path, seed, ts0, elapsed, tokens):
    a = ev.parse_jsonl(lines(session("alice")).encode(), "a")
    b = ev.parse_jsonl(lines(session(seed, ts0=ts0, elapsed_ms=elapsed, tokens_in=tokens)).encode(), "b")
    d = ev.compare_events(a, b, preset="ccpa")
    assert d.passed, [o.describe() for o in d.ops]
    assert d.score == 1.0


# -- divergences ------------------------------------------------------------------------------------

def test_changed_tool_argument_is_the_first_divergence_with_its_field_path(tmp_path, ref):
    recs = edited(session("bob"))
    recs[7]["content"][1]["input"]["new_string"] = "y % 4 == 0"
    d = ev.compare_events(ref, write(tmp_path / "cand.jsonl", recs), preset="ccpa")
    assert not d.passed
    first = d.first_divergence
    assert first.op == "changed" and first.ref.index == 7 and first.cand.index == 7
    assert first.ref.key == "events.0007.assistant_turn[turn=1]" and first.ref.line == 8
    assert [(f.path, f.ref, f.cand) for f in first.fields] == [
        ("content[1].input.new_string", "y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)", "y % 4 == 0")]
    assert (d.equal, d.changed, d.deleted, d.inserted) == (13, 1, 0, 0)
    assert 0.9 < d.score < 1.0


def test_dropped_tool_call_is_one_deletion_and_the_rest_aligned(tmp_path, ref):
    recs = edited(session("bob"))
    del recs[5:7]  # the Bash tool call and its result
    d = ev.compare_events(ref, write(tmp_path / "cand.jsonl", recs), preset="ccpa")
    assert not d.passed
    assert d.hunks == [[5, 7, 5, 5]]  # one deletion hunk: the call and its result
    assert [(o.op, o.ref.index, o.ref.kind) for o in d.ops] == [("deleted", 5, "assistant_turn"),
                                                                 ("deleted", 6, "tool_result")]
    # everything after lines up, and the later tool ids still refer to the right calls
    assert (d.equal, d.changed, d.inserted) == (12, 0, 0)
    assert d.score == pytest.approx(2 * 12 / (14 + 12))
    assert d.first_divergence.ref.record["content"][0]["input"]["command"].startswith("python -m pytest")


def test_dropped_single_event_is_exactly_one_deletion(tmp_path, ref):
    recs = edited(session("bob"))
    del recs[4]  # the hook event
    d = ev.compare_events(ref, write(tmp_path / "cand.jsonl", recs), preset="ccpa")
    assert len(d.deletions) == 1 and d.deletions[0].ref.kind == "hook_event"
    assert not d.insertions and d.changed == 0 and d.equal == 13


def test_extra_tool_call_is_an_insertion(tmp_path, ref):
    recs = edited(session("bob"))
    extra = {"v": 1, "kind": "assistant_turn", "turn": 1, "ts": 5, "content": [
        {"type": "tool_use", "id": "toolu_extra", "name": "Bash", "input": {"command": "git status"}}]}
    result = {"v": 1, "kind": "tool_result", "turn": 1, "ts": 6, "tool_use_id": "toolu_extra", "is_error": False,
              "content": "clean"}
    recs[3:3] = [extra, result]
    d = ev.compare_events(ref, write(tmp_path / "cand.jsonl", recs), preset="ccpa")
    assert [(o.op, o.cand.index) for o in d.ops] == [("inserted", 3), ("inserted", 4)]
    assert d.equal == 14


def test_result_referring_to_another_tool_call_diverges(tmp_path, ref):
    recs = edited(session("bob"))
    recs[11]["tool_use_id"] = recs[5]["content"][0]["id"]  # the last result claims to answer the 2nd call
    d = ev.compare_events(ref, write(tmp_path / "cand.jsonl", recs), preset="ccpa")
    assert not d.passed
    first = d.first_divergence
    assert first.ref.index == 11 and first.fields[0].path == "tool_use_id"
    assert "corresponds to" in first.fields[0].note


def test_numeric_tolerances(tmp_path, ref):
    within = write(tmp_path / "w.jsonl", session("bob", elapsed_ms=48_210 * 2.5, tokens_in=18_420 + 1_000))
    assert ev.compare_events(ref, within, preset="ccpa").passed
    slow = write(tmp_path / "s.jsonl", session("bob", elapsed_ms=48_210 * 4, tokens_out=5_000))
    d = ev.compare_events(ref, slow, preset="ccpa")
    assert not d.passed
    fields = {f.path: f for f in d.first_divergence.fields}
    assert set(fields) == {"elapsed_ms", "tokens_out"}
    assert "factor of 3" in fields["elapsed_ms"].note and fields["elapsed_ms"].cand == 48_210 * 4
    # a config can loosen them
    cfg = {"events": {"tolerance": {"session_end:elapsed_ms": {"factor": 5}, "session_end:tokens_out": {"rtol": 2}}}}
    assert ev.compare_events(ref, slow, cfg, preset="ccpa").passed


def test_text_fields_are_shown_as_a_unified_diff(tmp_path, ref):
    recs = edited(session("bob"))
    recs[6]["content"] = recs[6]["content"].replace("1 failed, 1 passed", "2 failed")
    d = ev.compare_events(ref, write(tmp_path / "cand.jsonl", recs), preset="ccpa")
    f = d.first_divergence.fields[0]
    assert f.path == "content" and f.text_diff is not None
    assert "-1 failed, 1 passed" in f.text_diff and "+2 failed" in f.text_diff
    md = ev.render_event_markdown(d)
    assert "```diff" in md and "-1 failed, 1 passed" in md
    page = ev.render_event_html(d)
    assert '<span class="del">-1 failed, 1 passed</span>' in page


def test_min_score_gate(tmp_path, ref):
    recs = edited(session("bob"))
    del recs[4]
    cand = write(tmp_path / "cand.jsonl", recs)
    assert not ev.compare_events(ref, cand, preset="ccpa").passed
    d = ev.compare_events(ref, cand, preset="ccpa", min_score=0.9)
    assert d.passed and not d.exact and d.score >= 0.9
    assert not ev.compare_events(ref, cand, {"events": {"min_score": 0.99}}, preset="ccpa").passed


def test_nothing_compared_is_never_parity(tmp_path):
    e = write(tmp_path / "e.jsonl", "")
    d = ev.compare_events(e, e)
    assert d.verdict == "nothing_compared" and not d.passed


# -- normalization rules ----------------------------------------------------------------------------

def test_config_rules_and_rules_that_match_nothing(tmp_path, ref):
    recs = edited(session("bob"))
    recs[9]["args"]["paths"] = ["tests/test_dates.py", "tests/conftest.py"]
    recs[1]["text"] = recs[1]["text"].replace("dates.py", "/tmp/run-81723/dates.py")
    recs[4]["decision_ms"] = 12
    cfg = tmp_path / "parity.toml"
    cfg.write_text(
        '[events]\npreset = "ccpa"\n'
        '[events.normalize]\n'
        'ignore = ["hook_event:decision_ms"]\n'
        'unordered = ["skill_invocation:args.paths"]\n'
        'replace = [{ path = "user_prompt:text", pattern = "/tmp/run-[0-9]+/", with = "" }]\n'
        'placeholders = { "**.no_such_field" = "<X>" }\n')
    base = edited(session("alice"))
    base[9]["args"]["paths"] = ["tests/conftest.py", "tests/test_dates.py"]
    d = ev.compare_events(write(tmp_path / "r.jsonl", base), write(tmp_path / "c.jsonl", recs), str(cfg))
    assert d.passed, [o.describe() for o in d.ops]
    assert d.unused_rules == ["placeholder **.no_such_field -> <X> (parity.toml)"]
    assert d.preset == "ccpa"


def test_bad_config_is_a_config_error(tmp_path, ref):
    for bad in ({"events": {"normalize": {"ignore": "x"}}}, {"events": {"nope": 1}},
                {"events": {"tolerance": {"x": {"factor": 0.5}}}}, {"events": {"preset": "zzz"}},
                {"events": {"normalize": {"replace": [{"pattern": "("}]}}},
                {"events": {"normalize": {"placeholders": {"a..b": "x"}}}}):
        with pytest.raises(ConfigError):
            ev.compare_events(ref, ref, bad)


def test_path_patterns():
    p = ev.PathPattern.parse("session_end:tokens_*")
    assert p.matches("session_end", ("tokens_in",)) and not p.matches("session_end", ("elapsed_ms",))
    assert not p.matches("session_start", ("tokens_in",))
    q = ev.PathPattern.parse("**.input.*")
    assert q.matches("assistant_turn", ("content", 1, "input", "command"))
    assert not q.matches("assistant_turn", ("content", 1, "input"))
    r = ev.PathPattern.parse("content[0].text")
    assert r.matches("x", ("content", 0, "text")) and not r.matches("x", ("content", 1, "text"))


# -- malformed lines -------------------------------------------------------------------------------

def _bad_log() -> str:
    good = lines(session("alice")).splitlines(keepends=True)
    good.insert(3, '{"v": 1, "kind": "tool_result", "content": "cut off\n')
    good.insert(6, '{"kind": "hook_event"}\n')
    good.insert(8, '{"v": 7, "kind": "hook_event"}\n')
    good.insert(9, '[1, 2]\n')
    return "".join(good)


def test_malformed_lines_are_a_clear_error_with_line_numbers(tmp_path):
    src = write(tmp_path / "bad.jsonl", _bad_log())
    with pytest.raises(ImportFormatError) as e:
        ev.import_events(src, tmp_path / "bad.trace")
    msg = str(e.value)
    assert msg.startswith(f"{src}: 4 malformed lines of 18: line 4: not valid JSON")
    assert 'line 7: no "v" field' in msg and "line 9: unknown envelope version v=7" in msg
    assert "line 10: not a JSON object" in msg and "--skip-malformed" in msg
    assert not os.path.exists(tmp_path / "bad.trace")


def test_skip_malformed_warns_counts_and_keeps_them(tmp_path):
    src = write(tmp_path / "bad.jsonl", _bad_log())
    s = ev.import_events(src, tmp_path / "bad.trace", preset="ccpa", skip_malformed=True)
    assert s.events == 14 and [m.line for m in s.malformed] == [4, 7, 9, 10]
    meta = parity.load_trace(s.path).meta["parity_events"]
    assert [m["line"] for m in meta["malformed"]] == [4, 7, 9, 10] and meta["preset"] == "ccpa"
    d = ev.compare_events(s.path, write(tmp_path / "good.jsonl", session("bob")))
    assert d.passed and [m["line"] for m in d.malformed["ref"]] == [4, 7, 9, 10]
    assert any("4 malformed line(s) of the reference" in n for n in d.notes)


def test_not_utf8_and_deep_nesting_are_malformed(tmp_path):
    data = lines(session("a")).encode() + b'{"v":1,"kind":"x","t":"\xff"}\n' + b'{"v":1,"kind":"y","d":' + \
        b"[" * 100 + b"]" * 100 + b"}\n"
    log = ev.parse_jsonl(data, "x", skip_malformed=True)
    assert [(m.line, m.reason.split(" (")[0]) for m in log.malformed] == [(15, "not UTF-8 text"),
                                                                         (16, "nests JSON more than 64 levels deep")]


# -- traces and round trip --------------------------------------------------------------------------

def test_import_stores_each_record_exactly_as_a_keyed_text_stage(tmp_path, ref):
    s = ev.import_events(ref, tmp_path / "ref.trace", preset="ccpa")
    t = parity.load_trace(s.path)
    assert ev.is_event_trace(t) and ev.is_event_trace(s.path)
    keys = t.keys()
    assert keys[:4] == ["events.0000.session_start", "events.0001.user_prompt[turn=1]",
                        "events.0002.assistant_turn[turn=1]", "events.0003.tool_result[turn=1]"]
    assert keys[-1] == "events.0013.session_end"
    original = open(ref, encoding="utf-8").read().splitlines()
    assert [t[k] for k in keys] == original
    assert t.stage(keys[2]).provenance == {"line": 3}
    # and it compares like the JSONL it came from
    assert ev.compare_events(s.path, ref).passed


def test_round_trip_is_byte_identical(tmp_path):
    body = lines(session("ünïcødé ✓")).replace("\n", "\r\n", 3)
    data = ("\ufeff" + body + "\n   \n" + '{"v":1,"kind":"user_prompt","turn":2,"text":"tab\\there \\u00e9 é"}').encode()
    data += b"\n{broken\n" + b'{"v":1,"kind":"x","t":"\xfe"}'  # malformed lines, and no final newline
    src = tmp_path / "odd.jsonl"
    src.write_bytes(data)
    s = ev.import_events(src, tmp_path / "odd.trace", skip_malformed=True)
    assert s.events == 15 and len(s.malformed) == 2
    n = ev.export_events(s.path, tmp_path / "back.jsonl")
    assert (tmp_path / "back.jsonl").read_bytes() == data and n == len(data)
    # an exported trace re-imports to the same manifest
    s2 = ev.import_events(tmp_path / "back.jsonl", tmp_path / "odd2.trace", skip_malformed=True)
    m1 = json.loads((tmp_path / "odd.trace" / "manifest.json").read_text())
    m2 = json.loads((tmp_path / "odd2.trace" / "manifest.json").read_text())
    assert m1["stages"] == m2["stages"]
    assert s2.events == 15


@settings(max_examples=40, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(), st.booleans(), st.none(),
                                                              st.floats(allow_nan=False, allow_infinity=False)),
                                max_size=4), max_size=6))
def test_round_trip_property(records):
    import tempfile

    text = "".join(json.dumps({"v": 1, "kind": "k", **{("f" + k): v for k, v in r.items()}}, ensure_ascii=False)
                   + "\n" for r in records)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.jsonl")
        with open(p, "wb") as f:
            f.write(text.encode("utf-8"))
        ev.import_events(p, os.path.join(d, "x.trace"))
        ev.export_events(os.path.join(d, "x.trace"), os.path.join(d, "y.jsonl"))
        with open(os.path.join(d, "y.jsonl"), "rb") as f:
            assert f.read() == text.encode("utf-8")


def test_record_events_and_emit(tmp_path, ref):
    path = tmp_path / "live.trace"
    assert ev.emit("user_prompt", turn=1) is None  # no-op outside a recording
    with ev.record_events(path, preset="ccpa"):
        for r in session("live"):
            fields = {k: v for k, v in r.items() if k not in ("v", "kind", "turn")}
            ev.emit(r["kind"], turn=r.get("turn"), **fields)
    t = parity.load_trace(path)
    assert t.meta["parity_events"]["events"] == 14 and t.meta["parity_events"]["preset"] == "ccpa"
    assert ev.compare_events(ref, path).passed
    with pytest.raises(UsageError):
        with ev.record_events(tmp_path / "x.trace") as rec:
            rec.emit_line("not json")


def test_a_tensor_trace_is_not_an_event_trace(tmp_path):
    import numpy as np

    p = tmp_path / "t.trace"
    with parity.record(p):
        parity.tap("x", np.arange(3.0))
    assert not ev.is_event_trace(p) and not ev.is_event_trace(tmp_path / "nothing")
    with pytest.raises(UsageError, match="not an event trace"):
        ev.compare_events(p, p)


def test_result_serializes(tmp_path, ref):
    recs = edited(session("bob"))
    del recs[5:7]
    recs[1]["text"] = "Fix the leap-year bug."
    d = ev.compare_events(ref, write(tmp_path / "c.jsonl", recs), preset="ccpa")
    doc = json.loads(ev.render_event_json(d))
    assert doc["schema"] == "parity.events.diff" and doc["passed"] is False
    assert doc["first_divergence"]["fields"][0]["path"] == "text"
    back = ev.EventDiff.from_dict(doc)
    assert back.to_dict() == d.to_dict() and back.first_divergence.ref.index == 1


# -- directories of sessions -----------------------------------------------------------------------

def test_directory_of_sessions(tmp_path):
    r, c = tmp_path / "fixtures", tmp_path / "runs"
    r.mkdir()
    c.mkdir()
    write(r / "leap-year.jsonl", session("a"))
    write(c / "leap-year.jsonl", session("b"))
    write(r / "dropped.jsonl", session("a"))
    recs = edited(session("b"))
    del recs[4]
    write(c / "dropped.jsonl", recs)
    (r / "in-folder").mkdir()
    write(r / "in-folder" / "ccpa-trace.jsonl", session("a"))
    ev.import_events(write(tmp_path / "x.jsonl", session("z")), c / "in-folder.trace")
    write(r / "absent.jsonl", session("a"))
    write(c / "extra.jsonl", session("a"))
    res = ev.compare_event_dirs(r, c, preset="ccpa")
    by = {f.name: f for f in res.fixtures}
    assert sorted(by) == ["absent", "dropped", "in-folder", "leap-year"]
    assert by["leap-year"].score == 1.0 and by["leap-year"].passed
    assert by["in-folder"].passed
    assert by["dropped"].score == pytest.approx(26 / 27) and not by["dropped"].passed
    assert by["absent"].verdict == "missing" and by["absent"].score == 0.0
    assert res.extra == ["extra"]
    assert res.mean_score == pytest.approx(round((1 + 1 + 26 / 27 + 0) / 4, 6))
    assert not res.passed
    back = ev.EventDirDiff.from_dict(json.loads(ev.render_event_dirs_json(res)))
    assert back.to_dict() == res.to_dict()
    assert "| dropped | 0.963 | divergence |" in ev.render_event_dirs_markdown(res)
    # with a gate, the dropped hook is tolerated; the absent fixture still fails
    res2 = ev.compare_event_dirs(r, c, preset="ccpa", min_score=0.9)
    assert by["absent"].verdict == "missing" and [f.name for f in res2.fixtures if not f.passed] == ["absent"]
