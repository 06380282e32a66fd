"""``parity show``: list the stages of a trace with shapes, dtypes and statistics.

Up to :data:`TABLE_STAGES` stages are one rich table; a larger trace (a million decode steps)
streams one plain line per stage, columns padded to widths known before the first line.
"""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .. import exitcodes
from ..bundle import bundle_command, bundle_option
from ..report.stats import stage_statistics
from ..report.text import format_float
from ..trace.reader import load_trace

__all__ = ["show_cmd", "TABLE_STAGES"]

#: Traces of more stages than this are listed line by line, not as one table.
TABLE_STAGES = 5_000
_NUMERIC = ("#", "min", "max", "mean", "std", "nan/inf")


@click.command("show")
@click.argument("trace", type=click.Path(file_okay=False))
@click.option("--verify", is_flag=True, help="Also re-hash every data file against the manifest.")
@click.option("--stats/--no-stats", default=True, help="Compute min/max/mean/std per stage (reads all values).")
@bundle_option
def show_cmd(trace, verify, stats, bundle_dir):
    """List the stages of TRACE: shapes, dtypes, axes and summary statistics."""
    with bundle_command(bundle_dir, "show") as rec:
        console = Console(highlight=False, soft_wrap=False, record=rec is not None)
        streamed: list[str] = []  # lines written past the console, kept for the bundle
        try:
            _show(trace, verify, stats, console, streamed if rec is not None else None)
        finally:
            text = "".join(streamed) + console.export_text() if rec is not None else ""
            if text:
                rec.write("txt", text)


def _row(t, s, stats: bool) -> list[str]:
    shape = "×".join(map(str, s.shape)) or "scalar"
    row = [str(s.position + 1), s.key, s.dtype or "text", shape if s.kind == "tensor" else repr((s.text or "")[:30]),
           ",".join(s.axes) if s.axes else "", s.units or ""]
    if stats:
        st = stage_statistics(t, s)
        if st:
            row += [format_float(st["min"]), format_float(st["max"]), format_float(st["mean"]), format_float(st["std"]),
                    f"{st['nan']}/{st['inf']}"]
        else:
            row += ["", "", "", "", ""]
    return row


def _stream(t, columns: tuple[str, ...], stats: bool, console: Console, keep: list[str] | None) -> None:
    """One line per stage, written in blocks straight to the console's file (rich would lay out
    a million rows as one table before printing the first)."""
    keys = t.keys()
    widths = [len(str(len(t))), max(16, max(map(len, keys), default=0)), 5, 12, 8, 5] + [10] * (len(columns) - 6)
    widths = [max(w, len(c)) for w, c in zip(widths, columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if name in _NUMERIC else c.ljust(w)
                         for c, w, name in zip(cells, widths, columns)).rstrip() + "\n"

    def write(text: str) -> None:
        console.file.write(text)
        if keep is not None:
            keep.append(text)

    if keep is not None:
        keep.append(console.export_text(clear=True))  # what the console printed before, in order

    write(line(list(columns)) + line(["-" * w for w in widths]))
    block: list[str] = []
    for s in t:
        block.append(line(_row(t, s, stats)))
        if len(block) >= 10_000:
            write("".join(block))
            block = []
    write("".join(block))
    console.file.flush()


def _show(trace: str, verify: bool, stats: bool, console: Console, keep: list[str] | None = None) -> None:
    t = load_trace(trace)
    m = t.manifest
    state = "complete" if t.complete else f"INCOMPLETE ({m.get('incomplete_reason', 'interrupted')})"
    # Keys, paths and metadata are user text: escape them so rich never reads "x[it=0]" as markup.
    console.print(f"[bold]{escape(t.path)}[/bold]  {len(t)} stages, {escape(state)}, producer "
                  f"{escape(repr(m.get('producer')))}, parity {escape(str(m.get('tool_version')))}")
    if t.meta:
        console.print(escape(f"meta: {t.meta}"))
    columns = ("#", "stage", "dtype", "shape", "axes", "units") + (("min", "max", "mean", "std", "nan/inf") if stats else ())
    if len(t) > TABLE_STAGES:
        _stream(t, columns, stats, console, keep)
    else:
        table = Table(show_lines=False, pad_edge=False)
        for col in columns:
            table.add_column(col, justify="right" if col in _NUMERIC else "left", min_width=16 if col == "stage" else None,
                             overflow="fold")
        for s in t:
            table.add_row(*(Text(c) for c in _row(t, s, stats)))
        console.print(table)
    if verify:
        problems = t.verify()
        for p in problems:
            console.print(Text(p, style="red"))
        if problems:
            sys.exit(exitcodes.ERROR)  # a trace that fails its checksums cannot be compared
        console.print(f"[green]all {len(t.manifest.get('files', {}))} data files match their checksums.[/green]")
