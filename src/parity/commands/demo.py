"""``parity demo``: record the built-in NumPy transformer pair and show where it diverges."""

from __future__ import annotations

import os
import sys
import tempfile

import click
from rich.console import Console

from .. import exitcodes
from ..bundle import bundle_command, bundle_option
from ..localize.divergence import compare_traces
from ..report.json import render_json
from ..report.text import render_text

__all__ = ["demo_cmd"]


@click.command("demo")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Keep the demo traces in this directory.")
@click.option("--fixed", is_flag=True, help="Record a candidate without the injected bug.")
@bundle_option
def demo_cmd(out, fixed, bundle_dir):
    """Record two built-in NumPy transformer implementations and show where they diverge."""
    from ..demo import INJECTED_STAGE, write_demo_traces

    # record=True with --bundle: keep what the terminal shows as evidence too
    console = Console(highlight=False, soft_wrap=False, record=bundle_dir is not None)
    with bundle_command(bundle_dir, "demo") as rec, tempfile.TemporaryDirectory(prefix="parity-demo-") as tmp:
        directory = out or tmp
        ref, cand, config = write_demo_traces(directory, fixed=fixed)
        console.print("[bold]parity demo[/bold]: a float64 reference transformer and a float32 port with one bug "
                      "(attention scores scaled by 1/sqrt(hidden) instead of 1/sqrt(head_dim)).")
        console.print(f"recorded {ref} and {cand}; comparing with {os.path.basename(config)} (rtol=1e-4, atol=1e-6)\n")
        result = compare_traces(ref, cand, config=config)
        render_text(result, console)
        first = result.first_divergence
        if fixed:
            ok = result.passed
            console.print("\n[bold green]The fixed port holds parity.[/bold green]" if ok else "\n[red]unexpected divergence[/red]")
        else:
            ok = first is not None and first.key == INJECTED_STAGE
            if ok:
                console.print(f"\n[bold]parity found the injected bug:[/bold] first divergence at [bold red]{first.key}[/bold red]; "
                              "every earlier stage agrees, every later one inherits the error.")
            else:
                console.print(f"\n[red]demo failed: expected first divergence {INJECTED_STAGE}, got {first.key if first else None}[/red]")
        if out:
            console.print(f"traces kept in {out}/  (try: parity diff {ref} {cand} --config {config})")
        if rec is not None:
            rec.write("txt", console.export_text())
            rec.write("json", render_json(result) + "\n")
    sys.exit(exitcodes.OK if ok else exitcodes.ERROR)  # a demo that misses its bug is a failure, not a divergence
