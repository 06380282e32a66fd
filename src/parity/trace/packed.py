"""The packed fast path of :class:`~parity.trace.writer.TraceWriter`: stages whose bytes already lie
back to back in one buffer become one data file, written straight from that buffer.

This is how :func:`parity.torch.capture` streams activations. A capturing thread calls
:meth:`~_PackedWriting.pack` (cheap: keys, entries and the header, no disk access); a writer thread
calls :meth:`~_PackedWriting.write_packed_file` (the file, the GIL released by the C module) and
:meth:`~_PackedWriting.commit_packed` (the journal), in the order the shards were packed.
:meth:`~_PackedWriting.add_packed` does all three.

>>> import os, tempfile
>>> from parity.trace import TraceWriter
>>> data = np.arange(4, dtype=np.float32).view(np.uint8)
>>> stages = [PackedStage("a", "F32", (2,), 0, 8), PackedStage("b", "F32", (2,), 8, 8)]
>>> with TraceWriter(os.path.join(tempfile.mkdtemp(), "p.trace")) as w:
...     w.add_packed(stages, data)
['a', 'b']
"""

from __future__ import annotations

import math
import os
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..errors import TraceError, UsageError
from ._jsontext import _encode_str, _entry_text, _field_text, _indices_entry, _join_fields, _journal_text, _keyed
from .checksum import crc32, crc32_combine, crc32_hex
from .datafiles import _HEADER_START, _PAGE, _header_item, _write_packed_file
from .dtypes import DTYPES, DType
from .index import derivable_indices
from .index_writer import RowsBuilder, meta_fields
from .layout import data_file

__all__ = ["PackedStage", "PackedShard"]


class PackedStage(NamedTuple):
    """One stage of :meth:`TraceWriter.add_packed`: where its bytes lie in the packed buffer, and its entry.

    >>> PackedStage("h", "F32", (2, 4), offset=64, nbytes=32, axes=["seq", "hidden"]).nbytes
    32
    >>> PackedStage("note", "", (), offset=96, nbytes=0, text="warm-up done").text
    'warm-up done'
    """

    key: str
    dtype: str  # safetensors dtype code, e.g. "F32"
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    crc: int | None = None  # CRC-32 of its bytes, when the caller computed it while copying them
    axes: Sequence[str] | None = None
    indices: Mapping[str, object] | None = None
    provenance: Mapping[str, object] | None = None
    units: str | None = None
    text: str | None = None  # a text stage (dtype "", no bytes) instead of a tensor


class PackedShard(NamedTuple):
    """A data file prepared by :meth:`TraceWriter.pack`, to be written by :meth:`TraceWriter.write_packed`
    (see the example there).

    >>> from parity.trace import TraceWriter
    >>> data = np.arange(4, dtype=np.float32).view(np.uint8)
    >>> with TraceWriter("p.trace") as w:
    ...     shard = w.pack([PackedStage("a", "F32", (2,), 0, 8), PackedStage("b", "F32", (2,), 8, 8)], data)
    ...     w.write_packed(shard)
    >>> shard.rel, shard.keys, shard.size, parity.load_trace("p.trace")["b"]
    ('data/000000.safetensors', ['a', 'b'], 16, array([2., 3.], dtype=float32))
    """

    seq: int
    rel: str
    header: bytes
    data: np.ndarray
    size: int
    crc: int | None  # of the whole file; None until every stage's CRC is known
    stages: list[PackedStage]
    texts: list[tuple[str, str]]  # each stage's (manifest, journal) text
    keys: list[str]
    written: bool = False  # set by write_packed_file
    rows: Any = None  # the stages' rows for the stage index (parity.trace.index.Rows), when the writer keeps one


# (base key, its indices, the stage, its dtype, and for a tensor its shared field texts (dtype,
# [axes, dtype texts], [provenance, shape, units texts]), for a text stage its entry)
_Checked = tuple[str, dict[str, object], PackedStage, "DType | None", Any]


