"""Streaming, crash-safe, deterministic trace writer.

Small stages are buffered (at most ``buffer_bytes``) and flushed together into one safetensors
shard; a large stage goes straight from the caller's array to its own shard. Each shard is written
under a temporary name and renamed, then its stages are appended to ``journal.jsonl``; closing
writes the final ``manifest.json`` and removes the journal. A writer killed at any point leaves
``manifest.json`` (``complete: false``) plus the journal of every shard already renamed, which
:func:`parity.load_trace` reads as an incomplete trace.

Each stage's manifest entry is rendered once, when it is journaled, and kept in
``stages.json.tmp`` (not in memory) until closing copies it into the manifest.
:meth:`TraceWriter.add_batch` records many stages in one call (an imported log's millions of
scalars): the same bytes as :meth:`TraceWriter.add` one stage at a time, with the entries rendered
as text directly (by the optional C module :mod:`parity.trace._render` where it is built).
"""

from __future__ import annotations

import datetime as _dt
import errno
import itertools
import json
import math
import mmap
import os
import platform
import shutil
import struct
import sys
import threading
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import IO, Any, NamedTuple

import numpy as np

from .._version import __version__
from ..errors import StageKeyError, TraceError, UsageError
from ..safefs import NOFOLLOW, atomic_file, atomic_write, open_new, refuse_symlink, temp_name
from .checksum import crc32, crc32_combine, crc32_hex
from .convert import as_array
from .dtypes import DTYPES, DType
from ..redact import redact_args
from .keys import IDENT_RE, _INT_BOUND, MAX_KEY_LENGTH, _format_value, make_key, split_key, validate_key

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no O_DIRECT either, so never needed
    fcntl = None  # type: ignore[assignment]

try:  # the C module's GIL-free version of _write_data_file + os.replace (POSIX builds)
    from ._stage import write_file as _stage_write  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised by tests that force the fallback
    _stage_write = None

try:  # built from _render.c where a C compiler was found; the same text as the Python code below
    from . import _render  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised by tests that force the fallback
    _render = None

__all__ = ["TraceWriter", "PackedStage", "PackedShard", "SCHEMA_VERSION", "FORMAT_NAME", "environment_summary"]

FORMAT_NAME = "parity-trace"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
VOLATILE = "run.json"
STAGE_TEXTS = "stages.json.tmp"  # the manifest's stage entries while writing (see _StageTexts)
SPILL = "pending.json.tmp"  # rendered entries waiting for their shard, past _SPILL_BYTES
_SPILL_BYTES = 256 * 1024 * 1024
DATA_DIR = "data"
_CHUNK = 16 * 1024 * 1024
_PAGE = 4096  # direct I/O alignment (buffer address, file offset, length)
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_DIRECT_MIN = 1 << 20  # smaller files are written ordinarily
# Each tensor stage counts at least this many bytes towards the shard buffer, so a shard holds at
# most buffer_bytes / _MIN_STAGE_COST stages (65,536 by default) and its safetensors header stays a
# few MB: a log of scalars would otherwise put millions of entries (hundreds of MB) in one header,
# past what safetensors readers accept.
_MIN_STAGE_COST = 1024


