"""Writing the stage index (:mod:`parity.trace.index`): :class:`IndexBuilder` collects its rows as
:class:`~parity.trace.writer.TraceWriter` journals its stages, and writes ``index.safetensors`` on
close. Each way in gives its stages' rows: :meth:`IndexBuilder.add_entry` (an entry dict, from
``add``), :class:`Rows` (a piece of ``add_batch``: :func:`batch_rows`; a packed shard), then the
data file and byte ranges of the tensor stages (:func:`shard_offsets`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any, NamedTuple

import numpy as np

from .checksum import crc32
from .index import _COLUMNS, _DTYPE_CODES, INDEX_FORMAT, TEXT, derivable_indices
from .safetensors_header import TensorEntry, encode_header

__all__ = ["write_columns"]


class Rows(NamedTuple):
    """Stages rendered together (a piece of an ``add_batch`` call, a packed shard), for the index:
    keys, dtype numbers (``TEXT`` for text stages), the shapes of the tensor stages, and the
    (row, fields) of the stages with any of the rarer fields (see :data:`_META_FIELDS`)."""

    keys: list[str]
    codes: list[int]
    shapes: list[tuple[int, ...]]
    meta: list[tuple[int, dict[str, Any]]]


class RowsBuilder:
    """:class:`Rows` made one stage at a time."""

    def __init__(self) -> None:
        self.rows = Rows([], [], [], [])

    def add(self, key: str, code: str | None, shape: tuple[int, ...] | None, fields: dict[str, Any] | None) -> None:
        r = self.rows
        if fields is not None:
            r.meta.append((len(r.keys), fields))
        r.keys.append(key)
        if code is None:
            r.codes.append(TEXT)
        else:
            r.codes.append(_DTYPE_CODES.index(code))
            r.shapes.append(tuple(shape or ()))

    def take(self) -> Rows:
        rows, self.rows = self.rows, Rows([], [], [], [])
        return rows


def dtype_number(code: str) -> int:
    """The number of a dtype code in the index's ``dtype`` column."""
    return _DTYPE_CODES.index(code)


def meta_fields(axes: Any = None, units: Any = None, indices: Mapping[str, Any] | None = None,
                provenance: Mapping[str, Any] | None = None, text: str | None = None) -> dict[str, Any] | None:
    """A stage's rarer fields as the index stores them (``None`` for none); ``indices`` only when
    the key does not give them."""
    fields: dict[str, Any] = {}
    if axes is not None:
        fields["axes"] = list(axes)
    if units is not None:
        fields["units"] = units
    if indices and not derivable_indices(indices):
        fields["indices"] = dict(indices)
    if provenance:
        fields["provenance"] = dict(provenance)
    if text is not None:
        fields["text"] = text
    return fields or None


