"""What every exporter shares: the trace to export, its checked output path, the stages chosen.

An exporter never overwrites anything and never writes through a symbolic link: a file is
written only where nothing exists, a dump directory only where nothing or an empty directory is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from ..errors import UsageError
from ..safefs import refuse_symlink
from ..trace.reader import Stage, Trace, load_trace

__all__ = ["export_target", "tensor_stages"]


def export_target(trace: str | os.PathLike[str] | Trace, out: str | os.PathLike[str], *, folder: bool,
                  contents: str = "") -> tuple[Trace, str]:
    """The trace to export (loaded when given as a path) and ``out`` as a string, checked.

    Args:
        trace: the trace, or its path.
        out: the file (``folder=False``) or the directory (``folder=True``) to write.
        folder: whether ``out`` is a directory, which may exist if it is empty.
        contents: what goes into the directory, for the message (``"an APRT dump"``).

    Raises:
        UsageError: ``out`` is a symbolic link, or exists (a directory: is not empty).

    Example:
        >>> t, out = export_target("ref.trace", "ref.npz", folder=False)
        >>> len(t), out
        (31, 'ref.npz')
        >>> export_target("ref.trace", "ref.trace", folder=True)
        Traceback (most recent call last):
        parity.errors.UsageError: ref.trace: exists and is not an empty directory; refusing to write into it.
    """
    t = trace if isinstance(trace, Trace) else load_trace(trace)
    out = os.fspath(out)
    if folder:
        refuse_symlink(out, error=UsageError, what="output directory")
        if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
            raise UsageError(f"exists and is not an empty directory; refusing to write {contents + ' ' if contents else ''}"
                             "into it.", path=out)
    else:
        refuse_symlink(out, error=UsageError, what="output file")
        if os.path.exists(out):
            raise UsageError("already exists; refusing to overwrite it.", path=out)
    return t, out


def tensor_stages(t: Trace, stages: Iterable[str] | None, notes: list[str], *, text_note: str = "") -> Iterator[Stage]:
    """The tensor stages of ``t`` named in ``stages`` (default: all), in order, noting in ``notes``
    each text stage skipped (``text_note`` says why, after "is text").

    Example:
        >>> with parity.TraceWriter("mixed.trace") as w:
        ...     _ = w.add("x", np.arange(3.0)), w.add("status", "converged")
        >>> notes = []
        >>> [s.key for s in tensor_stages(parity.load_trace("mixed.trace"), None, notes)], notes
        (['x'], ['stage "status" is text, skipped.'])
    """
    wanted = set(stages) if stages is not None else None
    for s in t:
        if wanted is not None and s.key not in wanted:
            continue
        if s.kind != "tensor":
            notes.append(f'stage "{s.key}" is text{text_note}, skipped.')
            continue
        yield s
