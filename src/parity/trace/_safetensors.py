"""Minimal safetensors header codec, so stages can be streamed to disk and memory-mapped back.

The file layout is the public safetensors format: an 8-byte little-endian header length N, N
bytes of JSON (``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``,
padded with spaces to a multiple of 8), then the byte buffer, tensors back to back with no holes.
The ``safetensors`` package reads our files (tests check it); we write them ourselves because it
can neither stream an array that is larger than memory nor store bfloat16 from NumPy.

Reading is strict, since a data file may be hostile: the header length must fit in the file, the
JSON must nest no deeper than :data:`parity.limits.MAX_NESTING` and hold only finite numbers, and
every tensor must have a known dtype, a shape of non-negative integers and offsets that tile the
data buffer exactly. Anything else is a :class:`~parity.errors.TraceFormatError` naming the file
and the tensor.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ParityError, TraceFormatError
from ..limits import MAX_NESTING
from .dtypes import DTYPES

MAX_HEADER_BYTES = 100 * 1024 * 1024
#: Largest integer (a dimension, an offset, a byte count) a trace file may hold: NumPy's sizes are int64.
MAX_INDEX = 2**63 - 1
#: Most dimensions a stored value may have (NumPy's own limit).
MAX_NDIM = 64 if int(np.__version__.split(".")[0]) >= 2 else 32


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offset inside the byte buffer
    end: int


def encode_header(entries: list[TensorEntry], metadata: dict[str, str] | None = None) -> bytes:
    """Return the 8-byte length prefix plus the padded JSON header."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    for e in entries:
        header[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [e.begin, e.end]}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw


# -- strict JSON -------------------------------------------------------------------------------------

class BadNumber:
    """A JSON number a trace file may not hold (``NaN``, ``Infinity``, ``1e999``): kept as its text,
    so the check of the field it sits in can name it (``repr`` is the literal)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text if len(self.text) <= 40 else self.text[:20] + "..." + self.text[-8:]


_found = threading.local()  # the BadNumbers made by the current load_json call of this thread


def _bad_constant(text: str) -> BadNumber:  # NaN, Infinity, -Infinity
    b = BadNumber(text)
    _found.bad.append(b)
    return b


def _checked_float(text: str) -> float | BadNumber:
    value = float(text)
    if value - value == 0.0:  # finite
        return value
    return _bad_constant(text)


# one decoder for every call (json.loads with hooks would build a new one each time: a journal has
# a line per stage)
_DECODER = json.JSONDecoder(parse_constant=_bad_constant, parse_float=_checked_float)


_STRUCTURE = b"[]{}\""
_DELETE_ALL_BUT_STRUCTURE = bytes(b for b in range(256) if b not in _STRUCTURE)
_DELETE_ALL_BUT_STRUCTURE_ESC = bytes(b for b in range(256) if b not in _STRUCTURE + b"\\")
_CHUNK = 1 << 20
# int() refuses literals longer than this (sys.set_int_max_str_digits); parity holds the line there
_INT_DIGITS = 4300
_LONG_INT = re.compile(r"-?[0-9]{%d}" % (_INT_DIGITS + 1))


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in the JSON text ``raw``, brackets inside strings not
    counted; computed without recursion (vectorised), so any input is safe to measure.

    Exact for every prefix of ``raw`` that is valid JSON, which is all a parser reaches before it
    fails: ``nesting_depth(b'[{"a": "[["}]')`` is 2.
    """
    reduced = raw.translate(None, _DELETE_ALL_BUT_STRUCTURE_ESC)
    if b"\\" in reduced:  # escapes: drop \\ pairs, then escaped quotes, from the text itself
        reduced = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _DELETE_ALL_BUT_STRUCTURE)
    deepest = depth = 0
    in_string = 0
    for start in range(0, len(reduced), _CHUNK):
        a = np.frombuffer(reduced, np.uint8, count=min(_CHUNK, len(reduced) - start), offset=start)
        quote = a == ord('"')
        parity = (np.cumsum(quote, dtype=np.int64) + in_string) & 1  # 1: inside a string (a quote itself too)
        outside = (parity == 0) & ~quote
        step = np.zeros(len(a), np.int64)
        step[outside & ((a == ord("[")) | (a == ord("{")))] = 1
        step[outside & ((a == ord("]")) | (a == ord("}")))] = -1
        levels = np.cumsum(step) + depth
        if len(levels):
            deepest = max(deepest, int(levels.max()))
            depth = int(levels[-1])
            in_string = int(parity[-1])
    return deepest


