"""``parity localize``: accumulated vs local error per stage, and the stage that introduces it."""

from __future__ import annotations

import json
import os
import sys

import click
from rich.console import Console
from rich.table import Table

from ..bundle import bundle_command, bundle_option
from ..localize.local import DEFAULT_OUTLIER, localize
from ..localize.sets import is_trace_dir, localize_sets
from ..report.progress import progress_bar
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

    With three directories holding one trace per input (alike named, as for `parity diff REF_DIR
    CAND_DIR`), each input is localized and every stage gets the fraction of inputs in which it is
    the culprit, fails locally, or only propagates, and its worst input.

    Exit status: 0 no stage diverges, 1 a divergence (the culprit is named), 2 usage or input error.
    """
    if all(os.path.isdir(d) and not is_trace_dir(d) for d in (ref, cand, cand_local)):
        _localize_sets(ref, cand, cand_local, outlier, as_json, md_out, bundle_dir, compare)
    with bundle_command(bundle_dir, "localize") as rec:
        loc = localize(ref, cand, cand_local, outlier=outlier, **compare)
        _emit(json.dumps(loc.to_dict(), indent=2), _markdown(loc), lambda console: _text(loc, console), as_json, md_out, rec)
    sys.exit(0 if loc.passed else 1)


def _emit(doc: str, md: str, text, as_json: bool, md_out: str | None, rec) -> None:
    """Print the JSON document or the text (``text(console)``), write the Markdown, record both in the bundle."""
    if as_json:
        click.echo(doc)
    else:
        text(Console(highlight=False, soft_wrap=False))
    if md_out:
        with open(md_out, "w", encoding="utf-8") as f:
            f.write(md)
    if rec is not None:
        rec.write("json", doc + "\n")
        rec.write("md", md)


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


def _localize_sets(ref, cand, cand_local, outlier, as_json, md_out, bundle_dir, compare) -> None:
    """``parity localize REF_DIR CAND_DIR CAND_LOCAL_DIR``: one localization per input, aggregated per stage."""
    with bundle_command(bundle_dir, "localize") as rec:
        with progress_bar("localizing inputs") as progress:
            result = localize_sets(ref, cand, cand_local, outlier=outlier, on_input=progress, **compare)
        _emit(json.dumps(result.to_dict(), indent=2, allow_nan=False), _sets_markdown(result),
              lambda console: _sets_text(result, console), as_json, md_out, rec)
    sys.exit(0 if result.passed else 1)


_SET_COLS = ("#", "stage", "inputs", "culprit on", "fails locally on", "only propagated on", "worst input", "worst local rel RMS")


def _share(n: int, inputs: int) -> str:
    return f"{n} ({100 * n / inputs:.0f}%)" if inputs else "0"


def _sets_rows(result) -> list[list[str]]:
    top = result.culprit
    return [[str(s.position + 1), s.key + ("  ◀ culprit" if s is top else ""), str(s.inputs), _share(s.culprit, s.inputs),
             _share(s.local, s.inputs), _share(s.propagated, s.inputs), s.worst_input or "-", format_float(s.worst_local_rel)]
            for s in result.stages]


def _sets_verdict(result) -> list[str]:
    n, bad = len(result.names), result.failing_inputs
    lines = [f"{sum(r.passes for r in result.results)} forward passes of the candidate over {n} inputs (one plain, one "
             "replayed each)"]
    for name, r in zip(result.names, result.results):
        lines.append(f"{name}: " + (f"culprit {r.culprit}" if r.culprit else
                                    "parity holds" if r.passed else "no local divergence; the plain one is accumulated rounding"))
    top = result.culprit
    if top is not None:
        lines.append(f"The divergence starts at {top.key} on {top.culprit} of {top.inputs} inputs (its own computation differs).")
    lines.append("PARITY HOLDS on every input" if result.passed else f"DIVERGENCE FOUND on {len(bad)} of {n} inputs")
    return lines


def _sets_text(result, console: Console) -> None:
    table = Table(title=f"parity localize over {len(result.names)} inputs", title_justify="left", pad_edge=False)
    for c in _SET_COLS:
        table.add_column(c, overflow="fold" if c == "stage" else "ellipsis")
    for s, row in zip(result.stages, _sets_rows(result)):
        table.add_row(*row, style="red" if s.local else "yellow" if s.propagated else None)
    console.print(table)
    for line in _sets_verdict(result):
        console.print(line, markup=False)


def _sets_markdown(result) -> str:
    out = [f"# parity localize over {len(result.names)} inputs", "", "| " + " | ".join(_SET_COLS) + " |",
           "| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    out += ["| " + " | ".join([r[0], f"`{r[1]}`", *r[2:]]) + " |" for r in _sets_rows(result)]
    return "\n".join(out + [""] + _sets_verdict(result)) + "\n"
