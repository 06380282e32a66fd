"""Trace lines printed by any program (C, C++, Fortran, Python...) → stages.

A *trace line* starts with a configured prefix; every other line (progress output, banners,
warnings) is skipped and counted. With ``prefix="TRACE_C"`` these lines are read::

    TRACE_C: energy=-1.25                 scalar                      energy
    TRACE_C: pos=0.1 0.2 0.3              vector, key=v1 v2 v3        pos
    TRACE_C: pos 0.1 0.2 0.3              vector, key v1 v2 v3        pos
    TRACE_C: pos: [0.1, 0.2, 0.3]         vector, key: [a, b, c]      pos
    TRACE_C: rot=[1 0 0; 0 1 0; 0 0 1]    3×3 matrix (rows by ";")    rot
    TRACE_C: rot=[[1, 0], [0, 1]]         2×2 matrix (nested lists)   rot
    TRACE_C: cell=a:3.5 b:4.1 c:9.0       named fields                cell.a, cell.b, cell.c
    TRACE_C: e=1.5 n=3                    several key=value pairs     e, n
    TRACE_C: method=lbfgs                 text                        method (a text stage)
    TRACE_C_ITER it=3 e=0.5 g=1e-3 2e-3   indexed family line         e[it=3], g[it=3]

Values may be written in any float notation: ``%g``, ``%.17g``, ``%e``, ``%a`` (hex), ``inf``,
``-inf``, ``nan``, ``-nan``, ``-0``, Fortran ``1.0D+00``. A value that is not a number makes the
field a text stage. Numbers are stored as float64 (every printed decimal has one nearest double,
so both sides of a comparison read the same bits from the same text).

A key printed again (a block printed once per loop iteration) is stored as the next occurrence,
``energy#1``, ``energy#2``... — never overwritten. Each stage keeps the source line number (and
the stream, for captured programs) as provenance.

The importer streams: it reads the log in chunks and never holds more than one chunk of it.

Speed: where parity was built with a C compiler, the optional scanner :mod:`parity.importers._scan`
reads each chunk: the common trace lines (``key=numbers``, ``key: [numbers]``, several
``key=number`` pairs, indexed family lines, named fields, text values seen before) in C, with
correctly rounded number parsing (Eisel-Lemire, falling back to CPython's own ``dtoa``), and every
other line through the Python parser below, in order; without it, its Python twin
(:mod:`parity.importers._line_scan`) takes the same fast paths. The stages of a chunk then go to
:meth:`TraceWriter.add_batch <parity.trace.writer.TraceWriter.add_batch>` in one call. The result
is the same trace, byte for byte, as parsing line by line and adding one stage at a time (the tests
compare them); :func:`accelerated` tells whether the scanner is built.

Modules: this one holds :class:`LineParser` and the entry points; the grammar of values, names
and indices is :mod:`parity.importers._line_grammar`; the chunked reading of a log (one reader
for both scanners) and the pump into a trace writer are :mod:`parity.importers._line_reader`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any

import numpy as np

from ..errors import ImportFormatError, UsageError
from ..trace.writer import TraceWriter
from . import _line_scan
from ._line_grammar import _MAX_NDIM  # noqa: F401  (re-exported: tests read it here)
from ._line_grammar import (_WS, ParsedField, _Fatal, _first_space, _index_value, _Malformed, _Names,
                            _pairs, _parse_value, _sig_digits, parse_value)
from ._line_reader import open_log, pump, read_blocks, sniff_text, visible_line
from ._line_scan import PyValues as _PyValues
from ._line_stats import LineStats, RenameLog

__all__ = ["LineParser", "ParsedField", "LineStats", "import_log", "parse_lines", "parse_value", "accelerated",
           "write_fields", "sniff_text", "visible_line"]

_CHUNK = 8 * 1024 * 1024
_IDENT = re.compile(rb"^[A-Za-z_][A-Za-z0-9_.]*$")
_FAMILY = re.compile(rb"_([A-Za-z0-9_]+)[ \t]")
_SPACED_EQ = re.compile(rb"[ \t]*=[ \t]*")
_INDEX_NAME = re.compile(rb"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_EXAMPLES = 5
# former names of the reader's functions here (tests of the chunk scanners use them)
_blocks, _cr = read_blocks, visible_line

try:  # the C scanner (built from _scan.c where a compiler was found): the same results, faster
    from ._scan import Values as _CValues
    from ._scan import scan_chunk as _scan_chunk
except ImportError:  # pragma: no cover - exercised by tests that force the fallback
    _CValues = _scan_chunk = None  # type: ignore[assignment,misc]
_Values = _CValues or _PyValues  # what a LineParser collects numbers in (tests swap it, and _scan_chunk)


def accelerated() -> bool:
    """Whether numbers are parsed by the C scanner :mod:`parity.importers._scan` (else in Python).

    Example:
        >>> accelerated() in (True, False)
        True
    """
    return _CValues is not None


# -- lines ----------------------------------------------------------------------------------------
class LineParser:
    """Parse trace lines carrying one of ``prefixes`` into :class:`ParsedField` records.

    Args:
        prefixes: line prefixes. A bare name such as ``"TRACE_C"`` takes ``TRACE_C:`` lines and
            the indexed family lines ``TRACE_C_<FAMILY> idx=3 a=1 b=2`` (and ``TRACE_C idx=3 ...``);
            a prefix ending in punctuation, such as ``"TRACE_C:"`` or ``">>"``, takes exactly the
            lines that start with it (after optional leading whitespace).
        index_fields: names of ``name=value`` fields that are indices wherever they appear (in an
            indexed family line the first field is always an index).
        source: the file (or stream) the lines come from, named by the ImportFormatError raised
            for a line past a hard limit (brackets nested too deep).

    Example:
        >>> p = LineParser(["TRACE_C"])
        >>> [(f.name, f.indices, f.value.tolist()) for f in p.parse_line(b"TRACE_C_ITER it=3 e=0.5", 7)]
        [('e', {'it': 3}, 0.5)]
        >>> p.is_trace_line(b"  TRACE_C: x=1"), p.is_trace_line(b"TRACE_CX: x=1"), p.parse_line(b"banner", 8)
        (True, False, None)
    """

    def __init__(self, prefixes: Sequence[str], index_fields: Iterable[str] = (), *,
                 source: str | os.PathLike[str] | None = None):
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        if not prefixes or not all(isinstance(p, str) and p.strip() for p in prefixes):
            raise UsageError("give at least one non-empty trace-line prefix, e.g. --prefix TRACE_C.")
        self.prefixes = tuple(sorted({p.strip() for p in prefixes}, key=len, reverse=True))
        self._bprefixes = tuple(p.encode("utf-8") for p in self.prefixes)
        self._exact = tuple(not p[-1:].isalnum() and p[-1:] != "_" for p in self.prefixes)
        self._prefix_table = tuple(zip(self._bprefixes, map(len, self._bprefixes), self._exact))
        self.index_fields = frozenset(index_fields)
        self._bindex = frozenset(f.encode("utf-8") for f in self.index_fields)
        self._names = _Names()
        # printed key -> (name, printed name) for keys free of ":", " ", "\t" (the fast path's)
        self._plain_keys: dict[bytes, tuple[str, str | None]] = {}
        self._index_names: dict[bytes, str] = {}
        self._texts: dict[bytes, str] = {}  # short values that _parse_value() found to be text
        self.stats = LineStats()
        self.source = os.fspath(source) if source is not None else None
        self._sample_every = 1
        self._renames = RenameLog(self.stats)  # what was stored under a changed name
        # Parsed fields not yet handed on, as columns (a log makes millions of them): stage name,
        # shape (its numbers are the next ones in _values) or text, indices, line, printed name.
        self._values = _Values()
        self._out_names: list[str] = []
        self._out_shapes: list[tuple[int, ...] | str] = []
        self._out_indices: list[dict[str, int | str] | None] = []
        self._out_lines: list[int] = []
        self._out_originals: list[str | None] = []

    # The body of a trace line after its prefix; kind: "plain" or "indexed"; None if not a trace line.
    def _body(self, line: bytes) -> tuple[bytes, bool] | None:
        for p, n, exact in self._prefix_table:
            if not line.startswith(p):
                continue
            if exact:
                return line[n:], False
            c = line[n:n + 1]
            if c == b":":
                return line[n + 1:], False
            if c == b" " or c == b"\t":
                return line[n:], True
            if c == b"_":
                m = _FAMILY.match(line, n)
                if m:
                    return line[m.end():], True
            return None
        return None

    def is_trace_line(self, line: bytes) -> bool:
        """Whether ``line`` carries one of the prefixes."""
        return self._body(line.lstrip(_WS)) is not None

    def parse_line(self, line: bytes, lineno: int) -> list[ParsedField] | None:
        """Parse one line (without its newline).

        Returns:
            The fields it carries, or ``None`` when it is not a trace line. A trace line that
            cannot be parsed is counted as malformed and gives ``[]``.
        """
        if line[:1] in (b" ", b"\t"):
            line = line.lstrip(_WS)
        found = self._body(line)
        if found is None:
            return None
        self._parse_body(found[0], found[1], lineno)
        return self._drain_fields()

    def _parse_body(self, body: bytes, indexed: bool, lineno: int) -> None:
        """Parse a trace line's body into the output columns; a malformed line adds nothing."""
        mark, vmark = len(self._out_names), len(self._values)
        try:
            self._fields(body.strip(), indexed, lineno)
        except _Fatal as e:
            self._truncate(mark, vmark)
            raise ImportFormatError(f"line {lineno}: {e}.", path=self.source) from e
        except _Malformed as e:
            self._truncate(mark, vmark)
            self._count_malformed(lineno, e)

    def _count_malformed(self, lineno: int, e: _Malformed) -> None:
        st = self.stats
        st.malformed += 1
        if len(st.examples) < _MAX_EXAMPLES:
            st.examples.append((lineno, str(e)))

    def _truncate(self, mark: int, vmark: int) -> None:
        for col in (self._out_names, self._out_shapes, self._out_indices, self._out_lines, self._out_originals):
            del col[mark:]
        self._values.truncate(vmark)

    def _record(self, name: str, value: tuple[int, ...] | str, indices: dict[str, int | str] | None, lineno: int,
                original: str | None) -> None:
        """Append one field to the output columns (its numbers are in the values already)."""
        self._out_names.append(name)
        self._out_shapes.append(value)
        self._out_indices.append(indices)
        self._out_lines.append(lineno)
        self._out_originals.append(original)

    def _take_columns(self) -> tuple[list[str], list[Any], list[Any], list[int], list[str | None], np.ndarray]:
        """Hand on (and forget) the parsed fields: names, shapes/texts, indices, lines, printed names, values."""
        cols = (self._out_names, self._out_shapes, self._out_indices, self._out_lines, self._out_originals)
        taken = tuple(col[:] for col in cols)
        for col in cols:  # the same list objects stay (the C scanner appends to them)
            col.clear()
        return (*taken, np.frombuffer(self._values.take(), dtype=np.float64))  # type: ignore[return-value]

    def _drain_fields(self) -> list[ParsedField]:
        names, shapes, indices, lines, originals, values = self._take_columns()
        self._renames.note(names, originals, lines, names)
        out = []
        pos = 0
        for name, shape, idx, line, original in zip(names, shapes, indices, lines, originals):
            if isinstance(shape, str):
                value: np.ndarray | str = shape
            else:
                n = int(np.prod(shape, dtype=np.int64))
                value = values[pos:pos + n].reshape(shape).copy()  # an array of its own, writable
                pos += n
            out.append(ParsedField(name, value, dict(idx) if idx else None, line, original))
        return out

    def _value(self, v: bytes, name: str, what: str = "the value of") -> tuple[int, ...] | str:
        """A field's value: its shape (numbers appended to the values) or its text."""
        shape = self._values.push(v)
        if shape is not None:
            return shape
        text = self._texts.get(v)
        if text is not None:  # a text value seen before ("running", "converged"...)
            return text
        value = _parse_value(v, f'{what} "{name}"')  # notations the C scanner leaves to Python; text
        if isinstance(value, str):
            if len(v) <= 64 and len(self._texts) < 10_000:
                self._texts[v] = value
            return value
        self._values.extend(value)
        return value.shape

    def _fields(self, body: bytes, indexed: bool, lineno: int) -> None:
        if not body:
            raise _Malformed("the trace line has a prefix but no key")
        # The key is near the start: look there only (a vector line may be kilobytes long).
        head = body[:256]
        if b" =" in head or b"= " in head or b"\t=" in head or b"=\t" in head:
            body = _SPACED_EQ.sub(b"=", body)
            head = body[:256]
        eq = head.find(b"=")
        colon = head.find(b":")
        space = _first_space(head)
        pairs: list[tuple[bytes, bytes]]
        if eq > 0 and (colon < 0 or eq < colon) and (space < 0 or eq < space):
            if body.count(b"=") == 1:
                pairs = [(body[:eq], body[eq + 1:])]
            else:
                pairs = _pairs(body)
        elif colon > 0 and (space < 0 or colon < space):
            pairs = [(body[:colon], body[colon + 1:])]
        elif space > 0:
            pairs = [(body[:space], body[space:])]
        else:
            raise _Malformed(f"the trace line has a key {body[:40]!r} but no value")
        indices: dict[str, int | str] | None = None
        if indexed or self._bindex:
            keep: list[tuple[bytes, bytes]] = []
            for n, (k, v) in enumerate(pairs):
                k = k.strip()
                if (indexed and n == 0) or k in self._bindex:
                    if indices is None:
                        indices = {}
                    indices[self._index_name(k)] = _index_value(v.strip(), k)
                else:
                    keep.append((k, v))
            pairs = keep
            if not pairs:
                raise _Malformed("the indexed trace line has indices but no values")
        st = self.stats
        names, shapes, idxs = self._out_names, self._out_shapes, self._out_indices
        lines, originals = self._out_lines, self._out_originals
        push = self._values.push
        for k, v in pairs:
            name, original = self._names(k.strip())
            v = v.strip()
            if not v:
                raise _Malformed(f'"{name}" has no value')
            value = push(v)
            if value is None:
                # "a:1 b:2" is never a number (no notation has a ":"), so _parse_value would call it
                # text: try named fields first; they need not be parsed as a whole.
                if b":" in v and v[:1] != b"[" and self._named_fields(name, v, lineno, indices):
                    continue
                value = self._value(v, name)
            if type(value) is str:
                st.fields += 1
            else:
                st.fields += 1
                if st.fields % self._sample_every == 0:
                    self._sample_digits(v)
            names.append(name)
            shapes.append(value)
            idxs.append(indices)  # shared by the fields of this line; never changed afterwards
            lines.append(lineno)
            originals.append(original)

    def _sample_digits(self, v: bytes) -> None:
        st = self.stats
        head = v[:48].lstrip(b"[").split(None, 1)
        if not head:  # nothing but brackets in the first 48 bytes: no number to sample
            return
        tok = head[0].rstrip(b",;]")
        d = _sig_digits(tok)
        if d > st.digits:
            st.digits = d
        if st.fields > 100_000:
            self._sample_every = 97  # the precision of a log is fixed early; keep sampling cheap

    def _named_fields(self, name: str, v: bytes, lineno: int, indices: dict | None) -> bool:
        """``a:1 b:2`` → fields ``name.a``, ``name.b``; False (nothing added) if ``v`` is not of that form."""
        tokens = v.split()
        parts = [t.partition(b":") for t in tokens]
        if not all(sep and _IDENT.match(k) and val for k, sep, val in parts):
            return False
        prefix = name.encode("utf-8") + b"."
        for k, _, val in parts:
            sub, original = self._names(prefix + k)
            value = self._value(val, sub, "the field")
            self.stats.fields += 1
            self._record(sub, value, indices, lineno, original)
        return True

    def _index_name(self, k: bytes) -> str:
        hit = self._index_names.get(k)
        if hit is not None:
            return hit
        if not _INDEX_NAME.match(k):
            raise _Malformed(f"the index name {k.decode('utf-8', 'replace')!r} is not an identifier")
        name = k.decode("ascii")
        if len(self._index_names) < 10_000:
            self._index_names[k] = name
        return name

    def _parse_chunk(self, lines: list[bytes] | tuple[bytes, bytes, int, int], lineno: int) -> int:
        """Parse a chunk of lines (numbered from ``lineno + 1``) into the output columns; returns
        the last line number. What :meth:`parse_line` does line by line, with fast paths for the
        commonest trace lines: in C where the scanner is built, else in Python
        (:func:`parity.importers._line_scan.scan_chunk`). ``lines`` is a list of lines or a
        :data:`~parity.importers._line_reader.Block`."""
        if _scan_chunk is not None and type(self._values) is _CValues:
            lineno, skipped, traced = _scan_chunk(self, lines, lineno, _index_value, _Malformed)
        else:
            lineno, skipped, traced = _line_scan.scan_chunk(self, lines, lineno)
        self.stats.skipped += skipped
        self.stats.trace_lines += traced
        return lineno

    def _plain_key(self, k: bytes) -> tuple[str, str | None] | tuple[()]:
        """(name, printed name) of a key the fast path can take, else ``()`` (remembered too)."""
        hit: tuple[str, str | None] | tuple[()] = ()
        if b":" not in k and b" " not in k and b"\t" not in k:
            try:
                hit = self._names(k.strip())
            except _Malformed:
                pass
        if len(self._plain_keys) < 100_000:
            self._plain_keys[k] = hit  # type: ignore[assignment]
        return hit


