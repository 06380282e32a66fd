"""``parity align``: propose counterparts for stages present on one side only."""

from __future__ import annotations

import json
import os
import sys

import click
from rich.console import Console
from rich.text import Text

from ..bundle import bundle_command, bundle_option
from ..compare.config import load_config
from ..compare.suggest import aliases_toml, suggest_alignment, unmatched_keys
from ..errors import UsageError
from ..safefs import atomic_write
from ..trace.reader import load_trace


@click.command("align")
@click.argument("ref", type=click.Path(file_okay=False))
@click.argument("cand", type=click.Path(file_okay=False))
@click.option("--config", "config", type=click.Path(dir_okay=False),
              help="TOML config whose renames and aliases are applied first.")
@click.option("--write", "write_to", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the suggestions at or above --accept as an [aliases] (and [transforms]) config.")
@click.option("--accept", type=click.FloatRange(0, 1), default=0.6, show_default=True,
              help="Lowest confidence written by --write.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.4, show_default=True,
              help="Lowest confidence listed.")
@click.option("--names-only", is_flag=True, help="Match by name only (do not read the values).")
@click.option("--force", is_flag=True, help="Let --write replace an existing file.")
@click.option("--json", "as_json", is_flag=True, help="Print the suggestions as JSON.")
@bundle_option
def align_cmd(ref, cand, config, write_to, accept, min_confidence, names_only, force, as_json, bundle_dir):
    """Suggest which stage of CAND is which stage of REF, for stages present on one side only.

    Each suggestion has a confidence and its evidence: names equal after normalizing case,
    separators and unit suffixes (pix0_vector / pix0_vector_meters), similar names, the same
    values, the same values times a constant (a unit change), transposed or reshaped.

    \b
    parity align ref.trace cand.trace
    parity align ref.trace cand.trace --write aliases.toml
    parity diff ref.trace cand.trace --config aliases.toml

    Exit status: 0 (suggestions listed, or none needed), 2 usage or input error.
    """
    if write_to and os.path.lexists(write_to) and not force:
        raise UsageError(f"{write_to}: exists; give --force to replace it, or another file name.")
    with bundle_command(bundle_dir, "align") as rec:
        rt, ct = load_trace(ref), load_trace(cand)
        cfg = load_config(config) if config else None
        ref_left, cand_left = unmatched_keys(rt, ct, cfg)
        suggestions = suggest_alignment(rt, ct, cfg, content=not names_only, min_confidence=min_confidence)
        accepted = [s for s in suggestions if s.confidence >= accept]
        doc = {"ref": {"path": rt.path, "unmatched": len(ref_left)}, "cand": {"path": ct.path, "unmatched": len(cand_left)},
               "suggestions": [s.to_dict() for s in suggestions], "written": write_to, "accepted": len(accepted)}
        if write_to:
            header = (f"# parity align {rt.path} {ct.path}: {len(accepted)} pair(s) with confidence >= {accept}.\n"
                      "# Review, then merge into the project config or pass it with --config.")
            atomic_write(write_to, aliases_toml(accepted, header=header).encode("utf-8"))
        if as_json:
            click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        else:
            _print(Console(highlight=False, soft_wrap=False), doc, suggestions, accept, write_to)
        if rec is not None:
            rec.write("json", json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
            if write_to:
                with open(write_to, encoding="utf-8") as f:
                    rec.write("toml", f.read())
    sys.exit(0)


def _print(console: Console, doc: dict, suggestions: list, accept: float, write_to: str | None) -> None:
    n_ref, n_cand = doc["ref"]["unmatched"], doc["cand"]["unmatched"]
    console.print(f"{n_ref} stage(s) only in the reference, {n_cand} only in the candidate.", markup=False)
    if not suggestions:
        console.print("No counterpart found." if n_ref and n_cand else "Nothing to align.", markup=False)
        return
    for s in suggestions:  # one pair per line, its evidence under it: readable at any width
        style = "bold" if s.confidence >= accept else "dim"
        console.print(Text.assemble((f"{s.ref_key} ↔ {s.cand_key}", style), f"  {s.confidence:.2f}  {'+'.join(s.by)}"))
        console.print(Text("    " + s.evidence, style="dim" if s.confidence < accept else ""))
    n = sum(s.confidence >= accept for s in suggestions)
    if write_to:
        console.print(f"wrote {n} pair(s) to {write_to}; use it with: parity diff REF CAND --config {write_to}",
                      markup=False)
    else:
        console.print(f"{n} pair(s) at confidence >= {accept}; --write FILE saves them as [aliases].", markup=False)
