"""The data files of a trace: safetensors shards, written crash-safely, page-aligned when packed.

A shard's header is built as JSON text (the text :func:`parity.trace.safetensors_header.encode_header`
would write; a shard may hold 65,536 stages) and the file written under a temporary name, then
renamed. Packed files (:mod:`parity.trace.packed`) go to disk straight from a page-aligned buffer
with direct I/O where the file system allows it, by the optional C module
:mod:`parity.trace._stage` (the GIL released) or by :func:`_write_data_file`. :func:`byte_chunks`
streams an array's bytes in bounded pieces, for any writer of safetensors files.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
from collections.abc import Iterator, Sequence
from typing import IO, Any

import numpy as np

from ..safefs import NOFOLLOW, atomic_file, open_new, removed_on_error, temp_name
from .checksum import crc32
from .dtypes import DType
from .layout import FORMAT_NAME

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no O_DIRECT either, so never needed
    fcntl = None  # type: ignore[assignment]

try:  # the C module's GIL-free version of _write_data_file + os.replace (POSIX builds)
    from ._stage import write_file as _stage_write  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised by tests that force the fallback
    _stage_write = None

__all__ = ["byte_chunks"]

_CHUNK = 16 * 1024 * 1024
_PAGE = 4096  # direct I/O alignment (buffer address, file offset, length)
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_DIRECT_MIN = 1 << 20  # smaller files are written ordinarily
# Each tensor stage counts at least this many bytes towards the shard buffer, so a shard holds at
# most buffer_bytes / _MIN_STAGE_COST stages (65,536 by default) and its safetensors header stays a
# few MB: a log of scalars would otherwise put millions of entries (hundreds of MB) in one header,
# past what safetensors readers accept.
_MIN_STAGE_COST = 1024
_HEADER_START = '{"__metadata__":{"format":"' + FORMAT_NAME + '"}'


def _open_scratch(path: str) -> tuple[IO[bytes], str]:
    """A new scratch file for reading and writing, and its name: an unguessable name beside
    ``path``, created ``O_EXCL | O_NOFOLLOW`` (never a file or link planted there)."""
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666)
    return os.fdopen(fd, "w+b"), tmp


def _header_item(key: str, code: str, shape: Sequence[int], begin: int, end: int) -> str:
    """One tensor of a safetensors header, as the JSON text of ``encode_header``."""
    return f'"{key}":{{"dtype":"{code}","shape":[{",".join(map(str, shape))}],"data_offsets":[{begin},{end}]}}'


class _Pending:
    """A stage added with :meth:`TraceWriter.add`, waiting for its shard (``_batch._Run`` is the other
    kind of shard member: both give their ``header_items`` and their ``array``)."""

    __slots__ = ("key", "array", "dtype")

    def __init__(self, key: str, array: np.ndarray, dtype: DType):
        self.key, self.array, self.dtype = key, array, dtype

    def header_items(self, parts: list[str], offset: int) -> int:
        """Append this stage's header item, its bytes from ``offset``; return the offset after them."""
        end = offset + self.array.nbytes
        parts.append(_header_item(self.key, self.dtype.code, self.array.shape, offset, end))
        return end


def _shard_header(tensors: Sequence[Any], order: list[int]) -> tuple[bytes, int]:
    """The header of a shard holding ``tensors`` in ``order``, and the size of its data buffer."""
    parts = [_HEADER_START]
    offset = 0
    for i in order:
        offset = tensors[i].header_items(parts, offset)
    raw = (",".join(parts) + "}").encode("ascii")  # keys are ASCII by their grammar
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw, offset


def _write_shard_file(full: str, tensors: Sequence[Any]) -> tuple[int, int]:
    """Write a shard of ``tensors`` (``_Pending`` stages and ``_batch._Run`` runs) to ``full``,
    atomically; return its size in bytes and its CRC-32."""
    # Widest items first keeps every tensor aligned to its itemsize (as safetensors does).
    order = sorted(range(len(tensors)), key=lambda i: -tensors[i].dtype.itemsize)
    header, data_bytes = _shard_header(tensors, order)
    h = crc32(header)
    with atomic_file(full) as f:
        f.write(header)
        small: list[bytes] = []  # many tiny stages (scalars from a log): one write per ~1 MiB
        held = 0
        for i in order:
            t = tensors[i]
            arr = t.array
            if type(t) is _Pending and arr.nbytes <= 4096:
                small.append(arr.tobytes())
                held += arr.nbytes
                if held < 1 << 20:
                    continue
                chunks: Any = [b"".join(small)]
                small, held = [], 0
            else:
                if small:
                    block = b"".join(small)
                    f.write(block)
                    h = crc32(block, h)
                    small, held = [], 0
                chunks = byte_chunks(arr)
            for chunk in chunks:
                f.write(chunk)
                h = crc32(chunk, h)
        if small:
            block = b"".join(small)
            f.write(block)
            h = crc32(block, h)
    return len(header) + data_bytes, h


