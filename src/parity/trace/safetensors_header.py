"""Minimal safetensors header codec, so stages can be streamed to disk and memory-mapped back.

The file layout is the public safetensors format: an 8-byte little-endian header length N, N
bytes of JSON (``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``,
padded with spaces to a multiple of 8), then the byte buffer, tensors back to back with no holes.
The ``safetensors`` package reads our files (tests check it); we write them ourselves because it
can neither stream an array that is larger than memory nor store bfloat16 from NumPy.

Reading is strict, since a data file may be hostile: the header length must fit in the file, the
JSON (parsed by :func:`parity.trace.jsonsafe.load_json`) must nest no deeper than
:data:`parity.limits.MAX_NESTING` and hold only finite numbers, and
every tensor must have a known dtype, a shape of non-negative integers and offsets that tile the
data buffer exactly. Anything else is a :class:`~parity.errors.TraceFormatError` naming the file
and the tensor.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import TraceFormatError
from .dtypes import DTYPES
from .jsonsafe import load_json

__all__ = ["TensorEntry", "encode_header", "read_header", "parse_header", "data_start", "open_data_file", "open_regular", "is_index", "MAX_HEADER_BYTES",
           "MAX_INDEX", "MAX_NDIM"]

MAX_HEADER_BYTES = 100 * 1024 * 1024
#: Largest integer (a dimension, an offset, a byte count) a trace file may hold: NumPy's sizes are int64.
MAX_INDEX = 2**63 - 1
#: Most dimensions a stored value may have (NumPy's own limit).
MAX_NDIM = 64 if int(np.__version__.split(".")[0]) >= 2 else 32


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header: its name, dtype code, shape and bytes ``[begin, end)`` of
    the data buffer.

    >>> TensorEntry("x", "F32", (2, 3), 0, 24)
    TensorEntry(name='x', dtype='F32', shape=(2, 3), begin=0, end=24)
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offset inside the byte buffer
    end: int


def encode_header(entries: list[TensorEntry], metadata: dict[str, str] | None = None) -> bytes:
    """Return the 8-byte length prefix plus the JSON header, padded with spaces to a multiple of 8.

    >>> raw = encode_header([TensorEntry("x", "F32", (2,), 0, 8)])
    >>> len(raw) % 8, raw[8:].rstrip()
    (0, b'{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}')
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    for e in entries:
        header[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [e.begin, e.end]}
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw


def is_index(v: object) -> bool:
    """Whether ``v`` is a JSON integer usable as a size or offset: 0 <= v <= 2**63 - 1 (not a bool).

    >>> is_index(0), is_index(2**63), is_index(True), is_index(-1)
    (True, False, False, False)
    """
    return type(v) is int and 0 <= v <= MAX_INDEX


def open_regular(path: str | os.PathLike[str], what: str = "file") -> int:
    """Open ``path`` for reading and return the descriptor; refuse (TraceFormatError) anything
    but a regular file (a FIFO would block, a device would never end), without blocking on it.

    ``FileNotFoundError`` and other ``OSError`` propagate.

    >>> os.close(open_regular("parity.toml"))
    >>> open_regular("ref.trace", "manifest")
    Traceback (most recent call last):
    ...
    parity.errors.TraceFormatError: ref.trace: the manifest is a directory; expected a regular file.
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

    >>> tensors, meta, start = read_header("ref.trace/data/000000.safetensors")
    >>> tensors["embedding"], meta
    (TensorEntry(name='embedding', dtype='F64', shape=(8, 32), begin=0, end=2048), {'format': 'parity-trace'})
    """
    with open_data_file(path) as f:
        size = os.fstat(f.fileno()).st_size

        def read_range(start: int, end: int) -> bytes:
            f.seek(start)
            return f.read(end - start)

        return parse_header(read_range, size, os.fspath(path))


def open_data_file(path: str | os.PathLike[str]):
    """A data file opened for reading as a regular file; a missing one is a TraceFormatError.

    >>> with open_data_file("ref.trace/data/000000.safetensors") as f:
    ...     len(f.read(8))
    8
    """
    try:
        fd = open_regular(path, "data file")
    except FileNotFoundError as e:
        raise TraceFormatError("data file is missing.", path=path) from e
    return os.fdopen(fd, "rb")


def data_start(prefix: bytes, size: int, path: str) -> int:
    """Offset of the data buffer of a safetensors file of ``size`` bytes whose first 8 bytes are
    ``prefix`` (the header length), checked to fit; the header itself is not read.

    >>> data = open("ref.trace/data/000000.safetensors", "rb").read()
    >>> data_start(data[:8], len(data), "x") == 8 + int.from_bytes(data[:8], "little")
    True
    """
    n = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
    if n < 0 or 8 + n > size or n > MAX_HEADER_BYTES:
        raise TraceFormatError(f"header length {n} does not fit in a file of {size} bytes; the file is truncated or "
                               "not safetensors.", path=path)
    return 8 + n


def parse_header(read_range: Callable[[int, int], bytes], size: int, path: str
                 ) -> tuple[dict[str, TensorEntry], dict[str, str], int]:
    """:func:`read_header` over any byte source: ``read_range(start, end)`` returns bytes
    ``[start, end)`` of a file of ``size`` bytes named ``path`` in messages. Two reads: the
    8-byte length, then the header; the data buffer is never read (a remote trace fetches
    these two ranges only).

    >>> data = open("ref.trace/data/000000.safetensors", "rb").read()
    >>> tensors, meta, start = parse_header(lambda a, b: data[a:b], len(data), "in memory")
    >>> tensors["embedding"].shape, start == 8 + int.from_bytes(data[:8], "little")
    ((8, 32), True)
    """
    prefix = read_range(0, 8) if size >= 8 else b""
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
    raw = read_range(8, 8 + n)
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
