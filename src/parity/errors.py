"""Exceptions raised by parity.

A numeric mismatch is a *result* (see :class:`parity.TraceDiff`), never an exception.
Exceptions mean that a comparison or a capture could not be made at all::

    ParityError                      base class; every error parity raises on purpose
    ├── UsageError                   bad arguments or options given by the caller
    │   └── ConfigError              a config file or option value is wrong (e.g. a glob matching no stage)
    ├── TraceError                   a trace cannot be written or read
    │   ├── TraceFormatError         a file is corrupt, truncated, foreign or of an unknown version
    │   ├── StageKeyError            a stage key is unsafe or malformed
    │   └── StageNotFoundError       a requested stage is not in the trace (also a KeyError)
    ├── ImportFormatError            a foreign file (log, dump, npy) cannot be understood
    └── CaptureError                 a requested stage could not be captured

Every error carries the context it names as attributes (``path``, ``stage``) so that callers
can act on them, and its message is a full sentence that states the rule that was broken.
"""

from __future__ import annotations

import os

__all__ = [
    "ParityError",
    "UsageError",
    "ConfigError",
    "TraceError",
    "TraceFormatError",
    "StageKeyError",
    "StageNotFoundError",
    "ImportFormatError",
    "CaptureError",
]


class ParityError(Exception):
    """Base class of every error parity raises on purpose.

    Attributes:
        path: the file or directory concerned, if any.
        stage: the stage key concerned, if any.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None, stage: str | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.stage = stage
        self.message = message
        prefix = ""
        if self.path is not None:
            prefix += f"{self.path}: "
        if stage is not None:
            prefix += f'stage "{stage}": '
        super().__init__(prefix + message)


class UsageError(ParityError):
    """The caller passed arguments or options that cannot be used."""


class ConfigError(UsageError):
    """A configuration file or option value is wrong."""


class TraceError(ParityError):
    """A trace could not be written or read."""


class TraceFormatError(TraceError):
    """A trace file is corrupt, truncated, foreign, or of an unsupported version."""


class StageKeyError(TraceError, ValueError):
    """A stage key is unsafe (could escape the trace directory) or malformed."""


class StageNotFoundError(TraceError, KeyError):
    """A stage key is not present in a trace."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return Exception.__str__(self)


class ImportFormatError(ParityError):
    """A foreign file (trace-line log, binary dump, npy/npz) could not be understood."""


class CaptureError(ParityError):
    """A requested stage could not be captured from the running implementation."""
