"""Self-contained HTML report: one file, no network, plots drawn as inline SVG.

Contents: a summary; the *error through the pipeline* plot (max relative error, 1 − cosine
similarity and SQNR of every stage in execution order, layers marked on the axis, tolerance lines
drawn, the first divergence marked); for each divergent stage its metrics, worst elements, a
histogram of the error relative to the allowed error and, for 2-D stages, a heat map of the error;
and a sortable, filterable table of every stage.

Why inline SVG generated here rather than a plotting library: the report must open offline
from a single file, and the plots are simple (markers, lines, bars). Embedding plotly's bundle
costs about 4 MB per report and matplotlib would be a heavy optional dependency that still needs
its output inlined; a few hundred lines of NumPy + SVG keep reports small (tens of kB), add no
dependency, and render identically in every browser. Heat maps are a small PNG (encoded here with
:mod:`zlib`) inside the SVG, because thousands of ``<rect>`` cells would bloat the file. A
Content-Security-Policy ``<meta>`` forbids the page any network access.

Work is bounded: histograms sample at most ``max_sample`` elements of a stage, heat maps read at
most ``max_heat_elements`` and max-pool them to at most ``heatmap_cells`` per side, and only
``max_detail`` divergent stages get plots.

This module builds the page (summary, stage sections, the stage table) inside the shared shell
:func:`html_page`; the plots are drawn by :mod:`.plots` from the primitives in :mod:`.svg`.
"""

from __future__ import annotations

import math
from importlib import resources
from string import Template
from typing import Any

from ..compare.batch import judged_alone
from ..compare.diff import StageDiff, Status, TraceDiff
from ..compare.floor import floor_ratio
from ..compare.image import image_of
from ._arrays import AUTO, ProgressCallback, TracePair, detail_stages, resolve_traces
from .format import TABLE_PASSING, table_rows
from .format import describe_nothing_compared, dtype_text, format_float, metrics_line, result_counts, shape_text, verdict_text
from .plots import error_sample, heatmap_svg, histogram_svg, image_panels, pipeline_svg
from .svg import esc as _e
from .worst import worst_elements

__all__ = ["render_html", "html_page"]


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def html_page(body: str, *, title: str, version: str) -> str:
    """The self-contained page every parity HTML report shares: its CSS and script inline, a
    Content-Security-Policy that forbids any network access, ``body`` (HTML) inside.

    Example:
        >>> page = html_page("<h1>hi</h1>", title="a <b>", version="1.0")
        >>> page.startswith("<!DOCTYPE html>"), "<title>a &lt;b&gt;</title>" in page, "default-src 'none'" in page
        (True, True, True)
    """
    return Template(_asset("report.html")).substitute(
        version=_e(version), title=_e(title), css=_asset("report.css"), js=_asset("report.js"), body=body)


# -- page --------------------------------------------------------------------------------------

_STATUS_CLASS = {Status.PASS: "st-pass", Status.FAIL: "st-fail", Status.EXPECTED: "st-expected",
                 Status.MISSING: "st-missing", Status.EXTRA: "st-extra"}


