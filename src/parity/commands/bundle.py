"""``parity bundle new|close|verify``: evidence bundles (see :mod:`parity.bundle`)."""

from __future__ import annotations

import os
import sys

import click

from .. import exitcodes
from ..bundle import close_bundle, command_line, new_bundle, verify_bundle



@click.group("bundle")
def bundle_group() -> None:
    """Evidence bundles: one folder with the commands, outputs, machine facts and checksums of a run.

    \b
    parity bundle new NAME            create reports/NAME/<UTC stamp>/ and print its path
    parity diff A B --bundle DIR      any command given --bundle records itself and its outputs there
    parity bundle close DIR           write summary.md and sha256.txt (seals the bundle)
    parity bundle verify DIR          check every file against sha256.txt
    """


@bundle_group.command("new")
@click.argument("name")
@click.option("--root", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Directory that holds reports/.")
@click.option("--device", help="The device the runs use, recorded in env.json (e.g. cuda:0).")
@click.option("--dtype", help="The dtype the runs use, recorded in env.json (e.g. bf16).")
def new_cmd(name, root, device, dtype):
    """Create a new bundle reports/NAME/<UTC stamp>/ and print its path.

    The folder is never reused: bundles created in the same second get -2, -3... suffixes.
    env.json records allowlisted facts only (versions, devices, platform, CPU, git commit),
    never environment variables at large.
    """
    bundle = new_bundle(name, root, device=device, dtype=dtype, command=command_line())
    click.echo(os.path.relpath(bundle.path) if not os.path.isabs(root) else bundle.path)


@bundle_group.command("close")
@click.argument("directory", type=click.Path(file_okay=False))
def close_cmd(directory):
    """Write summary.md and sha256.txt into the bundle DIRECTORY; it takes no more commands."""
    check = close_bundle(directory)
    click.echo(f"closed {directory}: {check.checked + 1} files, checksums in sha256.txt, summary in summary.md.")


@bundle_group.command("verify")
@click.argument("directory", type=click.Path(file_okay=False))
def verify_cmd(directory):
    """Check every file of the bundle DIRECTORY against its sha256.txt.

    Exit status: 0 every file matches, 1 a file was changed, removed or added, 2 not a closed bundle.
    """
    check = verify_bundle(directory)
    if check.ok:
        click.echo(f"ok: all {check.checked} files listed in {directory}/sha256.txt match, and no file was added.")
        sys.exit(exitcodes.OK)
    for line in check.problems():
        click.echo(line)
    click.echo(f"FAILED: {directory} does not match its sha256.txt ({len(check.changed)} changed, "
               f"{len(check.missing)} missing, {len(check.added)} added, {len(check.malformed)} malformed).")
    sys.exit(exitcodes.DIVERGENCE)  # the evidence no longer matches
