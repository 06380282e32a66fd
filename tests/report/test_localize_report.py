"""Renderers of a real Localization (parity.localize.local.localize): the culprit is stage "b"
(index 1), "c" and "e" carry its error (propagated), "d" has a second bug of its own."""

import dataclasses
import io
import re

import numpy as np
import pytest
from rich.console import Console

import parity
from parity.localize.local import StageLocality, localize
from parity.report.localize import render_localize_html, render_localize_markdown, render_localize_text

TOL = {"rtol": 1e-7, "atol": 0.0}


def _run(bug1: float, bug2: float, ref_only: bool = False) -> None:
    a = parity.tap("a", np.linspace(1, 2, 8))
    b = parity.tap("b", a * (1 + bug1))             # the culprit
    c = parity.tap("c", np.exp(b * 3))              # carries b's error
    d = parity.tap("d", c * (1 + bug2))             # a second bug
    parity.tap("e", d + 1)                          # carries both
    if ref_only:
        parity.tap("r_only", np.zeros(2))


def _localization(tmp_path, *, ref_only: bool = False):
    ref, cand, local = (str(tmp_path / n) for n in ("ref.trace", "cand.trace", "local.trace"))
    with parity.record(ref):
        _run(0.0, 0.0, ref_only)
    with parity.record(cand):
        _run(1e-5, 1e-3)
    with parity.replay(ref, local):
        _run(1e-5, 1e-3)
    return localize(ref, cand, local, **TOL)


@pytest.fixture
def loc(tmp_path):
    loc = _localization(tmp_path)
    assert [s.label for s in loc.stages] == ["ok", "culprit", "propagated", "also local", "propagated"]
    return loc


def test_text_names_the_culprit(loc):
    out = io.StringIO()
    render_localize_text(loc, Console(file=out, width=160, color_system=None))
    text = out.getvalue()
    assert "The divergence starts at b: its own computation differs (local error)." in text
    assert "Plain diff's first divergence is" not in text  # b is also the plain diff's first divergence
    row = next(ln for ln in text.splitlines() if re.search(r"\bculprit\b", ln))
    assert re.search(r"\bb\b", row) and " 2 " in row.replace("│", " ")


def test_markdown_table_has_every_label(tmp_path):
    loc = _localization(tmp_path, ref_only=True)
    md = render_localize_markdown(loc)
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith(("| #", "| ---"))]
    labels = {row.rstrip(" |").rsplit("| ", 1)[-1] for row in rows}
    assert labels == {"ok", "**culprit**", "propagated", "also local", "missing"}
    assert "| 2 | `b` | fail |" in md and "| 6 | `r_only` | missing |" in md
    assert md.splitlines()[0] == "# parity localize"
    assert "The divergence starts at b" in md


def _points(page: str, series: str) -> list[list[str]]:
    return [m.split() for m in re.findall(rf'data-series="{series}"[^>]*points="([^"]*)"', page)]


def test_html_draws_two_curves_one_point_per_stage_and_marks_the_culprit(loc):
    page = render_localize_html(loc)
    assert page.startswith("<!DOCTYPE html>") and "://" not in page
    plain, local = _points(page, "plain"), _points(page, "local")
    assert len(plain) == 1 and len(local) == 1           # two polylines, one per error curve
    assert len(plain[0]) == len(local[0]) == len(loc.stages) == 5
    xs = [float(p.split(",")[0]) for p in plain[0]]
    assert xs == sorted(xs) and xs == [float(p.split(",")[0]) for p in local[0]]
    # the local curve: b and d stand high, the stages fed the reference's inputs sit on the floor
    ly = [float(p.split(",")[1]) for p in local[0]]
    assert ly[1] < ly[0] and ly[3] < ly[2] and ly[0] == ly[2] == ly[4]
    # accumulated error: e carries b's and d's error, above b's own
    py = [float(p.split(",")[1]) for p in plain[0]]
    assert py[4] < py[1]
    culprit = re.search(r'<g class="culprit"><line class="first-div" x1="([\d.]+)"', page)
    assert culprit and float(culprit.group(1)) == xs[1]
    assert "culprit: b</text>" in page
    assert '<tr class="is-first" data-key="b" data-label="culprit">' in page
    assert page.count('class="is-first"') == 1


def test_html_breaks_a_curve_at_a_stage_without_metrics(tmp_path):
    loc = _localization(tmp_path, ref_only=True)
    page = render_localize_html(loc)
    assert [len(p) for p in _points(page, "plain")] == [5]   # r_only (last) has no error to draw
    assert '<td class="st-missing">missing</td>' in page


def test_hostile_stage_names_are_escaped(loc):
    evil = '<script>alert(1)</script>|`x`&"'
    stages = list(loc.stages)
    stages[1] = dataclasses.replace(stages[1], key=evil)
    hostile = dataclasses.replace(loc, stages=tuple(stages))
    page = render_localize_html(hostile)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'data-key="&lt;script&gt;alert(1)&lt;/script&gt;|`x`&amp;&quot;"' in page
    md = render_localize_markdown(hostile)
    row = next(ln for ln in md.splitlines() if "alert" in ln)
    assert "<script>" not in row and "&lt;script&gt;" in row
    assert row.count(" | ") == 6                      # the key's "|" is escaped, not a column break
    assert "\\|" in row
    out = io.StringIO()
    render_localize_text(hostile, Console(file=out, width=200, color_system=None))  # no markup is interpreted
    assert "<script>alert(1)</script>" in out.getvalue()


def test_stage_locality_fields_drive_the_table(loc):
    s = loc.stage("d")
    assert isinstance(s, StageLocality) and s.label == "also local" and s.local_rel > 0
    md = render_localize_markdown(loc)
    assert "| 4 | `d` | fail |" in md and "| also local |" in md
