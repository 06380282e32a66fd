"""``parity localize``: accumulated vs local error per stage, and the stage that introduces it."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from ..bundle import bundle_command, bundle_option
from ..localize.local import DEFAULT_OUTLIER, localize
from ..report.text import format_float
from .compare_flags import compare_flags

_STYLE = {"culprit": "bold red", "also local": "red", "propagated": "yellow", "ok": None, "missing": "magenta"}


@click.command("localize")
@click.argument("ref", type=click.Path(file_okay=False))
@click.argument("cand", type=click.Path(file_okay=False))
@click.argument("cand_local", type=click.Path(file_okay=False))
@compare_flags("config", "rtol", "atol", "tolerances")
@click.option("--outlier", type=click.FloatRange(min=0), default=DEFAULT_OUTLIER, show_default=True,
              help="A local error this many times the median local error is a bug (0: tolerances only).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--md", "md_out", type=click.Path(dir_okay=False), help="Write a Markdown report to FILE.")
@bundle_option
def localize_cmd(ref, cand, cand_local, compare, outlier, as_json, md_out, bundle_dir):
    """Name the stage that introduces the divergence: CAND is the candidate's plain capture,
    CAND_LOCAL the same run under `parity.replay(REF, ...)` (each stage fed the reference's inputs).

    \b
    with parity.record("cand.trace"): run()
    with parity.replay("ref.trace", "cand_local.trace"): run()
    parity localize ref.trace cand.trace cand_local.trace

    Exit status: 0 no stage diverges, 1 a divergence (the culprit is named), 2 usage or input error.
    """
    with bundle_command(bundle_dir, "localize") as rec:
        loc = localize(ref, cand, cand_local, outlier=outlier, **compare)
        doc = json.dumps(loc.to_dict(), indent=2)
        md = _markdown(loc)
        if as_json:
            click.echo(doc)
        else:
            _text(loc, Console(highlight=False, soft_wrap=False))
        if md_out:
            with open(md_out, "w", encoding="utf-8") as f:
                f.write(md)
        if rec is not None:
            rec.write("json", doc + "\n")
            rec.write("md", md)
    sys.exit(0 if loc.passed else 1)


def _rows(loc):
    return [[str(s.position + 1) if s.position >= 0 else "", s.key, s.plain_status or "-", format_float(s.plain_rel),
             s.local_status or "-", format_float(s.local_rel), s.label] for s in loc.stages]


_COLS = ("#", "stage", "plain", "accumulated rel RMS", "replayed", "local rel RMS", "label")


def _verdict(loc) -> list[str]:
    lines = [f"{loc.passes} forward passes of the candidate (one plain, one replayed)"]
    if loc.culprit:
        lines.append(f"The divergence starts at {loc.culprit}: its own computation differs (local error)."
                     + (f" Plain diff's first divergence is {loc.plain_first}: propagated from there." if loc.plain_first
                        and loc.plain_first != loc.culprit else ""))
    elif not loc.plain.passed:
        lines.append("No stage's own computation diverges; the plain divergence is accumulated rounding.")
    else:
        lines.append("PARITY HOLDS: no stage diverges, plain or local.")
    return lines


def _text(loc, console: Console) -> None:
    table = Table(title="parity localize", title_justify="left", pad_edge=False)
    for c in _COLS:
        table.add_column(c, overflow="fold" if c == "stage" else "ellipsis")
    for row in _rows(loc):
        table.add_row(*row, style=_STYLE.get(row[-1]))
    console.print(table)
    for line in _verdict(loc):
        console.print(line, markup=False)


def _markdown(loc) -> str:
    out = ["# parity localize", "", "| " + " | ".join(_COLS) + " |", "| ---: | --- | --- | ---: | --- | ---: | --- |"]
    out += ["| " + " | ".join([r[0], f"`{r[1]}`", *r[2:]]) + " |" for r in _rows(loc)]
    return "\n".join(out + [""] + _verdict(loc)) + "\n"
