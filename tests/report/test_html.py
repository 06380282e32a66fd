"""HTML report: one self-contained file with the plots, bounded work, escaping; rendered in headless Chromium."""

import json
import os
import re
import struct
import zlib

import numpy as np
import pytest

import parity
from parity.compare import compare_stages as compare_traces  # the per-stage engine: no diagnoses in these reports
from parity.report import render_html
from parity.report.svg import png as _png

from .cdp import Browser, find_chromium


@pytest.fixture
def demo_diff(tmp_path):
    from parity.demo import write_demo_traces

    ref, cand, cfg = write_demo_traces(str(tmp_path))
    return compare_traces(ref, cand, config=cfg)


def test_self_contained_no_network(demo_diff):
    page = render_html(demo_diff)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "://" not in page  # no URL of any scheme: nothing to fetch
    assert not re.search(r"<(script|img|link|iframe)[^>]*\s(src|href)=", page)
    assert re.findall(r'href="([^"]*)"', page) and all(h.startswith(("#", "data:image/png;base64,"))
                                                       for h in re.findall(r'href="([^"]*)"', page))
    assert "default-src 'none'" in page  # the Content-Security-Policy forbids any fetch
    assert len(page) < 400_000


def test_pipeline_plot_elements(demo_diff):
    page = render_html(demo_diff, traces=None)
    n = sum(1 for s in demo_diff.stages if s.ref is not None)
    svg = page.split('<svg id="pipeline-plot"', 1)[1].split("</svg>", 1)[0]
    panels = re.findall(r'<g class="panel" data-metric="([a-z_]+)"', svg)
    assert panels == ["max_rel_err", "cosine", "sqnr_db"]
    # one marker per stage and panel (SQNR may be off the axis as a triangle, still a marker)
    assert len(re.findall(r'class="pt pt-', svg)) == 3 * n
    assert 'class="tol" data-metric="max_rel_err"' in svg  # rtol drawn
    assert "first divergence: layers.0.attn_scores" in svg
    assert re.search(r'<text [^>]*>0</text>', svg) and re.search(r'<text [^>]*>1</text>', svg)  # layers on the axis


def test_details_histograms_heatmaps_and_worst(demo_diff):
    page = render_html(demo_diff, max_detail=3, worst=4)
    details = re.findall(r'<section class="stage-detail[^"]*" id="(stage-\d+)"', page)
    assert len(details) == 3
    assert page.count('class="plot histogram"') == 3
    # attn_scores and attn_probs are 3-D (no heat map); attn_context is 8×32
    assert page.count('class="plot heatmap"') == 1
    assert page.count('<table class="worst">') == 3
    assert "26 fail" in page and "23 more divergent stage(s)" in page
    rows = re.findall(r'<tr(?: class="is-first")? data-key="([^"]+)" data-status="(\w+)"', page)
    assert len(rows) == len(demo_diff.stages) and rows[5] == ("layers.0.attn_scores", "fail")


def test_escaping_of_trace_text(tmp_path):
    r, c = str(tmp_path / "r.trace"), str(tmp_path / "c.trace")
    for path, text in ((r, "ok"), (c, '<img src=x onerror=alert(1)>"')):
        with parity.record(path):
            parity.tap("prompt", text)
    page = render_html(compare_traces(r, c))
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_large_stage_work_is_bounded(tmp_path):
    rng = np.random.default_rng(0)
    big = rng.normal(size=(600, 500)).astype(np.float32)
    bumped = big.copy()
    bumped[123, 456] += 1.0
    r, c = str(tmp_path / "r.trace"), str(tmp_path / "c.trace")
    for path, v in ((r, big), (c, bumped)):
        with parity.record(path):
            parity.tap("w", v, axes=("rows", "cols"))
    diff = compare_traces(r, c)
    page = render_html(diff, max_sample=5000, heatmap_cells=32, max_heat_elements=20_000)
    assert "sample of 5,000 of 300,000 elements" in page
    assert "sampled" in page and 'data-row-step="19"' in page and 'data-col-step="16"' in page
    full = render_html(diff, heatmap_cells=32)
    # unsampled, the max-pooled block holding the bumped element is the hottest cell
    grid = re.search(r'data-grid="([^"]+)"', full).group(1).replace("&quot;", '"')
    cells = np.array([[0 if v is None else v for v in row] for row in json.loads(grid)], dtype=float)
    assert np.unravel_index(cells.argmax(), cells.shape) == (123 // 19, 456 // 16)


def test_png_encoder_round_trip():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    data = _png(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41:41 + idat_len])
    assert (w, h) == (3, 2) and raw == b"\x00" + rgb[0].tobytes() + b"\x00" + rgb[1].tobytes()


def test_progress_callback(demo_diff):
    calls = []
    render_html(demo_diff, max_detail=4, traces=None, progress=lambda d, t, k: calls.append((d, t, k)))
    assert [c[:2] for c in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)] and calls[0][2] == "layers.0.attn_scores"


