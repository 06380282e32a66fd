"""The ``parity`` command line: one thin subcommand per verb.

Exit codes: 0 parity holds (or the command succeeded), 1 divergence found, 2 usage or input error.
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

__all__ = ["main", "cli", "EXIT_OK", "EXIT_DIVERGENCE", "EXIT_ERROR"]

EXIT_OK, EXIT_DIVERGENCE, EXIT_ERROR = 0, 1, 2


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
        return int(e.code or 0)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
