"""The plots of an HTML diff report, as inline SVG: the error through the pipeline, and for
each divergent stage a histogram of its error, a heat map of where the error is, and (image
stages) the two images side by side with their difference.

Work is bounded: histograms sample at most ``max_sample`` elements of a stage, heat maps read at
most ``max_elements`` and max-pool them to at most ``cells`` blocks a side.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..compare.diff import StageDiff, Status, TraceDiff
from ..compare.image import image_of
from ..trace.dtypes import to_float64
from ._arrays import StageArrays
from .svg import VIRIDIS, LinScale, LogScale, colormap, coord, diverging, esc, marker, png_uri
from .text import format_float
from .worst import element_errors

__all__ = ["pipeline_svg", "stage_marker", "axes", "layer_of", "error_sample", "histogram_svg", "heatmap_svg", "image_panels"]

_n, _e = coord, esc


# -- the pipeline plot -------------------------------------------------------------------------

_LAYER_RE = re.compile(r"^(.*?(?:^|\.)\d+)\.")


def layer_of(key: str) -> str | None:
    """``"layers.3"`` for ``"layers.3.attn_probs"``: the key up to its first numeric segment.

    Example:
        >>> layer_of("layers.3.attn_probs"), layer_of("embed")
        ('layers.3', None)
    """
    name = key.split("[", 1)[0].split("#", 1)[0]
    m = _LAYER_RE.match(name)
    return m.group(1) if m else None


def _groups(keys: Sequence[str]) -> list[tuple[int, int, str | None]]:
    """Runs ``(start, stop, layer)`` of consecutive stages in the same layer."""
    out: list[tuple[int, int, str | None]] = []
    for i, k in enumerate(keys):
        layer = layer_of(k)
        if out and out[-1][2] == layer and layer is not None:
            out[-1] = (out[-1][0], i + 1, layer)
        else:
            out.append((i, i + 1, layer))
    return out


def _one_minus_cos(m: Any) -> float | None:
    c = m.cosine
    if c is None or math.isnan(c):
        return None
    return max(1.0 - c, 0.0)


_PANELS: list[tuple[str, str, str, Callable[[Any], float | None], Callable[[Any], float | None]]] = [
    ("max_rel_err", "max relative error", "log", lambda m: m.max_rel_err,
     lambda t: t.rtol),
    ("cosine", "1 − cosine similarity", "log", _one_minus_cos,
     lambda t: (1.0 - t.cosine_min) if t.cosine_min is not None else None),
    ("sqnr_db", "SQNR (dB, higher is better)", "lin", lambda m: m.sqnr_db,
     lambda t: t.sqnr_min_db),
]
_TOL_NAME = {"max_rel_err": "rtol", "cosine": "cosine floor", "sqnr_db": "SQNR floor"}
_POINT_CLASS = {"pass": "pt-pass", "fail": "pt-fail", "expected": "pt-expected"}


#: Above this many stages the pipeline plot draws, of each bucket of stages one column wide, the
#: stage of largest max relative error (and every stage that does not pass), not every stage.
MAX_COLUMNS = 2000
_MAX_BANDS = 400  # layer bands drawn at most (more are thinner than a pixel)


class _Frame:
    """Where the pipeline plot's stages go: one column per stage, three stacked panels."""

    width, left, right, top, panel_h, gap, bottom = 960, 78, 16, 34, 150, 26, 70

    def __init__(self, n: int):
        self.n = n
        self.dense = n > MAX_COLUMNS  # more stages than the plot has room for: plot the worst of each bucket

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def height(self) -> int:
        return self.top + 3 * self.panel_h + 2 * self.gap + self.bottom

    @property
    def step(self) -> float:
        return self.plot_w / max(self.n, 1)

    @property
    def axis_y(self) -> int:
        return self.top + 3 * self.panel_h + 2 * self.gap

    def x_of(self, i: int) -> float:
        return self.left + (i + 0.5) * self.step


