"""Reading a text log in chunks, for :func:`parity.importers.lines.import_log`.

One reader, :func:`read_blocks`, serves both chunk scanners: it reads the log (plain or gzip)
``chunk_size`` bytes at a time and hands on blocks of whole lines without splitting them. The C
scanner (:mod:`parity.importers._scan`) splits a block itself (no million small ``bytes``
objects); the Python one takes :func:`block_lines`. :func:`pump` drives a parser over the blocks
and hands each block's stages to a :class:`~parity.trace.writer.TraceWriter` in one call, so the
importer never holds more than one block of the log.
"""

from __future__ import annotations

import gc
import gzip
import os
import zlib
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from ..errors import ImportFormatError
from ..limits import max_stage_bytes
from ..trace.writer import TraceWriter

if TYPE_CHECKING:
    from .lines import LineParser

__all__ = ["Block", "open_log", "sniff_text", "read_blocks", "block_lines", "visible_line", "pump"]

#: ``(head, block, start, stop)``: the line ``head``, then the lines of ``block[start:stop]``
#: split at newlines (none when ``start > stop``), carriage returns still in.
Block = tuple[bytes, bytes, int, int]


def open_log(path: str) -> IO[bytes]:
    """Open a log for reading bytes, decompressing it if it is gzip (by its magic, not its name).

    Example:
        >>> import gzip
        >>> with gzip.open("run.txt", "wb") as f: _ = f.write(b"TRACE_C: e=1\\n")
        >>> with open_log("run.txt") as f: f.read()
        b'TRACE_C: e=1\\n'
    """
    f = open(path, "rb")
    if f.read(2) == b"\x1f\x8b":
        f.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    f.seek(0)
    return f


def sniff_text(path: str, probe: int = 64 * 1024) -> str | None:
    """``None`` if ``path`` looks like a text log, else why not.

    Example:
        >>> _ = open("run.log", "w").write("TRACE_C: e=1.5\\n")
        >>> sniff_text("run.log") is None, sniff_text("ref.trace/manifest.json") is None
        (True, True)
        >>> _ = open("blob.bin", "wb").write(b"\\x00\\x01")
        >>> sniff_text("blob.bin")
        'holds NUL bytes, so it is not a text log'
    """
    try:
        with open_log(path) as f:
            head = f.read(probe)
    except (zlib.error, EOFError, gzip.BadGzipFile) as e:
        return f"is a corrupt or truncated gzip file ({e})"
    except OSError as e:
        return f"cannot be read ({e})"
    if b"\x00" in head:
        return "holds NUL bytes, so it is not a text log"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # a multi-byte character cut by the probe is fine
            return "is not UTF-8 text"
    return None


class _LineTooLong(ImportFormatError):
    """A line grew past :func:`_max_line_bytes` before its newline (:func:`pump` names the file and line)."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"a line is longer than {limit} bytes ({size} read before its newline).")
        self.size, self.limit = size, limit


def _max_line_bytes() -> int:
    """The longest line read: 4 × ``PARITY_MAX_STAGE_BYTES`` (a printed number takes at least 2
    bytes, "1 ", for the 8 of its double, so no line of a stage within that limit is longer)."""
    return 4 * max_stage_bytes()


class _Tail:
    """The start of a line that continues into the next block: kept as parts and joined once, so
    a line of any length costs time in proportion to it (not to its square)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.limit = _max_line_bytes()

    def add(self, part: bytes) -> None:
        if part:
            self.size += len(part)
            if self.size > self.limit:
                raise _LineTooLong(self.size, self.limit)
            self.parts.append(part)

    def take(self, end: bytes = b"") -> bytes:
        """The line so far followed by ``end``; empties the tail."""
        if not self.parts:
            return end
        if self.size + len(end) > self.limit:
            raise _LineTooLong(self.size + len(end), self.limit)
        self.parts.append(end)
        line = b"".join(self.parts)
        self.parts, self.size = [], 0
        return line


def read_blocks(stream: IO[bytes], chunk_size: int) -> Iterator[Block]:
    """The lines of ``stream`` (without their newlines), read ``chunk_size`` bytes at a time, as
    :data:`Block` tuples; a line that spans reads is joined into the ``head`` of the next block.

    Raises:
        ImportFormatError: a line is longer than 4 × ``PARITY_MAX_STAGE_BYTES`` (:func:`pump`
            catches it to name the file and the line).

    Example:
        >>> import io
        >>> [block_lines(*b) for b in read_blocks(io.BytesIO(b"a\\nbb\\nccc"), 4)]
        [[b'a'], [b'bb'], [b'ccc']]
    """
    tail = _Tail()
    while True:
        block = stream.read(chunk_size)
        if not block:
            break
        first = block.find(b"\n")
        if first < 0:
            tail.add(block)
            continue
        last = block.rfind(b"\n")
        yield tail.take(block[:first]), block, first + 1, last
        tail.add(block[last + 1:])
    last_line = tail.take()
    if last_line:
        yield last_line, b"", 1, 0


