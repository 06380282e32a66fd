"""Markdown renderer: a summary, the first divergence explained, and a table of every stage.

Written for pull requests and issue comments (GitHub-flavoured Markdown tables). Free text from a
trace (messages, text-stage values) is escaped so that it cannot inject HTML or break a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..compare.batch import judged_alone
from ..compare.diff import StageDiff, Status, TraceDiff
from ..compare.floor import floor_ratio
from ..compare.image import image_of
from ._arrays import AUTO, TracePair, detail_stages, resolve_traces
from .format import TABLE_PASSING, table_rows
from .format import (describe_nothing_compared, dtype_text, format_float, metrics_line, result_counts, shape_text,
                     verdict_text)
from .worst import WorstElement, worst_elements

__all__ = ["render_markdown", "md_text", "md_cell", "md_code"]


def md_text(text: str) -> str:
    """Escape free text for a Markdown paragraph: no raw HTML, no line breaks.

    Example:
        >>> md_text("<b>x</b>\\ny")
        '&lt;b&gt;x&lt;/b&gt; y'
    """
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", " ").replace("\n", " "))


def md_cell(text: str) -> str:
    """:func:`md_text` for a table cell: ``|`` escaped too.

    Example:
        >>> md_cell("a|b")
        'a\\\\|b'
    """
    return md_text(text).replace("|", "\\|")


def md_code(text: str) -> str:
    """``text`` as inline code, or escaped cell text when it holds a backtick or a line break.

    Example:
        >>> md_code("layers.0.q"), md_code("a`b|c")
        ('`layers.0.q`', 'a`b\\\\|c')
    """
    # Stage keys cannot contain backticks (key grammar); paths can, so fall back to escaping.
    return f"`{text}`" if "`" not in text and "\n" not in text else md_cell(text)


def _status(sd: StageDiff, first: StageDiff | None) -> str:
    s = sd.status.upper()
    if sd.problem and sd.problem != "values":
        s += f" ({sd.problem})"
    if sd is first:
        s = f"**{s}** ◀ first"
    return s


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.3g} %"


def _worst_table(rows: Sequence[WorstElement]) -> list[str]:
    out = ["| rank | index | reference | candidate | abs error | rel error |",
           "| ---: | --- | ---: | ---: | ---: | ---: |"]
    for i, w in enumerate(rows, 1):
        index = "[" + ", ".join(str(j) for j in w.index) + "]"
        out.append(f"| {i} | `{index}` | {format_float(w.ref, 6)} | {format_float(w.cand, 6)} | "
                   f"{format_float(w.abs_err)} | {format_float(w.rel_err)} |")
    return out


def _stage_section(sd: StageDiff, pair: TracePair | None, worst: int, heading: str) -> list[str]:
    lines = [heading, ""]
    where = f"Stage {sd.ref.position + 1} in the reference's execution order." if sd.ref else ""
    if sd.status == Status.EXPECTED:
        where += f" Expected divergence: {md_text((sd.expected_reason or '').rstrip('.'))}."
    if sd.message:
        where += " " + md_text(sd.message)
    lines += [where.strip(), ""]
    m = sd.metrics
    if m is not None:
        if m.max_abs_index is not None:
            lines.append(f"- greatest absolute error {format_float(m.max_abs_err)} at `{list(m.max_abs_index)}`: "
                         f"reference {format_float(m.max_abs_ref, 6)}, candidate {format_float(m.max_abs_cand, 6)}")
        lines.append("- " + metrics_line(m))
        if sd.problem != "values":  # the message of a "values" failure already gives the count
            lines.append(f"- {m.mismatched} / {m.count} elements outside tolerance ({_percent(m.mismatched_fraction)})")
    if sd.tolerance is not None:
        lines.append("- tolerance: " + ", ".join(f"{k}={v:g}" for k, v in sd.tolerance.to_dict().items()))
    for note in sd.notes:
        lines.append(f"- note: {md_text(note)}")
    image = image_of(sd)
    if image is not None:
        lines.append(f"- image: {md_text(image.summary())}")
        for what, pts in (("missing", image.missing_examples), ("extra", image.extra_examples)):
            if pts:
                lines.append(f"- {what} peaks (row, col): " + ", ".join(f"({a}, {b})" for a, b in pts))
    for d in sd.diagnoses:
        lines.append(f"- likely: {md_text(d.summary)}")
    if lines[-1] != "":
        lines.append("")
    if pair is not None and worst > 0:
        data = pair.arrays(sd)
        if data is not None:
            rows = worst_elements(data.ref, data.cand, worst, ref_dtype=data.ref_dtype, cand_dtype=data.cand_dtype)
            if rows:
                lines += [f"Worst {len(rows)} elements by absolute error (index into the stage):", ""]
                lines += _worst_table(rows) + [""]
    return lines


def _metric_cells(sd: StageDiff) -> list[str]:
    m = sd.metrics
    if m is None:
        return ["-"] * 5
    return [format_float(m.max_abs_err), format_float(m.max_rel_err), format_float(m.cosine, 6),
            format_float(m.sqnr_db), f"{m.mismatched}/{m.count}"]


def render_markdown(diff: TraceDiff, *, traces: Any = AUTO, worst: int = 10, max_detail: int = 10,
                    table_passing: int | None = TABLE_PASSING) -> str:
    """Render ``diff`` as GitHub-flavoured Markdown.

    Sections: a summary table, the first divergence (message, metrics, diagnoses, worst
    elements), a table of every stage in execution order, details of up to ``max_detail``
    divergent stages, and the stages present on one side only.

    Args:
        diff: the comparison result.
        traces: where the stage values come from for the worst-element tables: ``AUTO`` (reopen
            the traces named in the diff when they exist), ``None`` (metrics only) or a
            ``(ref, cand)`` pair of traces or paths.
        worst: rows of each worst-element table (0 leaves the tables out).
        max_detail: divergent stages that get a section of their own.
        table_passing: passing stages the stage table lists at most (the first and last half;
            ``None``: all); every stage that does not pass is listed.

    Returns:
        The Markdown text, ending with a newline.

    Raises:
        UsageError: ``traces`` is not AUTO, None or a pair.

    Example:
        >>> md = render_markdown(parity.compare_traces("ref.trace", "cand.trace"), max_detail=1)
        >>> md.splitlines()[0], "## First divergence: `layers.0.attn_scores`" in md
        ('# parity diff: DIVERGENCE FOUND', True)
    """
    pair, note = resolve_traces(diff, traces)
    first = diff.first_divergence
    out = _summary(diff, note)
    details = detail_stages(diff, max_detail)
    if first is not None:
        out += _stage_section(first, pair, worst, f"## First divergence: `{first.key}`")
        later = len(diff.divergent) - 1
        if later > 0:
            out += [f"{later} later stage(s) also diverge; fix this one first, later errors may be propagated from it.", ""]
    elif diff.nothing_compared:
        out += ["## Nothing compared", ""] + [md_text(line.strip()) for line in describe_nothing_compared(diff)] + [""]
    elif diff.passed:
        out += ["No compared stage diverges.", ""]
    out += _stage_table(diff, table_passing)
    out += _image_table(diff)
    rest = [sd for sd in details if sd is not first]
    if rest:
        out += ["## Other divergent stages", ""]
        for sd in rest:
            out += _stage_section(sd, pair, worst, f"### `{sd.key}`")
        left = len(diff.divergent) + len(diff.expected) - len(details)
        if left > 0:
            out += [f"{left} more divergent stage(s) are listed in the table only.", ""]
    for title, stages in ((f"## Only in the reference ({len(diff.missing)})", diff.missing),
                          (f"## Only in the candidate ({len(diff.extra)})", diff.extra)):
        if stages:
            out += [title, "", ", ".join(f"`{s.key}`" for s in stages), ""]
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def _summary(diff: TraceDiff, note: str | None) -> list[str]:
    """The heading, the facts table, the note on the traces and the unused config entries."""
    out = [f"# parity diff: {verdict_text(diff)}", "", "| | |", "| --- | --- |",
           f"| reference | {md_code(diff.ref_path)}{'' if diff.ref_complete else ' (INCOMPLETE capture)'} |",
           f"| candidate | {md_code(diff.cand_path)}{'' if diff.cand_complete else ' (INCOMPLETE capture)'} |"]
    if diff.config_source:
        out.append(f"| config | {md_code(diff.config_source)} |")
    out += [f"| result | {result_counts(diff)} |", f"| parity | {diff.tool_version} |", ""]
    if note:
        out += [f"> {md_text(note)}", ""]
    if diff.unused_config:
        out += [f"**Unused config entries ({len(diff.unused_config)})**: they match nothing in these traces "
                "(`--strict` makes them errors).", ""] + [f"- {md_text(u)}" for u in diff.unused_config] + [""]
    return out


def _stage_table(diff: TraceDiff, table_passing: int | None) -> list[str]:
    """``## Stages``: one row a stage in execution order (a noise-floor column when any stage has
    one), long runs of passing stages folded into a row (see :func:`~parity.report.format.table_rows`)."""
    first = diff.first_divergence
    floors = any(floor_ratio(sd) is not None for sd in judged_alone(diff.stages))
    out = ["## Stages", "",
           "| # | stage | status | shape | dtype | max abs | max rel | cosine | SQNR dB | mismatched |"
           + (" × noise floor |" if floors else ""),
           "| ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if floors else "")]
    for sd in table_rows(diff, table_passing):
        if isinstance(sd, int):  # a run of passing stages left out
            out.append(f"| | … {sd} passing stages (the JSON report lists every stage) |" + " |" * (8 + floors))
            continue
        pos = str(sd.ref.position + 1) if sd.ref else ""
        cells = [pos, f"`{sd.key}`", _status(sd, first), shape_text(sd), dtype_text(sd), *_metric_cells(sd)]
        if floors:
            cells.append(format_float(floor_ratio(sd)))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


def _image_table(diff: TraceDiff) -> list[str]:
    """``## Images``: Pearson correlation and peak matching of every image stage (none: nothing)."""
    images = [sd for sd in judged_alone(diff.stages) if image_of(sd) is not None]
    if not images:
        return []
    out = ["## Images", "", "| stage | Pearson | peaks matched | missing | extra | mean offset (px) |",
           "| --- | ---: | ---: | ---: | ---: | --- |"]
    for sd in images:
        im = image_of(sd)
        off = f"({im.mean_offset[0]:.3g}, {im.mean_offset[1]:.3g})" if im.mean_offset is not None else "-"
        out.append(f"| `{sd.key}` | {format_float(im.pearson, 6)} | {im.matched}/{im.ref_peaks} | {im.missing} | "
                   f"{im.extra} | {off} |")
    out.append("")
    return out