def _tolerance_lines(tols: list[float | None], kind: str, scale: Any, f: _Frame, metric: str) -> list[str]:
    """A step line of the per-stage floor / rtol (stages may override it), broken where a stage has none."""
    segs, cur = [], []
    for i, t in enumerate(tols):
        if t is None or not math.isfinite(t) or (kind == "log" and t <= 0):
            if cur:
                segs.append(cur)
            cur = []
            continue
        ty, _ = scale.clip(t)
        if f.dense and cur and cur[-1][1] == ty:  # (the same level: extend the step, no new points)
            cur[-1] = (f.left + (i + 1) * f.step, ty)
            continue
        cur += [(f.left + i * f.step, ty), (f.left + (i + 1) * f.step, ty)]
    if cur:
        segs.append(cur)
    out = []
    for seg in segs:
        pts = " ".join(f"{_n(a)},{_n(b)}" for a, b in seg)
        out.append(f'<polyline class="tol" data-metric="{metric}" points="{pts}"><title>{_TOL_NAME[metric]}</title></polyline>')
    return out


def _series(stages: list[StageDiff], vals: list[float | None], scale: Any, f: _Frame, y0: float, label: str,
            shown: Sequence[int]) -> list[str]:
    """A line through the plotted values (broken where a stage has none), then the markers."""
    radius = 3.5 if f.n <= 80 else 2.6 if f.n <= 300 else 1.8
    line: list[str] = []
    lines: list[list[str]] = []
    marks = []
    for i in shown:
        s, v = stages[i], vals[i]
        x = f.x_of(i)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            if line:
                lines.append(line)
            line = []
            if s.status == Status.FAIL and s.metrics is None:
                marks.append(f'<text class="pt pt-fail" x="{_n(x)}" y="{_n(y0 + 10)}" text-anchor="middle" '
                             f'font-size="12" fill="#cf222e">×<title>{_e(s.key)}: {_e(s.message)}</title></text>')
            continue
        y, clip = scale.clip(v)
        line.append(f"{_n(x)},{_n(y)}")
        if f.n <= 300 or s.status != Status.PASS or clip:
            tip = f"#{s.ref.position + 1} {s.key} ({s.status}): {label} = {format_float(v, 4)}"
            marks.append(marker(x, y, _POINT_CLASS.get(s.status, "pt-pass"), radius, clip, tip))
    if line:
        lines.append(line)
    out = [f'<polyline class="series" points="{" ".join(ln)}"/>' for ln in lines if len(ln) > 1]
    return out + marks


def _shown(stages: list[StageDiff], f: _Frame) -> Sequence[int]:
    """The stages the plot draws: all of them; in a dense plot, each stage that does not pass and,
    in every bucket one column wide (:data:`MAX_COLUMNS` buckets), the one of largest max relative
    error (NaN or none counting as largest)."""
    if not f.dense:
        return range(len(stages))
    from ..compare.batch import max_rel_errors  # (read from a run's columns, no metrics made)

    a = max_rel_errors(stages)
    key = np.where(np.isnan(a), np.inf, a)
    edges = np.linspace(0, len(stages), MAX_COLUMNS + 1).astype(np.int64)
    picked = {int(s + np.argmax(key[s:e])) for s, e in zip(edges[:-1].tolist(), edges[1:].tolist()) if e > s}
    picked.update(i for i, st in enumerate(stages) if st.status != Status.PASS)
    return sorted(picked)


def axes(scale: Any, x0: float, x1: float, y0: float, y1: float) -> list[str]:
    """Grid lines at the scale's ticks, the left and bottom axes, and the tick labels.

    Example:
        >>> "".join(axes(LogScale([1e-3, 1e-1], 10, 110), 50, 450, 10, 110)).count('text-anchor="end"')
        3
    """
    out = ['<g class="grid">']
    out += [f'<line x1="{x0}" x2="{x1}" y1="{_n(ty)}" y2="{_n(ty)}"/>' for ty, _ in scale.ticks()]
    out.append("</g>")
    out.append(f'<g class="axis"><line x1="{x0}" x2="{x0}" y1="{y0}" y2="{y1}"/>'
               f'<line x1="{x0}" x2="{x1}" y1="{y1}" y2="{y1}"/></g>')
    out += [f'<text x="{x0 - 6}" y="{_n(ty + 4)}" text-anchor="end" font-size="11">{text}</text>'
            for ty, text in scale.ticks()]
    return out