def parse_lines(lines: Iterable[bytes | str], prefixes: Sequence[str] | str,
                index_fields: Iterable[str] = ()) -> Iterator[ParsedField]:
    """Parse trace lines from an iterable of lines (no file needed), e.g. a program's output.

    Example:
        >>> out = ["starting...", "TRACE_C: x=1 2 3", "TRACE_C: x=4 5 6"]
        >>> [(f.name, f.value.tolist(), f.line) for f in parse_lines(out, "TRACE_C")]
        [('x', [1.0, 2.0, 3.0], 2), ('x', [4.0, 5.0, 6.0], 3)]
    """
    parser = LineParser(prefixes if not isinstance(prefixes, str) else [prefixes], index_fields)
    for n, line in enumerate(lines, 1):
        raw = line.encode("utf-8") if isinstance(line, str) else line
        fields = parser.parse_line(visible_line(raw.rstrip(b"\n")), n)
        if fields:
            yield from fields


def write_fields(writer: TraceWriter, fields: Iterable[ParsedField], extra_provenance: dict[str, Any] | None = None) -> int:
    """Add parsed fields to a trace writer in order; returns how many were written.

    Each stage's provenance holds its line (and the printed name, when it had to be cleaned),
    plus ``extra_provenance``.

    Example:
        >>> with parity.TraceWriter("w.trace") as w:
        ...     write_fields(w, parse_lines(["TRACE_C: e=1.5 n=3"], "TRACE_C"), {"stream": "stdout"})
        2
        >>> parity.load_trace("w.trace").stage("n").provenance
        {'line': 1, 'stream': 'stdout'}
    """
    n = 0
    add = writer.add
    for f in fields:
        prov: dict[str, Any] = {"line": f.line}
        if extra_provenance:
            prov.update(extra_provenance)
        if f.original is not None:
            prov["name"] = f.original
        add(f.name, f.value, indices=f.indices, provenance=prov)
        n += 1
    return n


