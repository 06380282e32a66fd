"""Read a trace directory: the manifest (plus the journal of an interrupted capture) and
memory-mapped stage arrays."""

from __future__ import annotations

import hashlib
import mmap
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import StageKeyError, StageNotFoundError, TraceFormatError
from ..safefs import check_inside
from .jsonsafe import BadNumber, holds_bad_number, load_json
from .safetensors_header import MAX_INDEX, TensorEntry, is_index, open_regular, read_header
from .checksum import crc32, crc32_hex
from .dtypes import DTYPES, DType, storage_dtype
from .keys import validate_key
from .layout import DATA_DIR, FORMAT_NAME, JOURNAL, MANIFEST, SCHEMA_VERSION

__all__ = ["Stage", "Trace", "load_trace"]

_FILE_RE = re.compile(r"data/[0-9]{6}\.safetensors")


@dataclass(frozen=True)
class Stage:
    """One recorded stage: its metadata, and (via :attr:`Trace.__getitem__`) its values.

    Attributes:
        key: the stage key, e.g. ``"layers.3.attn_probs"``.
        kind: ``"tensor"`` or ``"text"``.
        dtype: safetensors dtype code of the stored values (``"F32"``, ``"BF16"``...); ``None`` for text.
        shape: the stored shape; ``()`` for scalars and text.
        axes: optional names of the axes, e.g. ``("seq", "heads", "head_dim")``.
        units: optional physical units, e.g. ``"angstrom"``.
        indices: indices such as ``{"layer": 3, "step": 0}``.
        provenance: where the value came from (source line, module path, log line).
        occurrence: 0 for the first time a key was recorded, 1 for the second (``key#1``)...
        position: index in the trace's execution order.
        file: the data file, relative to the trace directory; ``None`` for text.
        text: the value of a text stage.

    Example:
        >>> s = load_trace("ref.trace").stage("layers.0.attn_scores")
        >>> s.kind, s.dtype, s.shape, s.axes
        ('tensor', 'F64', (4, 8, 8), ('heads', 'seq', 'seq_k'))
        >>> s.size, s.nbytes, s.dtype_info.name
        (256, 2048, 'float64')
    """

    key: str
    kind: str
    dtype: str | None
    shape: tuple[int, ...]
    axes: tuple[str, ...] | None = None
    units: str | None = None
    indices: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    occurrence: int = 0
    position: int = 0
    file: str | None = None
    text: str | None = None

    @property
    def dtype_info(self) -> DType | None:
        """The :class:`~parity.trace.dtypes.DType` of the stored values (``None`` for text)."""
        return DTYPES[self.dtype] if self.dtype else None

    @property
    def size(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64)) if self.kind == "tensor" else 0

    @property
    def nbytes(self) -> int:
        info = self.dtype_info
        return self.size * info.itemsize if info else 0