def load_json(raw: bytes, *, path: str | os.PathLike[str], what: str = "file",
              error: type[ParityError] = TraceFormatError) -> tuple[Any, list[BadNumber]]:
    """Parse the JSON document ``raw`` (UTF-8) of file ``path`` without trusting it.

    Refuses (``error``, naming the file) text that is not UTF-8 or not JSON, nesting deeper than
    :data:`parity.limits.MAX_NESTING`, and integer literals of more than 4300 digits, all before
    anything recursive or quadratic runs. Non-finite numbers (``NaN``, ``Infinity``, ``1e999``)
    come back as :class:`BadNumber` objects, also listed in the second item: the caller refuses
    them, naming the field they sit in.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"is not UTF-8 text (invalid byte at offset {e.start}); the {what} is corrupt.",
                    path=path) from e
    # the count of opening brackets bounds the depth: most files need no closer look
    depth = raw.count(b"[") + raw.count(b"{")
    if depth > MAX_NESTING:
        depth = nesting_depth(raw)
    if depth > MAX_NESTING:
        raise error(f"the {what} nests JSON arrays or objects {depth} deep; parity reads at most "
                    f"{MAX_NESTING} levels (limits.MAX_NESTING); it is corrupt or hostile.", path=path)
    if sys.get_int_max_str_digits() in range(1, _INT_DIGITS + 1):
        long_int = None  # int() itself refuses long literals (ValueError below), at no cost here
    else:  # the limit was lifted in this process: look for long literals first
        long_int = _LONG_INT.search(text)
    bad: list[BadNumber] = []
    outer = getattr(_found, "bad", None)
    _found.bad = bad
    try:
        if long_int is not None:
            raise ValueError("long integer")
        doc = _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise error(f"is not valid JSON ({e}); the {what} is corrupt or truncated.", path=path) from e
    except ValueError as e:  # not a JSONDecodeError: only int() refusing a long literal raises this
        raise error(f"the {what} holds an integer literal of more than {_INT_DIGITS} digits; it is corrupt "
                    "or hostile.", path=path) from e
    finally:
        _found.bad = outer
    return doc, bad


def holds_bad_number(value: object) -> bool:
    """Whether a parsed JSON value holds a :class:`BadNumber` anywhere (walked without recursion)."""
    todo = [value]
    while todo:
        v = todo.pop()
        t = type(v)
        if t is BadNumber:
            return True
        if t is dict:
            todo.extend(v.values())  # type: ignore[attr-defined]
        elif t is list:
            todo.extend(v)  # type: ignore[arg-type]
    return False


def is_index(v: object) -> bool:
    """Whether ``v`` is a JSON integer usable as a size or offset: 0 <= v <= 2**63 - 1 (not a bool)."""
    return type(v) is int and 0 <= v <= MAX_INDEX


def open_regular(path: str | os.PathLike[str], what: str = "file") -> int:
    """Open ``path`` for reading and return the descriptor; refuse (TraceFormatError) anything
    but a regular file (a FIFO would block, a device would never end), without blocking on it.

    ``FileNotFoundError`` and other ``OSError`` propagate.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise TraceFormatError(f"the {what} is {kind}; expected a regular file.", path=path)
    except BaseException:
        os.close(fd)
        raise
    return fd


# -- header ------------------------------------------------------------------------------------------

def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, TensorEntry], dict[str, str], int]:
    """Parse and check a safetensors file's header.

    Returns:
        (tensors by name, metadata, byte offset of the data buffer).

    Raises:
        TraceFormatError: the file is missing, truncated, not safetensors, or inconsistent (the
            message names the file, and the tensor where one is at fault).
    """
    try:
        fd = open_regular(path, "data file")
    except FileNotFoundError as e:
        raise TraceFormatError("data file is missing.", path=path) from e
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(8)
        if len(prefix) < 8:
            raise TraceFormatError(f"file is {size} bytes long; a safetensors file starts with an 8-byte header length.",
                                   path=path)
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise TraceFormatError(
                f"header length {n} does not fit in a file of {size} bytes (at most {MAX_HEADER_BYTES} bytes of "
                "header are read); the file is truncated or not safetensors.",
                path=path,
            )
        raw = f.read(n)
    if len(raw) != n:
        raise TraceFormatError(f"header of {n} bytes is cut short at {len(raw)}; the file changed while it was read.",
                               path=path)
    if not raw.lstrip().startswith(b"{"):
        raise TraceFormatError("header is not valid safetensors JSON (it does not start with '{').", path=path)
    header, bad = load_json(raw, path=path, what="safetensors header")
    if type(header) is not dict:
        raise TraceFormatError("header is not valid safetensors JSON (not a JSON object).", path=path)
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if type(meta) is not dict or not all(type(v) is str for v in meta.values()):
        raise TraceFormatError(f"header's __metadata__ must be an object of strings, got {_short(meta)}.", path=path)
    entries: dict[str, TensorEntry] = {}
    data_len = size - 8 - n
    for name, info in header.items():
        entries[name] = _entry(path, name, info, data_len)
    if bad:  # a non-finite number outside every field checked above (all are): still refuse it
        raise TraceFormatError(f"header holds the number {bad[0]!r}; a safetensors header holds only integers.",
                               path=path)
    # The tensors tile the buffer, back to back from 0 (as the safetensors format requires); they
    # are usually listed in that order already.
    at = 0
    for e in entries.values():
        if e.begin != at:
            break
        at = e.end
    else:
        if at == data_len:
            return entries, meta, 8 + n
    at = 0
    for e in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if e.begin != at:
            what = "overlap the tensor before it" if e.begin < at else f"leave bytes [{at}, {e.begin}) unused"
            raise TraceFormatError(f'tensor "{e.name}" starts at byte {e.begin} of the data buffer, which would {what}; '
                                   "the file is corrupt.", path=path)
        at = e.end
    if at != data_len:
        raise TraceFormatError(
            f"tensors cover {at} bytes but the data buffer holds {data_len}; the file is truncated or has trailing bytes.",
            path=path,
        )
    return entries, meta, 8 + n