def block_lines(head: bytes, block: bytes, start: int, stop: int) -> list[bytes]:
    """The lines of a :data:`Block`, each as a terminal shows it (:func:`visible_line`).

    Example:
        >>> block_lines(b"x=1", b"..\\n50%\\ry=2\\nz", 3, 10)
        [b'x=1', b'y=2']
    """
    lines = [head]
    if start <= stop:
        lines += block[start:stop].split(b"\n")
    if b"\r" in head or block.find(b"\r", start, stop) >= 0:
        lines = [visible_line(x) for x in lines]
    return lines


def visible_line(line: bytes) -> bytes:
    """What a terminal shows of ``line``: the text after its last carriage return (progress bars
    redraw themselves with ``\\r``); trailing carriage returns (``\\r\\n`` line ends) are dropped.

    Example:
        >>> visible_line(b"10%\\r50%\\rTRACE_C: e=1.5\\r")
        b'TRACE_C: e=1.5'
    """
    if b"\r" not in line:
        return line
    line = line.rstrip(b"\r")
    return line.rsplit(b"\r", 1)[-1]


def pump(parser: LineParser, stream: IO[bytes], writer: TraceWriter, chunk_size: int, name: str,
         extra_provenance: dict[str, Any] | None = None,
         progress: Callable[[int, int, str], None] | None = None) -> None:
    """Parse ``stream`` block by block with ``parser`` and add each block's stages to ``writer``.

    Raises:
        ImportFormatError: naming ``name`` and the line: a line too long, a corrupt gzip stream,
            a read error, or a line past a hard limit of the parser.

    Example:
        >>> import io
        >>> from parity.importers.lines import LineParser
        >>> p = LineParser(["TRACE_C"])
        >>> with parity.TraceWriter("p.trace") as w:
        ...     pump(p, io.BytesIO(b"TRACE_C: e=1\\nTRACE_C: e=2\\n"), w, 16, "<stream>", {"stream": "stdout"})
        >>> p.stats.lines, parity.load_trace("p.trace").stage("e#1").provenance
        (2, {'line': 2, 'stream': 'stdout'})
    """
    # A big log makes millions of small, acyclic objects (manifest entries) that stay alive: the
    # cyclic GC would rescan all of them again and again (measured: 15 % of a 300 MB import).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _pump_blocks(parser, stream, writer, chunk_size, name, extra_provenance, progress)
    finally:
        if was_enabled:
            gc.enable()


def _stream_position(stream: IO[bytes]) -> int:
    """Bytes of the underlying file consumed so far (the compressed position for gzip)."""
    raw = getattr(stream, "fileobj", None) or stream
    try:
        return int(raw.tell())
    except (OSError, ValueError, AttributeError):
        return 0


def _pump_blocks(parser: LineParser, stream: IO[bytes], writer: TraceWriter, chunk_size: int, name: str,
                 extra_provenance: dict[str, Any] | None,
                 progress: Callable[[int, int, str], None] | None) -> None:
    st = parser.stats
    total = 0
    if progress is not None:
        try:
            total = os.path.getsize(name)
        except OSError:  # a stream or pipe: unknown size
            total = 0
    lineno = st.lines
    try:
        for block in read_blocks(stream, chunk_size):
            lineno = parser._parse_chunk(block, lineno)
            st.lines = lineno
            _write_columns(parser, writer, extra_provenance)
            if progress is not None:
                progress(_stream_position(stream), total, os.path.basename(name))
    except _LineTooLong as e:
        raise ImportFormatError(f"line {lineno + 1} is longer than {e.limit} bytes (4 × PARITY_MAX_STAGE_BYTES); "
                                "expected a text log of trace lines.", path=name) from e
    except (zlib.error, EOFError, gzip.BadGzipFile) as e:
        raise ImportFormatError(f"is a corrupt or truncated gzip file: it cannot be read past line {lineno} ({e}).",
                                path=name) from e
    except OSError as e:
        raise ImportFormatError(f"cannot be read past line {lineno} ({e}).", path=name) from e
    st.lines = lineno


def _write_columns(parser: LineParser, writer: TraceWriter, extra_provenance: dict[str, Any] | None) -> None:
    """Hand a block's parsed fields to the writer in one call (the same stages as one add() each)."""
    names, shapes, indices, lines, originals, values = parser._take_columns()
    if not names:
        return
    # provenance as columns: {"line": N} for every stage, "name" where sanitising changed it
    provenance: dict[str, list[Any]] = {"line": lines}
    for k, v in (extra_provenance or {}).items():
        provenance[k] = [v] * len(names)
    if originals.count(None) < len(originals):
        provenance["name"] = originals
    stored = writer.add_batch(names, shapes, values, indices=indices, provenance=provenance)
    parser._renames.note(names, originals, lines, stored)