def _panel(stages: list[StageDiff], groups: list[tuple[int, int, str | None]], f: _Frame, p: int,
           shown: Sequence[int]) -> list[str]:
    """One of the three stacked panels: layer bands, grid, axes, tolerance and the series (of the
    stages ``shown``)."""
    metric, label, kind, value_of, tol_of = _PANELS[p]
    y0 = f.top + p * (f.panel_h + f.gap)
    y1 = y0 + f.panel_h
    vals: list[float | None] = [None] * len(stages)
    for i in shown:
        m = stages[i].metrics
        vals[i] = value_of(m) if m is not None else None
    tols = [tol_of(s.tolerance) if s.tolerance is not None else None for s in stages]
    scale = LogScale(vals + tols, y0, y1) if kind == "log" else LinScale(vals + tols, y0, y1)
    out = [f'<g class="panel" data-metric="{metric}">']
    banded = [(start, stop) for start, stop, layer in groups if layer is not None][::2]
    if len(banded) > _MAX_BANDS:
        banded = []
    out += [f'<rect class="band" x="{_n(f.left + start * f.step)}" y="{_n(y0)}" '
            f'width="{_n((stop - start) * f.step)}" height="{f.panel_h}"/>' for start, stop in banded]
    out += axes(scale, f.left, f.width - f.right, y0, y1)
    out.append(f'<text x="{f.left + 6}" y="{y0 - 6}" font-size="12.5" font-weight="600">{_e(label)}</text>')
    out += _tolerance_lines(tols, kind, scale, f, metric)
    out += _series(stages, vals, scale, f, y0, label, shown)
    out.append("</g>")
    return out


def _layer_axis(stages: list[StageDiff], groups: list[tuple[int, int, str | None]], f: _Frame) -> list[str]:
    """Layer numbers (or stage names outside layers) under the panels, and the axis title."""
    out = ['<g class="layers">']
    last_label_x = -1e9
    for start, stop, layer in groups:
        cx = f.left + (start + stop) / 2 * f.step
        if layer is not None:
            text, rot = layer.rsplit(".", 1)[-1], False
        else:
            key = stages[start].key
            text, rot = (key if len(key) <= 18 else key[:17] + "…"), True
        if cx - last_label_x < (14 if not rot else 12):
            continue
        last_label_x = cx
        if rot:
            out.append(f'<text x="{_n(cx + 3)}" y="{f.axis_y + 12}" font-size="10.5" text-anchor="end" '
                       f'transform="rotate(-35 {_n(cx + 3)} {f.axis_y + 12})">{_e(text)}</text>')
        else:
            out.append(f'<text x="{_n(cx)}" y="{f.axis_y + 15}" font-size="11" text-anchor="middle">{_e(text)}</text>')
    prefix = next((g[2].rsplit(".", 1)[0] for g in groups if g[2] is not None), None)
    axis_title = (f"{prefix} (stages in execution order; shaded bands alternate by layer)" if prefix
                  else "stages in execution order")
    out.append(f'<text x="{f.left + f.plot_w / 2}" y="{f.height - 8}" font-size="12" text-anchor="middle" '
               f'class="muted">{_e(axis_title)}</text></g>')
    return out


def stage_marker(f_left: float, plot_w: float, x: float, y_top: float, y_bottom: float, text: str,
                 cls: str = "first-divergence") -> str:
    """A dashed vertical line at ``x`` with a label above it (the first divergence, a culprit).

    Example:
        >>> stage_marker(78, 866, 100, 34, 554, "first divergence: a")[:60]
        '<g class="first-divergence"><line class="first-div" x1="100"'
    """
    anchor = "start" if x < f_left + plot_w * 0.6 else "end"
    dx = 5 if anchor == "start" else -5
    return (f'<g class="{cls}"><line class="first-div" x1="{_n(x)}" x2="{_n(x)}" y1="{y_top - 10}" '
            f'y2="{y_bottom}"/><text class="first-div-label" x="{_n(x + dx)}" y="{y_top - 14}" '
            f'font-size="12" text-anchor="{anchor}">{_e(text)}</text></g>')