# -- in a real browser ---------------------------------------------------------------------------

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")


@needs_chromium
def test_renders_in_headless_chromium_without_console_errors(demo_diff, tmp_path):
    path = tmp_path / "report.html"
    path.write_text(render_html(demo_diff, max_detail=4), encoding="utf-8")
    with Browser(CHROMIUM, width=1280, height=900) as b:
        b.open(str(path))
        # Plot elements exist and are laid out with a real size.
        boxes = b.evaluate("""(() => {
            const size = s => Array.from(document.querySelectorAll(s)).map(e => {
                const r = e.getBoundingClientRect(); return [r.width, r.height]; });
            return {pipeline: size('#pipeline-plot'), points: size('#pipeline-plot .pt').length,
                    tol: size('#pipeline-plot polyline.tol').length, first: size('#pipeline-plot line.first-div'),
                    hist: size('svg.histogram'), heat: size('svg.heatmap image'), rows: size('#stage-table tbody tr').length};
        })()""")
        n = sum(1 for s in demo_diff.stages if s.ref is not None)
        assert boxes["pipeline"][0][0] > 800 and boxes["pipeline"][0][1] > 400
        assert boxes["points"] == 3 * n and boxes["tol"] >= 1 and boxes["first"][0][1] > 300
        assert len(boxes["hist"]) == 4 and all(w > 300 and h > 150 for w, h in boxes["hist"])
        assert len(boxes["heat"]) == 2 and all(w > 50 and h > 10 for w, h in boxes["heat"])
        assert boxes["rows"] == len(demo_diff.stages)
        # The table sorts by a clicked column (max rel, descending on the second click).
        b.evaluate("document.querySelectorAll('#stage-table th')[6].click()")
        b.evaluate("document.querySelectorAll('#stage-table th')[6].click()")
        top = b.evaluate("document.querySelector('#stage-table tbody tr').getAttribute('data-key')")
        worst_rel = max(demo_diff.stages, key=lambda s: s.metrics.max_rel_err if s.metrics else -1).key
        assert top == worst_rel
        # The filter hides passing stages; the heat map reads out a block under the mouse.
        b.evaluate("const o = document.getElementById('only-divergent'); o.checked = true; o.dispatchEvent(new Event('change'))")
        visible = b.evaluate("Array.from(document.querySelectorAll('#stage-table tbody tr')).filter(r => !r.hidden).length")
        assert visible == len(demo_diff.divergent)
        readout = b.evaluate("""(() => { const svg = document.querySelector('svg.heatmap'); const r = svg.querySelector('image')
            .getBoundingClientRect(); svg.dispatchEvent(new MouseEvent('mousemove', {clientX: r.left + 2, clientY: r.top + 2}));
            return document.getElementById(svg.getAttribute('data-readout')).textContent; })()""")
        assert readout.startswith("rows 0, columns 0: max |error| ")
        shot = b.screenshot(str(tmp_path / "report.png"))
        assert b.console_errors() == []
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", shot[16:24])
    assert width == 1280 and height > 2000  # the full page, plots included
    assert os.path.getsize(tmp_path / "report.png") > 50_000  # not a blank page


@needs_chromium
def test_console_errors_are_caught(tmp_path):
    # The check above must be able to fail: a page with a script error and a blocked fetch.
    page = render_html(compare_traces(*_tiny(tmp_path)))
    page = page.replace("</body>", "<script>undefinedFunction();</script><img src='http://example.invalid/x.png'></body>")
    path = tmp_path / "broken.html"
    path.write_text(page, encoding="utf-8")
    with Browser(CHROMIUM) as b:
        b.open(str(path))
        errors = b.console_errors()
    assert any("undefinedFunction" in e for e in errors)
    assert any("Content Security Policy" in e or "example.invalid" in e for e in errors)


def _tiny(tmp_path):
    r, c = str(tmp_path / "r.trace"), str(tmp_path / "c.trace")
    for path, v in ((r, 1.0), (c, 2.0)):
        with parity.record(path):
            parity.tap("x", np.full((2, 2), v))
    return r, c


def test_synthetic_diff_every_status(synth):
    page = render_html(synth)
    assert "are not readable from here" in page  # the traces do not exist: metrics only, and the page says so
    svg = page.split('<svg id="pipeline-plot"', 1)[1].split("</svg>", 1)[0]
    assert svg.count("layers.0.out: shape (8, 8) != (4, 16)") == 3  # a cross per panel for the shape failure
    assert 'class="pt pt-expected"' in svg and "first divergence: layers.0.attn_scores" in svg
    assert "dropout is random | by design &lt;b&gt;" in page and "<b>" not in page.split("<body>", 1)[1]
    rows = re.findall(r'data-status="(\w+)"', page)
    assert rows == ["pass", "fail", "fail", "fail", "expected", "missing", "extra"]