class _PackedWriting:
    """:class:`~parity.trace.writer.TraceWriter`'s packed stages (a mixin: the methods below share
    the writer's state and call its core: ``_base_key``, ``_entry``, ``_number``, ``_flush``,
    ``_journal_append``)."""

    path: str
    _closed: bool
    _lock: threading.RLock
    _shard: int
    _packed_seq: int
    _packed_written: int
    _files: dict[str, dict[str, Any]]
    _index_builder: Any
    # the writer's core (parity.trace.writer)
    _base_key: Callable[[str, Mapping[str, object] | None], tuple[str, dict[str, object]]]
    _entry: Callable[..., dict[str, Any]]
    _number: Callable[[str], tuple[str, int]]
    _flush: Callable[[], None]
    _journal_append: Callable[..., None]

    def add_packed(self, stages: Sequence[PackedStage], data: np.ndarray, *, size: int | None = None) -> list[str]:
        """Record several stages whose bytes already lie back to back in ``data``; return their keys.

        The stages become one data file, written straight from ``data`` (with direct I/O, which
        bypasses the page cache, when ``data`` starts on a page boundary and the file system
        allows it). This is how :func:`parity.torch.capture` streams activations: the hooks copy
        each tensor into a staging buffer (computing its CRC-32 on the way); full buffers are
        prepared with :meth:`pack` on the capturing thread and written with :meth:`write_packed`
        on a writer thread. ``add_packed`` does both.

        Args:
            stages: in execution order, each :class:`PackedStage` at ``offset`` = the sum of the
                ``nbytes`` before it (the first at 0), ``offset`` a multiple of its itemsize.
                ``crc`` is the CRC-32 of its bytes, or ``None`` to compute it here. A stage with
                ``text`` is a text stage (``dtype`` ``""``, no bytes).
            data: a 1-D ``uint8`` array holding the stages' bytes from offset 0.
            size: bytes of ``data`` in use (default: the sum of ``nbytes``). Direct I/O writes
                whole pages, so bytes of ``data`` after ``size`` up to the next 4096-byte
                boundary may be overwritten with zeros.

        Raises:
            StageKeyError, UsageError: a key, dtype, shape or axes is invalid (nothing is written).
            TraceError: the writer is closed, or the stages do not tile ``data``.
        """
        shard = self.pack(stages, data, size=size)
        if shard is not None:
            self.write_packed(shard)
            return shard.keys
        return []

    def pack(self, stages: Sequence[PackedStage], data: np.ndarray, *, size: int | None = None) -> PackedShard | None:
        """Check ``stages``, give them their keys and manifest entries, and prepare their data file.

        Cheap (no disk access unless stages added with :meth:`add` are waiting), so a capturing
        thread can call it and leave the writing to another thread: :meth:`write_packed` must then
        be called for every prepared file, in the order :meth:`pack` returned them (until then the
        stages are not in the trace). Returns ``None`` for no stages. See :meth:`add_packed`.

        >>> from parity.trace import TraceWriter
        >>> w = TraceWriter("p.trace")
        >>> shard = w.pack([PackedStage("a", "U8", (4,), 0, 4)], np.arange(4, dtype=np.uint8))
        >>> shard.keys, shard.rel, len(shard.header) % 4096   # the data starts on a page
        (['a'], 'data/000000.safetensors', 0)
        >>> w.commit_packed(w.write_packed_file(shard))   # on a writer thread, in pack() order
        >>> w.close(); parity.load_trace("p.trace")["a"].tolist()
        [0, 1, 2, 3]
        """
        if self._closed:
            raise TraceError("the trace writer is closed; stages can no longer be added.", path=self.path)
        entries, offset = self._check_packed(stages)
        size = offset if size is None else int(size)
        if size != offset or data.ndim != 1 or data.dtype != np.uint8 or data.nbytes < size:
            raise TraceError(f"the packed stages hold {offset} bytes but the buffer offers {size} of {data.nbytes}.",
                             path=self.path)
        if not entries:
            return None
        with self._lock:
            if self._closed:
                raise TraceError("the trace writer is closed; stages can no longer be added.", path=self.path)
            self._flush()  # keep execution order: stages added before these are journaled first
            numbered = [self._number(base) for base, *_ in entries]
            tensors = [(final, st, dtype) for (final, _), (_, _, st, dtype, _) in zip(numbered, entries)
                       if dtype is not None]
            rel = data_file(self._shard) if tensors else ""
            if tensors:
                self._shard += 1
            seq = self._packed_seq
            self._packed_seq += 1
        texts = _packed_texts(numbered, entries, rel)
        header, crc = _packed_header(tensors, data) if tensors else (b"", None)
        rows = _packed_rows(numbered, entries) if self._index_builder is not None else None
        return PackedShard(seq, rel, header, data, size, crc, [st for _, st, _ in tensors], texts,
                           [final for final, _ in numbered], rows=rows)

    def _check_packed(self, stages: Sequence[PackedStage]) -> tuple[list[_Checked], int]:
        """Each stage checked, with its base key and entry fields (see ``_Checked``); and the bytes
        they hold. Tensor stages with the same dtype, shape, axes, units and provenance objects (a
        capture repeats them stage after stage) share their checked, rendered fields; only the key,
        indices, occurrence and file are rendered per stage."""
        entries: list[_Checked] = []
        fields: dict[tuple[Any, ...], tuple[DType, list[str], list[str]]] = {}
        offset = 0
        for st in stages:
            base, merged = self._base_key(st.key, st.indices)
            if st.text is not None:
                if st.nbytes:
                    raise TraceError("a text stage holds no bytes.", path=self.path, stage=base)
                entry = self._entry(base, merged, None, None, None, st.units, st.provenance)
                entry["text"] = str(st.text)
                entries.append((base, merged, st, None, entry))
                continue
            shape = st.shape if type(st.shape) is tuple else tuple(st.shape)
            memo = (st.dtype, shape, id(st.axes), id(st.provenance), st.units)
            known = fields.get(memo)
            if known is None:
                known = fields[memo] = self._shared_fields(base, st, shape)
                shape = tuple(int(n) for n in shape)
            dtype = known[0]
            count = math.prod(shape)
            if st.offset != offset or st.nbytes != count * dtype.itemsize or offset % dtype.itemsize:
                raise TraceError(f"packed stage at bytes [{st.offset}, {st.offset + st.nbytes}) does not follow the "
                                 f"previous one at {offset}, or does not hold shape {list(shape)} of {dtype.name}.",
                                 path=self.path, stage=base)
            offset += st.nbytes
            entries.append((base, merged, st, dtype, known))
        return entries, offset

    def _shared_fields(self, base: str, st: PackedStage, shape: tuple[int, ...]) -> tuple[DType, list[str], list[str]]:
        """The dtype of a tensor stage and the texts of its fields that stages like it share, in key
        order around the per-stage ones: axes dtype | file indices key kind occurrence | provenance
        shape units."""
        dtype = DTYPES.get(st.dtype)
        if dtype is None:
            raise UsageError(f"unknown dtype code {st.dtype!r}; expected one of {sorted(DTYPES)}.", stage=base)
        entry = self._entry(base, {}, dtype, tuple(int(n) for n in shape), st.axes, st.units, st.provenance)
        return (dtype, [_field_text(k, entry[k]) for k in ("axes", "dtype") if k in entry],
                [_field_text(k, entry[k]) for k in ("provenance", "shape", "units") if k in entry])

    def write_packed(self, shard: PackedShard) -> None:
        """Write a data file prepared by :meth:`pack` and journal its stages (see there).

        The same as :meth:`commit_packed` of :meth:`write_packed_file`.
        """
        self.commit_packed(self.write_packed_file(shard))

    def write_packed_file(self, shard: PackedShard) -> PackedShard:
        """Write the data file of ``shard`` (under a temporary name, then renamed); return ``shard``
        with its CRC. Touches nothing else of the writer, so a writer thread can call it while the
        capturing thread goes on; :meth:`commit_packed` then adds its stages to the trace. With the
        C module the whole file is written with the GIL released."""
        if not shard.rel:
            return shard._replace(written=True)
        crc = shard.crc if shard.crc is not None else _file_crc(shard.header, shard.stages, shard.data)
        _write_packed_file(os.path.join(self.path, shard.rel), shard.header, shard.data, shard.size)
        return shard._replace(crc=crc, written=True)

    def commit_packed(self, shard: PackedShard) -> None:
        """Journal the stages of a written :meth:`write_packed_file` shard: from now on they are in
        the trace. Shards must be committed in the order :meth:`pack` prepared them."""
        with self._lock:
            if shard.seq != self._packed_written:
                raise TraceError(f"packed data files must be committed in the order they were prepared: got "
                                 f"#{shard.seq}, expected #{self._packed_written}.", path=self.path)
            if not shard.written:
                raise TraceError("commit_packed() takes the shard write_packed_file() returned.", path=self.path)
            self._packed_written += 1
            file = None
            if shard.rel:
                file = (shard.rel, {"bytes": len(shard.header) + shard.size, "crc32": crc32_hex(shard.crc)})
                self._files[shard.rel] = file[1]
            offsets = None
            if shard.rows is not None:
                begins = np.fromiter((st.offset for st in shard.stages), dtype=np.int64, count=len(shard.stages))
                offsets = (begins, begins + np.fromiter((st.nbytes for st in shard.stages), dtype=np.int64,
                                                        count=len(shard.stages)))
            self._journal_append(shard.texts, file=file, offsets=offsets, rows=shard.rows)


