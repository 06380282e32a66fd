"""``parity diff``: compare two traces (or two sets of traces) stage by stage."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable

import click
from rich.console import Console

from .. import exitcodes
from ..bundle import bundle_command, bundle_option
from ..compare.diff import collector_paused
from ..localize.divergence import compare_traces
from ..errors import UsageError
from ..report.json import iter_json, render_json
from ..report.progress import progress_bar
from ..compare.suggest import alignment_hint
from ..report.sets import render_set_markdown, render_set_text
from ..report.text import render_text
from ..trace.reader import load_trace
from .compare_flags import compare_flags


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


@click.command("diff")
@click.argument("ref", type=click.Path(file_okay=False))
@click.argument("cand", type=click.Path(file_okay=False))
@compare_flags("config", "rtol", "atol", "strict", "tolerances", "dask")
@click.option("--json", "as_json", is_flag=True, help="Print the versioned JSON result instead of the table.")
@click.option("--all", "show_all", is_flag=True, help="Show every passing stage in the table.")
@click.option("--md", "md_out", metavar="FILE", help="Write the Markdown report to FILE ('-' prints it instead of the table).")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the self-contained HTML report (plots, sortable table) to FILE.")
@click.option("--worst", type=click.IntRange(0, 1000), default=5, show_default=True,
              help="Worst elements (with indices) listed per divergent stage.")
@click.option("--pairs", "pairs_file", type=click.Path(dir_okay=False, exists=True),
              help="Many inputs: a file of lines 'REF CAND' (trace paths) to diff and aggregate per stage.")
@click.option("--min-score", type=click.FloatRange(0, 1), default=None,
              help="Event traces: pass when the similarity score reaches this (docs/events.md).")
@bundle_option
def diff_cmd(ref, cand, compare, as_json, show_all, md_out, html_out, worst, pairs_file, min_score, bundle_dir):
    """Compare trace CAND against reference trace REF, stage by stage.

    With --bundle DIR the command line goes to DIR/commands.txt and the JSON, Markdown, HTML and
    text results to DIR/NN-diff.{json,md,html,txt}. With --dask the stages are compared on a Dask
    cluster (docs/scale.md); the result is the same.

    Exit status: 0 parity holds, 1 divergence found, 2 usage or input error, 3 internal error.
    """
    from ..report import AUTO

    if as_json and md_out == "-":
        raise UsageError("--json and --md - both print to stdout; choose one (or give --md a file name).")
    from ..events import is_event_trace

    if is_event_trace(ref) and is_event_trace(cand):  # agent sessions / JSONL event logs (docs/events.md)
        from .events import do_diff

        if "scheduler" in compare:
            raise UsageError("--dask compares the stages of two traces; these are event traces.")

        do_diff(ref, cand, config=compare.get("config"), min_score=min_score, as_json=as_json, md_out=md_out,
                html_out=html_out)
    if min_score is not None:
        raise UsageError("--min-score applies to event traces only (import them with --format events).")
    from ..localize.sets import is_trace_dir

    if pairs_file or (os.path.isdir(ref) and os.path.isdir(cand) and not is_trace_dir(ref) and not is_trace_dir(cand)):
        if html_out:
            raise UsageError("--html renders one pair of traces; with many inputs use --json or --md.")
        if "scheduler" in compare:
            raise UsageError("--dask compares one pair of traces; with many inputs compare without it.")
        _diff_sets(ref, cand, pairs_file, as_json, md_out, bundle_dir, **compare)
    with bundle_command(bundle_dir, "diff") as rec:
        opened = (load_trace(ref), load_trace(cand))
        # opened once: the comparison reads them, and so do the reports where they would reopen them (AUTO)
        traces = opened if all(os.path.isfile(os.path.join(p, "manifest.json")) for p in (ref, cand)) else AUTO
        with progress_bar("comparing") as progress:
            result = compare_traces(*opened, progress=_every(progress), **compare)
        with collector_paused():  # the reports walk every stage's result
            _report(result, traces, compare, as_json, show_all, md_out, html_out, worst, rec)
        sys.exit(exitcodes.for_result(result.passed))


def _report(result, traces, compare, as_json, show_all, md_out, html_out, worst, rec) -> None:
    """Print and write the reports of one pair's diff (see :func:`diff_cmd`)."""
    from ..report import render_html, render_markdown, stage_worst

    md = render_markdown(result, worst=worst, traces=traces) if (md_out or rec) else None
    page = None
    if html_out or rec:
        with progress_bar("HTML report") as progress:
            page = render_html(result, worst=worst, progress=progress, traces=traces)
    first_worst = stage_worst(result, result.first_divergence, worst, traces=traces)
    if as_json:
        _echo_json(result)
    elif md_out == "-":
        click.echo(md, nl=False)
    else:
        render_text(result, _console(), show_all=show_all, worst=first_worst)
    hint = alignment_hint(result, compare.get("config"))
    if hint:
        click.echo("\n".join(hint), err=as_json or md_out == "-")
    for path, text in ((md_out, md), (html_out, page)):
        if path and path != "-":
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if rec is not None:
        plain = Console(file=io.StringIO(), width=160, color_system=None, force_terminal=False, highlight=False)
        render_text(result, plain, show_all=True, worst=first_worst)
        rec.write("json", render_json(result) + "\n")
        rec.write("md", md)
        rec.write("html", page)
        rec.write("txt", plain.file.getvalue())


def _echo_json(result) -> None:
    """``render_json(result)`` and a newline to stdout, written as it is made (a million stages'
    dicts are never held at once)."""
    pieces: list[str] = []
    for i, piece in enumerate(iter_json(result), 1):
        pieces.append(piece)
        if i % 1024 == 0:
            click.echo("".join(pieces), nl=False)
            pieces = []
    click.echo("".join(pieces))


def _every(progress: Callable[[int, int, str], None], step: int = 4096) -> Callable[[int, int, str], None]:
    """``progress`` called every ``step`` stages and at the last (a bar redrawn a million times costs seconds)."""
    def update(done: int, total: int, key: str) -> None:
        if done % step == 0 or done == total or done == 1:
            progress(done, total, key)
    return update


def _diff_sets(ref, cand, pairs_file, as_json, md_out, bundle_dir, **compare_kwargs) -> None:
    """``parity diff REF_DIR CAND_DIR`` (or ``--pairs FILE``): one diff per input, aggregated per stage."""
    from ..localize.sets import compare_sets

    with bundle_command(bundle_dir, "diff") as rec:
        with progress_bar("comparing inputs") as progress:
            result = compare_sets(ref, cand, pairs_file=pairs_file, on_input=progress, **compare_kwargs)
        doc = json.dumps(result.to_dict(), indent=2, allow_nan=False)
        md = render_set_markdown(result)
        if as_json:
            click.echo(doc)
        elif md_out == "-":
            click.echo(md, nl=False)
        else:
            render_set_text(result, _console())
        if md_out and md_out != "-":
            with open(md_out, "w", encoding="utf-8") as f:
                f.write(md)
        if rec is not None:
            rec.write("json", doc + "\n")
            rec.write("md", md)
        sys.exit(exitcodes.for_result(result.passed))
