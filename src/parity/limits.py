"""Limits that keep hostile input from exhausting the stack, the CPU or memory.

Every reader, importer and config loader checks a declared size or depth against these numbers
*before* it allocates or recurses, and raises a ``ParityError`` naming the file when a limit is
passed. The numbers are far above anything a real trace needs:

* :data:`MAX_NESTING` — the deepest nesting of brackets, arrays or JSON objects read anywhere.
* :data:`MAX_INT_DIGITS` — the longest integer literal accepted (indices, shapes, offsets).
* :func:`max_stage_bytes` — the largest single value (one stage, one npz member, one tensor)
  parity will allocate, 16 GiB by default; set ``PARITY_MAX_STAGE_BYTES`` (bytes) to change it.
* :data:`MAX_DEFLATE_RATIO` — deflate cannot expand data by more than about 1032:1, so a member
  declaring more than that many bytes per compressed byte is corrupt.

>>> check_size(1024, "member x")
1024
>>> check_size(-1, "member x")
Traceback (most recent call last):
...
parity.errors.ImportFormatError: member x declares -1 bytes; expected a size from 0 to ...
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import ImportFormatError, ParityError, UsageError

__all__ = ["MAX_NESTING", "MAX_INT_DIGITS", "MAX_DEFLATE_RATIO", "max_stage_bytes", "check_size", "gc_paused"]

MAX_NESTING = 64
MAX_INT_DIGITS = 20  # 2**64 has 20 digits
MAX_DEFLATE_RATIO = 1100
_DEFAULT_MAX_STAGE_BYTES = 16 * 2**30


def max_stage_bytes() -> int:
    """The largest value parity allocates for one stage (``PARITY_MAX_STAGE_BYTES``, default 16 GiB).

    >>> max_stage_bytes() == 16 * 2**30  # PARITY_MAX_STAGE_BYTES is not set
    True
    """
    raw = os.environ.get("PARITY_MAX_STAGE_BYTES")
    if raw is None or raw == "":
        return _DEFAULT_MAX_STAGE_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value <= 0:
        raise UsageError(f"PARITY_MAX_STAGE_BYTES={raw!r} is not a positive number of bytes.")
    return value


def check_size(nbytes: object, what: str, *, path: str | os.PathLike[str] | None = None,
               stage: str | None = None, available: int | None = None,
               error: type[ParityError] = ImportFormatError) -> int:
    """Return ``nbytes`` when it is a sane size for ``what``; else raise ``error``.

    ``available`` (e.g. the bytes left in the file) is an upper bound when given.

    >>> check_size(4096, "stage x", path="a.bin")
    4096
    >>> check_size(4096, "stage x", path="a.bin", available=100)
    Traceback (most recent call last):
    ...
    parity.errors.ImportFormatError: a.bin: stage x declares 4096 bytes but only 100 are there; the file is truncated or corrupt.
    """
    limit = max_stage_bytes()
    if type(nbytes) is not int or nbytes < 0 or nbytes > limit:
        raise error(f"{what} declares {nbytes!r} bytes; expected a size from 0 to {limit} "
                    "(PARITY_MAX_STAGE_BYTES).", path=path, stage=stage)
    if available is not None and nbytes > available:
        raise error(f"{what} declares {nbytes} bytes but only {available} are there; the file is "
                    "truncated or corrupt.", path=path, stage=stage)
    return nbytes


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects that form no cycles,
    restoring its previous state after: a million stages' results (or a 100,000-record event log)
    are a million young objects, and each full collection would walk them all (40 % of a
    million-stage comparison; ~20 % of parsing a large log).

    >>> import gc
    >>> with gc_paused():
    ...     gc.isenabled()
    False
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
