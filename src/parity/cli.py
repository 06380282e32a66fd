"""The ``parity`` command line: one thin subcommand per verb.

Exit codes (the contract with CI, also in docs/format.md and the README):

* **0** parity holds, or the command succeeded;
* **1** a divergence was found (and only then);
* **2** the comparison could not be made: a usage error, or an input that cannot be read (every
  :class:`~parity.errors.ParityError`, and operating-system errors such as a missing permission);
* **3** an internal error: parity itself failed (a bug); a short message asks for a report.
Subcommands live in :mod:`parity.commands`; every module there with a ``register(group)``
function is added automatically.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click

from ._version import __version__
from .errors import ParityError

__all__ = ["main", "cli", "EXIT_OK", "EXIT_DIVERGENCE", "EXIT_ERROR", "EXIT_INTERNAL"]

EXIT_OK, EXIT_DIVERGENCE, EXIT_ERROR, EXIT_INTERNAL = 0, 1, 2, 3
ISSUES_HINT = "this is a bug in parity; please report it with the command line and the traceback " \
              "(set PARITY_TRACEBACK=1 to print it)."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="parity")
def cli() -> None:
    """Find where two implementations of the same numerical computation stop agreeing."""


def _register_commands() -> None:
    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(cli)


_register_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (``parity`` console script)."""
    from .bundle import invocation  # --bundle records the arguments exactly as given

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with invocation(args):
            cli.main(args=args, prog_name="parity", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.ClickException as e:
        e.show()
        return EXIT_ERROR
    except click.exceptions.Abort:
        click.echo("aborted.", err=True)
        return EXIT_ERROR
    except ParityError as e:
        click.echo(f"error: {e}", err=True)
        return EXIT_ERROR
    except SystemExit as e:  # a command's own sys.exit(code)
        if e.code is None or isinstance(e.code, int):
            return int(e.code or 0)
        click.echo(f"error: {e.code}", err=True)  # sys.exit("message"): a failure, with its message
        return EXIT_ERROR
    except OSError as e:  # the environment refused: a missing permission, a full disk, a vanished file
        where = f"{e.filename}: " if e.filename else ""
        click.echo(f"error: {where}{e.strerror or e}", err=True)
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - anything else is parity's own fault, never "divergence found"
        return _internal_error(e)
    return EXIT_OK


def _internal_error(e: BaseException) -> int:
    import os
    import traceback

    click.echo(f"internal error: {type(e).__name__}: {e}", err=True)
    if os.environ.get("PARITY_TRACEBACK"):
        traceback.print_exception(e, file=sys.stderr)
    click.echo(ISSUES_HINT, err=True)
    return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