def pipeline_svg(diff: TraceDiff) -> str:
    """The *error through the pipeline* plot: max relative error, 1 − cosine similarity and SQNR of
    every reference stage in execution order, layers shaded, tolerances dashed, the first
    divergence marked.

    Example:
        >>> svg = pipeline_svg(parity.compare_traces("ref.trace", "cand.trace"))
        >>> svg.count('<g class="panel"'), "first divergence: layers.0.attn_scores" in svg
        (3, True)
    """
    stages = [s for s in diff.stages if s.ref is not None]
    f = _Frame(len(stages))
    first = diff.first_divergence
    first_i = next((i for i, s in enumerate(stages) if s is first), None)
    out = [f'<svg id="pipeline-plot" class="plot" viewBox="0 0 {f.width} {f.height}" width="100%" role="img" '
           f'aria-label="Error through the pipeline: {f.n} stages">']
    groups = _groups([s.key for s in stages])
    shown = _shown(stages, f)
    for p in range(len(_PANELS)):
        out += _panel(stages, groups, f, p, shown)
    out += _layer_axis(stages, groups, f)
    if first_i is not None:
        out.append(stage_marker(f.left, f.plot_w, f.x_of(first_i), f.top, f.axis_y, f"first divergence: {first.key}"))
    out.append("</svg>")
    return "".join(out)


# -- per-stage plots ---------------------------------------------------------------------------

def _allowed(r64: np.ndarray, sd: StageDiff) -> np.ndarray | None:
    tol = sd.tolerance
    if tol is None or (tol.atol == 0 and tol.rtol == 0):
        return None
    return tol.atol + tol.rtol * np.abs(r64)


def _sample_flat(n: int, max_sample: int) -> np.ndarray | None:
    """Evenly spaced flat indices (``None``: take everything)."""
    if n <= max_sample:
        return None
    return np.unique(np.linspace(0, n - 1, max_sample).astype(np.int64))


def error_sample(data: StageArrays, sd: StageDiff, max_sample: int) -> tuple[np.ndarray, bool, int]:
    """``(values, relative, sampled)``: error / allowed error (or |error| when the tolerance is
    exact) of at most ``max_sample`` evenly spaced elements.

    Example:
        >>> from parity.report import AUTO
        >>> from parity.report._arrays import resolve_traces
        >>> d = parity.compare_traces("ref.trace", "cand.trace"); pair, _ = resolve_traces(d, AUTO)
        >>> vals, relative, shown = error_sample(pair.arrays(d.first_divergence), d.first_divergence, 100)
        >>> vals.shape, relative, shown
        ((100,), True, 100)
    """
    rflat, cflat = data.ref.reshape(-1), data.cand.reshape(-1)
    idx = _sample_flat(rflat.size, max_sample)
    parts, relative = [], False
    chunk = 1 << 16
    source = idx if idx is not None else None
    total = rflat.size if source is None else source.size
    for s in range(0, total, chunk):
        sel = slice(s, min(s + chunk, total)) if source is None else source[s:s + chunk]
        r = to_float64(rflat[sel], data.ref_dtype)
        c = to_float64(cflat[sel], data.cand_dtype)
        err = element_errors(r, c)
        allowed = _allowed(r, sd)
        if allowed is not None:
            relative = True
            with np.errstate(divide="ignore", invalid="ignore"):
                err = np.where(err == 0, 0.0, err / allowed)
        parts.append(err)
    vals = np.concatenate(parts) if parts else np.empty(0)
    return vals, relative, total