def _write_packed_file(full: str, header: bytes, data: np.ndarray, size: int) -> None:
    """Write ``header`` then ``data[:size]`` to ``full`` under a temporary name, then rename it."""
    tmp = temp_name(full)  # created O_EXCL | O_NOFOLLOW, by the C module or _write_data_file
    direct = bool(_O_DIRECT) and size >= _DIRECT_MIN
    if _stage_write is not None:
        _stage_write(tmp, full, header, data, size, direct)
    else:
        with removed_on_error(tmp):
            _write_data_file(tmp, header, data, size, direct)
            os.replace(tmp, full)


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    while len(view):
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _write_data_file(path: str, header: bytes, data: np.ndarray, size: int, direct: bool = True) -> None:
    """Write ``header`` then ``data[:size]`` to a new file ``path``, created ``O_EXCL | O_NOFOLLOW``
    (never a file or link that was already there).

    With direct I/O (``O_DIRECT``: the disk reads the buffer itself, no copy into the page cache,
    almost no CPU) when ``data`` is page-aligned, the header a whole number of pages, and the file
    system accepts it; otherwise (``direct=False``, another OS, tmpfs) with ordinary writes. Both
    give the same bytes. (The C module's ``write_file`` does the same with the GIL released.) The
    file is opened once; direct I/O is switched on with ``fcntl`` (and off again for an ordinary
    write). The last partial page goes through ``data`` zero-padded when ``data`` has the room,
    else through an ordinary write.
    """
    direct = bool(direct and _O_DIRECT and fcntl is not None and len(header) % _PAGE == 0
                  and data.ctypes.data % _PAGE == 0)
    fd = open_new(path, 0o666)
    try:
        if direct:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT)
            except OSError:  # the file system has no direct I/O
                direct = False
        if direct:
            try:
                page = mmap.mmap(-1, len(header))  # page-aligned, as direct I/O needs
                page.write(header)
                _write_all(fd, memoryview(page), 0)
                del page  # unmapped when no view of it is left (a traceback may still hold one)
                whole = size - size % _PAGE
                view = memoryview(data)
                _write_all(fd, view[:whole], len(header))
                if whole < size:
                    if data.nbytes >= whole + _PAGE:
                        data[size:whole + _PAGE] = 0
                        _write_all(fd, view[whole:whole + _PAGE], len(header) + whole)
                        os.ftruncate(fd, len(header) + size)
                    else:
                        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
                        _write_all(fd, view[whole:size], len(header) + whole)
                return
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
                    raise
            # the file system refused direct I/O after all: write it again, ordinarily
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
            os.ftruncate(fd, 0)
        _write_all(fd, memoryview(header), 0)
        _write_all(fd, memoryview(data)[:size], len(header))
    finally:
        os.close(fd)


def byte_chunks(arr: np.ndarray) -> Iterator[bytes | memoryview]:
    """Yield the C-order bytes of ``arr`` in pieces of at most 16 MiB, without copying a
    contiguous array (a view of it each); other arrays are copied a block of rows at a time.

    >>> a = np.arange(6, dtype=np.int16).reshape(2, 3).T   # not C-contiguous
    >>> b"".join(byte_chunks(a)) == a.tobytes()
    True
    """
    if arr.ndim == 0 or arr.size == 0:
        yield np.ascontiguousarray(arr).tobytes()
        return
    if arr.flags.c_contiguous:
        flat = memoryview(arr.reshape(-1).view(np.uint8))
        for start in range(0, len(flat), _CHUNK):
            yield flat[start:start + _CHUNK]
        return
    rows = max(1, _CHUNK // max(arr[0].nbytes, 1))
    for start in range(0, arr.shape[0], rows):
        yield np.ascontiguousarray(arr[start:start + rows]).tobytes()
