"""``parity bisect``: the first revision at which parity broke, in O(log n) captures."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.text import Text

from ..bundle import bundle_command, bundle_option
from ..localize.bisect import BisectStep, bisect
from .compare_flags import compare_flags

_STYLE = {"good": "green", "bad": "bold red", "skip": "yellow"}


@click.command("bisect", context_settings={"ignore_unknown_options": True})
@click.argument("good")
@click.argument("bad")
@click.option("--reference", required=True, type=click.Path(file_okay=False), help="The reference trace.")
@click.option("--stage", help="Only stages matching this glob decide good or bad (default: the whole diff).")
@click.option("--repo", default=".", show_default=True, type=click.Path(file_okay=False, exists=True),
              help="A directory inside the git repository.")
@compare_flags("config", "rtol", "atol")
@click.option("--timeout", type=float, help="Seconds per capture; a capture that runs longer counts as skip.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@bundle_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def bisect_cmd(good, bad, reference, stage, repo, compare, timeout, as_json, bundle_dir, command):
    """Find the first revision between GOOD and BAD whose capture diverges from the reference.

    Each tested revision is checked out in a temporary git worktree (your checkout is never
    touched) and COMMAND runs there, {out} standing for the trace path to write. A capture that
    fails is "skip", as in git bisect.

    \b
    parity bisect v1.0 HEAD --reference golden.trace -- python capture.py --out {out}
    parity bisect v1.0 HEAD --reference golden.trace --stage "layers.3.*" -- make trace OUT={out}

    Exit status: 1 the first bad revision was found (a divergence), 0 never (GOOD and BAD are
    trusted), 2 usage error or every candidate skipped.
    """
    console = Console(highlight=False, soft_wrap=False, stderr=as_json)

    def show(step: BisectStep) -> None:
        console.print(Text.assemble((f"{step.verdict:>4}", _STYLE[step.verdict]), f"  {step.revision[:12]}  ",
                                    (step.subject[:60], "bold"), f"  {step.reason}"))

    with bundle_command(bundle_dir, "bisect") as rec:
        result = bisect(repo, good, bad, reference, list(command), stage=stage, timeout=timeout, on_step=show,
                        **compare)
        doc = result.to_dict()
        if as_json:
            click.echo(json.dumps(doc, indent=2))
        if result.first_bad is not None:
            console.print(Text.assemble("first bad revision: ", (result.first_bad, "bold red"), f"  {result.first_bad_subject}"))
            if result.first_divergence:
                console.print(f"  first divergent stage there: {result.first_divergence}", markup=False)
        else:
            console.print(f"skipped revisions hide the first bad one; it is one of: {', '.join(c[:12] for c in result.candidates)}",
                          markup=False)
        console.print(f"{result.captures} capture(s) for {result.revisions} revision(s) "
                      f"(at most {result.bound} without skips)", markup=False)
        if rec is not None:
            rec.write("json", json.dumps(doc, indent=2) + "\n")
    sys.exit(1 if result.first_bad is not None else 2)
