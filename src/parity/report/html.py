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
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from importlib import resources
from string import Template
from typing import Any

import numpy as np

from ..compare.diff import StageDiff, Status, TraceDiff
from ..compare.floor import floor_ratio
from ..compare.image import image_of
from ..trace.dtypes import to_float64
from ._arrays import AUTO, ProgressCallback, StageArrays, TracePair, detail_stages, resolve_traces
from .text import describe_nothing_compared, dtype_text, format_float, metrics_line, shape_text, verdict_text
from .worst import element_errors, worst_elements

__all__ = ["render_html"]

_e = html.escape


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def _n(x: float) -> str:
    """Compact SVG coordinate."""
    return f"{x:.1f}".rstrip("0").rstrip(".") if x == x else "0"


# -- scales ------------------------------------------------------------------------------------

class _LogScale:
    def __init__(self, values: Sequence[float], y_top: float, y_bottom: float):
        pos = [v for v in values if v is not None and math.isfinite(v) and v > 0]
        if pos:
            lo, hi = math.floor(math.log10(min(pos))), math.ceil(math.log10(max(pos)))
        else:
            lo, hi = -16, 0
        if hi <= lo:
            lo, hi = lo - 1, hi + 1
        self.lo, self.hi, self.y_top, self.y_bottom = lo, hi, y_top, y_bottom

    def y(self, v: float) -> float:
        t = (math.log10(v) - self.lo) / (self.hi - self.lo)
        return self.y_bottom - t * (self.y_bottom - self.y_top)

    def clip(self, v: float) -> tuple[float, str | None]:
        """y of ``v`` and ``"high"``/``"low"`` when it lies off the axis (0, inf)."""
        if math.isinf(v) and v > 0:
            return self.y_top, "high"
        if v <= 0 or math.log10(v) < self.lo:
            return self.y_bottom, "low"
        if math.log10(v) > self.hi:
            return self.y_top, "high"
        return self.y(v), None

    def ticks(self) -> list[tuple[float, str]]:
        step = max(1, math.ceil((self.hi - self.lo) / 6))
        return [(self.y(10.0 ** e), f"1e{e}") for e in range(self.lo, self.hi + 1, step)]


def _nice_step(span: float, count: int = 5) -> float:
    raw = span / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


class _LinScale:
    def __init__(self, values: Sequence[float], y_top: float, y_bottom: float):
        fin = [v for v in values if v is not None and math.isfinite(v)]
        lo, hi = (min(fin), max(fin)) if fin else (0.0, 1.0)
        if hi - lo < 1e-9:
            lo, hi = lo - 1, hi + 1
        step = _nice_step(hi - lo)
        self.lo, self.hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
        self.step, self.y_top, self.y_bottom = step, y_top, y_bottom

    def y(self, v: float) -> float:
        return self.y_bottom - (v - self.lo) / (self.hi - self.lo) * (self.y_bottom - self.y_top)

    def clip(self, v: float) -> tuple[float, str | None]:
        if v > self.hi:
            return self.y_top, "high"
        if v < self.lo:
            return self.y_bottom, "low"
        return self.y(v), None

    def ticks(self) -> list[tuple[float, str]]:
        out, v = [], self.lo
        while v <= self.hi + self.step / 2:
            out.append((self.y(v), f"{v:g}"))
            v += self.step
        return out


# -- the pipeline plot -------------------------------------------------------------------------

_LAYER_RE = re.compile(r"^(.*?(?:^|\.)\d+)\.")


def _layer_of(key: str) -> str | None:
    """``"layers.3"`` for ``"layers.3.attn_probs"``: the key up to its first numeric segment."""
    name = key.split("[", 1)[0].split("#", 1)[0]
    m = _LAYER_RE.match(name)
    return m.group(1) if m else None


def _groups(keys: Sequence[str]) -> list[tuple[int, int, str | None]]:
    """Runs ``(start, stop, layer)`` of consecutive stages in the same layer."""
    out: list[tuple[int, int, str | None]] = []
    for i, k in enumerate(keys):
        layer = _layer_of(k)
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


