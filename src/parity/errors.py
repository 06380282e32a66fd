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

    The message is prefixed with the path and the stage; the bare text stays in ``message``:

    >>> e = ParityError("expected 4 bytes, found 2.", path="a.trace", stage="layers.0.q_proj")
    >>> str(e)
    'a.trace: stage "layers.0.q_proj": expected 4 bytes, found 2.'
    >>> e.path, e.stage, e.message
    ('a.trace', 'layers.0.q_proj', 'expected 4 bytes, found 2.')
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
    """The caller passed arguments or options that cannot be used.

    >>> try:
    ...     parity.compare_traces("ref.trace", "cand.trace", include=["x"])
    ... except parity.UsageError as e:
    ...     print(e)
    unknown comparison option 'include'; the options are: rtol, atol, ...
    """


class ConfigError(UsageError):
    """A configuration file or option value is wrong (a :class:`UsageError` too).

    >>> parity.compare_traces("ref.trace", "cand.trace", rtol=-1)
    Traceback (most recent call last):
    ...
    parity.errors.ConfigError: [tolerance]: rtol must be a finite non-negative number, not -1.
    """


class TraceError(ParityError):
    """A trace could not be written or read; catch it to handle every trace problem at once.

    >>> try:
    ...     parity.load_trace("missing.trace")
    ... except parity.TraceError as e:
    ...     print(type(e).__name__, "-", e)
    TraceFormatError - missing.trace: no such trace directory.
    """


class TraceFormatError(TraceError):
    """A trace file is corrupt, truncated, foreign, or of an unsupported version.

    >>> import os
    >>> os.mkdir("empty.trace")
    >>> parity.load_trace("empty.trace")
    Traceback (most recent call last):
    ...
    parity.errors.TraceFormatError: empty.trace: has no manifest.json; it is not a parity trace.
    """


class StageKeyError(TraceError, ValueError):
    """A stage key is unsafe (could escape the trace directory) or malformed (also a ``ValueError``).

    >>> with parity.TraceWriter("new.trace") as w:
    ...     w.add("../x", np.zeros(2))
    Traceback (most recent call last):
    ...
    parity.errors.StageKeyError: stage "../x": a stage key is dot-separated segments ...
    """


class StageNotFoundError(TraceError, KeyError):
    """A stage key is not present in a trace (also a ``KeyError``, so ``except KeyError`` works).

    >>> try:
    ...     parity.load_trace("ref.trace").stage("layers.9.q_proj")
    ... except KeyError as e:
    ...     print(e.stage, "|", e)
    layers.9.q_proj | ref.trace: stage "layers.9.q_proj": no such stage; the trace has 31 stages.
    """

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return Exception.__str__(self)


class ImportFormatError(ParityError):
    """A foreign file (trace-line log, binary dump, npy/npz) could not be understood.

    >>> from parity.events import read_jsonl
    >>> read_jsonl("missing.jsonl")
    Traceback (most recent call last):
    ...
    parity.errors.ImportFormatError: missing.jsonl: no such file.
    """


class CaptureError(ParityError):
    """A requested stage could not be captured from the running implementation.

    >>> e = parity.CaptureError("requested, but the model did not produce it.", stage="layers.0.attn_probs")
    >>> print(e)
    stage "layers.0.attn_probs": requested, but the model did not produce it.
    """
