"""The batch fast path of :class:`~parity.trace.writer.TraceWriter`: :meth:`~_BatchWriting.add_batch`
records many stages in one call (an imported log's millions of scalars), the same bytes as
:meth:`~parity.trace.writer.TraceWriter.add` one stage at a time.

Entries are rendered as text directly, many at a time (by the optional C module
:mod:`parity.trace._render` where it is built, else by the Python code here, which gives the same
text), and the batch is cut into shards where ``add`` would flush. Rendered entries waiting for
their shard go to a scratch file past ``_SPILL_BYTES``.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import IO, Any, NamedTuple

import numpy as np

from ..errors import StageKeyError, TraceError, UsageError
from ._jsontext import _encode_str, _flat_spec, _flat_texts, _jsonable, _plain, _Spilled
from .convert import as_array
from .datafiles import _MIN_STAGE_COST, _open_scratch
from .dtypes import DType
from .index_writer import Rows, RowsBuilder, batch_rows, meta_fields
from .keys import _INT_BOUND, IDENT_RE, MAX_KEY_LENGTH, _format_value, make_key, validate_key
from .layout import SPILL, data_file

try:  # built from _render.c where a C compiler was found; the same text as the Python code below
    from . import _render  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised by tests that force the fallback
    _render = None

__all__: list[str] = []

_SPILL_BYTES = 256 * 1024 * 1024  # rendered entries held in memory before they go to the SPILL file
_ABSENT: tuple[str, str, None] = ("", "", None)  # no indices / provenance: empty texts
_first, _third = itemgetter(0), itemgetter(2)


class _IntColumn(NamedTuple):
    """Provenance ``{KEY: int}`` for every stage of a batch (a log's line numbers): stage i's texts
    are ``km + str(values[i]) + em`` and ``kj + ... + ej``, unless ``overrides[i]`` gives them."""

    km: str
    em: str
    kj: str
    ej: str
    values: list[int]
    overrides: dict[int, tuple[str, str, None]]

    def expand(self, first: int, end: int) -> list[tuple[str, str, None]]:
        """The texts of stages first..end-1."""
        out = [(f"{self.km}{v}{self.em}", f"{self.kj}{v}{self.ej}", None) for v in self.values[first:end]]
        for i, texts in self.overrides.items():
            if first <= i < end:
                out[i - first] = texts
        return out


class _Run:
    """Consecutive stages ``first:end`` of one :meth:`TraceWriter.add_batch` call (text stages among
    them are skipped): one dtype, their values back to back in ``array``."""

    __slots__ = ("keys", "infos", "first", "end", "array", "dtype")

    def __init__(self, keys: list[str], infos: list[tuple[int, str, str, str]], first: int, end: int,
                 array: np.ndarray, dtype: DType):
        self.keys, self.infos, self.first, self.end, self.array, self.dtype = keys, infos, first, end, array, dtype


    def header_items(self, parts: list[str], offset: int) -> int:
        """Append the header items of the run's tensor stages, their bytes from ``offset``; return
        the offset after them (see ``datafiles._Pending``)."""
        dtype = self.dtype
        if _render is not None:
            text, offset = _render.render_header(self.keys, self.infos, self.first, self.end, offset,
                                                 dtype.itemsize, dtype.code)
            if text:
                parts.append(text)
            return offset
        keys, infos = self.keys[self.first:self.end], self.infos[self.first:self.end]
        if any(info[0] < 0 for info in infos):  # text stages of the batch hold no values
            keep = [i for i, info in enumerate(infos) if info[0] >= 0]
            keys, infos = [keys[i] for i in keep], [infos[i] for i in keep]
        ends = np.cumsum(np.fromiter((info[0] for info in infos), dtype=np.int64, count=len(infos)))
        ends = (ends * dtype.itemsize + offset).tolist()
        starts = [offset] + ends[:-1]
        mid = '":{"dtype":"' + dtype.code + '","shape":'
        parts.extend([f'"{k}{mid}{info[3]},"data_offsets":[{b},{e}]}}'
                      for k, info, b, e in zip(keys, infos, starts, ends)])
        return ends[-1] if ends else offset


def _shape_texts(shape: tuple[int, ...]) -> tuple[str, str, str]:
    """A shape as the manifest (level 2 value), the journal and a safetensors header write it."""
    if not shape:
        return "[]", "[]", "[]"
    manifest = "[" + ",".join("\n    " + str(n) for n in shape) + "\n   ]"
    return manifest, "[" + ", ".join(map(str, shape)) + "]", "[" + ",".join(map(str, shape)) + "]"


def _column_rows(columns: Mapping[str, Sequence[Any]], n: int) -> list[dict[str, Any] | None]:
    """Columns of per-stage values (None: no such entry) → one mapping (or None) per stage."""
    items = list(columns.items())
    return [{k: col[i] for k, col in items if col[i] is not None} or None for i in range(n)]


def _next_occurrence(seen: dict[str, int], base: str) -> tuple[str, int, str, str]:
    """Number the next recording of ``base``: (key, occurrence, manifest text, journal text)."""
    occ = seen.get(base, 0)
    seen[base] = occ + 1
    if not occ:
        return base, 0, "", ""
    return f"{base}#{occ}", occ, f'   "occurrence": {occ},\n', f'"occurrence": {occ}, '


class _BatchWriting:
    """:class:`~parity.trace.writer.TraceWriter`'s batches (a mixin: the methods below share the
    writer's state and call its core: ``_parse_key``, ``_flush``, ``_write_shard``)."""

    path: str
    _closed: bool
    _lock: threading.RLock
    _seen: dict[str, int]
    _keys: list[str]
    _shard: int
    _buffer_limit: int
    _direct_threshold: int
    _pending: list[Any]
    _pending_entries: list[Any]
    _pending_bytes: int
    _pending_text_bytes: int
    _spill: IO[bytes] | None
    _spill_path: str
    _parsed_keys: dict[str, tuple[str, dict[str, str], str]]
    _index_names: set[str]
    _keys_with_indices: bool
    _shape_cache: dict[tuple[int, ...], tuple[int, str, str, str]]
    # the writer's core (parity.trace.writer)
    _parse_key: Callable[[str], tuple[str, dict[str, str], str]]
    _flush: Callable[[], None]
    _write_shard: Callable[[list[Any], list[Any]], None]

    def add_batch(
        self,
        keys: Sequence[str],
        shapes: Sequence[tuple[int, ...] | str],
        data: object = None,
        *,
        indices: Sequence[Mapping[str, object] | None] | None = None,
        provenance: Sequence[Mapping[str, object] | None] | None = None,
    ) -> list[str]:
        """Record many stages at once: the same trace, byte for byte, as :meth:`add` called for each
        stage in order, at a fraction of the cost per stage (for importers of logs with millions of
        small stages).

        Args:
            keys: one key per stage, as for :meth:`add`.
            shapes: per stage, the shape (a tuple) of a tensor stage, whose values are the next
                ``prod(shape)`` elements of ``data``; or a ``str``: a text stage holding that text.
            data: the values of every tensor stage, back to back, as one array (flattened in C
                order); its dtype is the dtype of every tensor stage of the batch.
            indices: ``None``, or per stage the indices to add to its key (or ``None``).
            provenance: ``None``; or per stage its provenance (a mapping, or ``None``); or the
                same as columns: a mapping of each provenance entry to its per-stage values, where
                ``None`` leaves the entry out (``{"line": [3, 4, 4]}``: a log's line numbers).

        Returns:
            The keys the stages were stored under, in order.

        Raises:
            StageKeyError: a key or index is unsafe or malformed.
            UsageError: the lists differ in length, a shape is not a tuple of sizes, ``data`` does
                not hold exactly the values the shapes need or cannot be stored, or a provenance is
                not JSON-serialisable.
            TraceError: the writer is closed.

        Everything is checked before the first stage is recorded: on an error, nothing is added.

        Example:
            >>> import tempfile, os
            >>> from parity.trace import TraceWriter
            >>> with TraceWriter(os.path.join(tempfile.mkdtemp(), "b.trace")) as w:
            ...     w.add_batch(["e", "pos", "e", "method"], [(), (3,), (), "lbfgs"], np.arange(5.0),
            ...                 provenance=[{"line": 1}, {"line": 2}, {"line": 3}, {"line": 4}])
            ['e', 'pos', 'e#1', 'method']
        """
        if self._closed:
            raise TraceError("the trace writer is closed; stages can no longer be added.", path=self.path)
        n = len(keys)
        columns = [(f'values in provenance column "{k}"', c) for k, c in provenance.items()] if isinstance(provenance, Mapping) else []
        for what, seq in (("shapes", shapes), ("indices", indices), ("provenance", provenance), *columns):
            if seq is not None and not isinstance(seq, Mapping) and len(seq) != n:
                raise UsageError(f"add_batch() got {n} keys but {len(seq)} {what}; give one per stage.")
        arr, dtype = self._batch_array(data, keys)
        infos, counts = self._batch_shapes(shapes, arr, dtype)
        parsed = list(map(self._parsed_keys.get, keys))
        if None in parsed:
            parsed = [p or self._parse_key(k) for p, k in zip(parsed, keys)]
        bases, ind_texts, general = self._batch_keys(parsed, indices, n)
        prov_texts, general_prov = self._batch_provenance_texts(provenance, bases, n, general)
        with self._lock:
            if general or general_prov:  # floats, bools, nested values: stage by stage, through the general encoder
                return self._record_batch_general(bases, shapes, infos, arr, dtype, ind_texts, prov_texts)
            return self._record_batch(bases, shapes, infos, counts, arr, dtype, ind_texts, prov_texts, provenance)

    def _batch_shapes(self, shapes: Sequence[tuple[int, ...] | str], arr: np.ndarray | None, dtype: DType | None
                      ) -> tuple[list[tuple[int, str, str, str]], list[int]]:
        """Each stage's (element count, shape texts) (see :meth:`_shape_info`) and element count
        (-1 for a text stage), checked against the values in ``arr``."""
        cache = self._shape_cache
        try:
            infos = list(map(cache.get, shapes))  # map(): C-speed for a million stages
        except TypeError:  # an unhashable shape (a list): _shape_info() says what is wrong
            infos = [None] * len(shapes)
        if None in infos:
            infos = [info or self._shape_info(s) for info, s in zip(infos, shapes)]
        counts = list(map(_first, infos))  # values per stage; -1 for a text stage
        texts = counts.count(-1)
        total = sum(counts) + texts
        if texts < len(counts) and dtype is None:
            raise UsageError("add_batch(): tensor stages need their values in data.")
        if total != (arr.size if arr is not None else 0):
            raise UsageError(f"add_batch(): the shapes need {total} values but data holds "
                             f"{0 if arr is None else arr.size}.")
        return infos, counts  # type: ignore[return-value]

    def _batch_provenance_texts(self, provenance: Any, bases: list[str], n: int, general: bool) -> tuple[Any, bool]:
        """The provenance texts of every stage (see :meth:`_batch_provenance`), and whether any needs
        the general encoder. Columns are rendered as columns unless the batch goes stage by stage."""
        prov_texts: Any = None
        if isinstance(provenance, Mapping):
            if not general:
                prov_texts = self._batch_provenance_columns(provenance, n)
            if prov_texts is None:  # values only the general encoder writes: as one mapping per stage
                provenance = _column_rows(provenance, n)
        if prov_texts is None:
            return self._batch_provenance(provenance, bases, n)
        return prov_texts, False

    def _batch_array(self, data: object, keys: Sequence[str]) -> tuple[np.ndarray | None, DType | None]:
        if data is None:
            return None, None
        converted = as_array(data, stage=keys[0] if len(keys) else None)
        if isinstance(converted, str):
            raise UsageError("add_batch() takes the values of its tensor stages as an array, not a str.")
        arr, dtype = converted
        flat = arr.reshape(-1)
        root = flat
        while isinstance(root, np.ndarray):
            root = root.base
        # Copy (the caller may change its array later) unless nobody can: a view of bytes.
        if not (isinstance(root, bytes) and flat.flags.c_contiguous):
            flat = np.array(flat, copy=True, order="C")
        return flat, dtype

    def _shape_info(self, s: object) -> tuple[int, str, str, str]:
        """(element count, manifest / journal / header texts) of a shape; count -1 for a text stage."""
        if isinstance(s, str):
            return (-1, "", "", "")
        if type(s) is not tuple or not all(type(d) is int and d >= 0 for d in s):
            raise UsageError(f"add_batch(): a shape is a tuple of non-negative ints (or a str for a text stage), not {s!r}.")
        count = 1
        for d in s:
            count *= d
        info = (count, *_shape_texts(s))
        if len(self._shape_cache) < 10_000:
            self._shape_cache[s] = info
        return info

    def _batch_keys(self, parsed: list[tuple[str, dict[str, str], str]],
                    indices: Sequence[Mapping[str, object] | None] | None, n: int) -> tuple[list[str], list[Any], bool]:
        """Each stage's key before its #occurrence (checked as :func:`make_key` checks it), and the
        (manifest text, journal text, dict) of its indices as add() stores them (``_ABSENT`` for
        none; no manifest text when only the general encoder writes them: floats, bools); and
        whether any stage needs the general encoder."""
        bases = list(map(_third, parsed))
        texts: list[Any] = [_ABSENT] * n
        general = False
        todo = list(itertools.compress(range(n), indices)) if indices is not None else []  # stages with indices
        if self._keys_with_indices:  # keys that carry [indices] of their own (rare)
            todo = sorted(set(todo) | {i for i, p in enumerate(parsed) if p[1]})
        last: object = None
        suffix = ""
        text: Any = _ABSENT
        names_ok = self._index_names
        for i in todo:
            name, own, _ = parsed[i]
            ind = indices[i] if indices is not None else None
            if own:  # the key carries [indices] of its own: merge them as add() does
                full = {**own, **ind} if ind else own
                if ind:
                    bases[i] = make_key(name, full)
                last = None
            elif ind is last:  # the fields of one log line share one indices mapping
                bases[i] = name + suffix
                if len(bases[i]) > MAX_KEY_LENGTH:
                    validate_key(bases[i])  # raises: too long
                texts[i] = text
                continue
            else:
                parts = []
                for k in sorted(ind):  # type: ignore[union-attr]
                    if k not in names_ok:
                        if not isinstance(k, str) or not IDENT_RE.match(k):
                            raise StageKeyError(f"index name {k!r} must be an identifier.", stage=name)
                        names_ok.add(k)
                    v = ind[k]  # type: ignore[index]
                    parts.append(k + "=" + (int.__repr__(v) if type(v) is int and -_INT_BOUND < v < _INT_BOUND
                                            else _format_value(k, v)))
                suffix = "[" + ",".join(parts) + "]"
                full = ind  # type: ignore[assignment]
                last = ind
                bases[i] = name + suffix
                if len(bases[i]) > MAX_KEY_LENGTH:
                    validate_key(bases[i])  # raises: too long
            tidy = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in sorted(full.items())}
            flat = _flat_texts("indices", tidy)
            text = (None, "", tidy) if flat is None else (flat[0], flat[1], tidy)
            general = general or flat is None
            texts[i] = text
        return bases, texts, general

    @staticmethod
    def _batch_provenance(provenance, bases: list[str], n: int) -> tuple[list[tuple[str | None, str, Any]], bool]:
        """Per stage: (manifest text, journal text, mapping) of its provenance (_ABSENT for none); the
        manifest text is None when only the general encoder writes it; and whether any is so.
        Checks what add() checks."""
        if provenance is None:
            return [_ABSENT] * n, False
        out: list[tuple[str | None, str, Any]] = []
        last: object = None
        texts: tuple[str | None, str, Any] = _ABSENT
        general = False
        for p, base in zip(provenance, bases):
            if not p:
                out.append(_ABSENT)
                continue
            if p is not last:  # the fields of one log line share one provenance mapping
                flat = _flat_texts("provenance", p) if type(p) is dict else None
                if flat is not None:
                    texts = (flat[0], flat[1], p)
                else:
                    d = dict(p)
                    texts = (None, "", d if _plain(d) else _jsonable(d, f'provenance of "{base}"'))
                    general = True
                last = p
            out.append(texts)
        return out, general

    @staticmethod
    def _batch_provenance_columns(provenance: Mapping[str, Sequence[Any]], n: int) -> list[tuple[str, str, None]] | _IntColumn | None:
        """Per stage, (manifest text, journal text, None) of provenance given as columns; None when
        a column holds values other than int, str and None (the caller then goes stage by stage)."""
        cols = []
        for k, col in provenance.items():
            if type(k) is not str:
                return None
            kinds = set(map(type, col))
            if not kinds <= {int, str, type(None)}:
                return None
            cols.append((k, col, type(None) in kinds, kinds))
        if not cols:
            return [_ABSENT] * n
        always = [c for c in cols if not c[2]]
        sometimes = [c for c in cols if c[2]]
        if len(always) == 1 and always[0][3] == {int}:
            # {"line": N} for every stage (a log's provenance): rendered with the entries
            spec = _flat_spec("provenance", (always[0][0],))
            assert spec is not None
            column = _IntColumn(spec[1][0], spec[3], spec[2][0], spec[4], list(always[0][1]), {})
            for i in sorted({i for _, col, _, _ in sometimes for i, v in enumerate(col) if v is not None}):
                texts = _flat_texts("provenance", {k: col[i] for k, col, _, _ in cols if col[i] is not None})
                assert texts is not None
                column.overrides[i] = (texts[0], texts[1], None)
            return column
        else:
            out = []
            for row in zip(*[c[1] for c in always]):
                texts = _flat_texts("provenance", dict(zip([c[0] for c in always], row)))
                assert texts is not None
                out.append((texts[0], texts[1], None))
            if not always:
                out = [_ABSENT] * n  # type: ignore[list-item]
        # stages with a value in a sometimes-empty column (a printed name...): rendered one by one
        rows = sorted({i for _, col, _, _ in sometimes for i, v in enumerate(col) if v is not None})
        for i in rows:
            d = {k: col[i] for k, col, _, _ in cols if col[i] is not None}
            texts = _flat_texts("provenance", d)
            assert texts is not None
            out[i] = (texts[0], texts[1], None)
        return out

    def _render_entries(self, pre_m, pre_j, bases, ind_texts, prov_texts, infos, shapes, first, end
                        ) -> tuple[list[str], bytes, bytes]:
        """Number the occurrences of stages first..end-1; render their entries for the manifest and
        the journal, each as one block of UTF-8 (what :func:`parity.trace._render.render_entries`
        does in C)."""
        seen = self._seen
        keys: list[str] = []
        frags_m: list[str] = []
        frags_j: list[str] = []
        if type(prov_texts) is _IntColumn:
            prov_texts = prov_texts.expand(first, end)
        else:
            prov_texts = prov_texts[first:end]
        sl = slice(first, end)
        for base, info, it, pt, shape in zip(bases[sl], infos[sl], ind_texts[sl], prov_texts, shapes[sl]):
            key, occ, occ_m, occ_j = _next_occurrence(seen, base)
            keys.append(key)
            it_m, it_j, _ = it
            pt_m, pt_j, _ = pt
            if info[0] >= 0:
                frags_m.append(f'{pre_m}{it_m}   "key": "{key}",\n   "kind": "tensor",\n{occ_m}{pt_m}   "shape": {info[1]}\n  }}')
                frags_j.append(f'{pre_j}{it_j}"key": "{key}", "kind": "tensor", {occ_j}{pt_j}"shape": {info[2]}}}}}')
            else:
                text = _encode_str(shape)
                frags_m.append(f'{{\n{it_m}   "key": "{key}",\n   "kind": "text",\n{occ_m}{pt_m}   "text": {text}\n  }}')
                frags_j.append(f'{{"stage": {{{it_j}"key": "{key}", "kind": "text", {occ_j}{pt_j}"text": {text}}}}}')
        return keys, ",\n  ".join(frags_m).encode("utf-8"), "\n".join(frags_j).encode("utf-8")

    def _record_batch(self, bases, shapes, infos, counts, arr, dtype, ind_texts, prov_texts, provenance) -> list[str]:
        """Record a batch whose entries all render as text: cut it where add() would flush (found
        with cumulative sums), then render each piece's entries as one block for its data file."""
        n = len(bases)
        code = dtype.code if dtype is not None else ""
        sizes = np.array(counts, dtype=np.int64)
        np.maximum(sizes, 0, out=sizes)  # text stages hold no values
        ends = np.cumsum(sizes)  # element offset after each stage
        nbytes = sizes * (dtype.itemsize if dtype is not None else 0)
        # buffer cost as add() counts it: text stages nothing, tensor stages at least _MIN_STAGE_COST
        cost = np.where(np.array(counts, dtype=np.int64) < 0, 0, np.maximum(nbytes, _MIN_STAGE_COST))
        cum = np.cumsum(cost)  # buffer cost up to and including each stage
        directs = np.flatnonzero(nbytes >= self._direct_threshold).tolist() + [n]
        keys: list[str] = []

        def render(first: int, end: int) -> tuple[bytes, bytes, int, Rows | None]:
            pre_m, pre_j = self._entry_prefixes(code)
            if _render is not None and type(bases) is list and type(shapes) is list and type(ind_texts) is list:
                got, block_m, block_j = _render.render_entries(pre_m, pre_j, bases, self._seen, ind_texts, prov_texts,
                                                               infos, shapes, _encode_str, first, end)
            else:
                got, block_m, block_j = self._render_entries(pre_m, pre_j, bases, ind_texts, prov_texts, infos,
                                                             shapes, first, end)
            keys.extend(got)
            rows = None
            if self._index_builder is not None:
                rows = batch_rows(got, first, end, code, counts, shapes, ind_texts, prov_texts, provenance, _ABSENT)
            return block_m, block_j, end - first, rows

        a = 0
        for d in directs:
            while a < d:  # stages a..d-1 join the pending buffer; flush where add() would
                base_bytes = int(cum[a - 1]) if a else 0
                need = self._buffer_limit - self._pending_bytes + base_bytes
                b = int(np.searchsorted(cum[a:d], need, side="left")) + a  # first stage reaching the limit
                full = b < d
                end = b + 1 if full else d
                self._queue_texts(*render(a, end))
                if counts[a:end].count(-1) < end - a:  # any tensor stage
                    self._pending.append(_Run(keys, infos, a, end, arr[int(ends[a - 1]) if a else 0:int(ends[end - 1])], dtype))
                self._pending_bytes += int(cum[end - 1]) - base_bytes
                if full:
                    self._flush()
                a = end
            if d == n:
                break
            self._flush()  # as add(): what is pending, then the large stage in a shard of its own
            texts = render(d, d + 1)
            start = int(ends[d - 1]) if d else 0
            self._write_shard([_Run(keys, infos, d, d + 1, arr[start:int(ends[d])], dtype)], [texts])
            a = d + 1
        self._keys.extend(keys)
        return keys

    def _record_batch_general(self, bases, shapes, infos, arr, dtype, ind_texts, prov_texts) -> list[str]:
        """_record_batch() for batches holding values only the general encoder writes: stage by stage."""
        seen = self._seen
        keys: list[str] = []
        code = dtype.code if dtype is not None else ""
        limit, direct = self._buffer_limit, self._direct_threshold
        itemsize = dtype.itemsize if dtype is not None else 0
        pre_m, pre_j = self._entry_prefixes(code)
        seg_m: list[str] = []  # rendered entries since the last flush, joined into one block
        seg_j: list[str] = []
        seg_rows = RowsBuilder() if self._index_builder is not None else None  # their rows for the stage index
        run_first = 0  # the open run of small tensor stages: from this stage, and this element
        run_elem = pos = 0
        for i, (base, info, it, pt) in enumerate(zip(bases, infos, ind_texts, prov_texts)):
            key, occ, occ_m, occ_j = _next_occurrence(seen, base)
            keys.append(key)
            size = info[0]
            if it[0] is None or pt[0] is None:  # floats, bools, nested values: the general encoder
                rendered: dict[str, Any] | None = _general_entry(key, occ, size < 0, code, shapes[i], it[2], pt[2])
            else:
                rendered = None
                it_m, it_j = it[0], it[1]
                pt_m, pt_j = pt[0], pt[1]
            if size < 0:  # a text stage
                if rendered is not None:
                    self._add_entries(seg_m, seg_j, rendered, seg_rows)
                    seg_m, seg_j = [], []
                    continue
                text = _encode_str(shapes[i])
                if seg_rows is not None:
                    seg_rows.add(key, None, None, meta_fields(None, None, it[2], pt[2], shapes[i]))
                seg_m.append(f'{{\n{it_m}   "key": "{key}",\n   "kind": "text",\n{occ_m}{pt_m}   "text": {text}\n  }}')
                seg_j.append(f'{{"stage": {{{it_j}"key": "{key}", "kind": "text", {occ_j}{pt_j}"text": {text}}}}}')
                continue
            nbytes = size * itemsize
            if nbytes >= direct:  # as add(): flush what is pending, then this stage in a shard of its own
                self._add_entries(seg_m, seg_j, None, seg_rows)
                seg_m, seg_j = [], []
                self._add_run(keys, infos, run_first, i, arr, run_elem, pos, dtype)
                self._flush()
                pre_m, pre_j = self._entry_prefixes(code)
                if rendered is None:
                    if seg_rows is not None:
                        seg_rows.add(key, code, shapes[i], meta_fields(None, None, it[2], pt[2]))
                    rendered = (f'{pre_m}{it_m}   "key": "{key}",\n   "kind": "tensor",\n{occ_m}{pt_m}   "shape": {info[1]}\n  }}',  # type: ignore[assignment]
                                f'{pre_j}{it_j}"key": "{key}", "kind": "tensor", {occ_j}{pt_j}"shape": {info[2]}}}}}', 1,
                                seg_rows and seg_rows.take())
                self._write_shard([_Run(keys, infos, i, i + 1, arr[pos:pos + size], dtype)], [rendered])  # type: ignore[list-item]
                pos += size
                run_first, run_elem = i + 1, pos
                pre_m, pre_j = self._entry_prefixes(code)
                continue
            if rendered is not None:
                self._add_entries(seg_m, seg_j, rendered, seg_rows)  # _write_shard sets its file
                seg_m, seg_j = [], []
            else:
                if seg_rows is not None:
                    seg_rows.add(key, code, shapes[i], meta_fields(None, None, it[2], pt[2]))
                seg_m.append(f'{pre_m}{it_m}   "key": "{key}",\n   "kind": "tensor",\n{occ_m}{pt_m}   "shape": {info[1]}\n  }}')
                seg_j.append(f'{pre_j}{it_j}"key": "{key}", "kind": "tensor", {occ_j}{pt_j}"shape": {info[2]}}}}}')
            pos += size
            self._pending_bytes += max(nbytes, _MIN_STAGE_COST)
            if self._pending_bytes >= limit:
                self._add_entries(seg_m, seg_j, None, seg_rows)
                seg_m, seg_j = [], []
                self._add_run(keys, infos, run_first, i + 1, arr, run_elem, pos, dtype)
                run_first, run_elem = i + 1, pos
                self._flush()
                pre_m, pre_j = self._entry_prefixes(code)
        self._add_entries(seg_m, seg_j, None, seg_rows)
        self._add_run(keys, infos, run_first, len(keys), arr, run_elem, pos, dtype)
        self._keys.extend(keys)
        return keys

    def _entry_prefixes(self, code: str) -> tuple[str, str]:
        """Opening text of a tensor entry (manifest, journal) in the shard the next flush writes."""
        rel = data_file(self._shard)
        return (f'{{\n   "dtype": "{code}",\n   "file": "{rel}",\n',
                f'{{"stage": {{"dtype": "{code}", "file": "{rel}", ')

    def _queue_texts(self, block_m: bytes, block_j: bytes, count: int, rows: Rows | None = None) -> None:
        """Queue rendered entries until their shard is written. Past _SPILL_BYTES of them (a log of
        scalars fills a 64 MiB shard with 8 million stages), they wait in a file, not in memory."""
        size = len(block_m) + len(block_j)
        if self._pending_text_bytes + size <= _SPILL_BYTES:
            self._pending_text_bytes += size
            self._pending_entries.append((block_m, block_j, count, rows))
            return
        if self._spill is None:
            self._spill, self._spill_path = _open_scratch(os.path.join(self.path, SPILL))
        self._spill.seek(0, os.SEEK_END)
        self._pending_entries.append(_Spilled(self._spill.tell(), len(block_m), len(block_j), count, rows))
        self._spill.write(block_m)
        self._spill.write(block_j)

    def _add_entries(self, seg_m: list[str], seg_j: list[str], entry: dict[str, Any] | None, seg_rows=None) -> None:
        """Queue rendered entries (as one block: the manifest joins entries with the same ",\\n  ")."""
        if seg_m:  # (with their rows for the stage index)
            self._pending_entries.append((",\n  ".join(seg_m), "\n".join(seg_j), len(seg_m), seg_rows and seg_rows.take()))
        if entry is not None:
            self._pending_entries.append(entry)

    def _add_run(self, keys, infos, first, end, arr, elem_start, elem_end, dtype) -> None:
        if first < end and any(info[0] >= 0 for info in infos[first:end]):
            self._pending.append(_Run(keys, infos, first, end, arr[elem_start:elem_end], dtype))


def _general_entry(key: str, occ: int, text: bool, code: str, shape: Any, indices: Any, provenance: Any) -> dict[str, Any]:
    """The entry add() would make for a stage of a batch (``shape``: the text of a text stage)."""
    entry: dict[str, Any] = {"key": key}
    if text:
        entry.update(kind="text", text=shape)
    else:
        entry.update(kind="tensor", dtype=code, shape=list(shape))
    if indices is not None:
        entry["indices"] = indices
    if provenance is not None:
        entry["provenance"] = dict(provenance)
    if occ:
        entry["occurrence"] = occ
    return entry
