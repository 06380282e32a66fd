"""``parity import`` and ``parity export``: foreign files to and from traces."""

from __future__ import annotations

import click

import hashlib
import io
import os

from ..bundle import bundle_command, bundle_option
from ..importers import EXPORT_FORMATS, export_trace, import_files, importers
from ..report.progress import progress_bar


@click.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="The trace directory to write.")
@click.option("--format", "fmt", type=click.Choice([i.name for i in importers()] + ["events"]),
              help="Force an importer instead of detecting the format (events: a JSONL event log, docs/events.md).")
@click.option("--prefix", "prefixes", multiple=True,
              help="Trace-line prefix of a text log, e.g. TRACE_C (takes 'TRACE_C:' and 'TRACE_C_ITER ...' lines). Repeatable.")
@click.option("--index-field", "index_fields", multiple=True, help="A name=value field of a log that is an index. Repeatable.")
@click.option("--order", "order", type=click.Path(dir_okay=False, exists=True),
              help="Execution order of a dump directory: one relative path per line (default: its order.txt).")
@click.option("--follow-symlinks", "follow_symlinks", is_flag=True, default=False,
              help="Read files and folders of a dump directory that are symbolic links out of it (refused by default).")
@click.option("--preset", type=click.Choice(["ccpa"]), help="--format events: the normalization preset recorded.")
@click.option("--skip-malformed", is_flag=True, help="--format events: import past malformed lines (counted, kept).")
@bundle_option
def import_cmd(files, out, fmt, prefixes, index_fields, order, follow_symlinks, preset, skip_malformed, bundle_dir):
    """Import FILES (text logs, APRT dumps, .npy/.npz, safetensors) into one trace, in the order given.

    \b
    Examples:
      parity import run.log --prefix TRACE_C --out c.trace
      parity import dump/ --out ref.trace            # APRT layer-N/STAGE.bin directory
    """
    if fmt == "events" or preset or skip_malformed:  # JSONL event logs (docs/events.md)
        from ..errors import UsageError
        from .events import do_import

        if fmt != "events" or len(files) != 1:
            raise UsageError("--preset and --skip-malformed go with --format events, which imports one JSONL log.")
        with bundle_command(bundle_dir, "import"):
            return do_import(files[0], out, preset=preset, skip_malformed=skip_malformed)
    with bundle_command(bundle_dir, "import") as rec:
        with progress_bar("importing") as progress:  # drawn on stderr only when it is a terminal
            report = import_files(list(files), out, format=fmt, prefixes=list(prefixes) or None,
                                  index_fields=list(index_fields), order=order, progress=progress,
                                  follow_symlinks=follow_symlinks)
        if rec is None:
            _print_import(report)
            return
        buf = io.StringIO()
        _print_import(report, buf)
        click.echo(buf.getvalue(), nl=False)
        rec.write_traces([report.path], buf.getvalue())


def _print_import(report, out=None) -> None:
    """The import summary; stage counts on stdout (or ``out``), problems on stderr."""
    def echo(text: str, err: bool = False) -> None:
        if err or out is None:
            click.echo(text, err=err)
        else:
            out.write(text + "\n")

    echo(f"{report.path}: {report.stages} stages")
    for s in report.stats:
        line = f"  {s['source']} ({s['format']}): {s['stages']} stages"
        if s["format"] == "lines":
            line += (f" from {s['trace_lines']} trace lines; {s['skipped']} other lines skipped, "
                     f"{s['malformed']} malformed")
        echo(line)
        for ex in s.get("malformed_examples", []):
            echo(f"    malformed {ex}", err=True)
        if s.get("renamed"):
            echo(f"    {s['renamed']} values stored under a name other than the printed one:", err=True)
        for r in s.get("renames", []):
            echo(f"    line {r['line']}: renamed {r['printed']!r} -> {r['stored']!r}", err=True)
        for c in s.get("collisions", []):
            echo(f"    collision: {', '.join(repr(p) for p in c['printed'])} all became {c['stage']!r} "
                 "(stored as numbered occurrences)", err=True)


@click.command("export")
@click.argument("trace", type=click.Path(file_okay=False, exists=True))
@click.option("--format", "fmt", required=True, type=click.Choice(sorted(EXPORT_FORMATS)), help="The format to write.")
@click.option("--out", "out", required=True, type=click.Path(), help="A new file (npz, safetensors) or empty directory (aprt, npy).")
@click.option("--stage", "stages", multiple=True, help="Export only this stage. Repeatable.")
@bundle_option
def export_cmd(trace, fmt, out, stages, bundle_dir):
    """Write the tensor stages of TRACE as an APRT dump, .npz, .npy folder or safetensors file."""
    with bundle_command(bundle_dir, "export") as rec:
        notes = export_trace(trace, out, fmt, list(stages) or None)
        lines = [f"wrote {out} ({fmt})"] + [f"  note: {n}" for n in notes]
        click.echo(lines[0])
        for n in lines[1:]:
            click.echo(n, err=True)
        if rec is not None:
            rec.write("txt", "\n".join(lines) + "\n")
            if os.path.isfile(out):
                with open(out, "rb") as f:
                    rec.write("sha256", hashlib.sha256(f.read()).hexdigest() + f"  {os.path.basename(out)}\n")