def environment_summary() -> dict[str, str]:
    """Stable facts about the capturing machine (no environment variables, nothing secret)."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": sys.platform,
        "machine": platform.machine(),
    }


def _dump(obj: object) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


_encode_str = json.encoder.encode_basestring  # the C encoder json.dumps(ensure_ascii=False) uses


def _dump_fast(obj: object) -> bytes:
    """Byte-identical to :func:`_dump`, several times faster on large manifests.

    ``json.dumps(indent=...)`` runs the pure-Python encoder; a manifest of a million stages (an
    imported log) spent most of its writing time there. Types outside plain JSON go through
    ``json.dumps`` itself, so errors (NaN, objects) are the same.
    """
    out: list[str] = []
    _emit(obj, 0, out)
    out.append("\n")
    return "".join(out).encode("utf-8")


def _emit(o: object, level: int, out: list[str]) -> None:
    t = type(o)
    if t is str:
        out.append(_encode_str(o))
    elif t is dict:
        if not o:
            out.append("{}")
            return
        inner = "\n" + " " * (level + 1)
        sep = "," + inner
        out.append("{")
        first = True
        for k, v in sorted(o.items()):
            out.append(sep if not first else inner)
            first = False
            _emit_item(k, v, level, out)
        out.append("\n" + " " * level + "}")
    elif t is _StageTexts:  # the manifest's stages: rendered as they were journaled, kept in a file
        if not o.count:
            out.append("[]")
            return
        assert level == 1, "stage entries are rendered for the manifest's top level"
        out.append("[\n  ")
        out.append(o)  # type: ignore[arg-type]  # the writer copies the file here
        out.append("\n ]")
    elif t is list or t is tuple:
        if not o:
            out.append("[]")
            return
        inner = "\n" + " " * (level + 1)
        sep = "," + inner
        out.append("[")
        first = True
        for v in o:
            out.append(sep if not first else inner)
            first = False
            tv = type(v)
            if tv is int:
                out.append(int.__repr__(v))
            elif tv is str:
                out.append(_encode_str(v))
            else:
                _emit(v, level + 1, out)
        out.append("\n" + " " * level + "]")
    elif t is int:
        out.append(int.__repr__(o))
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif o is None:
        out.append("null")
    else:  # floats (NaN is refused here as by json.dumps), subclasses, foreign objects
        out.append(json.dumps(o, ensure_ascii=False, allow_nan=False))


def _emit_item(k: object, v: object, level: int, out: list[str]) -> None:
    """One ``key: value`` of a dict at ``level`` (see :func:`_emit`)."""
    if type(k) is str:
        out.append(_encode_str(k))
    else:
        out.append(json.dumps({k: 0}, ensure_ascii=False)[1:-4])  # json's own key conversion
    # Leaves inline: a manifest is mostly small dicts of strings and ints.
    tv = type(v)
    if tv is str:
        out.append(": " + _encode_str(v))
    elif tv is int:
        out.append(": " + int.__repr__(v))
    elif (tv is list or tv is dict) and v and _flat_leaves(v):
        # shape lists and provenance/indices dicts: one level of str/int leaves, rendered here
        pad = "\n" + " " * (level + 2)
        if tv is list:
            body = ",".join(pad + (int.__repr__(x) if type(x) is int else _encode_str(x)) for x in v)
            out.append(": [" + body + "\n" + " " * (level + 1) + "]")
        else:
            body = ",".join(pad + _encode_str(a) + ": " + (int.__repr__(x) if type(x) is int else _encode_str(x))
                            for a, x in sorted(v.items()))
            out.append(": {" + body + "\n" + " " * (level + 1) + "}")
    else:
        out.append(": ")
        _emit(v, level + 1, out)


_ITEM_TEXTS: dict[tuple[Any, ...], str] = {}  # (level, key, value) -> text of _emit_item, for entries


def _field_text(k: str, v: object, level: int = 2) -> str:
    """The text of one ``key: value`` field of a manifest entry at ``level`` (as :func:`_emit_item`
    renders it), remembered by value, since a capture repeats the same dtypes, axes, provenance and
    shapes stage after stage."""
    tv = type(v)
    if tv is str or tv is int:
        ck: tuple[Any, ...] | None = (level, k, tv, v)
    elif tv is list and all(type(x) is str or type(x) is int for x in v):
        ck = (level, k, tv, *((type(x), x) for x in v))
    elif tv is dict and _plain(v):
        ck = (level, k, tv, *((a, type(x), x) for a, x in sorted(v.items())))
    else:
        ck = None
    cache = _ITEM_TEXTS
    text = cache.get(ck) if ck is not None else None
    if text is None:
        out: list[str] = []
        _emit_item(k, v, level, out)
        text = "".join(out)
        if ck is not None:
            if len(cache) >= 1 << 16:
                cache.clear()
            cache[ck] = text
    return text


def _join_fields(parts: list[str], level: int = 2) -> str:
    """An entry's text from the texts of its fields, in key order (see :func:`_entry_text`)."""
    if not parts:
        return "{}"
    inner = "\n" + " " * (level + 1)
    return "{" + inner + ("," + inner).join(parts) + "\n" + " " * level + "}"


def _entry_text(entry: Mapping[str, Any], level: int = 2) -> str:
    """``_emit(entry, level)`` as one string, field by field (see :func:`_field_text`)."""
    return _join_fields([_field_text(k, v, level) for k, v in sorted(entry.items())], level)


def _keyed(entry: dict[str, Any], final: str, occurrence: int) -> dict[str, Any]:
    """``entry`` completed with its key (and occurrence, from the second recording on)."""
    if occurrence:
        entry["occurrence"] = occurrence
    entry["key"] = final
    return entry


def _indices_entry(merged: Mapping[str, object]) -> dict[str, Any]:
    """A stage's indices as its manifest entry holds them (sorted; other types as text)."""
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in sorted(merged.items())}


def _journal_text(entry_text: str) -> str:
    """The journal line (without its newline) of a stage whose manifest text is ``entry_text``: the
    same JSON on one line (JSON strings hold no raw newline, so only layout is removed)."""
    return '{"stage": ' + entry_text.replace("\n", "") + "}"


def _flat_leaves(v: list | dict) -> bool:
    """A list of str/int, or a dict of str keys to str/int values (bools excluded: int subclass)."""
    if type(v) is list:
        return all(type(x) is int or type(x) is str for x in v)
    return all(type(k) is str and (type(x) is int or type(x) is str) for k, x in v.items())


def _plain(d: Mapping[str, Any]) -> bool:
    """Whether a small mapping holds only str keys and str/int/bool values (JSON as it is)."""
    for k, v in d.items():
        if type(k) is not str or type(v) not in (str, int, bool):
            return False
    return True


def _open_scratch(path: str) -> tuple[IO[bytes], str]:
    """A new scratch file for reading and writing, and its name: an unguessable name beside
    ``path``, created ``O_EXCL | O_NOFOLLOW`` (never a file or link planted there)."""
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666)
    return os.fdopen(fd, "w+b"), tmp


def _jsonable(value: Any, what: str) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{what} must be JSON-serialisable (no NaN, no objects): {e}.") from e
    return value


class _Spilled(NamedTuple):
    """Rendered entries waiting in the spill file: where, how long, how many stages."""

    offset: int
    manifest_bytes: int
    journal_bytes: int
    count: int