def import_log(
    source: str | os.PathLike[str] | IO[bytes],
    out: str | os.PathLike[str] | TraceWriter,
    *,
    prefixes: Sequence[str] | str,
    index_fields: Iterable[str] = (),
    meta: dict[str, Any] | None = None,
    chunk_size: int = _CHUNK,
    require_lines: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
) -> LineStats:
    """Read the trace lines of a log file into a trace, streaming.

    Args:
        source: the log file (plain or gzip) or a binary stream.
        out: the trace directory to write, or an open :class:`TraceWriter` to add to.
        prefixes: trace-line prefixes, see :class:`LineParser`.
        index_fields: ``name=value`` fields that are indices wherever they appear.
        meta: extra trace metadata.
        chunk_size: bytes read at a time.
        require_lines: raise if the log holds no trace line at all (a wrong prefix, usually).
        progress: called as ``progress(bytes_read, total_bytes, source)`` after each chunk (the
            bytes of the file on disk; ``total_bytes`` is 0 for a stream of unknown size).

    Returns:
        The :class:`LineStats` of the import (also stored in the trace's ``meta["import"]``).

    Raises:
        ImportFormatError: the file cannot be read (a corrupt or truncated gzip file too), holds
            no trace line with these prefixes, or has a line past a hard limit: brackets nested
            more than :data:`parity.limits.MAX_NESTING` deep, a line longer than 4 ×
            ``PARITY_MAX_STAGE_BYTES``. The message names the file (and the line). A trace line
            that cannot be parsed otherwise (an index of more than
            :data:`parity.limits.MAX_INT_DIGITS` digits, say) is skipped and counted as malformed,
            with its line number in ``LineStats.examples``.

    Example:
        >>> _ = open("run.log", "w").write("banner\\nTRACE_C: e=1.5\\nTRACE_C: e=1.25\\n")
        >>> import_log("run.log", "c.trace", prefixes="TRACE_C").trace_lines
        2
        >>> parity.load_trace("c.trace").keys()
        ['e', 'e#1']
    """
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<stream>")
    if not isinstance(name, str):  # a stream's name may be a file descriptor or bytes
        name = str(name)
    parser = LineParser(prefixes, index_fields, source=name)
    own_writer = not isinstance(out, TraceWriter)
    try:
        stream = open_log(name) if isinstance(source, (str, os.PathLike)) else source
    except OSError as e:
        raise ImportFormatError(f"cannot be read ({e.strerror or e}).", path=name) from e
    writer = None
    try:
        if own_writer:
            full_meta = {"source": os.path.basename(str(name)), "format": "lines", "prefixes": list(parser.prefixes)}
            full_meta.update(meta or {})
            writer = TraceWriter(out, meta=full_meta, producer="parity import (lines)")  # type: ignore[arg-type]
        else:
            writer = out  # type: ignore[assignment]
        pump(parser, stream, writer, chunk_size, name, progress=progress)
        st = parser.stats
        if require_lines and st.trace_lines == 0:
            raise ImportFormatError(
                f"holds no trace line starting with {' or '.join(repr(p) for p in parser.prefixes)} "
                f"({st.lines} lines read); check --prefix.", path=name)
        if own_writer:
            writer.update_meta(**{"import": st.to_dict()}, printed_digits=st.digits)  # type: ignore[union-attr]
            writer.close()
    except BaseException as e:
        if own_writer and writer is not None:
            writer.close(complete=False, reason=f"{type(e).__name__} during import")
        raise
    finally:
        if isinstance(source, (str, os.PathLike)):
            stream.close()
    return parser.stats

