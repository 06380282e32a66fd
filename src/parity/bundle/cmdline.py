"""The running ``parity`` command line, as a bundle records it (option values named like secrets redacted)."""

from __future__ import annotations

import contextvars
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ..redact import redact_args

__all__ = ["invocation", "redact_command_line", "command_line", "command_argv"]

_ARGV: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("parity_argv", default=None)


@contextmanager
def invocation(argv: Sequence[str]) -> Iterator[None]:
    """Declare the arguments of the running ``parity`` command (set by :func:`parity.cli.main`).

    Example:
        >>> with invocation(["diff", "ref.trace", "cand.trace"]):
        ...     command_line()
        'parity diff ref.trace cand.trace'
    """
    token = _ARGV.set(tuple(argv))
    try:
        yield
    finally:
        _ARGV.reset(token)


def redact_command_line(args: Sequence[str]) -> list[str]:
    """Replace the values of options named like secrets (``--token X``, ``--api-key=X``,
    ``--password X``...) by ``<redacted>``; every other argument is kept exactly.

    The rule is :func:`parity.redact.redact_args`, shared with trace metadata and terminal output.

    Example:
        >>> redact_command_line(["capture-hf", "gpt2", "--token", "hf_abc", "--api-key=xyz"])
        ['capture-hf', 'gpt2', '--token', '<redacted>', '--api-key=<redacted>']
    """
    return redact_args(args)


def command_line() -> str:
    """The running command as one shell-quoted line: ``parity`` plus its arguments exactly as given
    (from :func:`invocation`, else ``sys.argv[1:]``), option values named like secrets redacted.

    Example:
        >>> with invocation(["show", "my trace", "--password", "hunter2"]):
        ...     command_line()
        "parity show 'my trace' --password '<redacted>'"
    """
    args = _ARGV.get()
    if args is None:
        args = tuple(sys.argv[1:])
    return shlex.join(["parity", *redact_command_line(args)])


def command_argv() -> list[str]:
    """:func:`command_line` as a list of arguments (what a capture records as its ``command``).

    Example:
        >>> with invocation(["show", "my trace"]):
        ...     command_argv()
        ['parity', 'show', 'my trace']
    """
    return shlex.split(command_line())