def _packed_texts(numbered: list[tuple[str, int]], entries: list[_Checked], rel: str) -> list[tuple[str, str]]:
    """Each stage's (manifest, journal) text, given its (final key, occurrence) and file."""
    texts = []
    file_text = _field_text("file", rel)
    kind_text = _field_text("kind", "tensor")
    for (final, n), (_, merged, st, dtype, known) in zip(numbered, entries):
        if dtype is None:  # a text stage: its whole entry
            text = _entry_text(_keyed(known, final, n))
        else:
            parts = known[1] + [file_text]
            if merged:
                parts.append(_field_text("indices", _indices_entry(merged)))
            parts += ('"key": ' + _encode_str(final), kind_text)
            if n:
                parts.append('"occurrence": ' + int.__repr__(n))
            text = _join_fields(parts + known[2])
        texts.append((text, _journal_text(text)))
    return texts


def _packed_rows(numbered: list[tuple[str, int]], entries: list[_Checked]) -> Any:
    """The stages' rows for the stage index. Tensor stages that share their field texts (see
    ``_check_packed``) and whose indices the key gives share one fields object."""
    rows = RowsBuilder()
    shared: dict[int, dict[str, Any] | None] = {}
    for (final, _), (_, merged, st, dtype, known) in zip(numbered, entries):
        if dtype is None:  # a text stage: known is its entry
            rows.add(final, None, None, meta_fields(None, known.get("units"), known.get("indices"),
                                                    known.get("provenance"), known["text"]))
            continue
        indices = _indices_entry(merged) if merged else None
        own = indices is not None and not derivable_indices(indices)
        fields = None if own else shared.get(id(known), False)
        if fields is False or own:
            axes = [str(a) for a in st.axes] if st.axes is not None else None
            fields = meta_fields(axes, str(st.units) if st.units is not None else None, indices,
                                 dict(st.provenance) if st.provenance else None)
            if not own:
                shared[id(known)] = fields
        rows.add(final, dtype.code, st.shape, fields)
    return rows.take()