class _StageTexts:
    """The manifest text of every journaled stage, in order, joined by ",\n  ": spilled to a file in
    the trace directory (a log of millions of stages makes gigabytes of it), copied into the final
    manifest on close. ``count`` entries written so far."""

    def __init__(self, path: str):
        self.file, self.path = _open_scratch(path)
        self.count = 0

    def append(self, text: str | bytes, entries: int = 1) -> None:
        if self.count:
            self.file.write(b",\n  ")
        self.file.write(text if type(text) is bytes else text.encode("utf-8"))  # type: ignore[union-attr]
        self.count += entries

    def copy_to(self, f: Any) -> None:
        self.file.flush()
        self.file.seek(0)
        shutil.copyfileobj(self.file, f, 16 << 20)
        self.file.seek(0, os.SEEK_END)

    def close(self) -> None:
        self.file.close()
        os.remove(self.path)


class PackedStage(NamedTuple):
    """One stage of :meth:`TraceWriter.add_packed`: where its bytes lie in the packed buffer, and its entry."""

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
    """A data file prepared by :meth:`TraceWriter.pack`, to be written by :meth:`TraceWriter.write_packed`."""

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


class _Pending:
    __slots__ = ("key", "array", "dtype")

    def __init__(self, key: str, array: np.ndarray, dtype: DType):
        self.key, self.array, self.dtype = key, array, dtype


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
_FILE = "\x00"  # stands for the data file in rendered entries (JSON text never holds a raw NUL)


class _Run:
    """Consecutive stages ``first:end`` of one :meth:`TraceWriter.add_batch` call (text stages among
    them are skipped): one dtype, their values back to back in ``array``."""

    __slots__ = ("keys", "infos", "first", "end", "array", "dtype")

    def __init__(self, keys: list[str], infos: list[tuple[int, str, str, str]], first: int, end: int,
                 array: np.ndarray, dtype: DType):
        self.keys, self.infos, self.first, self.end, self.array, self.dtype = keys, infos, first, end, array, dtype


def _shape_texts(shape: tuple[int, ...]) -> tuple[str, str, str]:
    """A shape as the manifest (level 2 value), the journal and a safetensors header write it."""
    if not shape:
        return "[]", "[]", "[]"
    manifest = "[" + ",".join("\n    " + str(n) for n in shape) + "\n   ]"
    return manifest, "[" + ", ".join(map(str, shape)) + "]", "[" + ",".join(map(str, shape)) + "]"


_FLAT_SPECS: dict[tuple[Any, ...], tuple[list[int], list[str], list[str], str, str] | None] = {}


def _flat_texts(label: str, d: Mapping[str, Any]) -> tuple[str, str] | None:
    """The field ``label`` holding a dict of str keys to str/int values, as an entry's line(s) in the
    manifest (what :func:`_emit` writes at level 2) and in the journal (what the journal encoder
    writes, with its separator); ``None`` for other dicts (the general encoder writes those).

    Log provenance is ``{"line": N}`` a million times over: the sorted, encoded keys are cached by
    the dict's key tuple, leaving only the values to render.
    """
    spec_key = (label, *d)
    spec = _FLAT_SPECS.get(spec_key)
    if spec is None:
        if spec_key in _FLAT_SPECS:
            return None
        spec = _flat_spec(label, spec_key[1:])
        if len(_FLAT_SPECS) < 1000:
            _FLAT_SPECS[spec_key] = spec
        if spec is None:
            return None
    order, keys_m, keys_j, end_m, end_j = spec
    if len(order) == 1:  # the common case, without a loop
        for v in d.values():
            tv = type(v)
            if tv is int:
                text = int.__repr__(v)
            elif tv is str:
                text = _encode_str(v)
            else:
                return None
            return keys_m[0] + text + end_m, keys_j[0] + text + end_j
    values = list(d.values())
    texts = []
    for i in order:
        v = values[i]
        tv = type(v)
        if tv is int:
            texts.append(int.__repr__(v))
        elif tv is str:
            texts.append(_encode_str(v))
        else:
            return None
    return ("".join([km + t for km, t in zip(keys_m, texts)]) + end_m,
            "".join([kj + t for kj, t in zip(keys_j, texts)]) + end_j)


def _flat_spec(label: str, names: tuple[Any, ...]) -> tuple[list[int], list[str], list[str], str, str] | None:
    if not names or not all(type(k) is str for k in names):
        return None
    order = sorted(range(len(names)), key=names.__getitem__)
    enc = [_encode_str(names[i]) + ": " for i in order]
    keys_m = [(f'   "{label}": {{' if n == 0 else ",") + "\n    " + ek for n, ek in enumerate(enc)]
    keys_j = [(f'"{label}": {{' if n == 0 else ", ") + ek for n, ek in enumerate(enc)]
    return order, keys_m, keys_j, "\n   },\n", "}, "


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