def _short(v: object, limit: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit - 12] + "..." + text[-8:]


def _entry(path: str | os.PathLike[str], name: str, info: object, data_len: int) -> TensorEntry:
    """One checked tensor of a header: well-formed ones in one pass (a header may list 65,536),
    the rest by :func:`_checked_entry`, which raises naming what is wrong."""
    if type(info) is dict:
        dtype = info.get("dtype")
        shape = info.get("shape")
        offsets = info.get("data_offsets")
        d = DTYPES.get(dtype) if type(dtype) is str else None
        if d is not None and type(shape) is list and len(shape) <= MAX_NDIM and type(offsets) is list \
                and len(offsets) == 2:
            begin, end = offsets
            if type(begin) is int and type(end) is int and 0 <= begin <= end <= data_len:
                count = 1
                for n in shape:
                    if type(n) is not int or n < 0:
                        break
                    count *= n
                else:  # count > 0 is bounded by the buffer; an empty tensor may declare any other sizes
                    if count and end - begin == count * d.itemsize:
                        return TensorEntry(name, dtype, tuple(shape), begin, end)
    return _checked_entry(path, name, info, data_len)


def _checked_entry(path: str | os.PathLike[str], name: str, info: object, data_len: int) -> TensorEntry:
    """One tensor of a header, checked field by field (see :func:`_entry`)."""
    def bad(msg: str) -> TraceFormatError:
        return TraceFormatError(f'tensor "{_short(name, 120)[1:-1]}": {msg}', path=path)

    if type(info) is not dict:
        raise bad(f"expected an object with dtype, shape and data_offsets, got {_short(info)}.")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
    if missing:
        raise bad(f"the header entry has no {', '.join(missing)}.")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if type(dtype) is not str or dtype not in DTYPES:
        raise bad(f"unknown dtype {_short(dtype)}; expected one of {', '.join(DTYPES)}.")
    if type(shape) is not list or len(shape) > MAX_NDIM or not all(is_index(s) for s in shape):
        raise bad(f"shape must be a list of at most {MAX_NDIM} non-negative integers, got {_short(shape)}.")
    if type(offsets) is not list or len(offsets) != 2 or not all(is_index(x) for x in offsets):
        raise bad(f"data_offsets must be two non-negative integers [begin, end], got {_short(offsets)}.")
    begin, end = offsets
    itemsize = DTYPES[dtype].itemsize
    count = 1
    nonzero = 1
    for s in shape:
        count *= s
        if s:
            nonzero *= s
    if nonzero * itemsize > MAX_INDEX:
        raise bad(f"shape {shape} of {dtype} would need more than 2**63 bytes; the file is corrupt.")
    if not begin <= end:
        raise bad(f"data_offsets [{begin}, {end}] end before they begin.")
    if end > data_len:
        raise bad(f"claims bytes [{begin}, {end}) but the data buffer holds {data_len} bytes; the file is truncated "
                  "or corrupt.")
    if end - begin != count * itemsize:
        raise bad(f"claims bytes [{begin}, {end}) ({end - begin} bytes) for shape {shape} of {dtype}, which needs "
                  f"{count * itemsize}; the file is corrupt.")
    return TensorEntry(name, dtype, tuple(shape), begin, end)