class Trace:
    """A trace read from disk. Iterating yields :class:`Stage` objects in execution order.

    ``trace[key]`` returns the stored values as a read-only, memory-mapped NumPy array of the
    recorded dtype and shape (a ``str`` for text stages).

    Example:
        >>> import numpy as np, tempfile, os, parity
        >>> path = os.path.join(tempfile.mkdtemp(), "t.trace")
        >>> with parity.record(path):
        ...     _ = parity.tap("y", np.float32([1.5, 2.5]))
        >>> t = parity.load_trace(path)
        >>> [s.key for s in t], t["y"].dtype, t["y"].tolist()
        (['y'], dtype('float32'), [1.5, 2.5])

        The demo pair: ``len`` counts the stages, iterating yields them in execution order.

        >>> ref = parity.load_trace("ref.trace")
        >>> len(ref), [s.key for s in ref][:2], "embedding" in ref
        (31, ['embedding', 'layers.0.attn_norm'], True)
    """

    def __init__(self, path: str | os.PathLike[str], manifest: dict[str, Any], stages: list[Stage],
                 headers: dict[str, tuple[dict[str, TensorEntry], int]]):
        self.path = os.fspath(path)
        self.manifest = manifest
        self._stages = stages
        self._by_key = {s.key: s for s in stages}
        self._headers = headers
        self._maps: dict[str, mmap.mmap] = {}

    # -- metadata -----------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """False when the capture was interrupted or failed (see ``manifest["incomplete_reason"]``)."""
        return bool(self.manifest.get("complete"))

    @property
    def meta(self) -> dict[str, Any]:
        """User metadata given to :func:`parity.record`."""
        return self.manifest.get("meta", {})

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    def keys(self) -> list[str]:
        """Stage keys in execution order.

        >>> load_trace("ref.trace").keys()[:3]
        ['embedding', 'layers.0.attn_norm', 'layers.0.q_proj']
        """
        return [s.key for s in self._stages]

    def stage(self, key: str) -> Stage:
        """The :class:`Stage` stored under ``key``.

        Raises:
            StageNotFoundError: no such stage.

        >>> t = load_trace("ref.trace")
        >>> t.stage("layers.0.q_proj").shape
        (8, 32)
        >>> t.stage("layers.9.q_proj")
        Traceback (most recent call last):
        ...
        parity.errors.StageNotFoundError: ref.trace: stage "layers.9.q_proj": no such stage; the trace has 31 stages.
        """
        try:
            return self._by_key[key]
        except KeyError:
            raise StageNotFoundError(f"no such stage; the trace has {len(self._stages)} stages.", path=self.path, stage=key) from None

    def __iter__(self) -> Iterator[Stage]:
        return iter(self._stages)

    def __len__(self) -> int:
        return len(self._stages)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __repr__(self) -> str:
        state = "complete" if self.complete else "INCOMPLETE"
        return f"<Trace {self.path!r}: {len(self)} stages, {state}>"

    # -- values -------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> np.ndarray | str:
        return self.array(self.stage(key))

    def array(self, stage: Stage) -> np.ndarray | str:
        """Values of ``stage``: a memory-mapped read-only array, or the text of a text stage
        (``trace[key]`` is ``trace.array(trace.stage(key))``).

        >>> t = load_trace("ref.trace")
        >>> a = t.array(t.stage("embedding"))
        >>> a.shape, a.dtype, a.flags.writeable, bool((a == t["embedding"]).all())
        ((8, 32), dtype('float64'), False, True)
        """
        if stage.kind == "text":
            return stage.text or ""
        assert stage.file is not None and stage.dtype is not None
        entries, data_start = self._headers[stage.file]
        entry = entries[stage.key]
        mm = self._maps.get(stage.file)
        if mm is None:
            full = os.path.join(self.path, stage.file)
            with os.fdopen(open_regular(full, "data file"), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < data_start + max((e.end for e in entries.values()), default=0):
                    raise TraceFormatError(f"is now {size} bytes long, shorter than when the trace was opened; "
                                           "the file was truncated or replaced.", path=full)
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[stage.file] = mm
        dt = storage_dtype(DTYPES[stage.dtype])
        count = stage.size
        arr = np.frombuffer(mm, dtype=dt, count=count, offset=data_start + entry.begin) if count else np.empty(0, dt)
        return arr.reshape(stage.shape)

    def verify(self) -> list[str]:
        """Re-checksum every data file against the manifest.

        Files carry a CRC-32 (``"crc32"``, as ``zlib.crc32`` computes it); traces written by
        earlier versions carry a ``"sha256"``, which is checked instead.

        Returns:
            One message per problem (empty when every file matches).

        >>> load_trace("ref.trace").verify()
        []
        >>> with open("ref.trace/data/000000.safetensors", "r+b") as f:  # flip one stored byte
        ...     _ = f.seek(-1, 2); b = f.read(1); _ = f.seek(-1, 2); _ = f.write(bytes([b[0] ^ 1]))
        >>> load_trace("ref.trace").verify()
        ["ref.trace/data/000000.safetensors: crc32 ... does not match the manifest's ...."]
        """
        problems = []
        for rel, info in self.manifest.get("files", {}).items():
            full = os.path.join(self.path, rel)
            algo = "crc32" if "crc32" in info else "sha256" if "sha256" in info else None
            if algo is None:
                problems.append(f"{full}: the manifest gives no checksum (crc32 or sha256) for this file.")
                continue
            h = hashlib.sha256() if algo == "sha256" else None
            c = 0
            try:
                with open(full, "rb") as f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        if h is not None:
                            h.update(block)
                        else:
                            c = crc32(block, c)
            except OSError as e:
                problems.append(f"{full}: cannot be read ({e.strerror}).")
                continue
            got = h.hexdigest() if h is not None else crc32_hex(c)
            if got != info.get(algo):
                problems.append(f"{full}: {algo} {got} does not match the manifest's {info.get(algo)}.")
        return problems


# -- reading and checking the manifest and the journal -----------------------------------------------

def _short(v: object, limit: int = 80) -> str:
    """``repr(v)``, cut to ``limit`` characters (a hostile field may be megabytes long)."""
    text = repr(v)
    return text if len(text) <= limit else text[:limit - 12] + "..." + text[-8:]


def _read_file(path: str, what: str) -> bytes:
    """The bytes of a regular file (never blocks on a FIFO, never reads a device)."""
    fd = open_regular(path, what)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _read_manifest(path: str, follow_symlinks: bool) -> tuple[dict[str, Any], list[BadNumber]]:
    """The manifest, its top-level fields checked; and the non-finite numbers it holds (refused by
    the caller once the fields they sit in are checked, so that the message names the field)."""
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise TraceFormatError("is not a trace directory (a trace is a directory holding manifest.json).", path=path)
        raise TraceFormatError("no such trace directory.", path=path)
    if os.path.lexists(mpath):
        check_inside(path, mpath, follow_symlinks=follow_symlinks, what="manifest")
    try:
        raw = _read_file(mpath, "manifest")
    except FileNotFoundError as e:
        raise TraceFormatError("has no manifest.json; it is not a parity trace.", path=path) from e
    manifest, bad = load_json(raw, path=mpath, what="manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise TraceFormatError(f'is not a parity trace manifest (expected "format": "{FORMAT_NAME}").', path=mpath)
    version = manifest.get("schema_version")
    if type(version) is not int or version > SCHEMA_VERSION or version < 1:
        raise TraceFormatError(
            f"has schema_version {_short(version)}; this parity reads versions 1 to {SCHEMA_VERSION} (upgrade parity).",
            path=mpath,
        )
    for name, types, expected in _TOP_FIELDS:
        if name in manifest and type(manifest[name]) not in types:
            raise TraceFormatError(f'"{name}" must be {expected}, got {_short(manifest[name])}.', path=mpath)
    return manifest, bad


_TOP_FIELDS = [
    ("complete", (bool,), "true or false"),
    ("stages", (list,), "a list of stage entries"),
    ("files", (dict,), "an object of data files"),
    ("meta", (dict,), "an object"),
    ("incomplete_reason", (str,), "a string"),
    ("producer", (str,), "a string"),
    ("tool_version", (str,), "a string"),
    ("environment", (dict,), "an object"),
    ("command", (list,), "a list of strings"),
]


def _refuse_bad_numbers(doc: dict[str, Any], path: str, bad: list[BadNumber]) -> None:
    """Raise naming the first place ``doc`` holds a non-finite number (NaN, Infinity, 1e999)."""
    for pos, entry in enumerate(doc.get("stages") or ()):
        if holds_bad_number(entry):
            raise TraceFormatError(f"{_stage_name(entry, pos)} holds the number {bad[0]!r}; a trace holds only finite "
                                   "numbers (the manifest is corrupt).", path=path)
    for name, value in doc.items():
        if name != "stages" and holds_bad_number(value):
            raise TraceFormatError(f'"{name}" holds the number {bad[0]!r}; a trace holds only finite numbers '
                                   "(the manifest is corrupt).", path=path)
    raise TraceFormatError(f"holds the number {bad[0]!r}; a trace holds only finite numbers (the manifest is corrupt).",
                           path=path)


def _stage_name(entry: object, pos: int) -> str:
    key = entry.get("key") if type(entry) is dict else None
    return f"stage {key!r}" if type(key) is str and len(key) <= 200 else f"stage #{pos}"


def _check_file_info(info: object, where: str, path: str) -> dict[str, Any]:
    """A data file's entry: ``{"bytes": N, "crc32": "8 hex digits"}`` (or an older ``"sha256"``)."""
    if type(info) is not dict:
        raise TraceFormatError(f"{where}: expected an object with bytes and crc32, got {_short(info)}.", path=path)
    if "bytes" in info and not is_index(info["bytes"]):
        raise TraceFormatError(f"{where}: bytes must be a non-negative integer, got {_short(info['bytes'])}.", path=path)
    if "crc32" in info and not (type(info["crc32"]) is str and _CRC_RE.fullmatch(info["crc32"])):
        raise TraceFormatError(f"{where}: crc32 must be 8 lowercase hex digits, got {_short(info['crc32'])}.", path=path)
    if "sha256" in info and not (type(info["sha256"]) is str and _SHA_RE.fullmatch(info["sha256"])):
        raise TraceFormatError(f"{where}: sha256 must be 64 lowercase hex digits, got {_short(info['sha256'])}.",
                               path=path)
    return info


_CRC_RE = re.compile(r"[0-9a-f]{8}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")


def _check_file_name(rel: object, where: str, path: str) -> str:
    """A data file's name: ``data/NNNNNN.safetensors`` exactly (so never absolute, never ``..``)."""
    if type(rel) is not str or not _FILE_RE.fullmatch(rel):
        raise TraceFormatError(f"{where} data file {_short(rel)}; data files must be named data/NNNNNN.safetensors "
                               "(a plain name inside the trace's data/ folder).", path=path)
    return rel


def _replay_journal(path: str, manifest: dict[str, Any], follow_symlinks: bool
                    ) -> tuple[list[tuple[str, int]], list[tuple[int, BadNumber]]]:
    """Fold the journal of an interrupted capture into ``manifest`` (in place).

    Returns the origin (file, line number) of each stage entry replayed from it, in order, and
    the (line number, number) of the non-finite numbers of those entries. The last line, when it
    has no newline, is what a writer killed mid-line left and is ignored; any other line must be
    a whole, well-formed record.
    """
    jpath = os.path.join(path, JOURNAL)
    if manifest.get("complete") or not os.path.lexists(jpath):
        return [], []
    check_inside(path, jpath, follow_symlinks=follow_symlinks, what="journal")
    origins: list[tuple[str, int]] = []
    deferred: list[tuple[int, BadNumber]] = []
    with os.fdopen(open_regular(jpath, "journal"), "rb") as f:  # read line by line: it may be large
        _replay_lines(f, jpath, manifest, origins, deferred)
    return origins, deferred


def _replay_lines(f: Any, jpath: str, manifest: dict[str, Any], origins: list[tuple[str, int]],
                  deferred: list[tuple[int, BadNumber]]) -> None:
    """The loop of :func:`_replay_journal` over the lines of the open journal ``f``."""
    stages, files = list(manifest.get("stages", [])), dict(manifest.get("files", {}))
    known = {s.get("key") for s in stages if type(s) is dict}
    for number, line in enumerate(f, 1):
        if not line.endswith(b"\n"):
            break  # the line a killed writer left unfinished
        where = f"line {number}"
        rec, bad = load_json(line, path=jpath, what=f"journal's {where}")
        if type(rec) is not dict:
            raise TraceFormatError(f"{where}: expected a JSON object (a file or a stage record), got {_short(rec)}.",
                                   path=jpath)
        if bad and "stage" not in rec:
            raise TraceFormatError(f"{where}: holds the number {bad[0]!r}; a trace holds only finite numbers.",
                                   path=jpath)
        if "stage" in rec:
            entry = rec["stage"]
            if type(entry) is not dict:
                raise TraceFormatError(f"{where}: \"stage\" must be a stage entry (an object), got {_short(entry)}.",
                                       path=jpath)
            key = entry.get("key")
            if type(key) is not str:
                raise TraceFormatError(f"{where}: the stage entry has no key (a string), got {_short(key)}.",
                                       path=jpath)
            if key not in known:
                stages.append(entry)
                origins.append((jpath, number))
                known.add(key)
                if bad:  # refused once the entry's fields are checked (naming the field, if it is one)
                    deferred.append((number, bad[0]))
        elif "file" in rec:
            rel = _check_file_name(rec["file"], f"{where} lists", jpath)
            files[rel] = _check_file_info({k: v for k, v in rec.items() if k != "file"}, f"{where} ({rel})", jpath)
        else:
            raise TraceFormatError(f'{where}: expected a "file" or a "stage" record, got keys {_short(sorted(rec))}.',
                                   path=jpath)
    manifest["stages"], manifest["files"] = stages, files
    manifest.setdefault("incomplete_reason", "capture was interrupted")


def _is_scalar(v: object) -> bool:
    return type(v) in (str, int, float, bool)


_NO_DICT: dict[str, Any] = {}
_NO_SHAPE: list[int] = []
_SCALARS = (str, int, float, bool)


def _stage(raw: object, pos: int, where: str, path: str, headers: dict[str, tuple[dict[str, TensorEntry], int]],
           seen: set[str]) -> Stage:
    """Check one stage entry of the manifest (or journal), and make its :class:`Stage`.

    A well-formed tensor entry (nearly all of them: a trace may hold millions) is checked here in
    one pass; anything else goes to :func:`_checked_stage`, which checks field by field and
    raises naming the field.
    """
    if type(raw) is dict and raw.get("kind", "tensor") == "tensor":
        key = raw.get("key")
        rel = raw.get("file")
        hdr = headers.get(rel) if type(rel) is str else None
        entry = hdr[0].get(key) if hdr is not None and type(key) is str else None
        if entry is not None and key not in seen:
            shape = raw.get("shape", _NO_SHAPE)
            axes = raw.get("axes")
            units = raw.get("units")
            indices = raw.get("indices", _NO_DICT)
            provenance = raw.get("provenance", _NO_DICT)
            occurrence = raw.get("occurrence", 0)
            # entry (the data file's header) is checked: a shape of ints equal to its shape is valid
            if (raw.get("dtype") == entry.dtype and type(shape) is list and len(shape) == len(entry.shape)
                    and all(type(n) is int for n in shape) and tuple(shape) == entry.shape
                    and type(occurrence) is int and 0 <= occurrence <= MAX_INDEX
                    and (axes is None or (type(axes) is list and len(axes) == len(shape)
                                          and all(type(a) is str for a in axes)))
                    and (units is None or type(units) is str)
                    and type(indices) is dict and (not indices or all(type(v) in _SCALARS for v in indices.values()))
                    and type(provenance) is dict):
                try:
                    validate_key(key)
                except (StageKeyError, ValueError):
                    pass  # _checked_stage says so
                else:
                    seen.add(key)
                    return Stage(key=key, kind="tensor", dtype=entry.dtype, shape=entry.shape,
                                 axes=tuple(axes) if axes is not None else None, units=units, indices=dict(indices),
                                 provenance=dict(provenance), occurrence=occurrence, position=pos, file=rel)
    return _checked_stage(raw, pos, where, path, headers, seen)


def _field_error(name: str, raw: dict[str, Any], field: str, expected: str, path: str) -> TraceFormatError:
    return TraceFormatError(f"{name}: {field} must be {expected}, got {_short(raw[field])}.", path=path)


def _checked_stage(raw: object, pos: int, where: str, path: str,
                   headers: dict[str, tuple[dict[str, TensorEntry], int]], seen: set[str]) -> Stage:
    """Check one stage entry field by field, raising naming the field; make its :class:`Stage`."""
    if type(raw) is not dict:
        raise TraceFormatError(f"{where}stage #{pos}: expected a stage entry (an object), got {_short(raw)}.", path=path)
    key = raw.get("key")
    if type(key) is not str:
        raise TraceFormatError(f"{where}stage #{pos}: key must be a string, got {_short(key)}.", path=path)
    try:
        validate_key(key)
    except (StageKeyError, ValueError) as e:
        raise TraceFormatError(f"{where}stage #{pos}: {e}", path=path) from e
    name = f"{where}stage {key!r}"

    def bad(field: str, expected: str) -> TraceFormatError:
        return _field_error(name, raw, field, expected, path)  # type: ignore[arg-type]

    if key in seen:
        raise TraceFormatError(f"{name} is listed twice.", path=path)
    seen.add(key)
    kind = raw.get("kind", "tensor")
    if kind not in ("tensor", "text"):
        raise TraceFormatError(f"{name} has unknown kind {_short(kind)}; expected tensor or text.", path=path)
    axes = raw.get("axes")
    if axes is not None and (type(axes) is not list or not all(type(a) is str for a in axes)):
        raise bad("axes", "a list of strings")
    units = raw.get("units")
    if units is not None and type(units) is not str:
        raise bad("units", "a string")
    indices = raw.get("indices", {})
    if type(indices) is not dict or not all(_is_scalar(v) for v in indices.values()):
        raise bad("indices", "an object of strings, numbers and booleans")
    provenance = raw.get("provenance", {})
    if type(provenance) is not dict:
        raise bad("provenance", "an object")
    occurrence = raw.get("occurrence", 0)
    if not is_index(occurrence):
        raise bad("occurrence", "a non-negative integer")
    common = dict(key=key, kind=kind, axes=tuple(axes) if axes is not None else None, units=units,
                  indices=dict(indices), provenance=dict(provenance), occurrence=occurrence, position=pos)
    if kind == "text":
        if type(raw.get("text")) is not str:
            raise TraceFormatError(f"{name} is a text stage without text (a string).", path=path)
        return Stage(dtype=None, shape=(), text=raw["text"], **common)
    shape = raw.get("shape", [])
    if type(shape) is not list or not all(is_index(n) for n in shape):
        raise bad("shape", "a list of non-negative integers")
    dtype = raw.get("dtype")
    if type(dtype) is not str or dtype not in DTYPES:
        raise TraceFormatError(f"{name}: dtype must be one of {', '.join(DTYPES)}, got {_short(dtype)}.", path=path)
    rel = raw.get("file")
    if type(rel) is not str:
        raise TraceFormatError(f"{name}: file must be the name of a data file, got {_short(rel)}.", path=path)
    if rel not in headers:
        raise TraceFormatError(f"{name} points at data file {_short(rel)}, which the manifest does not list.", path=path)
    entry = headers[rel][0].get(key)
    if entry is None:
        raise TraceFormatError(f"{name} is not in data file {rel}.", path=path)
    if dtype != entry.dtype or tuple(shape) != entry.shape:
        raise TraceFormatError(f"{name}: the entry says {dtype} {tuple(shape)} but {rel} holds {entry.dtype} "
                               f"{entry.shape}.", path=path)
    if axes is not None and len(axes) != len(shape):
        raise TraceFormatError(f"{name}: axes {axes} do not match shape {tuple(shape)}.", path=path)
    return Stage(dtype=entry.dtype, shape=entry.shape, file=rel, **common)


def load_trace(path: str | os.PathLike[str], *, follow_symlinks: bool = False) -> Trace:
    """Open a trace directory for reading.

    Checks the manifest and every data file's header and size (cheap); call
    :meth:`Trace.verify` to also check the checksum (CRC-32) of every data file.

    Args:
        path: the ``NAME.trace`` directory (it may itself be a symbolic link).
        follow_symlinks: also read a manifest, journal, ``data/`` folder or data file that is a
            symbolic link to somewhere outside the trace directory (refused by default).

    Returns:
        A :class:`Trace`; ``trace.complete`` is False for an interrupted capture.

    Raises:
        TraceFormatError: the directory is not a trace, or a file is corrupt, truncated or foreign
            (the message names the file, and the stage or journal line at fault).
        TraceError: a file of the trace is a symbolic link out of the trace directory.

    Example:
        >>> t = load_trace("ref.trace")
        >>> t, t.complete, t.meta
        (<Trace 'ref.trace': 31 stages, complete>, True, {'dtype': 'float64', 'impl': 'reference'})
        >>> load_trace("parity.toml")
        Traceback (most recent call last):
        ...
        parity.errors.TraceFormatError: parity.toml: is not a trace directory (a trace is a directory holding manifest.json).
    """
    path = os.fspath(path)
    manifest, bad = _read_manifest(path, follow_symlinks)
    origins, deferred = _replay_journal(path, manifest, follow_symlinks)
    mpath = os.path.join(path, MANIFEST)
    headers: dict[str, tuple[dict[str, TensorEntry], int]] = {}
    files = manifest.get("files", {})
    if files and os.path.lexists(os.path.join(path, DATA_DIR)):
        check_inside(path, os.path.join(path, DATA_DIR), follow_symlinks=follow_symlinks, what="data directory")
    for rel, info in files.items():
        _check_file_name(rel, "lists", mpath)
        _check_file_info(info, f'data file "{rel}"', mpath)
        full = os.path.join(path, rel)
        if os.path.lexists(full):
            check_inside(path, full, follow_symlinks=follow_symlinks, what="data file")
        entries, _meta, start = read_header(full)
        size = info.get("bytes")
        actual = os.path.getsize(full)
        if size is not None and size != actual:
            raise TraceFormatError(f"is {actual} bytes long but the manifest says {size}; the file is truncated or was "
                                   "changed.", path=full)
        headers[rel] = (entries, start)
    stages: list[Stage] = []
    seen: set[str] = set()
    raw_stages = manifest.get("stages", [])
    first_replayed = len(raw_stages) - len(origins)
    for pos, raw in enumerate(raw_stages):
        if pos < first_replayed:
            stages.append(_stage(raw, pos, "", mpath, headers, seen))
        else:
            jpath, line = origins[pos - first_replayed]
            stages.append(_stage(raw, pos, f"line {line}: ", jpath, headers, seen))
    if deferred:  # non-finite numbers in no field checked above (provenance...)
        line, number = deferred[0]
        raise TraceFormatError(f"line {line}: holds the number {number!r}; a trace holds only finite numbers.",
                               path=os.path.join(path, JOURNAL))
    if bad:  # the same in the manifest (provenance, meta...)
        _refuse_bad_numbers(manifest, mpath, bad)
    return Trace(path, manifest, stages, headers)
