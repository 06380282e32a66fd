"""``parity events import|diff|diff-dirs|export``: event traces (agent sessions, JSONL event logs)."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.text import Text

from .. import exitcodes
from ..errors import UsageError
from ..events.presets import PRESETS



def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _write(path: str | None, text: str | None) -> None:
    if path and path != "-" and text is not None:
        from ..safefs import atomic_write

        atomic_write(path, text.encode("utf-8"))


@click.group("events")
def events_group() -> None:
    """Event traces: import JSONL event logs (agent sessions) and compare them event by event."""


@events_group.command("import")
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="The event trace to write.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Normalization preset recorded for later diffs.")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML config; its [events] preset is used.")
@click.option("--skip-malformed", is_flag=True,
              help="Import past malformed lines (warned, counted and kept in the trace's metadata).")
def import_cmd(src, out, preset, config, skip_malformed):
    """Import the JSONL event log SRC: each record becomes a text stage holding its exact line.

    Exit status: 0 imported, 2 malformed lines (without --skip-malformed) or unreadable input.
    """
    do_import(src, out, preset=preset, config=config, skip_malformed=skip_malformed)


def do_import(src: str, out: str, *, preset: str | None = None, config: str | None = None,
              skip_malformed: bool = False) -> None:
    """Import one JSONL event log and print the summary (also used by ``parity import --format events``)."""
    from ..events import import_events

    s = import_events(src, out, preset=preset, config=config, skip_malformed=skip_malformed)
    kinds = ", ".join(f"{k} {n}" for k, n in s.kinds.items())
    click.echo(f"{s.path}: {s.events} events ({kinds})" + (f", preset {s.preset}" if s.preset else ""))
    for m in s.malformed:
        click.echo(f"warning: {src}: malformed line {m.line} left out ({m.reason})", err=True)
    if s.malformed:
        click.echo(f"warning: {len(s.malformed)} malformed line(s) skipped; kept verbatim in the trace's metadata.",
                   err=True)


@events_group.command("export")
@click.argument("trace", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="The JSONL file to write.")
def export_cmd(trace, out):
    """Write event trace TRACE back as the JSONL log it came from, byte for byte."""
    from ..events import export_events

    n = export_events(trace, out)
    click.echo(f"wrote {out} ({n} bytes)")


def _gate_options(f):
    f = click.option("--html", "html_out", type=click.Path(dir_okay=False), metavar="FILE",
                     help="Write a self-contained HTML report to FILE.")(f)
    f = click.option("--md", "md_out", metavar="FILE", help="Write the Markdown report to FILE ('-' prints it).")(f)
    f = click.option("--json", "as_json", is_flag=True, help="Print the JSON result instead of the report.")(f)
    f = click.option("--skip-malformed", is_flag=True,
                     help="JSONL inputs: leave malformed lines out (reported) instead of refusing the log.")(f)
    f = click.option("--min-score", type=click.FloatRange(0, 1), default=None,
                     help="Pass when the similarity score reaches this (default: no divergent event).")(f)
    f = click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Normalization preset (default: as imported).")(f)
    f = click.option("--config", type=click.Path(dir_okay=False), help="TOML config with an [events] table.")(f)
    return f


@events_group.command("diff")
@click.argument("ref", type=click.Path(exists=True))
@click.argument("cand", type=click.Path(exists=True))
@_gate_options
def diff_cmd(ref, cand, config, preset, min_score, skip_malformed, as_json, md_out, html_out):
    """Compare event log CAND against reference REF (event traces or JSONL files).

    Events are aligned by edit distance over (kind, turn, normalized content): a missing or extra
    event shows as a deletion or insertion and the rest still line up.

    Exit status: 0 parity holds, 1 divergence (or score below --min-score), 2 usage or input error.
    """
    do_diff(ref, cand, config=config, preset=preset, min_score=min_score, skip_malformed=skip_malformed,
            as_json=as_json, md_out=md_out, html_out=html_out)


def do_diff(ref: str, cand: str, *, config: str | None = None, preset: str | None = None,
            min_score: float | None = None, skip_malformed: bool = False, as_json: bool = False,
            md_out: str | None = None, html_out: str | None = None) -> None:
    """Compare two event logs, print the report, write --md/--html files and exit 0 or 1
    (also used by ``parity diff`` when both traces are event traces)."""
    from ..events import compare_events, render_event_html, render_event_json, render_event_markdown, render_event_text

    _check_outputs(as_json, md_out)
    d = compare_events(ref, cand, config, preset=preset, min_score=min_score, skip_malformed=skip_malformed)
    _emit(d, as_json, md_out, html_out, render_event_json, render_event_markdown, render_event_html, render_event_text)
    sys.exit(exitcodes.for_result(d.passed))


def _check_outputs(as_json: bool, md_out: str | None) -> None:
    if as_json and md_out == "-":
        raise UsageError("--json and --md - both print to stdout; choose one (or give --md a file name).")


def _emit(result, as_json: bool, md_out: str | None, html_out: str | None, to_json, to_markdown, to_html,
          to_text) -> None:
    """Print ``result`` (JSON, the Markdown with ``--md -``, else the terminal report) and write
    the ``--md`` / ``--html`` files: one place for ``diff`` and ``diff-dirs``."""
    md = to_markdown(result) if md_out else None
    if as_json:
        click.echo(to_json(result))
    elif md_out == "-":
        click.echo(md, nl=False)
    else:
        to_text(result, _console())
    _write(md_out, md)
    _write(html_out, to_html(result) if html_out else None)


@events_group.command("diff-dirs")
@click.argument("ref_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("cand_dir", type=click.Path(exists=True, file_okay=False))
@_gate_options
@click.option("--min-mean", type=click.FloatRange(0, 1), default=None, help="Also require this mean score.")
def diff_dirs_cmd(ref_dir, cand_dir, config, preset, min_score, skip_malformed, as_json, md_out, html_out, min_mean):
    """Compare each candidate session in CAND_DIR with the reference fixture of the same name in REF_DIR.

    Sessions are NAME.jsonl files, NAME.trace event traces or NAME/ folders holding one .jsonl.
    Reports each fixture's score and the mean over fixtures (a missing candidate scores 0).

    Exit status: 0 every fixture passes, 1 one diverges or is missing, 2 a session cannot be read.
    """
    from ..events import (compare_event_dirs, render_event_dirs_html, render_event_dirs_json,
                          render_event_dirs_markdown, render_event_dirs_text)

    _check_outputs(as_json, md_out)
    r = compare_event_dirs(ref_dir, cand_dir, config, preset=preset, min_score=min_score, min_mean=min_mean,
                           skip_malformed=skip_malformed)
    if not r.fixtures:
        raise UsageError("holds no sessions (NAME.jsonl, NAME.trace or NAME/*.jsonl).", path=ref_dir)
    _emit(r, as_json, md_out, html_out, render_event_dirs_json, render_event_dirs_markdown, render_event_dirs_html,
          render_event_dirs_text)
    for f in r.errors:
        Console(stderr=True, highlight=False).print(Text(f"error: {f.name}: {f.error}", style="red"))
    sys.exit(exitcodes.ERROR if r.errors else exitcodes.for_result(r.passed))