def _marker(x: float, y: float, cls: str, r: float, clip: str | None, tip: str) -> str:
    title = f"<title>{_e(tip)}</title>"
    if clip == "high":
        return (f'<path class="pt {cls} pt-clip" d="M{_n(x)},{_n(y - r)} l{_n(r)},{_n(2 * r)} h{_n(-2 * r)}z">'
                f"{title}</path>")
    if clip == "low":
        return (f'<path class="pt {cls} pt-clip" d="M{_n(x)},{_n(y + r)} l{_n(r)},{_n(-2 * r)} h{_n(-2 * r)}z">'
                f"{title}</path>")
    return f'<circle class="pt {cls}" cx="{_n(x)}" cy="{_n(y)}" r="{_n(r)}">{title}</circle>'


def _pipeline_svg(diff: TraceDiff) -> str:
    stages = [s for s in diff.stages if s.ref is not None]
    n = len(stages)
    width, left, right, top, panel_h, gap, bottom = 960, 78, 16, 34, 150, 26, 70
    plot_w = width - left - right
    height = top + 3 * panel_h + 2 * gap + bottom
    step = plot_w / max(n, 1)

    def x_of(i: int) -> float:
        return left + (i + 0.5) * step

    first = diff.first_divergence
    first_i = next((i for i, s in enumerate(stages) if s is first), None)
    radius = 3.5 if n <= 80 else 2.6 if n <= 300 else 1.8
    out = [f'<svg id="pipeline-plot" class="plot" viewBox="0 0 {width} {height}" width="100%" role="img" '
           f'aria-label="Error through the pipeline: {n} stages">']
    groups = _groups([s.key for s in stages])
    for p, (metric, label, kind, value_of, tol_of) in enumerate(_PANELS):
        y0 = top + p * (panel_h + gap)
        y1 = y0 + panel_h
        vals = [value_of(s.metrics) if s.metrics is not None else None for s in stages]
        tols = [tol_of(s.tolerance) if s.tolerance is not None else None for s in stages]
        scale = _LogScale(vals + tols, y0, y1) if kind == "log" else _LinScale(vals + tols, y0, y1)
        out.append(f'<g class="panel" data-metric="{metric}">')
        layer_no = 0
        for start, stop, layer in groups:
            if layer is not None:
                if layer_no % 2 == 0:
                    out.append(f'<rect class="band" x="{_n(left + start * step)}" y="{_n(y0)}" '
                               f'width="{_n((stop - start) * step)}" height="{panel_h}"/>')
                layer_no += 1
        out.append('<g class="grid">')
        for ty, _ in scale.ticks():
            out.append(f'<line x1="{left}" x2="{width - right}" y1="{_n(ty)}" y2="{_n(ty)}"/>')
        out.append("</g>")
        out.append(f'<g class="axis"><line x1="{left}" x2="{left}" y1="{y0}" y2="{y1}"/>'
                   f'<line x1="{left}" x2="{width - right}" y1="{y1}" y2="{y1}"/></g>')
        for ty, text in scale.ticks():
            out.append(f'<text x="{left - 6}" y="{_n(ty + 4)}" text-anchor="end" font-size="11">{text}</text>')
        out.append(f'<text x="{left + 6}" y="{y0 - 6}" font-size="12.5" font-weight="600">{_e(label)}</text>')
        # tolerance: a step line of the per-stage floor / rtol (stages may override it)
        segs, cur = [], []
        for i, t in enumerate(tols):
            if t is None or not math.isfinite(t) or (kind == "log" and t <= 0):
                if cur:
                    segs.append(cur)
                cur = []
                continue
            ty, _ = scale.clip(t)
            cur += [(left + i * step, ty), (left + (i + 1) * step, ty)]
        if cur:
            segs.append(cur)
        for seg in segs:
            pts = " ".join(f"{_n(a)},{_n(b)}" for a, b in seg)
            what = {"max_rel_err": "rtol", "cosine": "cosine floor", "sqnr_db": "SQNR floor"}[metric]
            out.append(f'<polyline class="tol" data-metric="{metric}" points="{pts}"><title>{what}</title></polyline>')
        # the series: a line through the plotted values, broken where a stage has none
        line: list[str] = []
        lines: list[list[str]] = []
        marks = []
        for i, (s, v) in enumerate(zip(stages, vals)):
            x = x_of(i)
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
            cls = {"pass": "pt-pass", "fail": "pt-fail", "expected": "pt-expected"}.get(s.status, "pt-pass")
            if n <= 300 or s.status != Status.PASS or clip:
                tip = f"#{s.ref.position + 1} {s.key} ({s.status}): {label} = {format_float(v, 4)}"
                marks.append(_marker(x, y, cls, radius, clip, tip))
        if line:
            lines.append(line)
        for ln in lines:
            if len(ln) > 1:
                out.append(f'<polyline class="series" points="{" ".join(ln)}"/>')
        out += marks
        out.append("</g>")
    # layers on the x axis
    axis_y = top + 3 * panel_h + 2 * gap
    out.append('<g class="layers">')
    last_label_x = -1e9
    for start, stop, layer in groups:
        cx = left + (start + stop) / 2 * step
        if layer is not None:
            text, rot = layer.rsplit(".", 1)[-1], False
        else:
            key = stages[start].key
            text, rot = (key if len(key) <= 18 else key[:17] + "…"), True
        if cx - last_label_x < (14 if not rot else 12):
            continue
        last_label_x = cx
        if rot:
            out.append(f'<text x="{_n(cx + 3)}" y="{axis_y + 12}" font-size="10.5" text-anchor="end" '
                       f'transform="rotate(-35 {_n(cx + 3)} {axis_y + 12})">{_e(text)}</text>')
        else:
            out.append(f'<text x="{_n(cx)}" y="{axis_y + 15}" font-size="11" text-anchor="middle">{_e(text)}</text>')
    prefix = next((g[2].rsplit(".", 1)[0] for g in groups if g[2] is not None), None)
    axis_title = (f"{prefix} (stages in execution order; shaded bands alternate by layer)" if prefix
                  else "stages in execution order")
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" font-size="12" text-anchor="middle" '
               f'class="muted">{_e(axis_title)}</text></g>')
    if first_i is not None:
        fx = x_of(first_i)
        anchor = "start" if fx < left + plot_w * 0.6 else "end"
        dx = 5 if anchor == "start" else -5
        out.append(f'<g class="first-divergence"><line class="first-div" x1="{_n(fx)}" x2="{_n(fx)}" y1="{top - 10}" '
                   f'y2="{axis_y}"/><text class="first-div-label" x="{_n(fx + dx)}" y="{top - 14}" '
                   f'font-size="12" text-anchor="{anchor}">first divergence: {_e(first.key)}</text></g>')
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


