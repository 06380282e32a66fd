"""``parity diff``, ``parity show`` and ``parity demo``."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile

import click
import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..bundle import bundle_command, bundle_option
from ..compare.diff import compare_traces
from ..errors import UsageError
from ..report.json import render_json
from ..report.progress import progress_bar
from ..report.text import format_float, render_text
from ..trace.dtypes import to_float64
from ..trace.reader import Stage, Trace, load_trace

EXIT_OK, EXIT_DIVERGENCE = 0, 1


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


@click.command("diff")
@click.argument("ref", type=click.Path(file_okay=False))
@click.argument("cand", type=click.Path(file_okay=False))
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML config: tolerances, aliases, ignores.")
@click.option("--rtol", type=float, help="Relative tolerance for every stage (replaces the dtype default).")
@click.option("--atol", type=float, help="Absolute tolerance for every stage (replaces the dtype default).")
@click.option("--strict", is_flag=True, default=None, help="Stages present on one side only fail the comparison.")
@click.option("--tolerances", "tolerances", type=click.Path(dir_okay=False),
              help="Noise floors from `parity calibrate`: a stage with a floor passes within its margin.")
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
def diff_cmd(ref, cand, config, rtol, atol, strict, tolerances, as_json, show_all, md_out, html_out, worst, pairs_file,
             min_score, bundle_dir):
    """Compare trace CAND against reference trace REF, stage by stage.

    With --bundle DIR the command line goes to DIR/commands.txt and the JSON, Markdown, HTML and
    text results to DIR/NN-diff.{json,md,html,txt}.

    Exit status: 0 parity holds, 1 divergence found, 2 usage or input error, 3 internal error.
    """
    from ..report import render_html, render_markdown, stage_worst

    if as_json and md_out == "-":
        raise UsageError("--json and --md - both print to stdout; choose one (or give --md a file name).")
    from ..events import is_event_trace

    if is_event_trace(ref) and is_event_trace(cand):  # agent sessions / JSONL event logs (docs/events.md)
        from .events import do_diff

        do_diff(ref, cand, config=config, min_score=min_score, as_json=as_json, md_out=md_out, html_out=html_out)
    if min_score is not None:
        raise UsageError("--min-score applies to event traces only (import them with --format events).")
    from ..localize.sets import is_trace_dir

    if pairs_file or (os.path.isdir(ref) and os.path.isdir(cand) and not is_trace_dir(ref) and not is_trace_dir(cand)):
        if html_out:
            raise UsageError("--html renders one pair of traces; with many inputs use --json or --md.")
        _diff_sets(ref, cand, pairs_file, as_json, md_out, bundle_dir, config=config, rtol=rtol, atol=atol,
                   strict=strict, noise_floor=tolerances)
    with bundle_command(bundle_dir, "diff") as rec:
        with progress_bar("comparing") as progress:
            result = compare_traces(ref, cand, config=config, rtol=rtol, atol=atol, strict=strict, progress=progress,
                                    noise_floor=tolerances)
        md = render_markdown(result, worst=worst) if (md_out or rec) else None
        page = None
        if html_out or rec:
            with progress_bar("HTML report") as progress:
                page = render_html(result, worst=worst, progress=progress)
        first_worst = stage_worst(result, result.first_divergence, worst)
        if as_json:
            click.echo(render_json(result))
        elif md_out == "-":
            click.echo(md, nl=False)
        else:
            render_text(result, _console(), show_all=show_all, worst=first_worst)
        hint = alignment_hint(result, config)
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
        sys.exit(EXIT_OK if result.passed else EXIT_DIVERGENCE)


def _diff_sets(ref, cand, pairs_file, as_json, md_out, bundle_dir, **compare_kwargs) -> None:
    """``parity diff REF_DIR CAND_DIR`` (or ``--pairs FILE``): one diff per input, aggregated per stage."""
    from ..localize.sets import compare_sets

    with bundle_command(bundle_dir, "diff") as rec:
        with progress_bar("comparing inputs") as progress:
            result = compare_sets(ref, cand, pairs_file=pairs_file, on_input=progress, **compare_kwargs)
        doc = json.dumps(result.to_dict(), indent=2, allow_nan=False)
        md = _sets_markdown(result)
        if as_json:
            click.echo(doc)
        elif md_out == "-":
            click.echo(md, nl=False)
        else:
            _sets_text(result, _console())
        if md_out and md_out != "-":
            with open(md_out, "w", encoding="utf-8") as f:
                f.write(md)
        if rec is not None:
            rec.write("json", doc + "\n")
            rec.write("md", md)
        sys.exit(EXIT_OK if result.passed else EXIT_DIVERGENCE)


def _sets_rows(result) -> list[list[str]]:
    rows = []
    first = result.first_divergence
    for s in result.stages:
        rows.append([str(s.position + 1), s.key + ("  ◀ first divergence" if s is first else ""), str(s.inputs),
                     f"{s.failed} ({100 * s.fraction:.0f}%)", s.worst_input or "-", format_float(s.worst_rel),
                     str(s.first_on)])
    return rows


_SET_COLUMNS = ("#", "stage", "inputs", "diverge on", "worst input", "worst max rel", "first on")


def _sets_text(result, console: Console) -> None:
    table = Table(title=f"parity diff over {len(result.names)} inputs", title_justify="left", pad_edge=False)
    for c in _SET_COLUMNS:
        table.add_column(c, overflow="fold" if c == "stage" else "ellipsis")
    for row in _sets_rows(result):
        failed = not row[3].startswith("0 ")
        table.add_row(*row, style="red" if failed else None)
    console.print(table)
    for name, d in zip(result.names, result.diffs):
        first = d.first_divergence
        console.print(Text(f"{name}: " + ("parity holds" if d.passed else
                                          f"first divergence {first.key}" if first else d.verdict.replace("_", " ")),
                           style="green" if d.passed else "red"))
    bad = result.failing_inputs
    verdict = "PARITY HOLDS on every input" if result.passed else f"DIVERGENCE FOUND on {len(bad)} of {len(result.names)} inputs"
    console.print(Text(verdict, style="bold green" if result.passed else "bold red"))


def _sets_markdown(result) -> str:
    bad = result.failing_inputs
    out = [f"# parity diff over {len(result.names)} inputs: "
           + ("PARITY HOLDS" if result.passed else f"DIVERGENCE FOUND on {len(bad)} of {len(result.names)} inputs"), "",
           "| " + " | ".join(_SET_COLUMNS) + " |", "| ---: | --- | ---: | ---: | --- | ---: | ---: |"]
    out += ["| " + " | ".join(r[:1] + [f"`{r[1]}`"] + r[2:]) + " |" for r in _sets_rows(result)]
    out += ["", "| input | result |", "| --- | --- |"]
    for name, d in zip(result.names, result.diffs):
        first = d.first_divergence
        out.append(f"| `{name}` | " + ("parity holds" if d.passed else f"first divergence `{first.key}`" if first
                                         else d.verdict.replace("_", " ")) + " |")
    return "\n".join(out) + "\n"


def alignment_hint(result, config: str | None, limit: int = 5) -> list[str]:
    """A few lines proposing counterparts for stages present on one side only (``[]`` if none)."""
    if not (result.missing and result.extra):
        return []
    from ..compare.suggest import suggest_alignment

    suggestions = suggest_alignment(result.ref_path, result.cand_path, config, max_stage_bytes=64 << 20,
                                    min_confidence=0.6)
    if not suggestions:
        return []
    lines = [f"hint: {len(suggestions)} unmatched stage(s) look like pairs "
             f"(parity align {result.ref_path} {result.cand_path} --write aliases.toml saves them):"]
    lines += [f"  {s.describe()}" for s in suggestions[:limit]]
    if len(suggestions) > limit:
        lines.append(f"  … and {len(suggestions) - limit} more (parity align lists them all)")
    return lines


def stage_statistics(trace: Trace, stage: Stage, chunk: int = 1 << 20) -> dict[str, float | int]:
    """min, max, mean, std (finite values only) and NaN / Inf counts of a stage, in bounded memory."""
    arr = trace.array(stage)
    if isinstance(arr, str):
        return {}
    info = stage.dtype_info
    flat = arr.reshape(-1)
    n = nan = inf = 0
    s = ss = 0.0
    lo, hi = np.inf, -np.inf
    for start in range(0, flat.size, chunk):
        x = to_float64(flat[start:start + chunk], info)
        bad_nan = np.isnan(x)
        bad_inf = np.isinf(x)
        nan += int(bad_nan.sum())
        inf += int(bad_inf.sum())
        x = x[~(bad_nan | bad_inf)]
        if x.size:
            n += x.size
            s += float(x.sum())
            ss += float(np.dot(x, x))
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
    mean = s / n if n else float("nan")
    var = max(ss / n - mean * mean, 0.0) if n else float("nan")
    return {"min": lo if n else float("nan"), "max": hi if n else float("nan"), "mean": mean, "std": var ** 0.5,
            "nan": nan, "inf": inf}


@click.command("show")
@click.argument("trace", type=click.Path(file_okay=False))
@click.option("--verify", is_flag=True, help="Also re-hash every data file against the manifest.")
@click.option("--stats/--no-stats", default=True, help="Compute min/max/mean/std per stage (reads all values).")
@bundle_option
def show_cmd(trace, verify, stats, bundle_dir):
    """List the stages of TRACE: shapes, dtypes, axes and summary statistics."""
    with bundle_command(bundle_dir, "show") as rec:
        console = Console(highlight=False, soft_wrap=False, record=rec is not None)
        try:
            _show(trace, verify, stats, console)
        finally:
            text = console.export_text() if rec is not None else ""
            if text:
                rec.write("txt", text)


def _show(trace: str, verify: bool, stats: bool, console: Console) -> None:
    t = load_trace(trace)
    m = t.manifest
    state = "complete" if t.complete else f"INCOMPLETE ({m.get('incomplete_reason', 'interrupted')})"
    # Keys, paths and metadata are user text: escape them so rich never reads "x[it=0]" as markup.
    console.print(f"[bold]{escape(t.path)}[/bold]  {len(t)} stages, {escape(state)}, producer "
                  f"{escape(repr(m.get('producer')))}, parity {escape(str(m.get('tool_version')))}")
    if t.meta:
        console.print(escape(f"meta: {t.meta}"))
    table = Table(show_lines=False, pad_edge=False)
    for col in ("#", "stage", "dtype", "shape", "axes", "units") + (("min", "max", "mean", "std", "nan/inf") if stats else ()):
        table.add_column(col, justify="right" if col in ("#", "min", "max", "mean", "std", "nan/inf") else "left",
                         min_width=16 if col == "stage" else None, overflow="fold")
    for s in t:
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
        table.add_row(*(Text(c) for c in row))
    console.print(table)
    if verify:
        problems = t.verify()
        for p in problems:
            console.print(Text(p, style="red"))
        if problems:
            sys.exit(2)
        console.print(f"[green]all {len(t.manifest.get('files', {}))} data files match their checksums.[/green]")


@click.command("demo")
@click.option("--out", "out", type=click.Path(file_okay=False), help="Keep the demo traces in this directory.")
@click.option("--fixed", is_flag=True, help="Record a candidate without the injected bug.")
@bundle_option
def demo_cmd(out, fixed, bundle_dir):
    """Record two built-in NumPy transformer implementations and show where they diverge."""
    from ..demo import INJECTED_STAGE, write_demo_traces

    console = _console()
    if bundle_dir is not None:  # keep what the terminal shows as evidence too
        console = Console(highlight=False, soft_wrap=False, record=True)
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
    sys.exit(EXIT_OK if ok else 2)


def register(group: click.Group) -> None:
    group.add_command(diff_cmd)
    group.add_command(show_cmd)
    group.add_command(demo_cmd)