class TraceWriter:
    """Write stages, in execution order, into a ``NAME.trace/`` directory.

    Args:
        path: the trace directory. An existing parity trace there is replaced; any other existing
            non-empty directory or file is refused, so nothing of the user's is deleted.
        meta: JSON-serialisable trace-level metadata (e.g. ``{"impl": "reference"}``).
        producer: who produced the trace (default ``"parity.record"``).
        command: the command line that produced the trace, as an argument list.
        buffer_bytes: bytes of small stages held before they are flushed to a shard. Stages larger
            than a quarter of this are written directly to their own shard.
        volatile: also write ``run.json`` with timestamps and host (kept out of the manifest so
            that two captures of the same values are byte-identical).

    Example:
        >>> import numpy as np, tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> with TraceWriter(os.path.join(d, "ref.trace")) as w:
        ...     w.add("x", np.arange(3.0))
        ...     w.add("x", np.arange(3.0) * 2)   # second occurrence is kept as "x#1"
        'x'
        'x#1'
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        meta: Mapping[str, Any] | None = None,
        producer: str = "parity.record",
        command: Sequence[str] | None = None,
        buffer_bytes: int = 64 * 1024 * 1024,
        volatile: bool = True,
    ):
        self.path = os.fspath(path)
        self._meta = dict(_jsonable(dict(meta or {}), "trace meta"))
        self._producer = producer
        # secret-looking arguments never reach the manifest, whichever producer passed them
        self._command = redact_args([str(a) for a in command]) if command is not None else None
        self._buffer_limit = max(int(buffer_bytes), 1)
        self._direct_threshold = max(self._buffer_limit // 4, 1)
        self._volatile = volatile
        self._lock = threading.RLock()
        self._keys: list[str] = []  # every key, in execution order
        self._rendered: _StageTexts | None = None  # manifest text of every journaled entry, in order
        self._files: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, int] = {}
        self._parsed_keys: dict[str, tuple[str, dict[str, str], str]] = {}
        self._index_names: set[str] = set()  # index names already checked
        self._keys_with_indices = False  # whether a key ever carried [indices] of its own
        self._shape_cache: dict[tuple[int, ...], tuple[int, str, str, str]] = {}
        self._pending: list[_Pending | _Run] = []
        # every entry not yet journaled, in order: a dict (add), or its rendered (manifest, journal) texts
        self._pending_entries: list[dict[str, Any] | tuple[str, str]] = []
        self._pending_bytes = 0
        self._pending_text_bytes = 0  # rendered entries held in memory (see _queue_texts)
        self._spill: IO[bytes] | None = None
        self._spill_path = ""
        self._shard = 0
        self._packed_seq = 0  # data files prepared by pack(), and written by write_packed()
        self._packed_written = 0
        self._closed = False
        self._started = _dt.datetime.now(_dt.timezone.utc)
        self._prepare_directory()
        self._journal = os.fdopen(open_new(os.path.join(self.path, JOURNAL), 0o666), "wb")
        self._rendered = _StageTexts(os.path.join(self.path, STAGE_TEXTS))
        self._write_manifest(complete=False)

    # -- set-up -------------------------------------------------------------------------------
    def _prepare_directory(self) -> None:
        p = self.path
        if os.path.lexists(p) and not os.path.isdir(p):
            raise TraceError("exists and is not a directory; refusing to replace it with a trace.", path=p)
        if os.path.isdir(p):
            entries = os.listdir(p)
            if entries and MANIFEST not in entries:
                raise TraceError(
                    "is a non-empty directory that is not a parity trace; refusing to write into it "
                    "(choose a new path or empty it yourself).",
                    path=p,
                )
            for name in (DATA_DIR, MANIFEST, JOURNAL, VOLATILE):  # never write through a planted link
                if name in entries:
                    refuse_symlink(os.path.join(p, name), what="data directory" if name == DATA_DIR else "file")
            for name in entries:  # only our own files: manifest, journal, run.json, data/
                full = os.path.join(p, name)
                if name == DATA_DIR and os.path.isdir(full):
                    shutil.rmtree(full)
                elif name in (MANIFEST, JOURNAL, VOLATILE) or name.endswith(".tmp"):
                    os.remove(full)
        os.makedirs(os.path.join(p, DATA_DIR), exist_ok=True)
        refuse_symlink(os.path.join(p, DATA_DIR), what="data directory")  # planted since the check above

    # -- public API ---------------------------------------------------------------------------
    def add(
        self,
        key: str,
        value: object,
        *,
        axes: Sequence[str] | None = None,
        units: str | None = None,
        indices: Mapping[str, object] | None = None,
        provenance: Mapping[str, object] | None = None,
    ) -> str:
        """Record one stage and return the key it was stored under.

        ``key`` may already carry ``[indices]``; ``indices`` are added to it. Adding a key that
        was already recorded stores the next occurrence as ``key#1``, ``key#2`` and so on.

        Raises:
            StageKeyError: the key is unsafe or malformed.
            UsageError: the value cannot be stored, or ``axes`` do not match its dimensions.
            TraceError: the writer is closed.
        """
        if self._closed:
            raise TraceError("the trace writer is closed; stages can no longer be added.", path=self.path, stage=str(key))
        base, merged = self._base_key(key, indices)
        converted = as_array(value, stage=base)
        if isinstance(converted, str):
            entry = self._entry(base, merged, None, None, None, units, provenance)
            entry["text"] = converted
            arr, dtype = None, None
        else:
            arr, dtype = converted
            entry = self._entry(base, merged, dtype, arr.shape, axes, units, provenance)
        with self._lock:
            final = self._assign(base, entry)
            if arr is None:
                self._pending_entries.append(entry)
            elif arr.nbytes >= self._direct_threshold:
                self._flush()
                self._write_shard([_Pending(final, arr, dtype)], [entry])
            else:
                # Copy: the caller may mutate its array after tap() returns.
                self._pending.append(_Pending(final, np.array(arr, copy=True, order="C"), dtype))
                self._pending_entries.append(entry)
                self._pending_bytes += max(arr.nbytes, _MIN_STAGE_COST)
                if self._pending_bytes >= self._buffer_limit:
                    self._flush()
            return final

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
        """
        if self._closed:
            raise TraceError("the trace writer is closed; stages can no longer be added.", path=self.path)
        # Per stage: (base key, its indices, the stage, its dtype, and for a tensor its shared field
        # texts (dtype, [axes, dtype texts], [provenance, shape, units texts]), for text its entry). Tensor
        # stages with the same dtype, shape, axes, units and provenance objects (a capture repeats
        # them stage after stage) share their checked, rendered fields; only the key, indices,
        # occurrence and file are rendered per stage.
        entries: list[tuple[str, dict[str, object], PackedStage, DType | None, Any]] = []
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
                dtype = DTYPES.get(st.dtype)
                if dtype is None:
                    raise UsageError(f"unknown dtype code {st.dtype!r}; expected one of {sorted(DTYPES)}.", stage=base)
                ishape = tuple(int(n) for n in shape)
                entry = self._entry(base, {}, dtype, ishape, st.axes, st.units, st.provenance)
                # fields in key order around the per-stage ones: axes dtype | file indices key |
                # kind | occurrence | provenance shape units
                known = (dtype, [_field_text(k, entry[k]) for k in ("axes", "dtype") if k in entry],
                         [_field_text(k, entry[k]) for k in ("provenance", "shape", "units") if k in entry])
                fields[memo] = known
                shape = ishape
            dtype = known[0]
            count = math.prod(shape)
            if st.offset != offset or st.nbytes != count * dtype.itemsize or offset % dtype.itemsize:
                raise TraceError(f"packed stage at bytes [{st.offset}, {st.offset + st.nbytes}) does not follow the "
                                 f"previous one at {offset}, or does not hold shape {list(shape)} of {dtype.name}.",
                                 path=self.path, stage=base)
            offset += st.nbytes
            entries.append((base, merged, st, dtype, known))
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
            rel = f"{DATA_DIR}/{self._shard:06d}.safetensors" if tensors else ""
            if tensors:
                self._shard += 1
            seq = self._packed_seq
            self._packed_seq += 1
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
        finals = [final for final, _ in numbered]
        header = b""
        crc = None
        if tensors:
            parts = [_HEADER_START] + [_header_item(final, dtype.code, st.shape, st.offset, st.offset + st.nbytes)
                                       for final, st, dtype in tensors]
            raw = (",".join(parts) + "}").encode("ascii")
            # Pad the header with spaces (safetensors allows it) so the data starts on a page
            # boundary: it can then go to disk straight from a page-aligned buffer (direct I/O).
            raw += b" " * (-(8 + len(raw)) % _PAGE)
            header = struct.pack("<Q", len(raw)) + raw
            if all(st.crc is not None for _, st, _ in tensors):
                crc = _file_crc(header, [st for _, st, _ in tensors], data)
        return PackedShard(seq, rel, header, data, size, crc, [st for _, st, _ in tensors], texts, finals)

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
        full = os.path.join(self.path, shard.rel)
        tmp = temp_name(full)  # created O_EXCL | O_NOFOLLOW, by the C module or _write_data_file
        direct = bool(_O_DIRECT) and shard.size >= _DIRECT_MIN
        if _stage_write is not None:
            _stage_write(tmp, full, shard.header, shard.data, shard.size, direct)
        else:
            try:
                _write_data_file(tmp, shard.header, shard.data, shard.size, direct)
                os.replace(tmp, full)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
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
            self._journal_append(shard.texts, file=file)

    def _base_key(self, key: str, indices: Mapping[str, object] | None) -> tuple[str, dict[str, object]]:
        """The key without occurrence, with ``indices`` merged into its own; and the merged indices."""
        name, idx, plain = self._parse_key(key)
        merged: dict[str, object] = dict(idx)
        if indices:
            merged.update(indices)
            return make_key(name, merged), merged
        return plain, merged

    def _entry(self, base: str, merged: Mapping[str, object], dtype: DType | None, shape: tuple[int, ...] | None,
               axes: Sequence[str] | None, units: str | None, provenance: Mapping[str, object] | None) -> dict[str, Any]:
        """A stage's manifest entry, without its key, occurrence and file (see :meth:`_assign`)."""
        entry: dict[str, Any] = {}
        if dtype is None:
            entry["kind"] = "text"
        else:
            entry.update(kind="tensor", dtype=dtype.code, shape=list(shape or ()))
            if axes is not None:
                axes = [str(a) for a in axes]
                if len(axes) != len(shape or ()):
                    raise UsageError(f"axes {axes} name {len(axes)} dimensions but the value has shape {tuple(shape or ())}.",
                                     stage=base)
                entry["axes"] = axes
        if units is not None:
            entry["units"] = str(units)
        if merged:
            entry["indices"] = _indices_entry(merged)
        if provenance:
            prov = dict(provenance)
            entry["provenance"] = prov if _plain(prov) else _jsonable(prov, f'provenance of "{base}"')
        return entry

    def _number(self, base: str) -> tuple[str, int]:
        """Number the occurrence of ``base``: (final key, occurrence); call with the lock held."""
        n = self._seen.get(base, 0)
        self._seen[base] = n + 1
        final = f"{base}#{n}" if n else base  # = make_key(name, merged, occurrence=n); base is valid
        self._keys.append(final)
        return final, n

    def _assign(self, base: str, entry: dict[str, Any]) -> str:
        """Number the occurrence of ``base`` and complete ``entry``; call with the lock held."""
        final, n = self._number(base)
        _keyed(entry, final, n)
        return final

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
            >>> import numpy as np, tempfile, os
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
        cache = self._shape_cache
        try:
            infos = list(map(cache.get, shapes))  # map(): C-speed for a million stages
        except TypeError:  # an unhashable shape (a list): _shape_info() says what is wrong
            infos = [None] * n
        if None in infos:
            infos = [info or self._shape_info(s) for info, s in zip(infos, shapes)]
        counts = list(map(_first, infos))  # values per stage; -1 for a text stage
        texts = counts.count(-1)
        total = sum(counts) + texts
        if texts < n and dtype is None:
            raise UsageError("add_batch(): tensor stages need their values in data.")
        if total != (arr.size if arr is not None else 0):
            raise UsageError(f"add_batch(): the shapes need {total} values but data holds "
                             f"{0 if arr is None else arr.size}.")
        parsed = list(map(self._parsed_keys.get, keys))
        if None in parsed:
            parsed = [p or self._parse_key(k) for p, k in zip(parsed, keys)]
        bases, ind_texts, general = self._batch_keys(parsed, indices, n)
        prov_texts: Any = None
        if isinstance(provenance, Mapping):
            if not general:
                prov_texts = self._batch_provenance_columns(provenance, n)
            if prov_texts is None:  # values only the general encoder writes: as one mapping per stage
                provenance = _column_rows(provenance, n)
        if prov_texts is None:
            prov_texts, general_prov = self._batch_provenance(provenance, bases, n)  # type: ignore[arg-type]
            general = general or general_prov
        with self._lock:
            if general:  # floats, bools, nested values: stage by stage, through the general encoder
                return self._record_batch_general(bases, shapes, infos, arr, dtype, ind_texts, prov_texts)
            return self._record_batch(bases, shapes, infos, counts, arr, dtype, ind_texts, prov_texts)

    def close(self, complete: bool = True, reason: str | None = None) -> None:
        """Flush buffered stages and write the final manifest (idempotent).

        Args:
            complete: mark the trace complete. Pass ``False`` when the computation failed.
            reason: why the trace is incomplete, stored in the manifest.
        """
        with self._lock:
            if self._closed:
                return
            self._flush()
            self._write_manifest(complete=complete, reason=reason)
            self._journal.close()
            os.remove(os.path.join(self.path, JOURNAL))
            if self._rendered is not None:
                self._rendered.close()
            if self._spill is not None:
                self._spill.close()
                os.remove(self._spill_path)
            if self._volatile:
                now = _dt.datetime.now(_dt.timezone.utc)
                atomic_write(
                    os.path.join(self.path, VOLATILE),
                    _dump({"started_utc": self._started.isoformat(), "finished_utc": now.isoformat(),
                           "host": platform.node(), "pid": os.getpid()}),
                )
            self._closed = True

    def update_meta(self, **items: Any) -> None:
        """Add or replace trace-level metadata before :meth:`close` (e.g. facts known only at the end).

        Raises:
            UsageError: a value is not JSON-serialisable.
            TraceError: the writer is closed.
        """
        if self._closed:
            raise TraceError("the trace writer is closed; its metadata can no longer change.", path=self.path)
        self._meta.update(_jsonable(dict(items), "trace meta"))

    @property
    def keys(self) -> list[str]:
        """Keys recorded so far, in execution order."""
        return list(self._keys)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close(complete=False, reason=f"{exc_type.__name__} raised during capture")

    # -- keys and batches ---------------------------------------------------------------------
    def _parse_key(self, key: str) -> tuple[str, dict[str, str], str]:
        parsed = self._parsed_keys.get(key)
        if parsed is None:  # a capture repeats its keys: parse and validate each one once
            name, idx, occ = split_key(validate_key(key))
            if occ:
                raise StageKeyError("do not pass an #occurrence yourself; parity numbers repeated keys.", stage=key)
            parsed = (name, idx, make_key(name, idx))
            if idx:
                self._keys_with_indices = True
            if len(self._parsed_keys) < 100_000:
                self._parsed_keys[key] = parsed
        return parsed

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

    def _record_batch(self, bases, shapes, infos, counts, arr, dtype, ind_texts, prov_texts) -> list[str]:
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

        def render(first: int, end: int) -> tuple[bytes, bytes, int]:
            pre_m, pre_j = self._entry_prefixes(code)
            if _render is not None and type(bases) is list and type(shapes) is list and type(ind_texts) is list:
                got, block_m, block_j = _render.render_entries(pre_m, pre_j, bases, self._seen, ind_texts, prov_texts,
                                                               infos, shapes, _encode_str, first, end)
            else:
                got, block_m, block_j = self._render_entries(pre_m, pre_j, bases, ind_texts, prov_texts, infos,
                                                             shapes, first, end)
            keys.extend(got)
            return block_m, block_j, end - first

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
        run_first = 0  # the open run of small tensor stages: from this stage, and this element
        run_elem = pos = 0
        for i, (base, info, it, pt) in enumerate(zip(bases, infos, ind_texts, prov_texts)):
            key, occ, occ_m, occ_j = _next_occurrence(seen, base)
            keys.append(key)
            size = info[0]
            if it[0] is None or pt[0] is None:
                # floats, bools, nested values: the general encoder, on the entry add() would make
                entry: dict[str, Any] = {"key": key}
                if size < 0:
                    entry.update(kind="text", text=shapes[i])
                else:
                    entry.update(kind="tensor", dtype=code, shape=list(shapes[i]))
                if it[2] is not None:
                    entry["indices"] = it[2]
                if pt[2] is not None:
                    entry["provenance"] = dict(pt[2])
                if occ:
                    entry["occurrence"] = occ
                rendered: dict[str, Any] | None = entry
            else:
                rendered = None
                it_m, it_j = it[0], it[1]
                pt_m, pt_j = pt[0], pt[1]
            if size < 0:  # a text stage
                if rendered is not None:
                    self._add_entries(seg_m, seg_j, rendered)
                    seg_m, seg_j = [], []
                    continue
                text = _encode_str(shapes[i])
                seg_m.append(f'{{\n{it_m}   "key": "{key}",\n   "kind": "text",\n{occ_m}{pt_m}   "text": {text}\n  }}')
                seg_j.append(f'{{"stage": {{{it_j}"key": "{key}", "kind": "text", {occ_j}{pt_j}"text": {text}}}}}')
                continue
            nbytes = size * itemsize
            if nbytes >= direct:  # as add(): flush what is pending, then this stage in a shard of its own
                self._add_entries(seg_m, seg_j, None)
                seg_m, seg_j = [], []
                self._add_run(keys, infos, run_first, i, arr, run_elem, pos, dtype)
                self._flush()
                pre_m, pre_j = self._entry_prefixes(code)
                if rendered is None:
                    rendered = (f'{pre_m}{it_m}   "key": "{key}",\n   "kind": "tensor",\n{occ_m}{pt_m}   "shape": {info[1]}\n  }}',  # type: ignore[assignment]
                                f'{pre_j}{it_j}"key": "{key}", "kind": "tensor", {occ_j}{pt_j}"shape": {info[2]}}}}}')
                self._write_shard([_Run(keys, infos, i, i + 1, arr[pos:pos + size], dtype)], [rendered])  # type: ignore[list-item]
                pos += size
                run_first, run_elem = i + 1, pos
                pre_m, pre_j = self._entry_prefixes(code)
                continue
            if rendered is not None:
                self._add_entries(seg_m, seg_j, rendered)  # _write_shard sets its file
                seg_m, seg_j = [], []
            else:
                seg_m.append(f'{pre_m}{it_m}   "key": "{key}",\n   "kind": "tensor",\n{occ_m}{pt_m}   "shape": {info[1]}\n  }}')
                seg_j.append(f'{pre_j}{it_j}"key": "{key}", "kind": "tensor", {occ_j}{pt_j}"shape": {info[2]}}}}}')
            pos += size
            self._pending_bytes += max(nbytes, _MIN_STAGE_COST)
            if self._pending_bytes >= limit:
                self._add_entries(seg_m, seg_j, None)
                seg_m, seg_j = [], []
                self._add_run(keys, infos, run_first, i + 1, arr, run_elem, pos, dtype)
                run_first, run_elem = i + 1, pos
                self._flush()
                pre_m, pre_j = self._entry_prefixes(code)
        self._add_entries(seg_m, seg_j, None)
        self._add_run(keys, infos, run_first, len(keys), arr, run_elem, pos, dtype)
        self._keys.extend(keys)
        return keys

    def _entry_prefixes(self, code: str) -> tuple[str, str]:
        """Opening text of a tensor entry (manifest, journal) in the shard the next flush writes."""
        rel = f"{DATA_DIR}/{self._shard:06d}.safetensors"
        return (f'{{\n   "dtype": "{code}",\n   "file": "{rel}",\n',
                f'{{"stage": {{"dtype": "{code}", "file": "{rel}", ')

    def _queue_texts(self, block_m: bytes, block_j: bytes, count: int) -> None:
        """Queue rendered entries until their shard is written. Past _SPILL_BYTES of them (a log of
        scalars fills a 64 MiB shard with 8 million stages), they wait in a file, not in memory."""
        size = len(block_m) + len(block_j)
        if self._pending_text_bytes + size <= _SPILL_BYTES:
            self._pending_text_bytes += size
            self._pending_entries.append((block_m, block_j, count))
            return
        if self._spill is None:
            self._spill, self._spill_path = _open_scratch(os.path.join(self.path, SPILL))
        self._spill.seek(0, os.SEEK_END)
        self._pending_entries.append(_Spilled(self._spill.tell(), len(block_m), len(block_j), count))
        self._spill.write(block_m)
        self._spill.write(block_j)

    def _add_entries(self, seg_m: list[str], seg_j: list[str], entry: dict[str, Any] | None) -> None:
        """Queue rendered entries (as one block: the manifest joins entries with the same ",\\n  ")."""
        if seg_m:
            self._pending_entries.append((",\n  ".join(seg_m), "\n".join(seg_j), len(seg_m)))
        if entry is not None:
            self._pending_entries.append(entry)

    def _add_run(self, keys, infos, first, end, arr, elem_start, elem_end, dtype) -> None:
        if first < end and any(info[0] >= 0 for info in infos[first:end]):
            self._pending.append(_Run(keys, infos, first, end, arr[elem_start:elem_end], dtype))

    # -- internals ----------------------------------------------------------------------------
    def _flush(self) -> None:
        pending, entries = self._pending, self._pending_entries
        self._pending, self._pending_entries, self._pending_bytes = [], [], 0
        self._pending_text_bytes = 0
        if pending:
            self._write_shard(pending, entries)
        elif entries:
            self._journal_append(entries)

    def _write_shard(self, tensors: list[_Pending | _Run], entries: list[dict[str, Any] | tuple[str, str]]) -> None:
        rel = f"{DATA_DIR}/{self._shard:06d}.safetensors"
        self._shard += 1
        # Widest items first keeps every tensor aligned to its itemsize (as safetensors does); the
        # header is the JSON encode_header() writes, built as text (a shard may hold 100k stages).
        order = sorted(range(len(tensors)), key=lambda i: -tensors[i].dtype.itemsize)
        parts = [_HEADER_START]
        offset = 0
        for i in order:
            t = tensors[i]
            if type(t) is _Run and _render is not None:
                text, offset = _render.render_header(t.keys, t.infos, t.first, t.end, offset, t.dtype.itemsize, t.dtype.code)
                if text:
                    parts.append(text)
            elif type(t) is _Run:
                keys, infos = t.keys[t.first:t.end], t.infos[t.first:t.end]
                if any(info[0] < 0 for info in infos):  # text stages of the batch hold no values
                    keep = [i for i, info in enumerate(infos) if info[0] >= 0]
                    keys, infos = [keys[i] for i in keep], [infos[i] for i in keep]
                ends = np.cumsum(np.fromiter((info[0] for info in infos), dtype=np.int64, count=len(infos)))
                ends = (ends * t.dtype.itemsize + offset).tolist()
                starts = [offset] + ends[:-1]
                mid = '":{"dtype":"' + t.dtype.code + '","shape":'
                parts.extend([f'"{k}{mid}{info[3]},"data_offsets":[{b},{e}]}}'
                              for k, info, b, e in zip(keys, infos, starts, ends)])
                if ends:
                    offset = ends[-1]
            else:
                end = offset + t.array.nbytes
                parts.append(_header_item(t.key, t.dtype.code, t.array.shape, offset, end))
                offset = end
        raw = (",".join(parts) + "}").encode("ascii")  # keys are ASCII by their grammar
        raw += b" " * (-(8 + len(raw)) % 8)
        header = struct.pack("<Q", len(raw)) + raw
        full = os.path.join(self.path, rel)
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
        self._files[rel] = {"bytes": len(header) + offset, "crc32": crc32_hex(h)}
        for e in entries:
            if type(e) is dict and e["kind"] == "tensor":
                e["file"] = rel
        self._journal_append(entries, file=(rel, self._files[rel]))

    def _journal_append(self, entries: list[Any], file: tuple[str, dict[str, Any]] | None = None) -> None:
        """Append journal lines for these entries (after the line of their data file), and their
        manifest text to the stage texts. An entry is a dict (rendered here), or the (manifest,
        journal, count) texts of one or many stages (str or UTF-8, joined as the manifest and the
        journal join entries), or a :class:`_Spilled` reference to such texts. Written entry by
        entry: no copy of all of them at once."""
        write = self._journal.write
        if file is not None:
            write(json.dumps({"file": file[0], **file[1]}, sort_keys=True).encode("utf-8") + b"\n")
        rendered = self._rendered
        assert rendered is not None
        for e in entries:
            if type(e) is _Spilled:
                assert self._spill is not None
                self._spill.seek(e.offset)
                e = (self._spill.read(e.manifest_bytes), self._spill.read(e.journal_bytes), e.count)
            if type(e) is dict:
                text = _entry_text(e)
                rendered.append(text)
                write(_journal_text(text).encode("utf-8") + b"\n")
            else:
                rendered.append(e[0], e[2] if len(e) > 2 else 1)
                write(e[1] if type(e[1]) is bytes else e[1].encode("utf-8"))
                write(b"\n")
        self._journal.flush()
        if self._spill is not None and not any(type(e) is _Spilled for e in self._pending_entries):
            self._spill.seek(0)
            self._spill.truncate()

    def _write_manifest(self, complete: bool, reason: str | None = None) -> None:
        manifest: dict[str, Any] = {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "tool_version": __version__,
            "producer": self._producer,
            "complete": complete,
            "environment": environment_summary(),
            "meta": self._meta,
            "stages": self._rendered if self._rendered is not None else [],
            "files": dict(sorted(self._files.items())),
        }
        if self._command is not None:
            manifest["command"] = self._command
        if reason:
            manifest["incomplete_reason"] = reason
        out: list[str | bytes] = []
        _emit(manifest, 0, out)  # type: ignore[arg-type]
        out.append("\n")
        with atomic_file(os.path.join(self.path, MANIFEST)) as f:
            for part in out:
                if type(part) is _StageTexts:
                    part.copy_to(f)
                else:
                    f.write(part if type(part) is bytes else part.encode("utf-8"))  # type: ignore[union-attr]


_HEADER_START = '{"__metadata__":{"format":"' + FORMAT_NAME + '"}'


def _header_item(key: str, code: str, shape: Sequence[int], begin: int, end: int) -> str:
    """One tensor of a safetensors header, as the JSON text of ``encode_header``."""
    return f'"{key}":{{"dtype":"{code}","shape":[{",".join(map(str, shape))}],"data_offsets":[{begin},{end}]}}'


def _file_crc(header: bytes, stages: Sequence[PackedStage], data: np.ndarray) -> int:
    """CRC-32 of a packed data file: its header, then each stage's bytes (their CRCs combined)."""
    c = crc32(header)
    for st in stages:
        part = crc32(data[st.offset:st.offset + st.nbytes]) if st.crc is None else st.crc
        c = crc32_combine(c, part, st.nbytes)
    return c


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


def byte_chunks(arr: np.ndarray):
    """Yield the C-order bytes of ``arr`` in bounded pieces, without copying a contiguous array."""
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
