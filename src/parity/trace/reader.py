"""Read a trace directory: the manifest (plus the journal of an interrupted capture), or the
manifest and the stage index of a trace of many stages (:mod:`parity.trace.index`), and
memory-mapped stage arrays."""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import StageNotFoundError, TraceFormatError, UsageError
from ..safefs import check_inside
from .jsonsafe import BadNumber
from .entries import stage_from_entry
from .manifest import _check_file_info, _check_file_name, _refuse_bad_numbers, parse_manifest, replay_journal_lines
from .safetensors_header import TensorEntry, data_start, open_data_file, open_regular, read_header
from .index import FileExtents, StageEntries, StageIndex, file_number
from .stage import Stage
from .storage import is_remote, local_path
from .checksum import crc32, crc32_hex
from .dtypes import DTYPES, storage_dtype
from .layout import DATA_DIR, INDEX, JOURNAL, MANIFEST
from .layout import SCHEMA_VERSION  # noqa: F401  (importers read it here)

__all__ = ["Stage", "Trace", "load_trace"]


#: Data files up to this size stay mapped once opened; larger ones are mapped per read.
KEEP_MAPPED_BYTES = 64 << 20


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

    #: Whether :meth:`elements` reads a range of a stage without the rest of it (a sharded trace cannot).
    range_reads = True

    def __init__(self, path: str | os.PathLike[str], manifest: dict[str, Any], stages: list[Stage] | StageIndex,
                 headers: dict[str, tuple[Any, int]]):
        self.path = os.fspath(path)
        self.manifest = manifest
        # a list of stages (made when the trace was opened), or the stage index (stages made when asked for)
        self._index = stages if isinstance(stages, StageIndex) else None
        self._stages: list[Stage] = [] if self._index is not None else stages  # type: ignore[assignment]
        self._by_key_table: dict[str, Stage] | None = None
        self._headers = headers
        self._data_ends: dict[str, int] = {}
        self._maps: dict[str, mmap.mmap] = {}

    @property
    def _by_key(self) -> dict[str, Stage]:
        """The stages by key (of a trace that lists its stages), made on first use."""
        if self._by_key_table is None:
            self._by_key_table = {s.key: s for s in self._stages}
        return self._by_key_table

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
        if self._index is not None:
            return list(self._index.keys)
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
        if self._index is not None:
            row = self._index.row(key) if type(key) is str else None
            if row is not None:
                return self._index.stage(row)
        else:
            found = self._by_key.get(key)
            if found is not None:
                return found
        raise StageNotFoundError(f"no such stage; the trace has {len(self)} stages.", path=self.path, stage=key)

    def __iter__(self) -> Iterator[Stage]:
        return self._index.stages() if self._index is not None else iter(self._stages)

    def __len__(self) -> int:
        return len(self._index) if self._index is not None else len(self._stages)

    def __contains__(self, key: object) -> bool:
        if self._index is not None:
            return type(key) is str and self._index.row(key) is not None
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
        begin, dt = self._begin(stage), storage_dtype(DTYPES[stage.dtype])
        count = stage.size
        arr = self._read(stage.file, begin, begin + count * dt.itemsize, dt) if count else np.empty(0, dt)
        return arr.reshape(stage.shape)

    def elements(self, stage: Stage, start: int, end: int) -> np.ndarray:
        """Elements ``start..end-1`` (C order) of tensor stage ``stage``, read alone: a view of
        the mapped file, or one ranged read of just those bytes from a remote trace (a Dask
        worker comparing one range of a huge stage fetches only that range).

        >>> t = load_trace("ref.trace")
        >>> bool((t.elements(t.stage("embedding"), 40, 44) == t["embedding"].reshape(-1)[40:44]).all())
        True
        """
        if stage.kind != "tensor" or not 0 <= start <= end <= stage.size:
            raise UsageError(f"elements [{start}, {end}) of a {stage.kind} stage of {stage.size} elements cannot be read.",
                             path=self.path, stage=stage.key)
        return self._elements(stage, start, end)

    def _elements(self, stage: Stage, start: int, end: int) -> np.ndarray:
        """:meth:`elements` of a range already checked."""
        begin, dt = self._begin(stage), storage_dtype(DTYPES[stage.dtype or ""])
        if start == end:
            return np.empty(0, dt)
        return self._read(stage.file or "", begin + start * dt.itemsize, begin + end * dt.itemsize, dt)

    def _begin(self, stage: Stage) -> int:
        """Where ``stage``'s bytes begin in its data file's data buffer."""
        ix, pos = self._index, stage.position  # an indexed trace's own stage: begin from the index column
        if ix is not None and pos < len(ix.keys) and ix.keys[pos] == stage.key:
            return int(ix.begin[pos])
        return self._headers[stage.file][0][stage.key].begin

    @property
    def index(self) -> StageIndex | None:
        """The stage index of a trace that lists its stages in one (its columns:
        :mod:`parity.trace.index`), else ``None``."""
        return self._index

    def rows(self, first: int, end: int) -> np.ndarray | None:
        """The values of the stages at positions ``first..end-1`` as one read-only
        ``(end - first, size)`` array (row ``k``: stage ``first + k``, flattened), read at once, when
        the trace lists its stages in an index and those are non-empty tensors of one dtype and
        size lying back to back in one data file; else ``None`` (read them with :meth:`array`).

        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "rows.trace")
        >>> with parity.trace.TraceWriter(path, index=True) as w:
        ...     _ = w.add_batch([f"step.{i}.logits" for i in range(4)], [(3,)] * 4, np.arange(12, dtype=np.float32))
        >>> load_trace(path).rows(1, 3)
        array([[3., 4., 5.],
               [6., 7., 8.]], dtype=float32)
        >>> load_trace("ref.trace").rows(0, 2) is None  # a trace that lists its stages in the manifest
        True
        """
        span = self._index.span(first, end) if self._index is not None else None
        if span is None:
            return None
        rel, begin, stop, code = span
        return self._read(rel, begin, stop, storage_dtype(DTYPES[code])).reshape(end - first, -1)

    def _read(self, rel: str, begin: int, end: int, dtype: np.dtype) -> np.ndarray:
        """Bytes ``[begin, end)`` of data file ``rel``'s data buffer as a read-only array of ``dtype``."""
        data_start = self._headers[rel][1]
        mm = self._maps.get(rel)
        if mm is None:
            mm = self._map(rel, data_start)
        return np.frombuffer(mm, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=data_start + begin)

    def _map(self, rel: str, data_start: int) -> mmap.mmap:
        """Map data file ``rel``: kept if small, else per read and unmapped with the last array
        viewing it (a trace larger than memory keeps only the stages in use resident)."""
        full = os.path.join(self.path, rel)
        with os.fdopen(open_regular(full, "data file"), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < data_start + self._data_end(rel):
                raise TraceFormatError(f"is now {size} bytes long, shorter than when the trace was opened; "
                                       "the file was truncated or replaced.", path=full)
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if size <= KEEP_MAPPED_BYTES:
            self._maps[rel] = mm
        return mm

    def _data_end(self, rel: str) -> int:
        """Bytes of the data buffer of data file ``rel`` that its stages hold."""
        end = self._data_ends.get(rel)
        if end is None:
            if self._index is not None:
                end = self._index.data_lengths[file_number(rel)]
            else:
                end = max((e.end for e in self._headers[rel][0].values()), default=0)
            self._data_ends[rel] = end
        return end

    def verify(self) -> list[str]:
        """Re-checksum every data file (and the stage index) against the manifest.

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
        files = dict(self.manifest.get("files", {}))
        if "index" in self.manifest:
            files[INDEX] = self.manifest["index"]
        for rel, info in files.items():
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
    raw = _read_inside(path, mpath, follow_symlinks, "manifest", "has no manifest.json; it is not a parity trace.", path)
    return parse_manifest(raw, mpath)


def _read_inside(path: str, full: str, follow_symlinks: bool, what: str, missing: str, where: str) -> bytes:
    """The bytes of ``full``, a file of the trace ``path`` (never a link out of it); a missing
    one is a TraceFormatError saying ``missing`` about ``where``."""
    if os.path.lexists(full):
        check_inside(path, full, follow_symlinks=follow_symlinks, what=what)
    try:
        return _read_file(full, what)
    except FileNotFoundError as e:
        raise TraceFormatError(missing, path=where) from e


def _replay_journal(path: str, manifest: dict[str, Any], follow_symlinks: bool
                    ) -> tuple[list[tuple[str, int]], list[tuple[int, BadNumber]]]:
    """Fold the journal of an interrupted capture into ``manifest`` (in place).

    Returns the origin (file, line number) of each stage entry replayed from it, in order, and
    the (line number, number) of the non-finite numbers of those entries. The last line, when it
    has no newline, is what a writer killed mid-line left and is ignored; any other line must be
    a whole, well-formed record.
    """
    jpath = os.path.join(path, JOURNAL)
    if manifest.get("complete") or "index" in manifest or not os.path.lexists(jpath):
        return [], []  # (a manifest with a stage index was written on close: it holds every journaled stage)
    check_inside(path, jpath, follow_symlinks=follow_symlinks, what="journal")
    origins: list[tuple[str, int]] = []
    deferred: list[tuple[int, BadNumber]] = []
    with os.fdopen(open_regular(jpath, "journal"), "rb") as f:  # read line by line: it may be large
        replay_journal_lines(f, jpath, manifest, origins, deferred)
    return origins, deferred


def load_trace(path: str | os.PathLike[str], *, follow_symlinks: bool = False,
               storage_options: dict[str, Any] | None = None) -> Trace:
    """Open a trace directory for reading.

    Checks the manifest and every data file's header and size (cheap); call
    :meth:`Trace.verify` to also check the checksum (CRC-32) of every data file.

    Args:
        path: the ``NAME.trace`` directory (it may itself be a symbolic link), a ``file://``
            URL, or any fsspec URL (``memory://``, ``s3://bucket/ref.trace`` with s3fs...): see
            :mod:`parity.trace.storage`; a remote trace fetches only the byte ranges it reads.
        follow_symlinks: also read a manifest, journal, ``data/`` folder or data file that is a
            symbolic link to somewhere outside the trace directory (refused by default).
        storage_options: options for the fsspec filesystem of a URL (endpoint, credentials).

    Returns:
        A :class:`Trace`; ``trace.complete`` is False for an interrupted capture. A sharded
        capture's directory (``shards.json``) gives a :class:`~parity.trace.sharded.ShardedTrace`.

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
    if is_remote(path):
        from .remote import load_remote_trace

        return load_remote_trace(path, storage_options)
    path = local_path(path)
    if os.path.isfile(os.path.join(path, "shards.json")) and not os.path.lexists(os.path.join(path, MANIFEST)):
        from .sharded import load_sharded_trace  # one logical trace written by several ranks

        return load_sharded_trace(path, follow_symlinks=follow_symlinks)
    manifest, bad = _read_manifest(path, follow_symlinks)
    if "index" in manifest:
        return _load_indexed(path, manifest, bad, follow_symlinks)
    origins, deferred = _replay_journal(path, manifest, follow_symlinks)
    headers = _local_headers(path, manifest, follow_symlinks)
    return assemble_trace(Trace, path, os.path.join(path, MANIFEST), manifest, bad, origins, deferred, headers)


def _load_indexed(path: str, manifest: dict[str, Any], bad: list[BadNumber], follow_symlinks: bool) -> Trace:
    """A trace whose stages are in its stage index: the data files' headers are not parsed (the
    index gives every stage's bytes), only their length and size are checked."""
    mpath = os.path.join(path, MANIFEST)
    files = manifest.get("files", {})
    if files and os.path.lexists(os.path.join(path, DATA_DIR)):
        check_inside(path, os.path.join(path, DATA_DIR), follow_symlinks=follow_symlinks, what="data directory")
    starts: dict[str, tuple[int, int]] = {}
    for rel, info in files.items():
        check_file_entry(rel, info, mpath)
        full = os.path.join(path, rel)
        if os.path.lexists(full):
            check_inside(path, full, follow_symlinks=follow_symlinks, what="data file")
        starts[rel] = _data_start(full, info)
    ipath = os.path.join(path, INDEX)
    raw = _read_inside(path, ipath, follow_symlinks, "stage index", "the stage index the manifest names is missing.", ipath)
    return finish_indexed(Trace, path, mpath, manifest, bad, raw, ipath, starts)


def _data_start(full: str, info: dict[str, Any]) -> tuple[int, int]:
    """(offset of the data buffer, file size) of data file ``full``, from its 8-byte header length."""
    with open_data_file(full) as f:
        size = os.fstat(f.fileno()).st_size
        check_file_size(info, size, full)
        prefix = f.read(8)
    return data_start(prefix, size, full), size


def finish_indexed(cls: type[Trace], path: str, mpath: str, manifest: dict[str, Any], bad: list[BadNumber],
                   raw: bytes, ipath: str, starts: dict[str, tuple[int, int]], **extra: Any) -> Trace:
    """Check the stage index ``raw`` (read from ``ipath``) against the manifest and the data files
    (``starts``: the offset of each one's data buffer and its size), and make the ``cls`` trace."""
    info = manifest["index"]
    if len(raw) != info["bytes"]:
        raise TraceFormatError(f"is {len(raw)} bytes long but the manifest says {info['bytes']}; the stage index is "
                               "truncated or was changed.", path=ipath)
    got = crc32_hex(crc32(raw))
    if got != info["crc32"]:
        raise TraceFormatError(f"crc32 {got} does not match the manifest's {info['crc32']}; the stage index is "
                               "corrupt or from another trace.", path=ipath)
    lengths = {file_number(rel): size - start for rel, (start, size) in starts.items()}
    index = StageIndex(raw, ipath, info["stages"], lengths)
    if bad:  # non-finite numbers in the manifest (meta...)
        _refuse_bad_numbers(manifest, mpath, bad)
    manifest["stages"] = StageEntries(index)
    headers = {rel: (FileExtents(index, file_number(rel)), start) for rel, (start, _) in starts.items()}
    return cls(path, manifest, index, headers, **extra)


def _local_headers(path: str, manifest: dict[str, Any], follow_symlinks: bool
                   ) -> dict[str, tuple[dict[str, TensorEntry], int]]:
    """The safetensors header of every data file the manifest lists, checked against its entry."""
    mpath = os.path.join(path, MANIFEST)
    headers: dict[str, tuple[dict[str, TensorEntry], int]] = {}
    files = manifest.get("files", {})
    if files and os.path.lexists(os.path.join(path, DATA_DIR)):
        check_inside(path, os.path.join(path, DATA_DIR), follow_symlinks=follow_symlinks, what="data directory")
    for rel, info in files.items():
        check_file_entry(rel, info, mpath)
        full = os.path.join(path, rel)
        if os.path.lexists(full):
            check_inside(path, full, follow_symlinks=follow_symlinks, what="data file")
        entries, _meta, start = read_header(full)
        check_file_size(info, os.path.getsize(full), full)
        headers[rel] = (entries, start)
    return headers


def check_file_entry(rel: object, info: object, mpath: str) -> None:
    """A ``files`` entry of the manifest: its name and its fields."""
    _check_file_name(rel, "lists", mpath)
    _check_file_info(info, f'data file "{rel}"', mpath)


def check_file_size(info: dict[str, Any], actual: int, full: str) -> None:
    """The data file ``full`` is ``actual`` bytes long: as long as the manifest says."""
    size = info.get("bytes")
    if size is not None and size != actual:
        raise TraceFormatError(f"is {actual} bytes long but the manifest says {size}; the file is truncated or was "
                               "changed.", path=full)


def assemble_trace(cls: type[Trace], path: str, mpath: str, manifest: dict[str, Any], bad: list[BadNumber],
                   origins: list[tuple[str, int]], deferred: list[tuple[int, BadNumber]],
                   headers: dict[str, tuple[dict[str, TensorEntry], int]], **extra: Any) -> Trace:
    """Check every stage entry against the data files' headers and make the ``cls`` trace
    (:class:`Trace` locally, a remote one by URL); shared by every way a trace is opened. A
    manifest with a stage index reads it through ``extra["remote"]`` (a remote trace's files)."""
    if "index" in manifest:
        remote = extra.get("remote")
        if remote is None:
            raise TraceFormatError("has a stage index, which this way of opening traces cannot read.", path=mpath)
        starts = {rel: (start, start + max((e.end for e in entries.values()), default=0))
                  for rel, (entries, start) in headers.items()}
        return finish_indexed(cls, path, mpath, manifest, bad, remote.read(INDEX, "stage index"), remote.label(INDEX),
                              starts, **extra)
    stages: list[Stage] = []
    seen: set[str] = set()
    raw_stages = manifest.get("stages", [])
    first_replayed = len(raw_stages) - len(origins)
    for pos, raw in enumerate(raw_stages):
        if pos < first_replayed:
            stages.append(stage_from_entry(raw, pos, "", mpath, headers, seen))
        else:
            jpath, line = origins[pos - first_replayed]
            stages.append(stage_from_entry(raw, pos, f"line {line}: ", jpath, headers, seen))
    if deferred:  # non-finite numbers in no field checked above (provenance...)
        line, number = deferred[0]
        raise TraceFormatError(f"line {line}: holds the number {number!r}; a trace holds only finite numbers.",
                               path=origins[0][0] if origins else os.path.join(path, JOURNAL))
    if bad:  # the same in the manifest (provenance, meta...)
        _refuse_bad_numbers(manifest, mpath, bad)
    return cls(path, manifest, stages, headers, **extra)
