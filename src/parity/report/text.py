"""Terminal renderer: a rich table of every stage, the first divergence highlighted."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..compare.batch import judged_alone
from ..compare.diff import Status, TraceDiff
from ..compare.floor import floor_ratio
from ..compare.image import image_of
from .format import table_rows
from .format import (  # re-exported: callers import the shared helpers from here too
    describe_first_divergence,
    describe_nothing_compared,
    dtype_text,
    format_float,
    metrics_line,
    shape_text,
    verdict_text,
)
from .worst import WorstElement

__all__ = ["render_text", "format_float", "describe_first_divergence", "verdict_text", "describe_nothing_compared",
           "metrics_line", "shape_text", "dtype_text"]

_STYLE = {Status.PASS: "green", Status.FAIL: "bold red", Status.EXPECTED: "yellow", Status.MISSING: "magenta",
          Status.EXTRA: "cyan"}


def _index(w: WorstElement) -> str:
    return "[" + ", ".join(str(i) for i in w.index) + "]"


_COLUMNS = (("#", "right"), ("stage", "left"), ("status", "left"), ("shape", "left"), ("dtype", "left"),
            ("max abs", "right"), ("max rel", "right"), ("cosine", "right"), ("SQNR dB", "right"),
            ("mismatched", "right"))

_Row = tuple[list[Text | str], str | None]  # (cells, row style); an elision row has "" in cells 0 and 2


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
        >>> import io
        >>> from rich.console import Console
        >>> out = io.StringIO()
        >>> render_text(parity.compare_traces("ref.trace", "cand.trace"), Console(file=out, width=120))
        >>> out.getvalue().splitlines()[-1]
        'DIVERGENCE FOUND: 5 pass, 26 fail, 0 expected, 0 only in reference, 0 only in candidate'
    """
    console = console or Console()
    console.print(_stage_table(diff, _stage_rows(diff, show_all, max_passing), console.width))
    _print_notes(diff, console)
    _print_conclusion(diff, console, worst)


def _stage_rows(diff: TraceDiff, show_all: bool, max_passing: int) -> list[_Row]:
    """One row a stage, long runs of passing stages folded into one ``… N passing stages`` row."""
    first = diff.first_divergence
    body: list[_Row] = []
    for sd in table_rows(diff, None if show_all else max_passing):
        if isinstance(sd, int):
            body.append((["", Text(f"… {sd} passing stages (--all shows them)", style="dim")] + [""] * 8, None))
            continue
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
    return body


def _stage_table(diff: TraceDiff, body: list[_Row], console_width: int) -> Table:
    """The rows as a rich table. On a narrow terminal the stage names must stay readable: drop the
    least telling columns (dtype, shape, SQNR, cosine) rather than squeeze every column to an ellipsis."""
    def width(i: int) -> int:
        cells = [len(str(cells[i])) for cells, _ in body if not (i == 1 and cells[0] == "" and cells[2] == "")]
        return max([len(_COLUMNS[i][0])] + cells) + 3

    shown = list(range(len(_COLUMNS)))
    for drop in (4, 3, 8, 7):
        if sum(width(i) for i in shown) + 1 <= console_width:
            break
        shown.remove(drop)
    table = Table(title=f"parity diff  {diff.ref_path}  →  {diff.cand_path}", title_justify="left", show_lines=False,
                  pad_edge=False)
    for i in shown:
        table.add_column(_COLUMNS[i][0], justify=_COLUMNS[i][1], no_wrap=i != 1,
                         overflow="fold" if i == 1 else "ellipsis")
    for cells, style in body:
        table.add_row(*[cells[i] for i in shown], style=style)
    return table


def _print_notes(diff: TraceDiff, console: Console) -> None:
    """Under the table: noise floors, image stages, expected divergences, one-sided stages, warnings."""
    first = diff.first_divergence
    alone = judged_alone(diff.stages)  # (the stages of a run hold no noise floor or image metrics)
    floored = sorted(((r, sd) for sd in alone if (r := floor_ratio(sd)) is not None), key=lambda t: -t[0])
    if floored:
        above = [(r, sd) for r, sd in floored if r > 1]
        console.print(Text(f"noise floor: {len(floored)} stage(s) judged against it; "
                           + (f"{len(above)} above 1× the floor: " + ", ".join(f"{sd.key} {format_float(r)}×"
                                                                              for r, sd in above[:8])
                              + (" …" if len(above) > 8 else "") if above else "all within 1× the floor"),
                           style=None))
    images = [(sd, image) for sd in alone if (image := image_of(sd)) is not None and sd is not first]
    for sd, image in images[:10]:
        console.print(Text(f"image {sd.key}: {image.summary()}", style=None if sd.passed else "red"))
    if len(images) > 10:
        console.print(Text(f"… and {len(images) - 10} more image stages (see the JSON or HTML report)", style="dim"))
    for sd in diff.expected:
        console.print(Text(f"expected divergence {sd.key}: {sd.expected_reason}", style="yellow"))
    for side, stages, style in (("reference", diff.missing, "magenta"), ("candidate", diff.extra, "cyan")):
        if stages:
            console.print(Text(f"Only in the {side} ({len(stages)}): " + ", ".join(s.key for s in stages[:20])
                               + (" …" if len(stages) > 20 else ""), style=style))
    if not diff.ref_complete or not diff.cand_complete:
        which = [n for n, ok in (("reference", diff.ref_complete), ("candidate", diff.cand_complete)) if not ok]
        console.print(Text(f"warning: the {' and '.join(which)} trace is incomplete (capture interrupted).", style="yellow"))
    if diff.unused_config:
        console.print(Text(f"warning: {len(diff.unused_config)} unused config entries (they match nothing in these "
                           "traces; --strict makes them errors):", style="yellow"))
        for u in diff.unused_config:
            console.print(Text(f"  {u}", style="yellow"))


def _print_conclusion(diff: TraceDiff, console: Console, worst: Sequence[WorstElement]) -> None:
    """The first divergence explained (with its worst elements), logits, and the verdict line."""
    first = diff.first_divergence
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
    console.print(Text(f"{verdict_text(diff)}: {c['pass']} pass, {c['fail']} fail, {c['expected']} expected, "
                       f"{c['missing']} only in reference, {c['extra']} only in candidate"
                       + (f", {c['ignored']} ignored" if c["ignored"] else "")
                       + (" (strict)" if diff.strict else ""), style="bold green" if diff.passed else "bold red"))
