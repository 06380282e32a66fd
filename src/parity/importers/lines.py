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
other line through the Python parser below, in order. The stages of a chunk then go to
:meth:`TraceWriter.add_batch <parity.trace.writer.TraceWriter.add_batch>` in one call. The result
is the same trace, byte for byte, as parsing line by line and adding one stage at a time (the tests
compare them); :func:`accelerated` tells whether the scanner is built.
"""

from __future__ import annotations

import gc
import gzip
import math
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from ..errors import ImportFormatError, UsageError
from ..limits import MAX_INT_DIGITS, MAX_NESTING, max_stage_bytes
from ..trace.keys import validate_key
from ..trace.writer import TraceWriter

__all__ = ["LineParser", "ParsedField", "LineStats", "import_log", "parse_lines", "parse_value", "accelerated"]

_CHUNK = 8 * 1024 * 1024
_WS = b" \t\r\f\v"
_NAME_BAD = re.compile(r"[^A-Za-z0-9_+\-:@.]+")
_NAME_BAD_TAIL = re.compile(r"[^A-Za-z0-9_+\-:@.]+$")
_IDENT = re.compile(rb"^[A-Za-z_][A-Za-z0-9_.]*$")
_FAMILY = re.compile(rb"_([A-Za-z0-9_]+)[ \t]")
_SPACED_EQ = re.compile(rb"[ \t]*=[ \t]*")
_INT = re.compile(rb"^[+-]?[0-9]+$")
_INDEX_NAME = re.compile(rb"^[A-Za-z_][A-Za-z0-9_]*$")
_MSVC = {b"1.#inf": "inf", b"-1.#inf": "-inf", b"1.#qnan": "nan", b"-1.#qnan": "nan", b"1.#ind": "nan", b"-1.#ind": "nan"}
_MAX_EXAMPLES = 5
_MAX_RENAMES = 100  # renamed printed names (and colliding stage names) listed in LineStats
_MAX_SPELLINGS = 20  # printed names listed per colliding stage name
_MAX_TRACKED_NAMES = 200_000  # stage names remembered (as printed; under a changed name) for collisions


@dataclass(frozen=True)
class ParsedField:
    """One value read from a trace line.

    Attributes:
        name: the (sanitised) dotted stage name, e.g. ``"cell.a"``.
        value: a float64 array (shape ``()`` for a scalar) or a ``str`` for a text value.
        indices: indices from an indexed line, e.g. ``{"it": 3}``.
        line: 1-based line number in the log (or stream).
        original: the name as printed, when sanitising changed it.
    """

    name: str
    value: np.ndarray | str
    indices: dict[str, int | str] | None
    line: int
    original: str | None = None


@dataclass
class LineStats:
    """What an import read.

    Attributes:
        lines: lines read in total.
        trace_lines: lines that carried the prefix and were parsed.
        skipped: lines without the prefix (progress output, banners...), skipped.
        malformed: lines with the prefix that could not be parsed, skipped.
        examples: up to five ``(line number, reason)`` of malformed lines.
        fields: values read (one stage each).
        digits: the most significant digits seen in a printed number (the log's precision).
        renamed: values stored under a stage name other than the printed one (the printed name
            had characters a stage key cannot hold, e.g. ``rot[1]`` → ``rot_1``, ``../x`` → ``_x``).
        renames: for the first 100 distinct printed names that were changed, ``(line, printed
            name, stored key)`` of their first value.
        collisions: stage names that more than one distinct printed name became (e.g. ``_x`` from
            ``../x``, ``．．/x`` and ``.\\x``), each with up to 20 of those printed names, in the
            order first stored; their values are stored as occurrences ``_x``, ``_x#1``... and keep
            the printed name in their provenance. At most 100 listed; ``collided`` counts them all.
    """

    lines: int = 0
    trace_lines: int = 0
    skipped: int = 0
    malformed: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)
    fields: int = 0
    digits: int = 0
    renamed: int = 0
    renames: list[tuple[int, str, str]] = field(default_factory=list)
    collisions: dict[str, list[str]] = field(default_factory=dict)
    collided: int = 0

    def to_dict(self, *, renames: bool = False) -> dict[str, Any]:
        """The statistics as plain JSON values (what the trace's ``meta["import"]`` stores).

        Args:
            renames: add :meth:`rename_dict` (for an import summary; the trace's own metadata
                leaves it out: each renamed stage keeps its printed name in its provenance).
        """
        out: dict[str, Any] = {"lines": self.lines, "trace_lines": self.trace_lines, "skipped": self.skipped,
                               "malformed": self.malformed, "fields": self.fields,
                               "malformed_examples": [f"line {n}: {why}" for n, why in self.examples]}
        if renames:
            out.update(self.rename_dict())
        return out

    def rename_dict(self) -> dict[str, Any]:
        """The renamed printed names and the collisions as JSON values; ``{}`` when no name changed.

        Keys: ``renamed`` (values stored under a changed name), ``renames`` (``{"line", "printed",
        "stored"}`` per listed printed name), ``collided`` and ``collisions`` (``{"stage",
        "printed": [...]}`` per listed stage name), the last two only when names collided.
        """
        out: dict[str, Any] = {}
        if self.renamed:
            out["renamed"] = self.renamed
            out["renames"] = [{"line": n, "printed": printed, "stored": stored} for n, printed, stored in self.renames]
        if self.collided:
            out["collided"] = self.collided
            out["collisions"] = [{"stage": name, "printed": list(printed)} for name, printed in self.collisions.items()]
        return out

    def rename_lines(self) -> list[str]:
        """One human-readable line per listed rename and collision (for an import summary)."""
        out = []
        if self.renamed:
            out.append(f"{self.renamed} values stored under a name other than the printed one "
                       f"({len(self.renames)} printed names listed):")
        out += [f"line {n}: renamed {printed!r} -> {stored!r}" for n, printed, stored in self.renames]
        for name, printed in self.collisions.items():
            out.append(f"collision: {', '.join(repr(p) for p in printed)} all became {name!r} "
                       f"(stored as occurrences {name!r}, {name + '#1'!r}...)")
        if self.collided > len(self.collisions):
            out.append(f"... {self.collided} colliding stage names in all")
        return out


def _numpy_max_ndim() -> int:
    """The most dimensions an array may have: 64 since NumPy 2, 32 before."""
    try:
        np.empty((1,) * 64)
    except ValueError:
        return 32
    return 64


_MAX_NDIM = _numpy_max_ndim()


class _Malformed(ValueError):
    """A trace line that cannot be parsed: counted as malformed and skipped."""


class _Fatal(_Malformed):
    """A trace line past a hard limit (brackets nested too deep): the import stops with an
    ImportFormatError naming the file and line. A _Malformed too, so that the fast paths decline
    the line and leave it to LineParser._parse_body, which raises."""


# -- values ---------------------------------------------------------------------------------------
def _float_slow(tok: bytes) -> float | None:
    """The notations NumPy's parser refuses: Fortran D exponents, C99 hex floats, MSVC inf/nan."""
    try:
        return float(tok)
    except ValueError:
        pass
    low = tok.lower()
    if low in _MSVC:
        return float(_MSVC[low])
    if low.startswith((b"nan(", b"-nan(", b"+nan(")) and low.endswith(b")"):
        return float("nan")
    if b"d" in low and not low.startswith((b"0x", b"-0x", b"+0x")):
        try:
            return float(low.replace(b"d", b"e"))
        except ValueError:
            return None
    if not low.lstrip(b"+-").startswith(b"0x"):
        return None  # float.fromhex takes "beef" or "add" too: only C99 "%a" text (0x...) is a hex float
    try:
        text = tok.decode("ascii")
    except UnicodeDecodeError:
        return None
    try:
        return float.fromhex(text)
    except OverflowError:
        # too large for a double once rounded: +-inf, as float() gives for a decimal (1e999)
        return -math.inf if text.lstrip()[:1] == "-" else math.inf
    except ValueError:
        return None


def _floats(tokens: list[bytes]) -> np.ndarray | None:
    """Parse number tokens into a float64 vector, or ``None`` if any token is not a number."""
    try:
        # NumPy parses a list of byte strings in C (correctly rounded, as float() does).
        return np.array(tokens, dtype=np.float64)
    except ValueError:
        pass
    out = np.empty(len(tokens), dtype=np.float64)
    for i, t in enumerate(tokens):
        v = _float_slow(t)
        if v is None:
            return None
        out[i] = v
    return out


def _sig_digits(tok: bytes) -> int:
    """Significant digits of a printed decimal (0 for inf/nan/hex)."""
    mant = tok.lstrip(b"+-").split(b"e")[0].split(b"E")[0].split(b"D")[0].split(b"d")[0]
    digits = mant.replace(b".", b"").lstrip(b"0")
    return len(digits) if digits.isdigit() else 0


def _split_tokens(text: bytes) -> list[bytes]:
    return text.replace(b",", b" ").split() if b"," in text else text.split()


def _nested(text: bytes, where: str) -> np.ndarray | None:
    """``[[1, 2], [3, 4]]`` → a rectangular array (or ``None`` if an element is not a number).

    Iterative (no recursion), at most :data:`parity.limits.MAX_NESTING` brackets deep.
    """
    tokens = re.findall(rb"\[|\]|[^\s,\[\]]+", text)
    n = len(tokens)
    if not n:
        raise _Malformed(f"unbalanced brackets in {where}")
    tree: Any
    if tokens[0] != b"[":
        tree, pos = tokens[0], 1
    else:
        tree = []
        stack: list[list[Any]] = [tree]  # the open lists, outermost first
        pos = 1
        while stack:
            if pos >= n:
                raise _Malformed(f"unbalanced brackets in {where}")
            tok = tokens[pos]
            pos += 1
            if tok == b"[":
                if len(stack) >= MAX_NESTING:
                    raise _Fatal(f"{where} nests brackets more than {MAX_NESTING} deep")
                child: list[Any] = []
                stack[-1].append(child)
                stack.append(child)
            elif tok == b"]":
                stack.pop()
            else:
                stack[-1].append(tok)
    if pos != n:
        raise _Malformed(f"text after the closing bracket in {where}")

    shape: list[int] = []
    node = tree
    while isinstance(node, list):
        shape.append(len(node))
        if not node:
            break
        node = node[0]
    if len(shape) > _MAX_NDIM:
        raise _Malformed(f"{where} has {len(shape)} dimensions; an array has at most {_MAX_NDIM}")
    flat: list[bytes] = []
    depth_of_leaves = len(shape)
    todo: list[tuple[Any, int]] = [(tree, 0)]  # depth first, in order (the same errors as a recursive walk)
    while todo:
        item, depth = todo.pop()
        if depth == depth_of_leaves:
            if isinstance(item, list):
                raise _Malformed(f"ragged nested list in {where}")
            flat.append(item)
            continue
        if not isinstance(item, list) or len(item) != shape[depth]:
            raise _Malformed(f"ragged nested list in {where} (rows of different lengths)")
        todo.extend((x, depth + 1) for x in reversed(item))
    values = _floats(flat) if flat else np.empty(0)
    if values is None:
        return None
    return values.reshape(shape)


def parse_value(text: bytes | str, *, where: str = "value") -> np.ndarray | str:
    """Parse the value part of a trace line: a number, a vector, a matrix, or text.

    Args:
        text: e.g. ``b"1 2 3"``, ``b"[1, 2, 3]"``, ``b"[1 2; 3 4]"``, ``b"[[1, 2], [3, 4]]"``, ``b"lbfgs"``.
        where: how to name the value in error messages.

    Returns:
        A float64 array (shape ``()`` for one number), or the text itself when it is not numeric.

    Raises:
        ImportFormatError: brackets are unbalanced, nest more than
            :data:`parity.limits.MAX_NESTING` deep, or a matrix is ragged.

    Example:
        >>> parse_value(b"[1 2; 3 4]").tolist()
        [[1.0, 2.0], [3.0, 4.0]]
        >>> parse_value("converged")
        'converged'
    """
    raw = text.encode("utf-8") if isinstance(text, str) else text
    try:
        value = _parse_value(raw.strip(), where)
    except _Malformed as e:
        raise ImportFormatError(str(e) + ".") from None
    return value


def _parse_value(raw: bytes, where: str) -> np.ndarray | str:
    if raw[:1] == b"[":
        if raw[-1:] != b"]":
            raise _Malformed(f"{where} opens a bracket it does not close")
        inner = raw[1:-1]
        if b"[" in inner:
            arr = _nested(raw, where)
        elif b";" in inner:
            rows = [_split_tokens(r) for r in inner.split(b";")]
            if rows and not rows[-1]:
                rows.pop()  # a trailing ";"
            width = len(rows[0]) if rows else 0
            if any(len(r) != width for r in rows):
                raise _Malformed(f"{where} is a matrix with rows of different lengths "
                                 f"({', '.join(str(len(r)) for r in rows)})")
            flat = [t for r in rows for t in r]
            arr = _floats(flat) if flat else np.empty(0)
            if arr is not None:
                arr = arr.reshape(len(rows), width)
        else:
            tokens = _split_tokens(inner)
            arr = _floats(tokens) if tokens else np.empty(0)
        return arr if arr is not None else raw.decode("utf-8", "replace")
    tokens = _split_tokens(raw)
    if not tokens:
        return ""
    arr = _floats(tokens)
    if arr is None:
        return raw.decode("utf-8", "replace")
    return arr.reshape(()) if len(tokens) == 1 else arr


# -- names ----------------------------------------------------------------------------------------
class _Names:
    """Sanitise printed names into stage names (cached: a log repeats its names)."""

    def __init__(self) -> None:
        self._cache: dict[bytes, tuple[str, str | None]] = {}

    def __call__(self, raw: bytes) -> tuple[str, str | None]:
        hit = self._cache.get(raw)
        if hit is not None:
            return hit
        text = raw.decode("utf-8", "replace")
        # rot[0] -> rot_0, x->y -> x_y: trailing punctuation is dropped, inner runs become "_".
        name = _NAME_BAD.sub("_", _NAME_BAD_TAIL.sub("", text))
        # Segments may not start with - + : @ and may not be empty ("a..b", ".x").
        segs = [s.lstrip("-+:@") for s in name.split(".")]
        segs = [s for s in segs if s]
        name = ".".join(segs)
        if not name:
            raise _Malformed(f"the name {text!r} has no letters or digits")
        try:
            validate_key(name)
        except Exception:
            raise _Malformed(f"the name {text!r} cannot be made into a stage key") from None
        result = (name, None if name == text else text)
        if len(self._cache) < 100_000:
            self._cache[raw] = result
        return result


# -- parsed values --------------------------------------------------------------------------------
class _PyValues:
    """The pure-Python stand-in for :class:`parity.importers._scan.Values` (no C compiler at install):
    ``push`` always declines, so every value takes :func:`_parse_value`."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._n = 0

    def push(self, value: bytes) -> None:
        return None

    def extend(self, arr: np.ndarray) -> None:
        self._parts.append(np.array(arr, dtype=np.float64).reshape(-1))
        self._n += arr.size

    def truncate(self, n: int) -> None:
        while self._n > n:
            last = self._parts.pop()
            self._n -= last.size
            if self._n < n:
                self._parts.append(last[:n - self._n])
                self._n = n

    def take(self) -> bytes:
        data = np.concatenate(self._parts).tobytes() if self._parts else b""
        self._parts, self._n = [], 0
        return data

    def __len__(self) -> int:
        return self._n


try:  # the C scanner (built from _scan.c where a compiler was found): the same results, faster
    from ._scan import Values as _CValues
    from ._scan import scan_chunk as _scan_chunk
except ImportError:  # pragma: no cover - exercised by tests that force the fallback
    _CValues = _scan_chunk = None  # type: ignore[assignment,misc]
_Values = _CValues or _PyValues  # what a LineParser collects numbers in (tests swap it)


def accelerated() -> bool:
    """Whether numbers are parsed by the C scanner :mod:`parity.importers._scan` (else in Python)."""
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
        # What was stored under a changed name (LineStats.renamed, renames, collisions): the printed
        # names listed; the names stored only as printed; per name stored under a changed name, its
        # distinct printed spellings stored (up to _MAX_SPELLINGS + 1).
        self._renames_seen: set[str] = set()
        self._as_is: set[str] = set()
        self._spellings: dict[str, list[str]] = {}
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
            st = self.stats
            st.malformed += 1
            if len(st.examples) < _MAX_EXAMPLES:
                st.examples.append((lineno, str(e)))

    def _truncate(self, mark: int, vmark: int) -> None:
        for col in (self._out_names, self._out_shapes, self._out_indices, self._out_lines, self._out_originals):
            del col[mark:]
        self._values.truncate(vmark)

    def _take_columns(self) -> tuple[list[str], list[Any], list[Any], list[int], list[str | None], np.ndarray]:
        """Hand on (and forget) the parsed fields: names, shapes/texts, indices, lines, printed names, values."""
        cols = (self._out_names, self._out_shapes, self._out_indices, self._out_lines, self._out_originals)
        taken = tuple(col[:] for col in cols)
        for col in cols:  # the same list objects stay (the C scanner appends to them)
            col.clear()
        return (*taken, np.frombuffer(self._values.take(), dtype=np.float64))  # type: ignore[return-value]

    def _drain_fields(self) -> list[ParsedField]:
        names, shapes, indices, lines, originals, values = self._take_columns()
        self._note_renames(names, originals, lines, names)
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

    def _note_renames(self, names: list[str], originals: list[str | None], lines: list[int],
                      stored: Sequence[str]) -> None:
        """Count and list the fields of a chunk stored under a changed name (``stored``: the keys
        they were stored under), and the stage names that several printed names became."""
        renamed = len(originals) - originals.count(None)
        spellings = self._spellings
        as_is = self._as_is
        if not renamed and (not spellings or set(names).isdisjoint(spellings)):
            # the common case: every name as printed, none ever stored under a changed name
            if len(as_is) < _MAX_TRACKED_NAMES:
                as_is.update(names)
            return
        st = self.stats
        st.renamed += renamed
        seen = self._renames_seen
        track = len(as_is) < _MAX_TRACKED_NAMES
        for i, (name, o) in enumerate(zip(names, originals)):
            known = spellings.get(name)
            if o is None:
                if known is None:
                    if track:
                        as_is.add(name)
                    continue
                printed = name
            else:
                printed = o
                if o not in seen and len(st.renames) < _MAX_RENAMES:
                    seen.add(o)
                    st.renames.append((lines[i], o, stored[i]))
                if known is None:
                    if len(spellings) >= _MAX_TRACKED_NAMES:
                        continue
                    known = spellings[name] = [name] if name in as_is else []
            if printed in known or len(known) > _MAX_SPELLINGS:
                continue
            known.append(printed)
            if len(known) == 2:
                st.collided += 1
            if len(known) >= 2 and (name in st.collisions or len(st.collisions) < _MAX_RENAMES):
                st.collisions[name] = known[:_MAX_SPELLINGS]

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
            self._out_names.append(sub)
            self._out_shapes.append(value)
            self._out_indices.append(indices)
            self._out_lines.append(lineno)
            self._out_originals.append(original)
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
        the last line number. What :meth:`parse_line` does line by line, with a fast path for the
        commonest trace line, ``PREFIX: key=numbers``."""
        st = self.stats
        if _scan_chunk is not None and type(self._values) is _CValues:
            lineno, skipped, traced = _scan_chunk(self, lines, lineno, _index_value, _Malformed)
            st.skipped += skipped
            st.trace_lines += traced
            return lineno
        if isinstance(lines, tuple):  # (head, block, start, stop), as _blocks() gives
            head, block, start, stop = lines
            lines = [_cr(head)] + ([_cr(x) for x in block[start:stop].split(b"\n")] if start <= stop else [])
        prefixes = self._bprefixes
        body_of = self._body
        parse_body = self._parse_body
        fast = not self._bindex  # an --index-field can be any key: every line takes _fields
        plain_keys = self._plain_keys
        plain_key = self._plain_key
        push = self._values.push
        names, shapes, idxs = self._out_names, self._out_shapes, self._out_indices
        out_lines, originals = self._out_lines, self._out_originals
        skipped = traced = 0
        for line in lines:
            lineno += 1
            if not line.startswith(prefixes):
                c = line[:1]
                if c != b" " and c != b"\t":
                    skipped += 1
                    continue
                line = line.lstrip(_WS)
            found = body_of(line)
            if found is None:
                skipped += 1
                continue
            traced += 1
            raw, indexed = found
            if fast:
                body = raw.strip()
                if indexed:
                    if self._fast_pairs(body, lineno, True):
                        continue
                else:
                    eq = body.find(b"=", 0, 256)
                    if eq > 0:
                        # _fields() reads "key=value" as one pair when the key holds no ":", " " or
                        # "\t", the line holds no other "=", and no blank follows the "=" (else it
                        # would rewrite " = " first); its value then takes push() as here.
                        k = body[:eq]
                        hit = plain_keys.get(k)
                        if hit is None:
                            hit = plain_key(k)
                        if not hit:
                            pass
                        elif body.find(b"=", eq + 1) >= 0:  # several pairs
                            if self._fast_pairs(body, lineno, False):
                                continue
                        elif body[eq + 1:eq + 2] not in (b" ", b"\t"):
                            v = body[eq + 1:].strip()
                            shape = push(v) if v else None
                            if shape is not None:
                                st.fields += 1
                                if st.fields % self._sample_every == 0:
                                    self._sample_digits(v)
                                names.append(hit[0])
                                shapes.append(shape)
                                idxs.append(None)
                                out_lines.append(lineno)
                                originals.append(hit[1])
                                continue
                            if v and (self._fast_named(hit[0], v, lineno) or self._fast_text(hit, v, lineno)):
                                continue
                    elif eq < 0 and self._fast_colon(body, lineno):
                        continue
            parse_body(raw, indexed, lineno)
        st.skipped += skipped
        st.trace_lines += traced
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

    def _fast_field(self, name: str, original: str | None, v: bytes, shape: tuple[int, ...],
                    indices: dict[str, int | str] | None, lineno: int) -> None:
        """Record a numeric field as _fields() does (count, precision sample, columns)."""
        st = self.stats
        st.fields += 1
        if st.fields % self._sample_every == 0:
            self._sample_digits(v)
        self._out_names.append(name)
        self._out_shapes.append(shape)
        self._out_indices.append(indices)
        self._out_lines.append(lineno)
        self._out_originals.append(original)

    def _fast_named(self, name: str, v: bytes, lineno: int) -> bool:
        """``key=a:1 b:2`` (a value that is not numeric): named fields, as _fields() reads them."""
        if b":" not in v or v[:1] == b"[":
            return False
        mark, vmark = len(self._out_names), len(self._values)
        try:
            return self._named_fields(name, v, lineno, None)
        except _Fatal:  # past a hard limit: _parse_body() raises for it, naming the line
            self._truncate(mark, vmark)
            return False
        except _Malformed as e:  # the line is malformed, exactly as _parse_body() would count it
            self._truncate(mark, vmark)
            st = self.stats
            st.malformed += 1
            if len(st.examples) < _MAX_EXAMPLES:
                st.examples.append((lineno, str(e)))
            return True

    def _fast_colon(self, body: bytes, lineno: int) -> bool:
        """``key: value`` or ``key value`` with no "=" in the first 256 bytes; False: not taken."""
        sp = body.find(b" ", 0, 256)
        tab = body.find(b"\t", 0, 256)
        if tab >= 0 and (sp < 0 or tab < sp):
            sp = tab
        colon = body.find(b":", 0, sp if sp >= 0 else 256)
        if colon > 0:  # _fields(): the first ":" before any blank splits key and value
            k, v = body[:colon], body[colon + 1:]
        elif colon < 0 and sp > 0:  # else the first blank
            k, v = body[:sp], body[sp:]
        else:
            return False
        hit = self._plain_keys.get(k)
        if hit is None:
            hit = self._plain_key(k)
        if not hit:
            return False
        v = v.strip()
        if not v:
            return False
        shape = self._values.push(v)
        if shape is None:
            return self._fast_named(hit[0], v, lineno) or self._fast_text(hit, v, lineno)
        self._fast_field(hit[0], hit[1], v, shape, None, lineno)
        return True

    def _fast_text(self, hit: tuple[str, str | None], v: bytes, lineno: int) -> bool:
        """A value that is neither numbers nor named fields, and that _parse_value() found to be
        text before: the text field _fields() would record."""
        text = self._texts.get(v)
        if text is None:
            return False
        self.stats.fields += 1
        self._out_names.append(hit[0])
        self._out_shapes.append(text)
        self._out_indices.append(None)
        self._out_lines.append(lineno)
        self._out_originals.append(hit[1])
        return True

    def _fast_pairs(self, body: bytes, lineno: int, indexed: bool) -> bool:
        """``[it=3] a=1 b=2`` where every token is ``key=number`` (the first one an index on an
        indexed line): what _fields() makes of it (its first "=" lies within 256 bytes, so it splits
        on every "=", no token continues a value, nothing is bracketed); False: not taken."""
        if b"[" in body or b"]" in body:
            return False
        tokens = body.split()
        if len(tokens) < 2 or len(tokens[0]) > 256:
            return False
        indices = None
        if indexed:
            k0, sep, v0 = tokens[0].partition(b"=")
            if not (sep and k0 and v0) or b":" in k0:
                return False
            try:
                indices = {self._index_name(k0): _index_value(v0, k0)}
            except _Malformed:
                return False
            tokens = tokens[1:]
        push = self._values.push
        vmark = len(self._values)
        got = []
        for t in tokens:
            k, sep, v = t.partition(b"=")
            if not (sep and k and v):
                break
            hit = self._plain_keys.get(k)
            if hit is None:
                hit = self._plain_key(k)
            if not hit:
                break
            shape = push(v)
            if shape is None:
                break
            got.append((hit, v, shape))
        else:
            for (name, original), v, shape in got:
                self._fast_field(name, original, v, shape, indices, lineno)
            return True
        self._values.truncate(vmark)
        return False


def _first_space(b: bytes) -> int:
    s = b.find(b" ")
    t = b.find(b"\t")
    if s < 0:
        return t
    if t < 0:
        return s
    return min(s, t)


def _pairs(body: bytes) -> list[tuple[bytes, bytes]]:
    """``a=1 b=2 3 c=[1, 2]`` → [(a, 1), (b, 2 3), (c, [1, 2])]: a token without ``=`` extends the value."""
    pairs: list[tuple[bytes, list[bytes]]] = []  # key, the tokens of its value (joined once: linear time)
    depth = 0
    for tok in body.split():
        eq = tok.find(b"=")
        if depth == 0 and eq > 0 and tok[:1] != b"[":
            pairs.append((tok[:eq], [tok[eq + 1:]]))
        elif pairs:
            pairs[-1][1].append(tok)
        else:
            raise _Malformed("a value comes before its key")
        depth += tok.count(b"[") - tok.count(b"]")
    return [(k, b" ".join(v)) for k, v in pairs]


def _index_value(v: bytes, k: bytes) -> int | str:
    if _INT.match(v):
        digits = len(v) - (v[:1] in (b"+", b"-"))
        if digits > MAX_INT_DIGITS:  # checked before int(): no 5000-digit conversions; a bad index, as "it=x/y" is
            raise _Malformed(f"the index {k.decode('utf-8', 'replace')!r} has {digits} digits; expected an "
                             f"integer of at most {MAX_INT_DIGITS} digits")
        return int(v)
    text = v.decode("utf-8", "replace")
    if not re.match(r"^[A-Za-z0-9_+\-.:@]+$", text):
        raise _Malformed(f"index {k.decode('utf-8', 'replace')}={text!r} may only use letters, digits and _+-.:@")
    return text


# -- files ----------------------------------------------------------------------------------------
def _open_log(path: str) -> IO[bytes]:
    f = open(path, "rb")
    if f.read(2) == b"\x1f\x8b":
        f.close()
        return gzip.open(path, "rb")  # type: ignore[return-value]
    f.seek(0)
    return f


class _LineTooLong(Exception):
    """A line grew past :func:`_max_line_bytes` before its newline (the caller names it)."""

    def __init__(self, size: int, limit: int):
        super().__init__(size, limit)
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


def _chunks(stream: IO[bytes], chunk_size: int) -> Iterator[list[bytes]]:
    """Yield lists of whole lines (without newlines), reading ``chunk_size`` bytes at a time.

    Raises _LineTooLong for a line longer than :func:`_max_line_bytes`.
    """
    tail = _Tail()
    while True:
        block = stream.read(chunk_size)
        if not block:
            break
        if b"\n" not in block:
            tail.add(block)
            continue
        # Split the block itself (no copy of it joined to the previous tail): the first line
        # continues the tail, the last one is the next tail.
        lines = block.split(b"\n")
        lines[0] = tail.take(lines[0])
        tail.add(lines.pop())
        if b"\r" in block or b"\r" in lines[0]:
            lines = [_cr(l) for l in lines]
        yield lines
    last = tail.take()
    if last:
        yield [_cr(last)]


def _blocks(stream: IO[bytes], chunk_size: int) -> Iterator[tuple[bytes, bytes, int, int]]:
    """The lines of :func:`_chunks`, unsplit, for the C scanner: ``(head, block, start, stop)`` is
    the line ``head`` then the lines of ``block[start:stop]`` split at newlines (none when
    ``start > stop``); carriage returns are left for the scanner."""
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


def _cr(line: bytes) -> bytes:
    """A terminal shows what follows the last carriage return (progress bars redraw with \\r)."""
    if b"\r" not in line:
        return line
    line = line.rstrip(b"\r")
    return line.rsplit(b"\r", 1)[-1]


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
        fields = parser.parse_line(_cr(raw.rstrip(b"\n")), n)
        if fields:
            yield from fields


def write_fields(writer: TraceWriter, fields: Iterable[ParsedField], extra_provenance: dict[str, Any] | None = None) -> int:
    """Add parsed fields to a trace writer in order; returns how many were written."""
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
        >>> import os, tempfile
        >>> d = tempfile.mkdtemp(); log = os.path.join(d, "run.log")
        >>> _ = open(log, "w").write("banner\\nTRACE_C: e=1.5\\nTRACE_C: e=1.25\\n")
        >>> import_log(log, os.path.join(d, "c.trace"), prefixes="TRACE_C").trace_lines
        2
        >>> import parity; parity.load_trace(os.path.join(d, "c.trace")).keys()
        ['e', 'e#1']
    """
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<stream>")
    if not isinstance(name, str):  # a stream's name may be a file descriptor or bytes
        name = str(name)
    parser = LineParser(prefixes, index_fields, source=name)
    own_writer = not isinstance(out, TraceWriter)
    try:
        stream = _open_log(name) if isinstance(source, (str, os.PathLike)) else source
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
        _pump(parser, stream, writer, chunk_size, name, progress=progress)
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


def _pump(parser: LineParser, stream: IO[bytes], writer: TraceWriter, chunk_size: int, name: str,
          extra_provenance: dict[str, Any] | None = None,
          progress: Callable[[int, int, str], None] | None = None) -> None:
    # A big log makes millions of small, acyclic objects (manifest entries) that stay alive: the
    # cyclic GC would rescan all of them again and again (measured: 15 % of a 300 MB import).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        _pump_lines(parser, stream, writer, chunk_size, name, extra_provenance, progress)
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


def _pump_lines(parser: LineParser, stream: IO[bytes], writer: TraceWriter, chunk_size: int, name: str,
                extra_provenance: dict[str, Any] | None,
                progress: Callable[[int, int, str], None] | None = None) -> None:
    st = parser.stats
    total = 0
    if progress is not None:
        try:
            total = os.path.getsize(name)
        except OSError:  # a stream or pipe: unknown size
            total = 0
    lineno = st.lines
    whole_blocks = _scan_chunk is not None and type(parser._values) is _CValues
    try:
        # The C scanner splits the lines of a block itself (no million small bytes objects).
        for lines in (_blocks(stream, chunk_size) if whole_blocks else _chunks(stream, chunk_size)):
            lineno = parser._parse_chunk(lines, lineno)  # type: ignore[arg-type]
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
    """Hand a chunk's parsed fields to the writer in one call (the same stages as one add() each)."""
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
    parser._note_renames(names, originals, lines, stored)


def sniff_text(path: str, probe: int = 64 * 1024) -> str | None:
    """``None`` if ``path`` looks like a text log, else why not."""
    try:
        with _open_log(path) as f:
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

