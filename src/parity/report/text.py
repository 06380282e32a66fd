"""Terminal renderer: a rich table of every stage, the first divergence highlighted."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..compare.diff import StageDiff, Status, TraceDiff, Verdict
from ..compare.floor import floor_ratio
from ..compare.image import image_of
from .worst import WorstElement

__all__ = ["render_text", "format_float", "describe_first_divergence", "verdict_text", "describe_nothing_compared"]

_STYLE = {Status.PASS: "green", Status.FAIL: "bold red", Status.EXPECTED: "yellow", Status.MISSING: "magenta",
          Status.EXTRA: "cyan"}


def format_float(x: float | None, digits: int = 3) -> str:
    """Compact number formatting used by every renderer (``nan``, ``inf`` spelled out)."""
    if x is None:
        return "-"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.{digits + 1}g}"
    return f"{x:.{digits - 1}e}"


def metrics_line(m) -> str:
    """``max rel … · rms … · cosine … · SQNR … dB · max ULP …`` (Markdown and HTML reports)."""
    return (f"max rel {format_float(m.max_rel_err)} · rms {format_float(m.rms_err)} · cosine "
            f"{format_float(m.cosine, 6)} · SQNR {format_float(m.sqnr_db)} dB · max ULP {format_float(m.max_ulp)}")


def shape_text(sd: StageDiff) -> str:
    """``2×3``, ``scalar``, or ``2×3 vs 3×2`` when the sides differ (shared by every renderer)."""
    def one(shape: tuple[int, ...]) -> str:
        return "×".join(str(d) for d in shape) or "scalar"

    if sd.ref and sd.cand and sd.ref.shape != sd.cand.shape:
        return f"{one(sd.ref.shape)} vs {one(sd.cand.shape)}"
    side = sd.ref or sd.cand
    return one(side.shape) if side else "-"


def dtype_text(sd: StageDiff) -> str:
    """``F32``, or ``F32/BF16`` when the sides differ (shared by every renderer)."""
    if sd.ref and sd.cand and sd.ref.dtype != sd.cand.dtype:
        return f"{sd.ref.dtype}/{sd.cand.dtype}"
    side = sd.ref or sd.cand
    return (side.dtype or "-") if side else "-"


def _index(w: WorstElement) -> str:
    return "[" + ", ".join(str(i) for i in w.index) + "]"


_VERDICT_TEXT = {Verdict.PARITY: "PARITY HOLDS", Verdict.DIVERGENCE: "DIVERGENCE FOUND",
                 Verdict.NOTHING_COMPARED: "NOTHING COMPARED"}


def verdict_text(diff: TraceDiff) -> str:
    """``PARITY HOLDS``, ``DIVERGENCE FOUND`` or ``NOTHING COMPARED`` (shared by every renderer)."""
    return _VERDICT_TEXT[diff.verdict]


def describe_nothing_compared(diff: TraceDiff) -> list[str]:
    """Plain-text lines explaining a comparison in which no stage was present on both sides.

    Empty unless :attr:`TraceDiff.nothing_compared`. Shared by the text and Markdown reports.

    Example:
        >>> import numpy as np, tempfile, os, parity
        >>> d = tempfile.mkdtemp(); r, c = os.path.join(d, "r.trace"), os.path.join(d, "c.trace")
        >>> with parity.record(r):
        ...     _ = parity.tap("pix0_vector", np.ones(3))
        >>> with parity.record(c):
        ...     _ = parity.tap("pix0_vector_meters", np.ones(3))
        >>> describe_nothing_compared(parity.compare_traces(r, c))[0]
        'Nothing was compared: no stage is present in both traces (1 only in the reference, 1 only in the candidate).'
    """
    if not diff.nothing_compared:
        return []
    n_ref, n_cand = len(diff.missing), len(diff.extra)
    if n_ref == 0 and n_cand == 0:
        return ["Nothing was compared: both traces are empty" + (" (or every stage is ignored)." if diff.ignored else "."),
                "  An empty comparison is not parity."]
    return [f"Nothing was compared: no stage is present in both traces ({n_ref} only in the reference, "
            f"{n_cand} only in the candidate).",
            "  An empty comparison is not parity. If the two sides name the same quantities differently, "
            "`parity align REF CAND` suggests pairs and can write them as [aliases]."]


def describe_first_divergence(diff: TraceDiff) -> list[str]:
    """Plain-text lines explaining the first divergence (shared by text and Markdown reports)."""
    first = diff.first_divergence
    if first is None:
        return []
    lines = [f"First divergence: {first.key} (stage {first.ref.position + 1 if first.ref else '?'} of the reference)"]
    if first.message:
        lines.append(f"  {first.message}")
    m = first.metrics
    if m is not None and m.max_abs_index is not None:
        lines.append(f"  worst element {m.max_abs_index}: reference {format_float(m.max_abs_ref, 6)}, "
                     f"candidate {format_float(m.max_abs_cand, 6)}")
        lines.append(f"  max rel {format_float(m.max_rel_err)} · rms {format_float(m.rms_err)} · cosine "
                     f"{format_float(m.cosine, 6)} · SQNR {format_float(m.sqnr_db)} dB")
    image = image_of(first)
    if image is not None:
        lines.append(f"  image: {image.summary()}")
    for d in first.diagnoses:
        lines.append(f"  likely: {d.summary}")
    later = len(diff.divergent) - 1
    if later > 0:
        lines.append(f"  {later} later stage(s) also diverge; fix this one first, later errors may be propagated.")
    return lines


def render_text(diff: TraceDiff, console: Console | None = None, *, show_all: bool = False, max_passing: int = 40,
                worst: Sequence[WorstElement] = ()) -> None:
    """Print ``diff`` as a table plus a summary, the first divergence highlighted.

    Colour follows rich's rules: none when the output is not a terminal, and none when the
    ``NO_COLOR`` environment variable is set (https://no-color.org); bold may remain.

    Args:
        diff: the comparison result.
        console: where to print (default: a new stdout console).
        show_all: print every stage; otherwise long runs of passing stages are elided.
        max_passing: with ``show_all=False``, passing stages shown when there are many.
        worst: the worst elements of the first divergence (see
            :func:`parity.report.worst_elements`), listed under it so a user can go to them.

    Example:
        >>> import io, numpy as np, tempfile, os, parity
        >>> from rich.console import Console
        >>> d = tempfile.mkdtemp(); r, c = os.path.join(d, "r.trace"), os.path.join(d, "c.trace")
        >>> for path, scale in ((r, 1.0), (c, 2.0)):
        ...     with parity.record(path):
        ...         _ = parity.tap("x", np.arange(3.0) * scale)
        >>> out = io.StringIO()
        >>> render_text(parity.compare_traces(r, c), Console(file=out, width=120))
        >>> out.getvalue().splitlines()[-1]
        'DIVERGENCE FOUND: 0 pass, 1 fail, 0 expected, 0 only in reference, 0 only in candidate'
    """
    console = console or Console()
    first = diff.first_divergence
    title = f"parity diff  {diff.ref_path}  →  {diff.cand_path}"
    rows = list(diff.stages)
    passing = [s for s in rows if s.status == Status.PASS]
    hide: set[int] = set()
    if not show_all and len(passing) > max_passing:
        keep = {id(s) for s in passing[: max_passing // 2]} | {id(s) for s in passing[-max_passing // 2:]}
        hide = {id(s) for s in passing if id(s) not in keep}
    columns = (("#", "right"), ("stage", "left"), ("status", "left"), ("shape", "left"), ("dtype", "left"),
               ("max abs", "right"), ("max rel", "right"), ("cosine", "right"), ("SQNR dB", "right"),
               ("mismatched", "right"))
    body: list[tuple[list[Text | str], str | None]] = []  # (cells, row style); cells[1] None marks an elision row
    hidden_run = 0

    def elided() -> tuple[list[Text | str], str | None]:
        return ["", Text(f"… {hidden_run} passing stages (--all shows them)", style="dim")] + [""] * 8, None

    for sd in rows:
        if id(sd) in hide:
            hidden_run += 1
            continue
        if hidden_run:
            body.append(elided())
            hidden_run = 0
        m = sd.metrics
        pos = str(sd.ref.position + 1) if sd.ref else ""
        status = sd.status.upper() + (f" ({sd.problem})" if sd.problem and sd.problem != "values" else "")
        key = Text(sd.key)
        if sd is first:
            key.append("  ◀ first divergence", style="bold red")
        body.append(([pos, key, Text(status, style=_STYLE[sd.status]), shape_text(sd), dtype_text(sd),
                      format_float(m.max_abs_err) if m else "-", format_float(m.max_rel_err) if m else "-",
                      format_float(m.cosine, 6) if m else "-", format_float(m.sqnr_db) if m else "-",
                      f"{m.mismatched}/{m.count}" if m else "-"], "on grey15" if sd is first else None))
    if hidden_run:
        body.append(elided())
    # On a narrow terminal the stage names must stay readable: drop the least telling columns
    # (dtype, shape, SQNR, cosine) rather than squeeze every column to an ellipsis.
    def width(i: int) -> int:
        cells = [len(str(cells[i])) for cells, _ in body if not (i == 1 and cells[0] == "" and cells[2] == "")]
        return max([len(columns[i][0])] + cells) + 3

    shown = list(range(len(columns)))
    for drop in (4, 3, 8, 7):
        if sum(width(i) for i in shown) + 1 <= console.width:
            break
        shown.remove(drop)
    table = Table(title=title, title_justify="left", show_lines=False, pad_edge=False)
    for i in shown:
        table.add_column(columns[i][0], justify=columns[i][1], no_wrap=i != 1, overflow="fold" if i == 1 else "ellipsis")
    for cells, style in body:
        table.add_row(*[cells[i] for i in shown], style=style)
    console.print(table)
    floored = sorted(((floor_ratio(sd), sd) for sd in diff.stages if floor_ratio(sd) is not None), key=lambda t: -t[0])
    if floored:
        above = [(r, sd) for r, sd in floored if r > 1]
        console.print(Text(f"noise floor: {len(floored)} stage(s) judged against it; "
                           + (f"{len(above)} above 1× the floor: " + ", ".join(f"{sd.key} {format_float(r)}×"
                                                                              for r, sd in above[:8])
                              + (" …" if len(above) > 8 else "") if above else "all within 1× the floor"),
                           style=None))
    images = [(sd, image_of(sd)) for sd in diff.stages if image_of(sd) is not None and sd is not first]
    for sd, image in images[:10]:
        console.print(Text(f"image {sd.key}: {image.summary()}", style=None if sd.passed else "red"))
    if len(images) > 10:
        console.print(Text(f"… and {len(images) - 10} more image stages (see the JSON or HTML report)", style="dim"))
    for sd in diff.expected:
        console.print(Text(f"expected divergence {sd.key}: {sd.expected_reason}", style="yellow"))
    missing, extra = diff.missing, diff.extra
    if missing:
        console.print(Text(f"Only in the reference ({len(missing)}): " + ", ".join(s.key for s in missing[:20])
                           + (" …" if len(missing) > 20 else ""), style="magenta"))
    if extra:
        console.print(Text(f"Only in the candidate ({len(extra)}): " + ", ".join(s.key for s in extra[:20])
                           + (" …" if len(extra) > 20 else ""), style="cyan"))
    if not diff.ref_complete or not diff.cand_complete:
        which = [n for n, ok in (("reference", diff.ref_complete), ("candidate", diff.cand_complete)) if not ok]
        console.print(Text(f"warning: the {' and '.join(which)} trace is incomplete (capture interrupted).", style="yellow"))
    if diff.unused_config:
        console.print(Text(f"warning: {len(diff.unused_config)} unused config entries (they match nothing in these "
                           "traces; --strict makes them errors):", style="yellow"))
        for u in diff.unused_config:
            console.print(Text(f"  {u}", style="yellow"))
    for line in describe_nothing_compared(diff):
        console.print(Text(line, style="bold red" if line.startswith("Nothing") else None))
    for line in describe_first_divergence(diff):
        console.print(Text(line, style="bold red" if line.startswith("First") else None))
    if worst and first is not None:
        console.print(f"  worst elements of {first.key}: index  reference → candidate  |error|", markup=False)
        width = max(len(_index(w)) for w in worst)
        for w in worst:
            console.print(f"    {_index(w):<{width}}  {format_float(w.ref, 6)} → {format_float(w.cand, 6)}  "
                          f"|err| {format_float(w.abs_err)}", markup=False)
    from ..compare.logits import describe_logits  # top-k / KL / first differing greedy token

    for line in describe_logits(diff):
        console.print(line, markup=False)
    c = diff.summary()
    verdict = verdict_text(diff)
    console.print(Text(f"{verdict}: {c['pass']} pass, {c['fail']} fail, {c['expected']} expected, {c['missing']} only in "
                       f"reference, {c['extra']} only in candidate" + (f", {c['ignored']} ignored" if c["ignored"] else "")
                       + (" (strict)" if diff.strict else ""), style="bold green" if diff.passed else "bold red"))
