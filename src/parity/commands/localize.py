"""``parity localize``: accumulated vs local error per stage, and the stage that introduces it."""

from __future__ import annotations

import json
import os
import sys

import click
from rich.console import Console

from .. import exitcodes
from ..bundle import bundle_command, bundle_option
from ..localize.local import DEFAULT_OUTLIER, localize
from ..localize.sets import is_trace_dir, localize_sets
from ..report.localize import (render_localize_html, render_localize_markdown, render_localize_set_markdown,
                               render_localize_set_text, render_localize_text)
from ..report.progress import progress_bar
from .compare_flags import compare_flags


@click.command("localize")
@click.argument("ref", type=click.Path(file_okay=False))
@click.argument("cand", type=click.Path(file_okay=False))
@click.argument("cand_local", type=click.Path(file_okay=False))
@compare_flags("config", "rtol", "atol", "tolerances")
@click.option("--outlier", type=click.FloatRange(min=0), default=DEFAULT_OUTLIER, show_default=True,
              help="A local error this many times the median local error is a bug (0: tolerances only).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--md", "md_out", type=click.Path(dir_okay=False), help="Write a Markdown report to FILE.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False),
              help="Write a self-contained HTML report to FILE (both error curves through the pipeline).")
@bundle_option
def localize_cmd(ref, cand, cand_local, compare, outlier, as_json, md_out, html_out, bundle_dir):
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
        html = render_localize_html(loc) if html_out or rec is not None else None
        _emit(json.dumps(loc.to_dict(), indent=2), render_localize_markdown(loc),
              lambda console: render_localize_text(loc, console), as_json, md_out, rec, html, html_out)
    sys.exit(exitcodes.for_result(loc.passed))


def _emit(doc: str, md: str, text, as_json: bool, md_out: str | None, rec, html: str | None = None,
          html_out: str | None = None) -> None:
    """Print the JSON document or the text (``text(console)``), write the Markdown (and HTML),
    record them in the bundle."""
    if as_json:
        click.echo(doc)
    else:
        text(Console(highlight=False, soft_wrap=False))
    for out, body in ((md_out, md), (html_out, html)):
        if out and body is not None:
            with open(out, "w", encoding="utf-8") as f:
                f.write(body)
    if rec is not None:
        rec.write("json", doc + "\n")
        rec.write("md", md)
        if html is not None:
            rec.write("html", html)


def _localize_sets(ref, cand, cand_local, outlier, as_json, md_out, bundle_dir, compare) -> None:
    """``parity localize REF_DIR CAND_DIR CAND_LOCAL_DIR``: one localization per input, aggregated per stage."""
    with bundle_command(bundle_dir, "localize") as rec:
        with progress_bar("localizing inputs") as progress:
            result = localize_sets(ref, cand, cand_local, outlier=outlier, on_input=progress, **compare)
        _emit(json.dumps(result.to_dict(), indent=2, allow_nan=False), render_localize_set_markdown(result),
              lambda console: render_localize_set_text(result, console), as_json, md_out, rec)
    sys.exit(exitcodes.for_result(result.passed))