def _error_sample(data: StageArrays, sd: StageDiff, max_sample: int) -> tuple[np.ndarray, bool, int]:
    """``(values, relative, sampled)``: error / allowed error (or |error| when the tolerance is
    exact) of at most ``max_sample`` evenly spaced elements."""
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


def _histogram_svg(vals: np.ndarray, relative: bool, sampled_of: tuple[int, int], uid: str) -> str:
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


# viridis anchor colours (matplotlib's perceptually uniform map), interpolated linearly
_VIRIDIS = np.array([[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
                     [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37]], dtype=np.float64)


def _colormap(t: np.ndarray) -> np.ndarray:
    pos = np.clip(t, 0, 1) * (len(_VIRIDIS) - 1)
    i = np.minimum(pos.astype(np.int64), len(_VIRIDIS) - 2)
    f = (pos - i)[..., None]
    return (_VIRIDIS[i] * (1 - f) + _VIRIDIS[i + 1] * f).round().astype(np.uint8)


def _png(rgb: np.ndarray) -> bytes:
    """Encode an ``(h, w, 3)`` uint8 image as PNG (filter 0 on every row)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[row].tobytes() for row in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


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


def _heatmap_svg(data: StageArrays, sd: StageDiff, uid: str, cells: int, max_elements: int) -> str | None:
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
    rgb = _colormap(t)
    rgb[grid == 0] = (246, 247, 249)        # exact agreement: near-white
    rgb[np.isinf(grid)] = (207, 34, 46)     # NaN / Inf on one side only: red
    png = base64.b64encode(_png(rgb)).decode("ascii")
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
           f'style="image-rendering: pixelated" href="data:image/png;base64,{png}"/>',
           f'<rect x="{left}" y="{top}" width="{_n(w)}" height="{_n(h)}" fill="none" stroke="#8a93a3"/>',
           f'<text x="{left - 4}" y="{top + 10}" font-size="10.5" text-anchor="end">0</text>',
           f'<text x="{left - 4}" y="{_n(top + h)}" font-size="10.5" text-anchor="end">{rows - 1}</text>',
           f'<text x="{left}" y="{_n(top + h + 14)}" font-size="10.5">0</text>',
           f'<text x="{_n(left + w)}" y="{_n(top + h + 14)}" font-size="10.5" text-anchor="end">{cols - 1}</text>',
           f'<text x="{_n(left + w / 2)}" y="{_n(top + h + 30)}" font-size="11.5" text-anchor="middle">{_e(cname)}</text>',
           f'<text x="16" y="{_n(top + h / 2)}" font-size="11.5" text-anchor="middle" '
           f'transform="rotate(-90 16 {_n(top + h / 2)})">{_e(rname)}</text>',
           f'<defs><linearGradient id="cbar-{uid}" x1="0" y1="1" x2="0" y2="0">']
    for i in range(len(_VIRIDIS)):
        col = "#%02x%02x%02x" % tuple(int(v) for v in _VIRIDIS[i])
        out.append(f'<stop offset="{i / (len(_VIRIDIS) - 1):.3f}" stop-color="{col}"/>')
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


def _diverging(t: np.ndarray) -> np.ndarray:
    """-1 → blue, 0 → white, +1 → red."""
    t = np.clip(np.nan_to_num(t), -1, 1)[..., None]
    blue, white, red = np.array([33, 102, 172.0]), np.array([247, 247, 247.0]), np.array([178, 24, 43.0])
    return np.where(t < 0, white + (blue - white) * -t, white + (red - white) * t).round().astype(np.uint8)


def _image_panels(data: StageArrays, sd: StageDiff, uid: str, max_elements: int) -> str | None:
    """One SVG with the two images (one linear colour scale, 0.5–99.5 percentile) and their difference."""
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
    panels = [("reference", _colormap((r - lo) / (hi - lo))), ("candidate", _colormap((c - lo) / (hi - lo))),
              (f"candidate − reference (±{format_float(dmax)})", _diverging(d / dmax if dmax > 0 else d * 0))]
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
        png = base64.b64encode(_png(rgb)).decode("ascii")
        out.append(f'<text x="{_n(x0)}" y="14" font-size="11.5" font-weight="600">{_e(label)}</text>')
        out.append(f'<image x="{_n(x0)}" y="{top}" width="{_n(w)}" height="{_n(h)}" preserveAspectRatio="none" '
                   f'style="image-rendering: pixelated" href="data:image/png;base64,{png}"/>')
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


# -- page --------------------------------------------------------------------------------------

_STATUS_CLASS = {Status.PASS: "st-pass", Status.FAIL: "st-fail", Status.EXPECTED: "st-expected",
                 Status.MISSING: "st-missing", Status.EXTRA: "st-extra"}


def _num_attr(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return repr(float(x))


def _stage_table(diff: TraceDiff, anchors: dict[int, str]) -> str:
    first = diff.first_divergence
    cols = [("#", "num"), ("stage", "text"), ("status", "text"), ("shape", "text"), ("dtype", "text"),
            ("max abs", "num"), ("max rel", "num"), ("cosine", "num"), ("SQNR dB", "num"), ("mismatched", "num")]
    floors = any(floor_ratio(sd) is not None for sd in diff.stages)
    if floors:
        cols.append(("× noise floor", "num"))
    out = ['<div class="controls"><input type="search" id="stage-filter" placeholder="filter stages by name" '
           'aria-label="filter stages"><label><input type="checkbox" id="only-divergent"> only stages that do not pass'
           '</label><span class="muted">click a column to sort</span></div>',
           '<table class="stages sortable" id="stage-table"><thead><tr>']
    out += [f'<th data-type="{t}">{_e(c)}</th>' for c, t in cols]
    out.append("</tr></thead><tbody>")
    for i, sd in enumerate(diff.stages):
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
        vals, relative, shown = _error_sample(data, sd, max_sample)
        out.append('<div class="plots"><figure>' + _histogram_svg(vals, relative, (shown, data.ref.size), anchor)
                   + "<figcaption>Histogram of the error"
                   + (" divided by the allowed error (atol + rtol·|ref|); bars right of the tolerance line fail."
                      if relative else ".") + "</figcaption></figure>")
        heat = _heatmap_svg(data, sd, anchor, cells, max_heat)
        if heat is not None:
            out.append(f'<figure>{heat}<div class="hm-readout" id="readout-{anchor}"></div>'
                       "<figcaption>Where the error is: hover for the block's rows, columns and value.</figcaption></figure>")
        out.append("</div>")
        if image_of(sd) is not None:
            panels = _image_panels(data, sd, anchor, max_heat)
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

    Returns:
        The HTML document.

    Raises:
        UsageError: ``traces`` is not AUTO, None or a pair.

    Example:
        >>> import numpy as np, tempfile, os, parity
        >>> from parity.report import render_html
        >>> d = tempfile.mkdtemp(); r, c = os.path.join(d, "r.trace"), os.path.join(d, "c.trace")
        >>> for path, scale in ((r, 1.0), (c, 1.5)):
        ...     with parity.record(path):
        ...         _ = parity.tap("x", np.arange(6.0).reshape(2, 3) * scale)
        >>> page = render_html(parity.compare_traces(r, c))
        >>> page.startswith("<!DOCTYPE html>"), 'id="pipeline-plot"' in page, "://" in page
        (True, True, False)
    """
    pair, note = resolve_traces(diff, traces)
    first = diff.first_divergence
    c = diff.summary()
    verdict = verdict_text(diff)
    details = detail_stages(diff, max_detail)
    anchors = {id(sd): f"stage-{i}" for i, sd in enumerate(diff.stages) if any(sd is d for d in details)}
    body = [f'<h1>parity diff: <span class="{"verdict-pass" if diff.passed else "verdict-fail"}">{verdict}</span></h1>',
            '<table class="facts">',
            f"<tr><td>reference</td><td><code>{_e(diff.ref_path)}</code>{_incomplete(diff.ref_complete)}</td></tr>",
            f"<tr><td>candidate</td><td><code>{_e(diff.cand_path)}</code>{_incomplete(diff.cand_complete)}</td></tr>"]
    if diff.config_source:
        body.append(f"<tr><td>config</td><td><code>{_e(diff.config_source)}</code></td></tr>")
    result = (f"{c['pass']} pass · {c['fail']} fail · {c['expected']} expected · {c['missing']} only in reference · "
              f"{c['extra']} only in candidate" + (f" · {c['ignored']} ignored" if c["ignored"] else "")
              + (" · strict" if diff.strict else ""))
    body.append(f"<tr><td>result</td><td>{result}</td></tr>")
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
    body.append("<h2>Error through the pipeline</h2>")
    body.append('<p class="legend"><span><i style="background:#1a7f37"></i>pass</span><span><i style="background:#cf222e">'
                '</i>fail</span><span><i style="background:#9a6700"></i>expected</span><span>▲▼ off the axis (∞, 0)</span>'
                '<span style="color:#cf222e">- - - tolerance</span><span>× failed without metrics (shape, layout, text)</span></p>')
    body.append(f"<figure>{_pipeline_svg(diff)}<figcaption>Each column is a stage of the reference, in execution order. "
                "Error that appears at one stage and is carried by every later one points at that stage.</figcaption></figure>")
    if details:
        body.append("<h2>Divergent stages</h2>")
        for i, sd in enumerate(details):
            body.append(_stage_detail(sd, anchors[id(sd)], pair, worst, max_sample, heatmap_cells, max_heat_elements,
                                      sd is first))
            if progress is not None:
                progress(i + 1, len(details), sd.key)
        left = len(diff.divergent) + len(diff.expected) - len(details)
        if left > 0:
            body.append(f'<p class="muted">{left} more divergent stage(s) appear in the table only.</p>')
    passing_images = [sd for sd in diff.stages if image_of(sd) is not None and sd.passed]
    if passing_images:  # divergent image stages are shown above, with their stage details
        body.append("<h2>Images</h2>")
        for k, sd in enumerate(passing_images):
            image = image_of(sd)
            assert image is not None
            body.append(f'<section class="stage-detail"><h3><code>{_e(sd.key)}</code></h3>'
                        f'<ul class="facts"><li>image: {_e(image.summary())}</li></ul>')
            data = pair.arrays(sd) if pair is not None and k < 4 else None
            panels = _image_panels(data, sd, f"image-{k}", max_heat_elements) if data is not None else None
            if panels is not None:
                body.append(f"<figure>{panels}<figcaption>The two images and their difference.</figcaption></figure>")
            body.append("</section>")
    body.append(f"<h2>Stages ({len(diff.stages)})</h2>")
    body.append(_stage_table(diff, anchors))
    page_title = title or f"parity diff: {verdict} — {diff.ref_path} vs {diff.cand_path}"
    return Template(_asset("report.html")).substitute(
        version=_e(diff.tool_version), title=_e(page_title), css=_asset("report.css"), js=_asset("report.js"),
        body="\n".join(body))
