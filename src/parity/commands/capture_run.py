"""``parity capture run``: run a foreign program and capture the trace lines it prints."""

from __future__ import annotations

import sys

import click

from .. import exitcodes
from ..bundle import bundle_command, bundle_option
from ..capture.program import capture_program
from ..redact import redact_args, redact_text



@click.command("run", context_settings={"ignore_unknown_options": True})
@click.option("--prefix", "prefixes", multiple=True, required=True,
              help="Trace-line prefix, e.g. TRACE_C (takes 'TRACE_C:' lines and 'TRACE_C_ITER ...' indexed lines). Repeatable.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="The trace directory to write.")
@click.option("--cwd", "cwd", type=click.Path(file_okay=False, exists=True), help="Run the program in this directory.")
@click.option("--index-field", "index_fields", multiple=True,
              help="A name=value field that is an index wherever it appears (e.g. step). Repeatable.")
@click.option("--timeout", type=float, help="Kill the program after this many seconds (the trace is kept, incomplete).")
@click.option("--log", "log", type=click.Path(dir_okay=False), help="Also save the program's raw output to this file.")
@click.option("--stream", "streams", multiple=True, type=click.Choice(["stdout", "stderr"]),
              help="Parse only this stream (default: both).")
@bundle_option
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
def run_cmd(prefixes, out, cwd, index_fields, timeout, log, streams, bundle_dir, argv):
    """Run PROGRAM ARGS... and write the trace lines it prints on stdout and stderr into a trace.

    \b
    Example:
      parity capture run --prefix TRACE_C --out c.trace -- ./sim --steps 10

    Exit status: 0 captured, 2 the program failed (non-zero exit, timeout) or printed no trace line.

    Secret-looking arguments (--password X, --token=X, API_KEY=...) are redacted in the trace
    and in what this command prints; the program itself gets them unchanged.
    """
    with bundle_command(bundle_dir, "capture-run") as rec:
        code, lines = _run(prefixes, out, cwd, index_fields, timeout, log, streams, argv)
        if rec is not None:
            rec.write_traces([out], "\n".join(lines) + "\n")
        sys.exit(code)


def _run(prefixes, out, cwd, index_fields, timeout, log, streams, argv) -> tuple[int, list[str]]:
    """Capture, print the summary (redacted) and return (exit status, the lines printed)."""
    lines: list[str] = []

    def say(text: str, err: bool = False) -> None:
        lines.append(text)
        click.echo(text, err=err)

    r = capture_program(list(argv), out, prefixes=list(prefixes), index_fields=index_fields, cwd=cwd,
                        timeout=timeout, log=log, streams=tuple(streams) or ("stdout", "stderr"))
    st = r.stats
    say(f"{r.path}: {r.stages} stages from {st.trace_lines} trace lines "
        f"({st.skipped} other lines skipped, {st.malformed} malformed) of {' '.join(redact_args(r.argv))}")
    for n, why in st.examples:
        say(f"  malformed line {n}: {redact_text(why)}", err=True)
    if r.timed_out:
        say(f"error: the program was killed after {timeout} s; the trace is marked incomplete.", err=True)
        return exitcodes.ERROR, lines
    if r.returncode != 0:
        say(f"error: the program exited with status {r.returncode}; the trace is marked incomplete.", err=True)
        for line in r.stderr_tail[-10:]:
            say(f"  stderr: {redact_text(line)}", err=True)
        return exitcodes.ERROR, lines
    if st.trace_lines == 0:
        say(f"error: the program printed no line starting with {' or '.join(prefixes)}; check --prefix.", err=True)
        return exitcodes.ERROR, lines
    return exitcodes.OK, lines
