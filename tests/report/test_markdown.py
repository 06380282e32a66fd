"""Markdown report: golden text, worst elements from reopened traces, escaping."""

import numpy as np

import parity
from parity.compare import compare_stages as compare_traces  # the per-stage engine: no diagnoses in these reports
from parity.report import render_markdown

from .conftest import check_golden, normalise


def test_golden_synthetic_diff(synth):
    # Every status, problem kind and section; the traces do not exist, so the report says why values are left out.
    check_golden("synthetic.md", render_markdown(synth))


def test_golden_recorded_traces_with_worst_elements(fixed_traces, tmp_path):
    ref, cand = fixed_traces
    diff = compare_traces(ref, cand, rtol=1e-5, atol=1e-6)
    md = normalise(render_markdown(diff, worst=4), tmp_path)
    check_golden("recorded.md", md)
    # the worst elements are the bumped ones, with their indices and both values
    assert "| 1 | `[2, 5]` |" in md and "| 2 | `[4, 1]` |" in md and "| 3 | `[0, 7]` |" in md


def test_every_stage_is_in_the_table_and_first_divergence_is_marked(synth):
    md = render_markdown(synth)
    table = md.split("## Stages", 1)[1].split("\n\n")[1].splitlines()[2:]
    assert [row.split("|")[2].strip() for row in table] == [f"`{s.key}`" for s in synth.stages]
    assert sum("◀ first" in row for row in table) == 1 and "◀ first" in table[1]


def test_traces_none_and_explicit_pair(fixed_traces):
    ref, cand = fixed_traces
    diff = compare_traces(ref, cand, rtol=1e-5, atol=1e-6)
    assert "Worst" not in render_markdown(diff, traces=None)
    assert "not readable" not in render_markdown(diff, traces=None)
    moved = diff.__class__(**{**diff.__dict__, "ref_path": "gone/ref.trace", "cand_path": "gone/cand.trace"})
    assert "not readable from here" in render_markdown(moved)
    assert "Worst 3 elements" in render_markdown(moved, traces=(ref, cand), worst=3)
    assert "Worst" not in render_markdown(diff, worst=0)


def test_free_text_cannot_inject_html_or_break_tables(tmp_path):
    r, c = str(tmp_path / "r.trace"), str(tmp_path / "c.trace")
    for path, text in ((r, "a"), (c, "<script>alert(1)</script> | x\nnew line")):
        with parity.record(path):
            parity.tap("prompt", text)
    md = render_markdown(compare_traces(r, c))
    assert "<script>" not in md and "&lt;script&gt;" in md
    first = md.split("## First divergence", 1)[1].split("##", 1)[0]
    assert "\nnew line" not in first  # the newline inside the text does not break the paragraph


def test_parity_holds(make_trace):
    a = make_trace("a.trace", {"x": np.ones(3)})
    b = make_trace("b.trace", {"x": np.ones(3)})
    md = render_markdown(compare_traces(a, b))
    assert md.startswith("# parity diff: PARITY HOLDS\n") and "No compared stage diverges." in md
