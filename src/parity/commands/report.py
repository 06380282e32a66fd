"""``parity report``: re-render a saved ``parity diff --json`` result, without the traces."""

from __future__ import annotations

import sys

import click
from rich.console import Console

from ..bundle import bundle_command, bundle_option
from ..errors import UsageError
from ..report import AUTO, SAVED, load_result, render_html, render_json, render_markdown, render_text
from ..safefs import atomic_write


@click.command("report")
@click.argument("result", type=click.Path(dir_okay=False))
@click.option("--md", "md_out", metavar="FILE", help="Write the Markdown report to FILE ('-' prints it instead of the table).")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the self-contained HTML report to FILE.")
@click.option("--json", "as_json", is_flag=True, help="Print the result again as JSON (current schema).")
@click.option("--all", "show_all", is_flag=True, help="Show every passing stage in the table.")
@click.option("--with-traces", is_flag=True,
              help="Reopen the traces named in the result for worst elements, histograms and heat maps.")
@bundle_option
def report_cmd(result, md_out, html_out, as_json, show_all, with_traces, bundle_dir):
    """Re-render RESULT (saved with `parity diff --json > RESULT`) as text, Markdown or HTML.

    The traces are not needed: figures that need stage values (worst elements, histograms, heat
    maps) are marked unavailable, unless --with-traces reopens the traces named in the result.
    Older schema versions are read.

    \b
    parity diff ref.trace cand.trace --json > result.json
    parity report result.json --html report.html --md report.md

    Exit status: the saved result's (0 parity holds, 1 divergence or nothing compared), 2 if
    RESULT cannot be read.
    """
    if as_json and md_out == "-":
        raise UsageError("--json and --md - both print to stdout; choose one (or give --md a file name).")
    with bundle_command(bundle_dir, "report") as rec:
        diff = load_result(result)
        traces = AUTO if with_traces else SAVED
        md = render_markdown(diff, traces=traces) if (md_out or rec) else None
        page = render_html(diff, traces=traces) if (html_out or rec) else None
        if as_json:
            click.echo(render_json(diff))
        elif md_out == "-":
            click.echo(md, nl=False)
        else:
            render_text(diff, Console(highlight=False, soft_wrap=False), show_all=show_all)
        for path, text in ((md_out, md), (html_out, page)):
            if path and path != "-":
                atomic_write(path, text.encode("utf-8"))
        if rec is not None:
            rec.write("md", md)
            rec.write("html", page)
        sys.exit(0 if diff.passed else 1)
