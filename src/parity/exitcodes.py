"""The exit codes of the ``parity`` command line: the one place they are defined.

The contract with CI (also in the README and docs/format.md):

* :data:`OK` (0): parity holds, or the command succeeded;
* :data:`DIVERGENCE` (1): a divergence was found (an overstated contract, a bundle that no longer
  verifies, "nothing compared"), and only then;
* :data:`ERROR` (2): the comparison could not be made: a usage error, or an input that cannot be
  read (every :class:`~parity.errors.ParityError`, and operating-system errors such as a missing
  permission);
* :data:`INTERNAL` (3): parity itself failed (a bug);
* :data:`INTERRUPTED` (130): the user pressed Ctrl-C.

>>> from parity import exitcodes
>>> exitcodes.for_result(True), exitcodes.for_result(False)
(0, 1)
>>> exitcodes.for_exception(parity.UsageError("no such stage")), exitcodes.for_exception(ZeroDivisionError())
(2, 3)
>>> exitcodes.for_exception(SystemExit("cannot read a.trace"))  # sys.exit("message") is a failure
2
"""

from __future__ import annotations

from .errors import ParityError

__all__ = ["OK", "DIVERGENCE", "ERROR", "INTERNAL", "INTERRUPTED", "for_result", "for_exception"]

OK, DIVERGENCE, ERROR, INTERNAL, INTERRUPTED = 0, 1, 2, 3, 130


def for_result(passed: bool) -> int:
    """:data:`OK` when a comparison (or check) passed, else :data:`DIVERGENCE`.

    >>> for_result(parity.compare_traces("ref.trace", "cand.trace").passed)  # the demo pair diverges
    1
    """
    return OK if passed else DIVERGENCE


def for_exception(e: BaseException) -> int:
    """The exit status ``parity`` gives when a command ends with ``e``.

    :data:`ERROR` for a :class:`~parity.errors.ParityError`, a click usage error, an abort, an
    ``OSError`` or ``sys.exit("message")``; the code itself for ``sys.exit(n)``;
    :data:`INTERRUPTED` for Ctrl-C; :data:`INTERNAL` for anything else (parity's own fault,
    never :data:`DIVERGENCE`).

    >>> for_exception(parity.TraceFormatError("not a trace.", path="x")), for_exception(KeyboardInterrupt())
    (2, 130)
    >>> for_exception(SystemExit(0)), for_exception(FileNotFoundError()), for_exception(KeyError("bug"))
    (0, 2, 3)
    """
    import click

    if isinstance(e, SystemExit):
        code = e.code
        return OK if code is None else code if isinstance(code, int) else ERROR
    if isinstance(e, click.exceptions.Exit):
        return int(e.exit_code)
    if isinstance(e, (click.ClickException, click.exceptions.Abort, ParityError, OSError)):
        return ERROR
    if isinstance(e, KeyboardInterrupt):
        return INTERRUPTED
    return INTERNAL