def histogram_svg(vals: np.ndarray, relative: bool, sampled_of: tuple[int, int], uid: str) -> str:
    """A histogram of the error on a log axis, with a "0" bar left, an "∞" bar right and (for
    ``relative`` values, error / allowed error) the tolerance line at 1.

    Example:
        >>> svg = histogram_svg(np.array([0.0, 0.5, 2.0, np.inf]), True, (4, 10), "x")
        >>> svg.count('class="bar-out"'), "sample of 4 of 10 elements" in svg
        (3, True)
    """
    width, height, left, right, top, bottom = 460, 220, 54, 14, 26, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    zeros = int(np.count_nonzero(vals == 0))
    infs = int(np.count_nonzero(np.isinf(vals)))
    pos = vals[(vals > 0) & np.isfinite(vals)]
    bars: list[tuple[float, float, int, str, str]] = []  # (x0, x1, count, class, tip)
    if pos.size:
        logs = np.log10(pos)
        lo, hi = math.floor(float(logs.min()) * 4) / 4, math.ceil(float(logs.max()) * 4) / 4
        if relative:  # always show the tolerance line at error / allowed = 1
            lo, hi = min(lo, -0.25), max(hi, 0.25)
        if hi <= lo:
            hi = lo + 0.25
        nbins = int(round((hi - lo) / 0.25))
        if nbins > 48:
            nbins = 48
        counts, edges = np.histogram(logs, bins=nbins, range=(lo, hi))
    else:
        lo, hi, counts, edges = -1.0, 1.0, np.zeros(0, dtype=np.int64), np.array([-1.0, 1.0])
    slots = len(counts) + 2  # a "0" bar on the left and an "∞" bar on the right
    bw = plot_w / slots
    what = "|error| / allowed" if relative else "|error|"
    bars.append((0, bw, zeros, "bar-zero", f"{zeros} elements with no error"))
    for i, cnt in enumerate(counts.tolist()):
        a, b = float(edges[i]), float(edges[i + 1])
        cls = "bar-out" if relative and a >= 0 else "bar"
        bars.append(((i + 1) * bw, (i + 2) * bw, cnt, cls, f"{cnt} elements with {what} in [1e{a:.2f}, 1e{b:.2f})"))
    bars.append(((slots - 1) * bw, slots * bw, infs, "bar-out", f"{infs} elements with NaN/Inf on one side only"))
    peak = max([b[2] for b in bars] + [1])
    out = [f'<svg class="plot histogram" id="hist-{uid}" viewBox="0 0 {width} {height}" width="{width}" '
           f'role="img" aria-label="error histogram">']
    y_base = top + plot_h
    for tick in (0, peak // 2, peak):
        ty = y_base - tick / peak * plot_h
        out.append(f'<g class="grid"><line x1="{left}" x2="{width - right}" y1="{_n(ty)}" y2="{_n(ty)}"/></g>'
                   f'<text x="{left - 5}" y="{_n(ty + 4)}" text-anchor="end" font-size="10.5">{tick}</text>')
    for x0, x1, cnt, cls, tip in bars:
        h = cnt / peak * plot_h
        out.append(f'<rect class="{cls}" x="{_n(left + x0 + 0.5)}" y="{_n(y_base - h)}" width="{_n(max(x1 - x0 - 1, 0.5))}" '
                   f'height="{_n(h)}"><title>{_e(tip)}</title></rect>')
    out.append(f'<g class="axis"><line x1="{left}" x2="{width - right}" y1="{y_base}" y2="{y_base}"/></g>')
    out.append(f'<text x="{left + bw / 2}" y="{y_base + 14}" font-size="10.5" text-anchor="middle">0</text>')
    out.append(f'<text x="{left + (slots - 0.5) * bw}" y="{y_base + 14}" font-size="10.5" text-anchor="middle">∞</text>')
    if len(counts):
        span = hi - lo
        stepd = max(1, math.ceil(span / 6))
        for e in range(math.ceil(lo), math.floor(hi) + 1, stepd):
            tx = left + bw + (e - lo) / span * (plot_w - 2 * bw)
            out.append(f'<text x="{_n(tx)}" y="{y_base + 14}" font-size="10.5" text-anchor="middle">1e{e}</text>')
        if relative:
            tx = left + bw + (0 - lo) / span * (plot_w - 2 * bw)
            out.append(f'<line class="tol" x1="{_n(tx)}" x2="{_n(tx)}" y1="{top - 6}" y2="{y_base}"><title>tolerance: '
                       f'|c − r| = atol + rtol·|r|</title></line><text x="{_n(tx + 4)}" y="{top + 8}" font-size="10.5" '
                       f'fill="#cf222e">tolerance</text>')
    shown, total = sampled_of
    sample_note = f" (sample of {shown:,} of {total:,} elements)" if shown < total else ""
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 10}" font-size="11.5" text-anchor="middle">'
               f"{_e(what)}{_e(sample_note)}</text>")
    out.append(f'<text x="{left}" y="14" font-size="11.5" font-weight="600">elements per bin</text></svg>')
    return "".join(out)


