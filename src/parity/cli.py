"""The ``parity`` command line: one thin subcommand per verb.

Exit codes (the contract with CI, also in docs/format.md and the README):

* **0** parity holds, or the command succeeded;
* **1** a divergence was found (and only then);
* **2** the comparison could not be made: a usage error, or an input that cannot be read (every
  :class:`~parity.errors.ParityError`, and operating-system errors such as a missing permission);
* **3** an internal error: parity itself failed (a bug); a short message asks for a report.
The subcommands live in :mod:`parity.commands`, one module per verb; :data:`COMMANDS` below
lists them, in the order ``parity --help`` shows them. Exit codes are defined once, in
:mod:`parity.exitcodes`.
"""

from __future__ import annotations

import sys

import click

from . import exitcodes
from ._version import __version__
from .commands import (align, bisect, bundle, calibrate, capture, capture_hf, capture_onnx, capture_run, contract,
                       demo, diff, events, importing, localize, report, show)
from .commands.group import OrderedGroup
from .errors import ParityError

__all__ = ["main", "cli", "COMMANDS", "CAPTURE_BACKENDS", "EXIT_OK", "EXIT_DIVERGENCE", "EXIT_ERROR", "EXIT_INTERNAL"]

# kept for callers of parity.cli; the definitions are in parity.exitcodes
EXIT_OK, EXIT_DIVERGENCE, EXIT_ERROR, EXIT_INTERNAL = exitcodes.OK, exitcodes.DIVERGENCE, exitcodes.ERROR, exitcodes.INTERNAL
ISSUES_HINT = "this is a bug in parity; please report it with the command line and the traceback " \
              "(set PARITY_TRACEBACK=1 to print it)."

#: Every verb, in the order ``parity --help`` lists them: try it, capture, store, compare, localize, report, keep.
COMMANDS: list[click.Command] = [
    demo.demo_cmd,
    capture.capture,
    importing.import_cmd,
    importing.export_cmd,
    show.show_cmd,
    diff.diff_cmd,
    align.align_cmd,
    localize.localize_cmd,
    calibrate.calibrate_cmd,
    bisect.bisect_cmd,
    report.report_cmd,
    events.events_group,
    contract.contract_group,
    bundle.bundle_group,
]

#: The ``parity capture`` backends, in ``parity capture --help`` order.
CAPTURE_BACKENDS: list[click.Command] = [capture_run.run_cmd, capture_hf.hf_cmd, capture_onnx.onnx_cmd]


@click.group(cls=OrderedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="parity")
def cli() -> None:
    """Find where two implementations of the same numerical computation stop agreeing.

    \f
    (click's help text ends at the form feed above.) The click group itself, as tests drive it:

    >>> import json
    >>> from click.testing import CliRunner
    >>> r = CliRunner().invoke(cli, ["diff", "ref.trace", "cand.trace", "--json"])
    >>> r.exit_code, json.loads(r.output)["first_divergence"]
    (1, 'layers.0.attn_scores')
    """


# cli is a click.Group, not a function, so doctest would skip its example without this entry.
__test__ = {"cli": cli.callback}

for _backend in CAPTURE_BACKENDS:
    capture.capture.add_command(_backend)
for _command in COMMANDS:
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (``parity`` console script).

    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):  # (the diff table is not shown here)
    ...     status = main(["diff", "ref.trace", "cand.trace", "--config", "parity.toml"])
    >>> status, main(["diff", "ref.trace", "missing.trace"])  # 1: divergence; 2: could not compare
    (1, 2)
    """
    from .bundle import invocation  # --bundle records the arguments exactly as given

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with invocation(args):
            cli.main(args=args, prog_name="parity", standalone_mode=False)
    except click.exceptions.Exit as e:
        return exitcodes.for_exception(e)
    except click.ClickException as e:
        e.show()
        return exitcodes.for_exception(e)
    except click.exceptions.Abort as e:
        click.echo("aborted.", err=True)
        return exitcodes.for_exception(e)
    except ParityError as e:
        click.echo(f"error: {e}", err=True)
        return exitcodes.for_exception(e)
    except SystemExit as e:  # a command's own sys.exit(code)
        if e.code is not None and not isinstance(e.code, int):
            click.echo(f"error: {e.code}", err=True)  # sys.exit("message"): a failure, with its message
        return exitcodes.for_exception(e)
    except OSError as e:  # the environment refused: a missing permission, a full disk, a vanished file
        where = f"{e.filename}: " if e.filename else ""
        click.echo(f"error: {where}{e.strerror or e}", err=True)
        return exitcodes.for_exception(e)
    except Exception as e:  # noqa: BLE001 - anything else is parity's own fault, never "divergence found"
        return _internal_error(e)
    return exitcodes.OK


def _internal_error(e: BaseException) -> int:
    import os
    import traceback

    click.echo(f"internal error: {type(e).__name__}: {e}", err=True)
    if os.environ.get("PARITY_TRACEBACK"):
        traceback.print_exception(e, file=sys.stderr)
    click.echo(ISSUES_HINT, err=True)
    return exitcodes.INTERNAL


if __name__ == "__main__":
    sys.exit(main())