def shard_offsets(tensors: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """The bytes ``[begin, end)`` of every tensor stage of a shard that ``datafiles._write_shard_file``
    writes from ``tensors`` (``_Pending`` stages and ``_batch._Run`` runs), in the order of
    ``tensors``: the file holds them widest itemsize first (a stable sort), back to back."""
    sizes: list[np.ndarray] = []
    for t in tensors:
        if hasattr(t, "infos"):  # a _Run: stages first..end of a batch, text stages (count -1) skipped
            counts = np.fromiter((info[0] for info in t.infos[t.first:t.end]), dtype=np.int64, count=t.end - t.first)
            sizes.append(counts[counts >= 0] * t.dtype.itemsize)
        else:
            sizes.append(np.array([t.array.nbytes], dtype=np.int64))
    starts = [0] * len(tensors)
    at = 0
    for i in sorted(range(len(tensors)), key=lambda i: -tensors[i].dtype.itemsize):
        starts[i] = at
        at += int(sizes[i].sum())
    if not sizes:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    begins = np.concatenate([s + np.cumsum(z) - z for s, z in zip(starts, sizes)])
    return begins, begins + np.concatenate(sizes)


class IndexBuilder:
    """The index columns of a trace being written, row by row as its stages are journaled: rows
    (:meth:`add_entry`, :meth:`add_rows`), then the data file of the tensor rows added since the
    last file (:meth:`add_file`)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.codes: list[int] = []
        self.shapes: list[tuple[int, ...]] = []  # tensor rows only
        self.files: list[int] = []  # tensor rows only
        self.begins: list[np.ndarray] = []
        self.ends: list[np.ndarray] = []
        self.meta_rows: list[int] = []
        self.meta_ids: list[int] = []
        self._meta_texts: dict[str, int] = {}
        self._open = 0  # tensor rows waiting for their file
        self._last: tuple[Any, int] = (None, -1)  # the last fields object added, and its meta row

    def __len__(self) -> int:
        return len(self.keys)

    def add_entry(self, e: Mapping[str, Any]) -> None:
        """One stage, from its manifest entry."""
        tensor = e["kind"] == "tensor"
        if tensor:
            self.codes.append(_DTYPE_CODES.index(e["dtype"]))
            self.shapes.append(tuple(e["shape"]))
            self._open += 1
        else:
            self.codes.append(TEXT)
        fields = meta_fields(e.get("axes"), e.get("units"), e.get("indices"), e.get("provenance"), e.get("text"))
        if fields is not None:
            self._add_meta(len(self.keys), fields)
        self.keys.append(e["key"])

    def add_rows(self, rows: Rows) -> None:
        first = len(self.keys)
        self.keys.extend(rows.keys)
        self.codes.extend(rows.codes)
        self.shapes.extend(rows.shapes)
        self._open += len(rows.shapes)
        for i, fields in rows.meta:
            self._add_meta(first + i, fields)

    def _add_meta(self, row: int, fields: dict[str, Any]) -> None:
        if fields is not self._last[0]:  # stages in a row often share one fields object
            text = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            self._last = (fields, self._meta_texts.setdefault(text, len(self._meta_texts)))
        self.meta_rows.append(row)
        self.meta_ids.append(self._last[1])

    def add_file(self, number: int | None, begins: np.ndarray, ends: np.ndarray) -> None:
        """The tensor rows added since the last call lie in data file ``number``, at these bytes."""
        assert len(begins) == self._open, f"{self._open} tensor stages journaled with {len(begins)} byte ranges"
        if self._open:
            assert number is not None
            self.files.extend([number] * self._open)
            self.begins.append(np.asarray(begins, np.int64))
            self.ends.append(np.asarray(ends, np.int64))
        self._open = 0

    def columns(self) -> dict[str, np.ndarray]:
        """Every column of the index (see the module's table)."""
        n = len(self.keys)
        codes = np.array(self.codes, dtype=np.uint8)
        tensor = codes != TEXT
        ndim = np.zeros(n, np.uint8)
        ndim[tensor] = np.fromiter(map(len, self.shapes), dtype=np.uint8, count=len(self.shapes))
        file = np.full(n, -1, np.int32)
        begin = np.zeros(n, np.int64)
        end = np.zeros(n, np.int64)
        file[tensor] = self.files
        if self.begins:
            begin[tensor] = np.concatenate(self.begins)
            end[tensor] = np.concatenate(self.ends)
        meta = np.full(n, -1, np.int32)
        meta[self.meta_rows] = self.meta_ids
        meta_json = ("[" + ",".join(self._meta_texts) + "]").encode("utf-8")  # dicts keep insertion (id) order
        return {"dims": np.fromiter(chain.from_iterable(self.shapes), dtype=np.int64), "begin": begin, "end": end,
                "file": file, "meta": meta, "dtype": codes, "ndim": ndim,
                "keys": np.frombuffer("\n".join(self.keys).encode("ascii"), np.uint8),
                "meta_json": np.frombuffer(meta_json, np.uint8)}

    def write(self, f: Any) -> tuple[int, int]:
        """Write the index file to the open binary file ``f``; return its size and CRC-32."""
        return write_columns(f, self.columns())


def write_columns(f: Any, cols: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """Write an index file of these columns (see :mod:`parity.trace.index`) to the open binary file
    ``f``; return its size and CRC-32.

    >>> import io
    >>> from parity.trace.index import _COLUMNS, _NP
    >>> buf = io.BytesIO()
    >>> size, crc = write_columns(buf, {n: np.zeros(0, _NP[c]) for n, c in _COLUMNS.items()})
    >>> size == len(buf.getvalue()), buf.getvalue()[:1] != b""
    (True, True)
    """
    entries, at = [], 0
    for name, code in _COLUMNS.items():
        nbytes = cols[name].nbytes
        entries.append(TensorEntry(name, code, (cols[name].size,), at, at + nbytes))
        at += nbytes
    header = encode_header(entries, {"format": INDEX_FORMAT, "version": "1", "dtypes": ",".join(_DTYPE_CODES)})
    f.write(header)
    c = crc32(header)
    for name in _COLUMNS:
        data = np.ascontiguousarray(cols[name]).view(np.uint8)
        f.write(data)
        c = crc32(data, c)
    return len(header) + at, c


def batch_rows(keys: list[str], first: int, end: int, code: str, counts: list[int], shapes: Sequence[Any],
                ind_texts: list[Any], prov_texts: Any, provenance: Any, absent: Any) -> Rows:
    """The stage index rows of stages first..end-1 of a batch (``keys``: theirs, numbered), from
    what ``_batch._BatchWriting._record_batch`` rendered (``absent``: no indices / provenance): indices and provenance mappings (or the
    provenance columns) for the few fields the index keeps per stage."""
    n = end - first
    cnt = counts[first:end]
    text_rows: set[int] = set()
    if cnt.count(-1) == 0:
        codes = [dtype_number(code)] * n
        shp = list(shapes[first:end])
    else:
        number = dtype_number(code) if code else TEXT
        codes = [TEXT if c < 0 else number for c in cnt]
        shp = [s for s, c in zip(shapes[first:end], cnt) if c >= 0]
        text_rows = {i for i, c in enumerate(cnt) if c < 0}
    its = ind_texts[first:end]
    want = set(text_rows)
    if its.count(absent) != n:
        want.update(i for i, t in enumerate(its) if t is not absent)
    columns = isinstance(provenance, Mapping)
    if columns:
        for col in provenance.values():
            want.update(i for i, v in enumerate(col[first:end]) if v is not None)
    elif type(prov_texts) is list and prov_texts[first:end].count(absent) != n:
        want.update(i for i, t in enumerate(prov_texts[first:end]) if t is not absent)
    meta = []
    for i in sorted(want):
        j = first + i
        prov = ({k: col[j] for k, col in provenance.items() if col[j] is not None} if columns else prov_texts[j][2])
        fields = meta_fields(None, None, its[i][2], prov, shapes[j] if i in text_rows else None)
        if fields is not None:
            meta.append((i, fields))
    return Rows(keys, codes, shp, meta)
