"""Minimal safetensors header codec, so stages can be streamed to disk and memory-mapped back.

The file layout is the public safetensors format: an 8-byte little-endian header length N, N
bytes of JSON (``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``,
padded with spaces to a multiple of 8), then the byte buffer, tensors back to back with no holes.
The ``safetensors`` package reads our files (tests check it); we write them ourselves because it
can neither stream an array that is larger than memory nor store bfloat16 from NumPy.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

from ..errors import TraceFormatError
from .dtypes import DTYPES

MAX_HEADER_BYTES = 100 * 1024 * 1024


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


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, TensorEntry], dict[str, str], int]:
    """Parse and check a safetensors file's header.

    Returns:
        (tensors by name, metadata, byte offset of the data buffer).

    Raises:
        TraceFormatError: the file is missing, truncated, not safetensors, or inconsistent.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise TraceFormatError(f"file is {size} bytes long; a safetensors file starts with an 8-byte header length.", path=path)
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise TraceFormatError(
                    f"header length {n} does not fit in a file of {size} bytes; the file is truncated or not safetensors.",
                    path=path,
                )
            raw = f.read(n)
    except FileNotFoundError as e:
        raise TraceFormatError("data file is missing.", path=path) from e
    except IsADirectoryError as e:
        raise TraceFormatError("expected a safetensors file, found a directory.", path=path) from e
    try:
        if not raw.lstrip().startswith(b"{"):
            raise ValueError("header does not start with '{'")
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise TraceFormatError(f"header is not valid safetensors JSON ({e}).", path=path) from e
    meta = header.pop("__metadata__", None) or {}
    entries: dict[str, TensorEntry] = {}
    data_len = size - 8 - n
    for name, info in header.items():
        try:
            dtype = info["dtype"]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise TraceFormatError(f'tensor "{name}" has a malformed header entry ({e}).', path=path) from e
        if dtype not in DTYPES:
            raise TraceFormatError(f'tensor "{name}" has unknown dtype {dtype!r}; expected one of {", ".join(DTYPES)}.', path=path)
        count = 1
        for s in shape:
            if s < 0:
                raise TraceFormatError(f'tensor "{name}" has a negative dimension in shape {shape}.', path=path)
            count *= s
        if not (0 <= begin <= end <= data_len) or end - begin != count * DTYPES[dtype].itemsize:
            raise TraceFormatError(
                f'tensor "{name}" claims bytes [{begin}, {end}) for shape {shape} {dtype}, but the data buffer '
                f"holds {data_len} bytes; the file is truncated or corrupt.",
                path=path,
            )
        entries[name] = TensorEntry(name, dtype, shape, begin, end)
    covered = sum(e.end - e.begin for e in entries.values())
    if covered != data_len:
        raise TraceFormatError(
            f"tensors cover {covered} bytes but the data buffer holds {data_len}; the file is truncated or has trailing bytes.",
            path=path,
        )
    return entries, meta, 8 + n
