"""``parity contract validate|check|convert|new``: ledgers of claims checked against their evidence."""

from __future__ import annotations

import io
import os
import sys

import click
from rich.console import Console

from .. import exitcodes
from ..bundle import bundle_command, bundle_option
from ..errors import UsageError



def _console(err: bool = False) -> Console:
    return Console(highlight=False, soft_wrap=False, stderr=err)


@click.group("contract")
def contract_group() -> None:
    """Contracts: claims (proposed < algorithm < functional < discharged) checked against their evidence.

    See docs/contracts.md for the schema.
    """


@contract_group.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--root", default=".", type=click.Path(file_okay=False), help="Repository root (for aprender bundle paths).")
def validate_cmd(paths, root):
    """Check the schema and the references of contract FILES or DIRS; runs and reads nothing else.

    Exit status: 0 valid, 2 a problem (each listed with file, line and column).
    """
    from ..contracts import load_contracts

    result = load_contracts(paths, root=root)
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
    result.raise_errors()
    claims = sum(len(c.claims) for c in result.contracts)
    click.echo(f"{len(result.files)} file(s), {len(result.contracts)} contract(s), {claims} claim(s): valid"
               + (f" ({len(result.warnings)} warning(s))" if result.warnings else ""))


@contract_group.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--root", default=".", type=click.Path(file_okay=False), show_default=True,
              help="The repository the evidence paths are relative to.")
@click.option("--run", "run", is_flag=True, help="Also run the cited pytest ids and test commands (each with a timeout).")
@click.option("--collect/--no-collect", default=True, show_default=True,
              help="Check that pytest ids collect (one pytest subprocess); --no-collect checks them statically only.")
@click.option("--json", "as_json", is_flag=True, help="Print the versioned JSON report instead of the table.")
@click.option("--md", "md_out", metavar="FILE", help="Write the Markdown report to FILE ('-' prints it instead of the table).")
@click.option("--failures-only", is_flag=True, help="List only the claims that fail in the table.")
@click.option("--no-tree-sitter", is_flag=True, help="Use the text rule for Rust/C/C++/Go even when tree-sitter is installed.")
@bundle_option
def check_cmd(paths, root, run, collect, as_json, md_out, failures_only, no_tree_sitter, bundle_dir):
    """Derive the status each claim's evidence supports; fail when a claim states more.

    With --bundle DIR the command line goes to DIR/commands.txt and the JSON, Markdown and text
    reports to DIR/NN-contract.{json,md,txt}.

    Exit status: 0 every claim supported, 1 a claim states more than its evidence proves
    (or a proof obligation cites a symbol that is gone), 2 a contract breaks the schema.
    """
    from ..contracts import check_contracts
    from ..contracts.report import render_check_markdown, render_check_text

    if as_json and md_out == "-":
        raise UsageError("--json and --md - both print to stdout; choose one (or give --md a file name).")
    if not os.path.isdir(root):
        raise UsageError(f"--root {root} is not a directory.")
    with bundle_command(bundle_dir, "contract") as rec:
        report = check_contracts(paths, root=root, run=run, collect=collect, use_tree_sitter=not no_tree_sitter)
        md = render_check_markdown(report) if (md_out or rec) else None
        if as_json:
            click.echo(report.to_json())
        elif md_out == "-":
            click.echo(md, nl=False)
        else:
            render_check_text(report, _console(), show_all=not failures_only)
        if md_out and md_out != "-":
            from ..safefs import atomic_write

            atomic_write(md_out, md.encode("utf-8"))
        if rec is not None:
            plain = Console(file=io.StringIO(), width=200, color_system=None, force_terminal=False, highlight=False)
            render_check_text(report, plain)
            rec.write("json", report.to_json() + "\n")
            rec.write("md", md)
            rec.write("txt", plain.file.getvalue())
        sys.exit(exitcodes.for_result(report.passed))  # 1: a claim is overstated


def _write_out(out: str | None, text: str, force: bool) -> None:
    if out is None or out == "-":
        click.echo(text, nl=False)
        return
    if os.path.lexists(out) and not force:
        raise UsageError(f"{out} already exists; pass --force to replace it.")
    from ..safefs import atomic_write

    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UsageError(f"{out}: the folder {parent} does not exist.")
    atomic_write(out, text.encode("utf-8"))
    click.echo(f"wrote {out}", err=True)


@contract_group.command("convert")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out", metavar="FILE", help="Write the contract here (default: print it).")
@click.option("--root", default=".", type=click.Path(file_okay=False), help="Repository root (to recognise bundle folders).")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
def convert_cmd(path, out, root, force):
    """Write an aprender-style ledger (or one of ours) in our schema.

    Fields the mapping does not understand are reported as warnings with their line numbers and
    kept under `extra:`; nothing is dropped.
    """
    from ..contracts import convert_file, dump_yaml

    contract, warnings = convert_file(path, root=root)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    header = f"Converted by `parity contract convert` from {os.path.basename(path)} ({contract.source_format} format)."
    _write_out(out, dump_yaml(contract.to_dict(), header=header), force)


@contract_group.command("new")
@click.option("--ref", "ref", required=True, type=click.Path(file_okay=False), help="Reference trace.")
@click.option("--cand", "cand", required=True, type=click.Path(file_okay=False), help="Candidate trace.")
@click.option("--config", type=click.Path(dir_okay=False), help="parity diff TOML config to compare with.")
@click.option("--id", "contract_id", help="Contract id (default: REF-vs-CAND).")
@click.option("--root", default=".", type=click.Path(file_okay=False), show_default=True,
              help="The repository root the written paths are relative to.")
@click.option("-o", "--out", "out", metavar="FILE", help="Write the contract here (default: print it).")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
def new_cmd(ref, cand, config, contract_id, root, out, force):
    """Scaffold a contract whose claims are the stages of REF vs CAND at the tolerances that hold now."""
    from ..contracts import dump_yaml, scaffold_contract

    doc = scaffold_contract(ref, cand, root=root, config=config, contract_id=contract_id)
    _write_out(out, dump_yaml(doc, header="Scaffolded by `parity contract new`; check it with `parity contract check`."), force)
