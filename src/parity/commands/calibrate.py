"""``parity calibrate``: per-stage noise floors from pairs of high- and low-precision captures."""

from __future__ import annotations

import os
import sys

import click
from rich.console import Console

from ..bundle import bundle_command, bundle_option
from ..compare.floor import DEFAULT_MARGIN
from ..errors import UsageError
from ..localize.calibrate import calibrate
from ..report.text import format_float
from ..safefs import atomic_write
from .compare_flags import compare_flags


@click.command("calibrate")
@click.argument("traces", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="The noise-floor TOML file to write.")
@click.option("--margin", type=click.FloatRange(min=1.0), default=DEFAULT_MARGIN, show_default=True,
              help="A stage passes when its error is within this many times its floor.")
@compare_flags("config")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@bundle_option
def calibrate_cmd(traces, out, margin, compare, force, bundle_dir):
    """Measure what error rounding alone produces, from pairs HI LO [HI2 LO2 ...].

    Each pair captures the same computation on the same inputs at a higher precision (HI, e.g.
    float64) and at the candidate's precision (LO, e.g. bfloat16). The largest error per stage is
    its floor; `parity diff --tolerances OUT` then passes a stage whose relative RMS error is
    within --margin times its floor, and reports how many times the floor each error is.

    \b
    parity capture hf MODEL --dtype float64 --prompt "hi" --out hi.trace
    parity capture hf MODEL --dtype bfloat16 --prompt "hi" --out lo.trace
    parity calibrate hi.trace lo.trace --out tolerances.toml
    parity diff ref.trace cand.trace --tolerances tolerances.toml
    """
    if len(traces) % 2:
        raise UsageError(f"parity calibrate takes pairs HI LO; got {len(traces)} traces (the last has no partner).")
    if os.path.lexists(out) and not force:
        raise UsageError(f"{out}: exists; give --force to replace it.")
    pairs = list(zip(traces[0::2], traces[1::2]))
    with bundle_command(bundle_dir, "calibrate") as rec:
        floor = calibrate(pairs, margin=margin, **compare)
        header = (f"# parity calibrate: noise floors of {len(floor.stages)} stage(s) from {len(pairs)} pair(s): "
                  + ", ".join(f"{hi} / {lo}" for hi, lo in pairs))
        text = floor.to_toml(header)
        atomic_write(out, text.encode("utf-8"))
        console = Console(highlight=False, soft_wrap=False)
        worst = sorted(floor.stages.items(), key=lambda kv: -(kv[1].rel_rms or 0.0))[:5]
        console.print(f"wrote {out}: {len(floor.stages)} stage floors from {len(pairs)} pair(s), margin {margin:g}×", markup=False)
        for key, f in worst:
            console.print(f"  {key}: relative RMS error {format_float(f.rel_rms)}, max abs {format_float(f.max_abs)}",
                          markup=False)
        console.print(f"use it with: parity diff REF CAND --tolerances {out}", markup=False)
        if rec is not None:
            rec.write("toml", text)
    sys.exit(0)