def _num_attr(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return repr(float(x))


def _stage_table(diff: TraceDiff, anchors: dict[int, str], table_passing: int | None) -> str:
    first = diff.first_divergence
    cols = [("#", "num"), ("stage", "text"), ("status", "text"), ("shape", "text"), ("dtype", "text"),
            ("max abs", "num"), ("max rel", "num"), ("cosine", "num"), ("SQNR dB", "num"), ("mismatched", "num")]
    floors = any(floor_ratio(sd) is not None for sd in judged_alone(diff.stages))
    rows = [r for r in table_rows(diff, table_passing) if not isinstance(r, int)]
    left = len(diff.stages) - len(rows)
    if floors:
        cols.append(("× noise floor", "num"))
    out = [f'<p class="note">The table lists every stage that does not pass and the first and last '
           f'{table_passing // 2:,} of the {diff.summary()[Status.PASS]:,} passing stages ({left:,} passing stages are '
           'left out; the JSON report lists every stage).</p>' if left and table_passing else "",
           '<div class="controls"><input type="search" id="stage-filter" placeholder="filter stages by name" '
           'aria-label="filter stages"><label><input type="checkbox" id="only-divergent"> only stages that do not pass'
           '</label><span class="muted">click a column to sort</span></div>',
           '<table class="stages sortable" id="stage-table"><thead><tr>']
    out += [f'<th data-type="{t}">{_e(c)}</th>' for c, t in cols]
    out.append("</tr></thead><tbody>")
    for sd in rows:
        m = sd.metrics
        pos = sd.ref.position + 1 if sd.ref else None
        key = _e(sd.key)
        if id(sd) in anchors:
            key = f'<a href="#{anchors[id(sd)]}">{key}</a>'
        status = sd.status.upper() + (f" ({sd.problem})" if sd.problem and sd.problem != "values" else "")
        if sd is first:
            status += " ◀ first"
        cells = [
            f'<td class="num" data-v="{pos if pos is not None else "NaN"}">{pos if pos is not None else ""}</td>',
            f'<td><code>{key}</code></td>',
            f'<td class="{_STATUS_CLASS[sd.status]}">{_e(status)}</td>',
            f"<td>{_e(shape_text(sd))}</td>", f"<td>{_e(dtype_text(sd))}</td>",
        ]
        for v, digits in ((m.max_abs_err if m else None, 3), (m.max_rel_err if m else None, 3),
                          (m.cosine if m else None, 6), (m.sqnr_db if m else None, 3)):
            cells.append(f'<td class="num" data-v="{_num_attr(v)}">{_e(format_float(v, digits))}</td>')
        cells.append(f'<td class="num" data-v="{_num_attr(m.mismatched_fraction if m else None)}">'
                     f'{f"{m.mismatched}/{m.count}" if m else "-"}</td>')
        if floors:
            ratio = floor_ratio(sd)
            cells.append(f'<td class="num" data-v="{_num_attr(ratio)}">{_e(format_float(ratio))}</td>')
        cls = ' class="is-first"' if sd is first else ""
        out.append(f'<tr{cls} data-key="{_e(sd.key)}" data-status="{sd.status}">{"".join(cells)}</tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _stage_detail(sd: StageDiff, anchor: str, pair: TracePair | None, worst: int, max_sample: int, cells: int,
                  max_heat: int, is_first: bool) -> str:
    title = ("First divergence: " if is_first else "") + sd.key
    out = [f'<section class="stage-detail{" first" if is_first else ""}" id="{anchor}">',
           f"<h3><code>{_e(title)}</code></h3>"]
    facts = []
    if sd.ref is not None:
        facts.append(f"stage {sd.ref.position + 1} in the reference's execution order; {_e(shape_text(sd))} {_e(dtype_text(sd))}")
    if sd.status == Status.EXPECTED:
        facts.append(f"expected divergence: {_e(sd.expected_reason or '')}")
    if sd.message:
        facts.append(_e(sd.message))
    m = sd.metrics
    if m is not None:
        if m.max_abs_index is not None:
            facts.append(f"greatest absolute error {format_float(m.max_abs_err)} at <code>{list(m.max_abs_index)}</code>: "
                         f"reference {format_float(m.max_abs_ref, 6)}, candidate {format_float(m.max_abs_cand, 6)}")
        facts.append(metrics_line(m))
        if sd.problem != "values":  # the message of a "values" failure already gives the count
            facts.append(f"{m.mismatched:,} / {m.count:,} elements outside tolerance ({100 * m.mismatched_fraction:.3g} %)")
    if sd.tolerance is not None:
        facts.append("tolerance: " + ", ".join(f"{k}={v:g}" for k, v in sd.tolerance.to_dict().items()))
    facts += [f"note: {_e(n)}" for n in sd.notes]
    image = image_of(sd)
    if image is not None:
        facts.append(f"image: {_e(image.summary())}")
    facts += [f"<strong>likely:</strong> {_e(d.summary)}" for d in sd.diagnoses]
    out.append('<ul class="facts">' + "".join(f"<li>{f}</li>" for f in facts) + "</ul>")
    data = pair.arrays(sd) if pair is not None else None
    if data is not None:
        rows = worst_elements(data.ref, data.cand, worst, ref_dtype=data.ref_dtype, cand_dtype=data.cand_dtype) if worst else []
        if rows:
            out.append(f'<p class="muted">Worst {len(rows)} elements by absolute error (index into the stage):</p>'
                       '<table class="worst"><thead><tr><th>rank</th><th>index</th><th>reference</th><th>candidate</th>'
                       "<th>abs error</th><th>rel error</th></tr></thead><tbody>")
            for i, w in enumerate(rows, 1):
                out.append(f"<tr><td>{i}</td><td><code>{list(w.index)}</code></td><td>{format_float(w.ref, 6)}</td>"
                           f"<td>{format_float(w.cand, 6)}</td><td>{format_float(w.abs_err)}</td>"
                           f"<td>{format_float(w.rel_err)}</td></tr>")
            out.append("</tbody></table>")
        vals, relative, shown = error_sample(data, sd, max_sample)
        out.append('<div class="plots"><figure>' + histogram_svg(vals, relative, (shown, data.ref.size), anchor)
                   + "<figcaption>Histogram of the error"
                   + (" divided by the allowed error (atol + rtol·|ref|); bars right of the tolerance line fail."
                      if relative else ".") + "</figcaption></figure>")
        heat = heatmap_svg(data, sd, anchor, cells, max_heat)
        if heat is not None:
            out.append(f'<figure>{heat}<div class="hm-readout" id="readout-{anchor}"></div>'
                       "<figcaption>Where the error is: hover for the block's rows, columns and value.</figcaption></figure>")
        out.append("</div>")
        if image_of(sd) is not None:
            panels = image_panels(data, sd, anchor, max_heat)
            if panels is not None:
                out.append(f'<figure>{panels}<figcaption>The two images and their difference; circles mark peaks '
                           "found on one side only (red: reference only, blue: candidate only).</figcaption></figure>")
    out.append("</section>")
    return "".join(out)


def _incomplete(complete: bool) -> str:
    return "" if complete else " <strong>(INCOMPLETE capture)</strong>"


def render_html(
    diff: TraceDiff,
    *,
    traces: Any = AUTO,
    worst: int = 10,
    max_detail: int = 10,
    max_sample: int = 1 << 18,
    heatmap_cells: int = 64,
    max_heat_elements: int = 1 << 22,
    title: str | None = None,
    progress: ProgressCallback | None = None,
    table_passing: int | None = TABLE_PASSING,
) -> str:
    """Render ``diff`` as one self-contained HTML page (no network access, no external files).

    Args:
        diff: the comparison result.
        traces: where stage values come from for worst elements, histograms and heat maps:
            ``AUTO`` (reopen the traces named in the diff when they exist), ``None`` (metrics
            only: the pipeline plot and the table) or a ``(ref, cand)`` pair of traces or paths.
        worst: rows of each worst-element table (0 leaves them out).
        max_detail: divergent stages that get a section with plots.
        max_sample: elements sampled (evenly spaced) per histogram.
        heatmap_cells: heat-map blocks per side at most (blocks are max-pooled).
        max_heat_elements: elements read per heat map at most (rows and columns are subsampled beyond).
        title: the page title (default from the verdict and trace names).
        progress: called as ``progress(done, total, key)`` after each detailed stage.
        table_passing: passing stages the stage table lists at most (the first and last half;
            ``None``: all; a note says how many are left out); every stage that does not pass is
            listed. The pipeline plot of more than ``plots.MAX_COLUMNS`` stages draws, of each
            bucket one column wide, the stage of largest error and every stage that does not pass.

    Returns:
        The HTML document.

    Raises:
        UsageError: ``traces`` is not AUTO, None or a pair.

    Example:
        >>> page = render_html(parity.compare_traces("ref.trace", "cand.trace"), max_detail=1)
        >>> page.startswith("<!DOCTYPE html>"), 'id="pipeline-plot"' in page, "://" in page
        (True, True, False)
    """
    pair, note = resolve_traces(diff, traces)
    verdict = verdict_text(diff)
    details = detail_stages(diff, max_detail)
    anchors = {id(sd): f"stage-{i}" for i, sd in enumerate(diff.stages) if any(sd is d for d in details)}
    body = _summary(diff, verdict, anchors, note)
    body.append("<h2>Error through the pipeline</h2>")
    body.append('<p class="legend"><span><i style="background:#1a7f37"></i>pass</span><span><i style="background:#cf222e">'
                '</i>fail</span><span><i style="background:#9a6700"></i>expected</span><span>▲▼ off the axis (∞, 0)</span>'
                '<span style="color:#cf222e">- - - tolerance</span><span>× failed without metrics (shape, layout, text)</span></p>')
    body.append(f"<figure>{pipeline_svg(diff)}<figcaption>Each column is a stage of the reference, in execution order. "
                "Error that appears at one stage and is carried by every later one points at that stage.</figcaption></figure>")
    if details:
        body.append("<h2>Divergent stages</h2>")
        for i, sd in enumerate(details):
            body.append(_stage_detail(sd, anchors[id(sd)], pair, worst, max_sample, heatmap_cells, max_heat_elements,
                                      sd is diff.first_divergence))
            if progress is not None:
                progress(i + 1, len(details), sd.key)
        left = len(diff.divergent) + len(diff.expected) - len(details)
        if left > 0:
            body.append(f'<p class="muted">{left} more divergent stage(s) appear in the table only.</p>')
    body += _passing_images(diff, pair, max_heat_elements)
    body.append(f"<h2>Stages ({len(diff.stages)})</h2>")
    body.append(_stage_table(diff, anchors, table_passing))
    page_title = title or f"parity diff: {verdict} — {diff.ref_path} vs {diff.cand_path}"
    return html_page("\n".join(body), title=page_title, version=diff.tool_version)


def _summary(diff: TraceDiff, verdict: str, anchors: dict[int, str], note: str | None) -> list[str]:
    """The heading and the facts table, then notes on traces, unused config and an empty comparison."""
    first = diff.first_divergence
    body = [f'<h1>parity diff: <span class="{"verdict-pass" if diff.passed else "verdict-fail"}">{verdict}</span></h1>',
            '<table class="facts">',
            f"<tr><td>reference</td><td><code>{_e(diff.ref_path)}</code>{_incomplete(diff.ref_complete)}</td></tr>",
            f"<tr><td>candidate</td><td><code>{_e(diff.cand_path)}</code>{_incomplete(diff.cand_complete)}</td></tr>"]
    if diff.config_source:
        body.append(f"<tr><td>config</td><td><code>{_e(diff.config_source)}</code></td></tr>")
    body.append(f"<tr><td>result</td><td>{result_counts(diff)}</td></tr>")
    if first is not None and id(first) in anchors:
        first_link = f'<a href="#{anchors[id(first)]}"><code>{_e(first.key)}</code></a>'
    else:
        first_link = "—"
    body.append(f"<tr><td>first divergence</td><td>{first_link}</td></tr>")
    body.append(f"<tr><td>parity</td><td>{_e(diff.tool_version)}</td></tr></table>")
    if note:
        body.append(f'<p class="note">{_e(note)}</p>')
    if diff.unused_config:
        body.append(f'<p class="note">Unused config entries ({len(diff.unused_config)}): they match nothing in these '
                    "traces (<code>--strict</code> makes them errors).</p><ul>"
                    + "".join(f"<li>{_e(u)}</li>" for u in diff.unused_config) + "</ul>")
    if diff.nothing_compared:
        body.append('<h2>Nothing compared</h2>')
        body += [f'<p class="note">{_e(line.strip())}</p>' for line in describe_nothing_compared(diff)]
    return body


def _passing_images(diff: TraceDiff, pair: TracePair | None, max_heat_elements: int) -> list[str]:
    """Image stages that pass (divergent ones are shown with their stage details)."""
    passing_images = [sd for sd in judged_alone(diff.stages) if image_of(sd) is not None and sd.passed]
    if not passing_images:
        return []
    body = ["<h2>Images</h2>"]
    for k, sd in enumerate(passing_images):
        image = image_of(sd)
        assert image is not None
        body.append(f'<section class="stage-detail"><h3><code>{_e(sd.key)}</code></h3>'
                    f'<ul class="facts"><li>image: {_e(image.summary())}</li></ul>')
        data = pair.arrays(sd) if pair is not None and k < 4 else None
        panels = image_panels(data, sd, f"image-{k}", max_heat_elements) if data is not None else None
        if panels is not None:
            body.append(f"<figure>{panels}<figcaption>The two images and their difference.</figcaption></figure>")
        body.append("</section>")
    return body