def _squeezed_2d(shape: tuple[int, ...], axes: tuple[str, ...] | None) -> tuple[tuple[int, int], tuple[str, str]] | None:
    dims = [(d, axes[i] if axes else f"axis {i}") for i, d in enumerate(shape) if d != 1]
    if len(dims) != 2:
        return None
    return (dims[0][0], dims[1][0]), (dims[0][1], dims[1][1])


def _heat_grid(data: StageArrays, rows: int, cols: int, cells: int, max_elements: int) -> tuple[np.ndarray, int, int, bool]:
    """Max-pooled |error| on a grid of at most ``cells`` × ``cells`` blocks."""
    r2, c2 = data.ref.reshape(rows, cols), data.cand.reshape(rows, cols)
    row_step, col_step = math.ceil(rows / min(rows, cells)), math.ceil(cols / min(cols, cells))
    gr, gc = math.ceil(rows / row_step), math.ceil(cols / col_step)
    # Bound the work: read an evenly spaced subset of rows and columns when the stage is large.
    sampled = rows * cols > max_elements
    if sampled:
        keep_c = min(cols, max(gc, int(math.sqrt(max_elements * cols / rows))))
        keep_r = min(rows, max(gr, max_elements // keep_c))
        ridx = np.unique(np.linspace(0, rows - 1, keep_r).astype(np.int64))
        cidx = np.unique(np.linspace(0, cols - 1, keep_c).astype(np.int64))
    else:
        ridx, cidx = np.arange(rows), np.arange(cols)
    grid = np.zeros((gr, gc), dtype=np.float64)
    col_block = cidx // col_step
    col_starts = np.flatnonzero(np.r_[True, col_block[1:] != col_block[:-1]])
    rows_per_chunk = max(1, (1 << 20) // max(cols, 1))
    for s in range(0, ridx.size, rows_per_chunk):
        rsel = ridx[s:s + rows_per_chunk]
        r = to_float64(r2[rsel][:, cidx] if sampled else r2[rsel], data.ref_dtype)
        c = to_float64(c2[rsel][:, cidx] if sampled else c2[rsel], data.cand_dtype)
        err = element_errors(r, c)
        pooled_c = np.maximum.reduceat(err, col_starts, axis=1)  # (chunk rows, gc)
        rb = rsel // row_step
        for b in np.unique(rb):
            grid[b, col_block[col_starts]] = np.maximum(grid[b, col_block[col_starts]], pooled_c[rb == b].max(axis=0))
    return grid, row_step, col_step, sampled


def heatmap_svg(data: StageArrays, sd: StageDiff, uid: str, cells: int, max_elements: int) -> str | None:
    """Where a 2-D stage's error is: max |error| per block (at most ``cells`` a side) in log
    colour; ``None`` for a stage that is not 2-D once its size-1 axes are dropped.

    Example:
        >>> from parity.report import AUTO
        >>> from parity.report._arrays import resolve_traces
        >>> d = parity.compare_traces("ref.trace", "cand.trace"); pair, _ = resolve_traces(d, AUTO)
        >>> sd = d.first_divergence  # 4×8×8: three axes, no heat map
        >>> heatmap_svg(pair.arrays(sd), sd, "a", 64, 1 << 20) is None
        True
    """
    assert sd.ref is not None
    two = _squeezed_2d(sd.ref.shape, sd.ref.axes)
    if two is None:
        return None
    (rows, cols), (rname, cname) = two
    grid, row_step, col_step, sampled = _heat_grid(data, rows, cols, cells, max_elements)
    gr, gc = grid.shape
    finite_pos = grid[(grid > 0) & np.isfinite(grid)]
    if finite_pos.size:
        lo, hi = math.log10(float(finite_pos.min())), math.log10(float(finite_pos.max()))
    else:
        lo, hi = 0.0, 0.0
    span = hi - lo if hi > lo else 1.0
    with np.errstate(divide="ignore"):
        t = (np.log10(np.where(grid > 0, grid, 1.0)) - lo) / span
    rgb = colormap(t)
    rgb[grid == 0] = (246, 247, 249)        # exact agreement: near-white
    rgb[np.isinf(grid)] = (207, 34, 46)     # NaN / Inf on one side only: red
    side = 300
    scale = side / max(gr, gc)
    w, h = max(gc * scale, 24), max(gr * scale, 24)
    left, top = 58, 22
    width, height = int(left + w + 90), int(top + h + 44)
    cells_json = json.dumps([[None if v == 0 else ("inf" if math.isinf(v) else float(f"{v:.3g}")) for v in row]
                             for row in grid.tolist()], separators=(",", ":"))
    out = [f'<svg class="plot heatmap" id="heat-{uid}" viewBox="0 0 {width} {height}" width="{width}" role="img" '
           f'aria-label="error heat map" data-grid="{_e(cells_json)}" data-row-step="{row_step}" '
           f'data-col-step="{col_step}" data-rows="{rows}" data-cols="{cols}" data-readout="readout-{uid}">',
           f'<image x="{left}" y="{top}" width="{_n(w)}" height="{_n(h)}" preserveAspectRatio="none" '
           f'style="image-rendering: pixelated" href="{png_uri(rgb)}"/>',
           f'<rect x="{left}" y="{top}" width="{_n(w)}" height="{_n(h)}" fill="none" stroke="#8a93a3"/>',
           f'<text x="{left - 4}" y="{top + 10}" font-size="10.5" text-anchor="end">0</text>',
           f'<text x="{left - 4}" y="{_n(top + h)}" font-size="10.5" text-anchor="end">{rows - 1}</text>',
           f'<text x="{left}" y="{_n(top + h + 14)}" font-size="10.5">0</text>',
           f'<text x="{_n(left + w)}" y="{_n(top + h + 14)}" font-size="10.5" text-anchor="end">{cols - 1}</text>',
           f'<text x="{_n(left + w / 2)}" y="{_n(top + h + 30)}" font-size="11.5" text-anchor="middle">{_e(cname)}</text>',
           f'<text x="16" y="{_n(top + h / 2)}" font-size="11.5" text-anchor="middle" '
           f'transform="rotate(-90 16 {_n(top + h / 2)})">{_e(rname)}</text>',
           f'<defs><linearGradient id="cbar-{uid}" x1="0" y1="1" x2="0" y2="0">']
    for i in range(len(VIRIDIS)):
        col = "#%02x%02x%02x" % tuple(int(v) for v in VIRIDIS[i])
        out.append(f'<stop offset="{i / (len(VIRIDIS) - 1):.3f}" stop-color="{col}"/>')
    cx = left + w + 18
    out.append(f'</linearGradient></defs><rect class="colorbar" x="{_n(cx)}" y="{top}" width="12" height="{_n(h)}" '
               f'fill="url(#cbar-{uid})"/>')
    out.append(f'<text x="{_n(cx + 16)}" y="{top + 10}" font-size="10.5">{_e(format_float(10 ** hi))}</text>')
    out.append(f'<text x="{_n(cx + 16)}" y="{_n(top + h)}" font-size="10.5">{_e(format_float(10 ** lo))}</text>')
    note = "max |error| per block" + (f" of {row_step}×{col_step}" if row_step * col_step > 1 else "")
    note += ", sampled" if sampled else ""
    out.append(f'<text x="{left}" y="14" font-size="11.5" font-weight="600">{_e(note)} (log colour)</text></svg>')
    return "".join(out)


# -- images: reference, candidate and difference side by side ---------------------------------------

def _pooled(a: np.ndarray, dtype: Any, side: int, max_elements: int) -> np.ndarray:
    """Max-pool (by |value|, sign kept) a 2-D stage to at most ``side`` pixels a side, in float64."""
    rows, cols = a.shape
    if rows * cols > max_elements:  # bound the work: evenly spaced rows and columns first
        keep = max(side, int(math.sqrt(max_elements)))
        a = a[np.unique(np.linspace(0, rows - 1, min(rows, keep)).astype(np.int64))][
            :, np.unique(np.linspace(0, cols - 1, min(cols, keep)).astype(np.int64))]
    x = to_float64(np.ascontiguousarray(a), dtype)
    x = np.where(np.isfinite(x), x, np.nan)
    step = max(1, math.ceil(max(x.shape) / side))
    if step == 1:
        return x
    gr, gc = math.ceil(x.shape[0] / step), math.ceil(x.shape[1] / step)
    pad = np.full((gr * step, gc * step), np.nan)
    pad[: x.shape[0], : x.shape[1]] = x
    blocks = pad.reshape(gr, step, gc, step).transpose(0, 2, 1, 3).reshape(gr, gc, step * step)
    mag = np.where(np.isnan(blocks), -1.0, np.abs(blocks))
    pick = np.argmax(mag, axis=2)
    return np.take_along_axis(blocks, pick[..., None], axis=2)[..., 0]


def image_panels(data: StageArrays, sd: StageDiff, uid: str, max_elements: int) -> str | None:
    """One SVG with the two images (one linear colour scale, 0.5–99.5 percentile) and their
    difference; ``None`` for a stage that is not 2-D.

    Example:
        >>> from parity.report import AUTO
        >>> from parity.report._arrays import resolve_traces
        >>> d = parity.compare_traces("ref.trace", "cand.trace"); pair, _ = resolve_traces(d, AUTO)
        >>> image_panels(pair.arrays(d.first_divergence), d.first_divergence, "a", 1 << 20) is None
        True
    """
    assert sd.ref is not None
    if len(sd.ref.shape) != 2:
        return None
    image = image_of(sd)
    r = _pooled(data.ref.reshape(sd.ref.shape), data.ref_dtype, 160, max_elements)
    c = _pooled(data.cand.reshape(sd.ref.shape), data.cand_dtype, 160, max_elements)
    both = np.concatenate([r[np.isfinite(r)], c[np.isfinite(c)]])
    lo, hi = (float(np.percentile(both, 0.5)), float(np.percentile(both, 99.5))) if both.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    d = c - r
    dmax = float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 0.0
    panels = [("reference", colormap((r - lo) / (hi - lo))), ("candidate", colormap((c - lo) / (hi - lo))),
              (f"candidate − reference (±{format_float(dmax)})", diverging(d / dmax if dmax > 0 else d * 0))]
    gr, gc = r.shape
    scale = 220 / max(gr, gc)
    w, h = max(gc * scale, 24), max(gr * scale, 24)
    gap, top = 24, 22
    width, height = int(3 * w + 2 * gap + 8), int(top + h + 30)
    out = [f'<svg class="plot images" id="img-{uid}" viewBox="0 0 {width} {height}" width="{width}" role="img" '
           f'aria-label="reference, candidate and difference images">']
    rows, cols = sd.ref.shape
    for k, (label, rgb) in enumerate(panels):
        rgb = rgb.copy()
        if k < 2:
            rgb[~np.isfinite(r if k == 0 else c)] = (207, 34, 46)
        x0 = 4 + k * (w + gap)
        out.append(f'<text x="{_n(x0)}" y="14" font-size="11.5" font-weight="600">{_e(label)}</text>')
        out.append(f'<image x="{_n(x0)}" y="{top}" width="{_n(w)}" height="{_n(h)}" preserveAspectRatio="none" '
                   f'style="image-rendering: pixelated" href="{png_uri(rgb)}"/>')
        out.append(f'<rect x="{_n(x0)}" y="{top}" width="{_n(w)}" height="{_n(h)}" fill="none" stroke="#8a93a3"/>')
        if image is not None and k < 2:  # circle the unmatched peaks on their own side
            pts, colour = (image.missing_examples, "#cf222e") if k == 0 else (image.extra_examples, "#0969da")
            for py, px in pts:
                cx, cy = x0 + (px + 0.5) / cols * w, top + (py + 0.5) / rows * h
                out.append(f'<circle cx="{_n(cx)}" cy="{_n(cy)}" r="6" fill="none" stroke="{colour}" stroke-width="1.5">'
                           f"<title>{'missing' if k == 0 else 'extra'} peak ({py}, {px})</title></circle>")
    out.append(f'<text x="4" y="{_n(top + h + 18)}" font-size="10.5">colour scale {format_float(lo)} … '
               f"{format_float(hi)} (both images); {rows}×{cols} pixels"
               + (", max-pooled" if max(rows, cols) > 160 else "") + "</text></svg>")
    return "".join(out)