def _packed_header(tensors: list[tuple[str, PackedStage, DType]], data: np.ndarray) -> tuple[bytes, int | None]:
    """The header of a packed data file, and the file's CRC-32 when every stage's CRC is known."""
    parts = [_HEADER_START] + [_header_item(final, dtype.code, st.shape, st.offset, st.offset + st.nbytes)
                               for final, st, dtype in tensors]
    raw = (",".join(parts) + "}").encode("ascii")
    # Pad the header with spaces (safetensors allows it) so the data starts on a page
    # boundary: it can then go to disk straight from a page-aligned buffer (direct I/O).
    raw += b" " * (-(8 + len(raw)) % _PAGE)
    header = struct.pack("<Q", len(raw)) + raw
    if all(st.crc is not None for _, st, _ in tensors):
        return header, _file_crc(header, [st for _, st, _ in tensors], data)
    return header, None


def _file_crc(header: bytes, stages: Sequence[PackedStage], data: np.ndarray) -> int:
    """CRC-32 of a packed data file: its header, then each stage's bytes (their CRCs combined)."""
    c = crc32(header)
    for st in stages:
        part = crc32(data[st.offset:st.offset + st.nbytes]) if st.crc is None else st.crc
        c = crc32_combine(c, part, st.nbytes)
    return c
