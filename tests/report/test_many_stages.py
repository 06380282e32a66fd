"""Reports of a diff of many stages stay reports: the Markdown and HTML tables fold long runs of
passing stages (every stage that does not pass is listed) and the pipeline plot draws one column
per pixel, not one point per stage."""

import io
import re

import numpy as np
import pytest
from rich.console import Console

import parity
from parity.report import plots
from parity.report.format import table_rows
from parity.report.html import render_html
from parity.report.markdown import render_markdown
from parity.report.text import render_text
from parity.trace.writer import TraceWriter

N = 6000
BAD = (10, 2500, 5999)  # failing stages: first, middle, last


@pytest.fixture(scope="module")
def diff(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    keys = [f"iter.{i}.residual" for i in range(N)]
    ref = np.random.default_rng(1).normal(size=N * 4).astype(np.float32)
    cand = ref.copy()
    for i in BAD:
        cand[4 * i + 1] += 1.0
    for name, values in (("r", ref), ("c", cand)):
        with TraceWriter(d / name, index=True) as w:
            w.add_batch(keys, [(4,)] * N, values)
    return parity.compare_traces(d / "r", d / "c")


def test_table_rows_keep_every_failing_stage_and_fold_passing_runs(diff):
    rows = list(table_rows(diff, 100))
    listed = [r for r in rows if not isinstance(r, int)]
    assert [s.key for s in listed if not s.passed] == [f"iter.{i}.residual" for i in BAD]
    assert sum(1 for s in listed if s.passed) == 100 and sum(r for r in rows if isinstance(r, int)) == N - 3 - 100
    assert [s.key for s in listed[:3]] == ["iter.0.residual", "iter.1.residual", "iter.2.residual"]
    assert len([r for r in table_rows(diff, None) if not isinstance(r, int)]) == N


def test_markdown_and_html_tables_are_bounded(diff):
    md = render_markdown(diff, traces=None, table_passing=200)
    table = md.split("## Stages", 1)[1].split("\n\n")[1].splitlines()[2:]
    assert len(table) == 200 + 3 + 2 and sum("passing stages (the JSON report lists every stage)" in r for r in table) == 2
    assert all(f"`iter.{i}.residual`" in md for i in BAD)
    assert len(render_markdown(diff, traces=None, table_passing=None).split("## Stages", 1)[1].splitlines()) > N
    page = render_html(diff, traces=None, table_passing=200, max_detail=1)
    assert page.count("<tr data-key=") + page.count('<tr class="is-first" data-key=') == 203
    assert f"first and last 100 of the {N - 3:,} passing stages ({N - 3 - 200:,} passing stages are left out" in page
    assert "left out" not in render_html(diff, traces=None, table_passing=None, max_detail=1)


def test_the_pipeline_plot_of_many_stages_draws_columns_not_stages(diff, monkeypatch):
    monkeypatch.setattr(plots, "MAX_COLUMNS", 500)
    svg = plots.pipeline_svg(diff)
    points = [len(p.split()) for p in re.findall(r'<polyline class="series" points="([^"]*)"', svg)]
    assert len(points) == 3 and all(500 <= n <= 503 for n in points)  # one per column, and the failing stages
    assert all(f"iter.{i}.residual" in svg for i in BAD) and "first divergence: iter.10.residual" in svg
    tol = re.findall(r'<polyline class="tol" data-metric="max_rel_err" points="([^"]*)"', svg)
    assert len(tol) == 1 and len(tol[0].split()) == 2  # one tolerance for every stage: one step
    monkeypatch.setattr(plots, "MAX_COLUMNS", 10_000)
    dense = [len(p.split()) for p in re.findall(r'<polyline class="series" points="([^"]*)"', plots.pipeline_svg(diff))]
    assert dense == [N] * 3


def test_the_text_table_folds_as_before(diff):
    out = io.StringIO()
    render_text(diff, Console(file=out, width=160))
    text = out.getvalue()
    assert text.count("passing stages (--all shows them)") == 2 and all(f"iter.{i}.residual" in text for i in BAD)
