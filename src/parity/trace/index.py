"""The stage index: how a trace of many stages (decode steps, solver iterations) lists them.

A manifest that lists a million stages is 140 MB of JSON, and opening it took 15 s. A trace of
more than :data:`INDEX_THRESHOLD` stages (or any trace, with ``TraceWriter(index=True)``) lists
them instead in ``index.safetensors``, one column per field (docs/format.md, "Stage index"):

==============  =====  ================================================================
tensor          dtype  per stage (n rows) unless said
==============  =====  ================================================================
``keys``        U8     every key, joined by ``\\n`` (keys hold no newline)
``dtype``       U8     number of its dtype in the header's ``dtypes`` list; 255: a text stage
``ndim``        U8     number of dimensions
``dims``        I64    every stage's dimensions, back to back (``sum(ndim)`` values)
``file``        I32    number ``N`` of its data file ``data/NNNNNN.safetensors``; -1: text
``begin``       I64    its bytes ``[begin, end)`` in that file's data buffer
``end``         I64
``meta``        I32    its row of ``meta_json``; -1: none
``meta_json``   U8     a JSON list of distinct objects of the rarer fields: ``axes``,
                       ``units``, ``indices`` (when the key's own do not give them),
                       ``provenance``, ``text``
==============  =====  ================================================================

Positions are row numbers; ``occurrence`` is the key's ``#N``; ``indices`` not in ``meta_json``
are the key's ``[name=value]``, values that are integers as ints. The manifest (schema version
2) keeps every trace-level field, and names the index with its size, CRC-32 and stage count.

Reading (:class:`StageIndex`) checks every column as a whole with NumPy (keys against the key
grammar, dtypes, shapes, byte ranges against the data files' sizes, tiling) and makes
:class:`~parity.trace.stage.Stage` objects only when asked. Writing (``IndexBuilder``) collects
the rows as the writer journals its stages (:mod:`parity.trace.index_writer`).

>>> import tempfile, os
>>> from parity.trace import TraceWriter, load_trace
>>> path = os.path.join(tempfile.mkdtemp(), "many.trace")
>>> with TraceWriter(path, index=True) as w:
...     w.add_batch([f"iter.{i}.residual" for i in range(3)], [(2,)] * 3, np.arange(6.0))
['iter.0.residual', 'iter.1.residual', 'iter.2.residual']
>>> t = load_trace(path)
>>> t.manifest["schema_version"], t.manifest["index"]["stages"], t.stage("iter.2.residual").shape
(2, 3, (2,))
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import TraceFormatError
from .dtypes import DTYPES
from .keys import _KEY_RE, MAX_KEY_LENGTH
from .jsonsafe import load_json
from .safetensors_header import MAX_NDIM, TensorEntry, parse_header
from .stage import Stage, new_stage
from .layout import data_file

__all__ = ["INDEX_THRESHOLD", "StageEntries", "key_indices"]

#: Traces of more stages than this get a stage index (``TraceWriter(index=None)``, the default).
INDEX_THRESHOLD = 65_536
INDEX_FORMAT = "parity-stage-index"
TEXT = 255  # the dtype column of a text stage
_DTYPE_CODES = tuple(DTYPES)
_ITEMSIZE = np.array([DTYPES[c].itemsize for c in _DTYPE_CODES] + [0] * (256 - len(_DTYPE_CODES)), dtype=np.int64)
_COLUMNS = {"dims": "I64", "begin": "I64", "end": "I64", "file": "I32", "meta": "I32", "dtype": "U8", "ndim": "U8",
            "keys": "U8", "meta_json": "U8"}  # widest first: every column is aligned
_NP = {"I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "U8": np.dtype("u1")}
_META_FIELDS = ("axes", "units", "indices", "provenance", "text")
_SCANS_BEFORE_TABLE = 8  # lookups by key that scan the keys before a lookup table is made
_INT_TEXT = re.compile(r"-?[1-9][0-9]{0,17}|0")


def key_indices(key: str) -> dict[str, int | str]:
    """The indices a key's ``[name=value,...]`` give: integer values as ints, the rest as text.

    >>> key_indices("logits[layer=3,mode=fast]#2"), key_indices("x")
    ({'layer': 3, 'mode': 'fast'}, {})
    """
    lb = key.find("[")
    if lb < 0:
        return {}
    out: dict[str, int | str] = {}
    for part in key[lb + 1:key.rfind("]")].split(","):
        name, _, value = part.partition("=")
        out[name] = int(value) if _INT_TEXT.fullmatch(value) else value
    return out


def derivable_indices(indices: Mapping[str, Any]) -> bool:
    """Whether a stage's indices are what :func:`key_indices` reads from its key (the writer
    made the key from them): true when every value is an int (not a bool), written as its repr."""
    return all(type(v) is int for v in indices.values())


def _key_occurrence(key: str) -> int:
    hash_at = key.rfind("#")
    return int(key[hash_at + 1:]) if hash_at >= 0 else 0


def file_number(rel: str) -> int:
    """The number of a data file from its name (``data/000012.safetensors``: 12)."""
    return int(rel[rel.index("/") + 1:rel.rindex(".")])



# -- reading ----------------------------------------------------------------------------------------------

_NEWLINE, _PLAIN, _SPECIAL, _DOT = 1, 2, 3, 4  # kinds of the bytes of keys (0: no key holds it)
_CHAR_KIND = np.zeros(256, np.uint8)
_CHAR_KIND[np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_", np.uint8)] = _PLAIN
_CHAR_KIND[np.frombuffer(b"+-:@[]=,#", np.uint8)] = _SPECIAL  # only keys with indices, occurrences or +-:@
_CHAR_KIND[ord(".")] = _DOT
_CHAR_KIND[ord("\n")] = _NEWLINE


class StageIndex:
    """The checked stage index of a trace (see the module docstring): columns, and the
    :class:`~parity.trace.stage.Stage` of any row made on demand.

    Args:
        raw: the bytes of ``index.safetensors`` (checked against the manifest's CRC by the caller).
        label: the file's name in messages.
        count: the number of stages the manifest says the index holds.
        data_lengths: ``{file number: bytes of its data buffer}`` of every data file the manifest lists.

    Raises:
        TraceFormatError: the index is malformed, or disagrees with the manifest or the data files
            (naming the index file, and the stage at fault).
    """

    def __init__(self, raw: bytes, label: str, count: int, data_lengths: Mapping[int, int]):
        self.label = label
        cols = self._columns(raw, count)
        self.n = count
        self.dtype, self.ndim, self.dims = cols["dtype"], cols["ndim"], cols["dims"]
        self.file, self.begin, self.end, self.meta = cols["file"], cols["begin"], cols["end"], cols["meta"]
        self.keys = self._check_keys(cols["keys"])
        self.shape_start = np.zeros(count + 1, np.int64)
        np.cumsum(self.ndim, out=self.shape_start[1:])
        self.metas = self._check_meta(cols["meta_json"])
        self._check_rows(data_lengths)
        self._rows: dict[str, int] | None = None
        self._scans = 0
        self._lists: tuple[list[int], list[int], list[int], list[int], list[int]] | None = None  # whole columns
        self.file_names = {int(f): data_file(int(f)) for f in data_lengths}
        self.data_lengths = dict(data_lengths)

    # -- checks ---------------------------------------------------------------------------------------
    def _fail(self, row: int | None, msg: str) -> TraceFormatError:
        where = ""
        if row is not None:
            keys = getattr(self, "keys", None)
            where = f"stage {keys[row]!r} (#{row}): " if keys is not None else f"stage #{row}: "
        return TraceFormatError(f"stage index: {where}{msg}", path=self.label)

    def _columns(self, raw: bytes, count: int) -> dict[str, np.ndarray]:
        entries, meta, start = parse_header(lambda a, b: raw[a:b], len(raw), self.label)
        if meta.get("format") != INDEX_FORMAT or meta.get("version") != "1":
            raise self._fail(None, f'expected __metadata__ {{"format": "{INDEX_FORMAT}", "version": "1"}}, got '
                                   f"{json.dumps(meta)[:200]}.")
        codes = meta.get("dtypes", "").split(",")
        if codes != list(_DTYPE_CODES[:len(codes)]):
            raise self._fail(None, f"the dtypes list {meta.get('dtypes', '')[:200]!r} is not this parity's "
                                   f"({','.join(_DTYPE_CODES)}).")
        self.ncodes = len(codes)
        cols: dict[str, np.ndarray] = {}
        for name, code in _COLUMNS.items():
            e = entries.get(name)
            if e is None or e.dtype != code or len(e.shape) != 1:
                got = "nothing" if e is None else f"{e.dtype} {list(e.shape)}"
                raise self._fail(None, f'column "{name}" must be a 1-D {code} tensor, got {got}.')
            cols[name] = np.frombuffer(raw, _NP[code], e.shape[0], start + e.begin)
        extra = sorted(set(entries) - set(_COLUMNS))
        if extra:
            raise self._fail(None, f"unknown columns {extra[:5]}.")
        for name in ("dtype", "ndim", "file", "begin", "end", "meta"):
            if cols[name].size != count:
                raise self._fail(None, f'column "{name}" has {cols[name].size} rows but the manifest says the index '
                                       f"holds {count} stages.")
        return cols

    def _check_keys(self, blob: np.ndarray) -> list[str]:
        n = self.n
        if n == 0:
            if blob.size:
                raise self._fail(None, "holds keys but no stages.")
            return []
        kind = _CHAR_KIND[blob]  # one pass over the keys: each byte's kind
        newlines = np.flatnonzero(kind == _NEWLINE)
        if not kind.all():
            at = int(np.flatnonzero(kind == 0)[0])
            raise self._fail(None, f"key #{int(np.searchsorted(newlines, at))} holds the byte {int(blob[at])!r}, which "
                                   "no stage key holds.")
        if newlines.size != n - 1:
            raise self._fail(None, f"holds {newlines.size + 1} keys for {n} stages.")
        starts = np.concatenate(([0], newlines + 1))
        ends = np.concatenate((newlines, [blob.size]))
        lengths = ends - starts
        keys = self.keys = str(blob.data, "ascii").split("\n")
        wrong = np.flatnonzero((lengths < 1) | (lengths > MAX_KEY_LENGTH))
        if wrong.size:
            raise self._fail(int(wrong[0]), f"a stage key is 1 to {MAX_KEY_LENGTH} characters long.")
        # Keys of letters, digits, _ and dots only (most): their grammar is "no empty segment"
        simple = ~np.logical_or.reduceat(kind == _SPECIAL, starts)
        dot = kind == _DOT
        empty = dot[starts] | dot[ends - 1]
        doubled = np.flatnonzero(dot[:-1] & dot[1:])
        if doubled.size:
            empty[np.searchsorted(newlines, doubled)] = True
        wrong = np.flatnonzero(empty & simple)
        if wrong.size:
            raise self._fail(int(wrong[0]), "is not a valid stage key (an empty dot-separated segment).")
        for row in np.flatnonzero(~simple).tolist():  # the rest against the grammar itself
            m = _KEY_RE.match(keys[row])
            if m is None or len(m.group("occ") or "") > 18:
                raise self._fail(row, "is not a valid stage key (see docs/format.md, Stage keys).")
        hashes = np.fromiter(map(hash, keys), dtype=np.int64, count=n)
        order = np.argsort(hashes)
        same = np.flatnonzero(hashes[order[1:]] == hashes[order[:-1]])
        if same.size:
            seen: dict[str, int] = {}
            for row in sorted(set(order[same].tolist()) | set(order[same + 1].tolist())):
                if keys[row] in seen:
                    raise self._fail(row, f"is listed twice (also at #{seen[keys[row]]}).")
                seen[keys[row]] = row
        return keys

    def _check_meta(self, blob: np.ndarray) -> list[tuple[tuple[str, ...] | None, str | None, dict | None, dict, str | None]]:
        doc, bad = load_json(blob.tobytes(), path=self.label, what="stage index's meta_json")
        if type(doc) is not list:
            raise self._fail(None, "meta_json must be a JSON list of objects.")
        if bad:
            raise self._fail(None, f"meta_json holds the number {bad[0]!r}; a trace holds only finite numbers.")
        out = []
        for i, m in enumerate(doc):
            out.append(_checked_meta(m, lambda msg, i=i: self._fail(None, f"meta_json entry #{i}: {msg}")))
        used = self.meta[self.meta >= 0]
        if used.size and (int(used.max()) >= len(out)):
            row = int(np.flatnonzero(self.meta >= len(out))[0])
            raise self._fail(row, f"meta row {int(self.meta[row])} is past the {len(out)} of meta_json.")
        wrong = np.flatnonzero(self.meta < -1)
        if wrong.size:
            raise self._fail(int(wrong[0]), f"meta row {int(self.meta[wrong[0]])} must be -1 or a row of meta_json.")
        return out

    def _check_rows(self, data_lengths: Mapping[int, int]) -> None:
        code, ndim, n = self.dtype, self.ndim, self.n
        text = code == TEXT
        tensor = ~text

        def first(mask: np.ndarray, msg: str) -> None:
            wrong = np.flatnonzero(mask)
            if wrong.size:
                raise self._fail(int(wrong[0]), msg)

        first(tensor & (code >= self.ncodes), f"dtype number must be below {self.ncodes} (or {TEXT} for text).")
        first(ndim > MAX_NDIM, f"a stored value has at most {MAX_NDIM} dimensions.")
        first(text & (ndim != 0), "a text stage has no dimensions.")
        if self.dims.size != int(self.shape_start[-1]):
            raise self._fail(None, f'column "dims" holds {self.dims.size} values; the ndim column needs '
                                   f"{int(self.shape_start[-1])}.")
        if self.dims.size and int(self.dims.min()) < 0:
            row = int(np.searchsorted(self.shape_start, int(np.flatnonzero(self.dims < 0)[0]), side="right")) - 1
            raise self._fail(row, "a dimension must be a non-negative integer.")
        # element counts: exact (int64) where the float product says no overflow is possible
        count = np.ones(n, np.int64)
        wide = np.ones(n, np.float64)
        has = np.flatnonzero(ndim > 0)
        if has.size:
            at = self.shape_start[has]
            count[has] = np.multiply.reduceat(self.dims, at)
            wide[has] = np.multiply.reduceat(np.maximum(self.dims, 1).astype(np.float64), at)
        itemsize = _ITEMSIZE[code]
        first(tensor & (wide * itemsize > 2.0**62), "its shape would need more than 2**62 bytes.")
        nbytes = count * itemsize
        mmeta = self.meta
        with_meta = np.flatnonzero(mmeta >= 0)
        axes_len = np.array([-1 if m[0] is None else len(m[0]) for m in self.metas] + [-1], np.int64)
        has_text = np.array([m[4] is not None for m in self.metas] + [False], bool)
        first(text & ~has_text[mmeta], "a text stage needs its text (in meta_json).")
        first(tensor & has_text[mmeta], "a tensor stage has no text.")
        alen = axes_len[mmeta]
        first((alen >= 0) & ((alen != ndim) | text), "its axes do not name one axis per dimension.")
        del with_meta
        # byte ranges: inside the data buffer of a listed data file, tiling each buffer exactly
        fmax = max(data_lengths, default=-1)
        length = np.full(fmax + 2, -1, np.int64)  # the last: any file number not listed
        for f, size in data_lengths.items():
            length[f] = size
        file = self.file.astype(np.int64)
        first(text & ((file != -1) | (self.begin != 0) | (self.end != 0)), "a text stage has no data file or bytes.")
        first(tensor & ((file < 0) | (file > fmax) | (length[np.clip(file, 0, fmax + 1)] < 0)),
              "points at a data file the manifest does not list.")
        begin, end = self.begin, self.end
        flen = length[np.clip(file, 0, fmax + 1)]
        first(tensor & ((begin < 0) | (end - begin != nbytes) | (end > flen)),
              "claims bytes [begin, end) that do not hold its shape and dtype inside its data file's buffer.")
        rows = np.flatnonzero(tensor)
        f, b, e = file[rows], begin[rows], end[rows]
        if rows.size > 1 and not bool(np.all((f[1:] > f[:-1]) | ((f[1:] == f[:-1]) & (b[1:] >= e[:-1])))):
            order = np.lexsort((e, b, f))
            rows, f, b, e = rows[order], f[order], b[order], e[order]
        new_file = np.ones(rows.size, bool)
        new_file[1:] = f[1:] != f[:-1]
        prev_end = np.zeros(rows.size, np.int64)
        prev_end[1:] = e[:-1]
        first_mask = np.zeros(n, bool)
        first_mask[rows[b != np.where(new_file, 0, prev_end)]] = True
        first(first_mask, "its bytes overlap another stage's, or leave a gap before them, in its data file.")
        last = np.ones(rows.size, bool)
        last[:-1] = new_file[1:]
        covered = dict(zip(f[last].tolist(), e[last].tolist()))
        for fnum, size in sorted(data_lengths.items()):
            if covered.get(fnum, 0) != size:
                raise self._fail(None, f"its stages cover {covered.get(fnum, 0)} bytes of {data_file(fnum)}, whose "
                                       f"data buffer holds {size}; the file or the index is truncated or foreign.")

    # -- rows -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n

    def row(self, key: str) -> int | None:
        """The row of ``key`` (``None``: no such stage). The first few lookups scan the key column
        (a report asks for a stage or two); the lookup table is made at the next."""
        rows = self._rows
        if rows is None:
            if self._scans < _SCANS_BEFORE_TABLE:
                self._scans += 1
                try:
                    return self.keys.index(key)
                except ValueError:
                    return None
            rows = self._rows = dict(zip(self.keys, range(self.n)))
        return rows.get(key)

    def span(self, first: int, end: int) -> tuple[str, int, int, str] | None:
        """``(data file, begin, end, dtype code)`` of rows ``first..end-1`` when they are non-empty
        tensors of one dtype and size lying back to back in one data file (the bytes
        ``[begin, end)`` of its data buffer hold them in order), else ``None``."""
        if not 0 <= first < end <= self.n:
            return None
        code, f = int(self.dtype[first]), int(self.file[first])
        b, e = self.begin[first:end], self.end[first:end]
        if code == TEXT or f < 0 or e[0] == b[0]:
            return None
        if end - first > 1 and not (bool((self.dtype[first:end] == code).all()) and bool((self.file[first:end] == f).all())
                                    and bool((b[1:] == e[:-1]).all()) and bool(((e - b) == (e[0] - b[0])).all())):
            return None
        return self.file_names[f], int(b[0]), int(e[-1]), _DTYPE_CODES[code]

    def _columns_as_lists(self, first: int, end: int) -> tuple[int, list[int], list[int], list[int], list[int], list[int]]:
        """Rows ``first..end-1`` of the columns as lists, and the row of their first item: the
        whole columns (made once) for a walk over much of the trace, else just those rows."""
        if self._lists is None and end - first < max(1, self.n // 8):
            s0, s1 = int(self.shape_start[first]), int(self.shape_start[end])
            starts = (self.shape_start[first:end + 1] - s0).tolist()
            return (first, self.dtype[first:end].tolist(), starts, self.dims[s0:s1].tolist(),
                    self.file[first:end].tolist(), self.meta[first:end].tolist())
        if self._lists is None:
            self._lists = (self.dtype.tolist(), self.shape_start.tolist(), self.dims.tolist(), self.file.tolist(),
                           self.meta.tolist())
        return (0, *self._lists)

    def stage(self, row: int) -> Stage:
        return next(self.stages(row, row + 1))

    def stages(self, first: int = 0, end: int | None = None) -> Iterator[Stage]:
        """The :class:`Stage` of rows ``first..end-1``, made one by one."""
        end = self.n if end is None else end
        base, codes, starts, dims, files, metas = self._columns_as_lists(first, end)
        keys, meta_list, names = self.keys, self.metas, _DTYPE_CODES
        file_names = self.file_names
        for row in range(first, end):
            key = keys[row]
            at = row - base
            m = metas[at]
            indices = key_indices(key) if "[" in key else {}
            occurrence = _key_occurrence(key) if "#" in key else 0
            c = codes[at]
            if m < 0:
                yield new_stage(key, "tensor", names[c], tuple(dims[starts[at]:starts[at + 1]]), None, None, indices, {},
                                occurrence, row, file_names[files[at]], None)
                continue
            axes, units, own, prov, text = meta_list[m]
            if own is not None:
                indices = dict(own)
            if c == TEXT:
                yield new_stage(key, "text", None, (), axes, units, indices, dict(prov), occurrence, row, None, text)
            else:
                yield new_stage(key, "tensor", names[c], tuple(dims[starts[at]:starts[at + 1]]), axes, units, indices,
                                dict(prov), occurrence, row, file_names[files[at]], None)

    def extent(self, row: int) -> TensorEntry:
        """Row ``row``'s bytes in its data file, as the file's own header would list them."""
        s = self.stage(row)
        return TensorEntry(s.key, s.dtype or "", s.shape, int(self.begin[row]), int(self.end[row]))

    def entry(self, row: int) -> dict[str, Any]:
        """Row ``row`` as a manifest of schema version 1 would list it."""
        return stage_entry(self.stage(row))


def stage_entry(s: Stage) -> dict[str, Any]:
    """The manifest entry (schema version 1) of a stage."""
    e: dict[str, Any] = {"key": s.key, "kind": s.kind}
    if s.kind == "text":
        e["text"] = s.text
    else:
        e.update(dtype=s.dtype, shape=list(s.shape), file=s.file)
    if s.axes is not None:
        e["axes"] = list(s.axes)
    if s.units is not None:
        e["units"] = s.units
    if s.indices:
        e["indices"] = dict(s.indices)
    if s.provenance:
        e["provenance"] = dict(s.provenance)
    if s.occurrence:
        e["occurrence"] = s.occurrence
    return e


def _checked_meta(m: object, fail: Any) -> tuple[tuple[str, ...] | None, str | None, dict | None, dict, str | None]:
    """One entry of ``meta_json``, checked: (axes, units, indices, provenance, text)."""
    if type(m) is not dict:
        raise fail("expected an object.")
    unknown = sorted(set(m) - set(_META_FIELDS))
    if unknown:
        raise fail(f"unknown fields {unknown[:5]}.")
    axes = m.get("axes")
    if axes is not None and (type(axes) is not list or not all(type(a) is str for a in axes)):
        raise fail("axes must be a list of strings.")
    units = m.get("units")
    if units is not None and type(units) is not str:
        raise fail("units must be a string.")
    indices = m.get("indices")
    if indices is not None and (type(indices) is not dict
                                or not all(type(v) in (str, int, float, bool) for v in indices.values())):
        raise fail("indices must be an object of strings, numbers and booleans.")
    provenance = m.get("provenance", {})
    if type(provenance) is not dict:
        raise fail("provenance must be an object.")
    text = m.get("text")
    if text is not None and type(text) is not str:
        raise fail("text must be a string.")
    return (tuple(axes) if axes is not None else None), units, indices, provenance, text


class StageEntries(Sequence):
    """``Trace.manifest["stages"]`` of an indexed trace: a read-only sequence of the stage entries a
    schema-version-1 manifest would list, each made when asked for (equal to a list of them).

    >>> import tempfile, os
    >>> from parity.trace import TraceWriter, load_trace
    >>> path = os.path.join(tempfile.mkdtemp(), "e.trace")
    >>> with TraceWriter(path, index=True) as w:
    ...     _ = w.add("e", 1.5, indices={"step": 3})
    >>> load_trace(path).manifest["stages"][0]
    {'key': 'e[step=3]', 'kind': 'tensor', 'dtype': 'F64', 'shape': [], 'file': 'data/000000.safetensors', 'indices': {'step': 3}}
    """

    def __init__(self, index: StageIndex):
        self._index = index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._index.entry(r) for r in range(len(self))[i]]
        return self._index.entry(range(len(self))[i])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return map(stage_entry, self._index.stages())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (StageEntries, list)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"<{len(self)} stage entries of {self._index.label}>"


class FileExtents(Mapping):
    """The tensors of one data file, by key, as its safetensors header lists them, from the index
    (what :class:`~parity.trace.reader.Trace` reads for a trace that lists its stages: the header)."""

    def __init__(self, index: StageIndex, number: int):
        self._index, self._number = index, number

    def __getitem__(self, key: str) -> TensorEntry:
        row = self._index.row(key)
        if row is None or int(self._index.file[row]) != self._number:
            raise KeyError(key)
        return self._index.extent(row)

    def __iter__(self) -> Iterator[str]:
        keys = self._index.keys
        return (keys[r] for r in np.flatnonzero(self._index.file == self._number).tolist())

    def __len__(self) -> int:
        return int(np.count_nonzero(self._index.file == self._number))
