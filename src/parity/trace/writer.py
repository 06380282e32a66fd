"""Streaming, crash-safe, deterministic trace writer.

Small stages are buffered (at most ``buffer_bytes``) and flushed together into one safetensors
shard; a large stage goes straight from the caller's array to its own shard. Each shard is written
under a temporary name and renamed, then its stages are appended to ``journal.jsonl``; closing
writes the final ``manifest.json`` and removes the journal. A writer killed at any point leaves
``manifest.json`` (``complete: false``) plus the journal of every shard already renamed, which
:func:`parity.load_trace` reads as an incomplete trace.

Each stage's manifest entry is rendered once, when it is journaled, and kept in
``stages.json.tmp`` (not in memory) until closing copies it into the manifest. A trace of more
than :data:`~parity.trace.index.INDEX_THRESHOLD` stages lists them instead in its stage index
(:mod:`parity.trace.index`), whose rows are collected as the stages are journaled.

:class:`TraceWriter` has three ways in, each in its own module: :meth:`~TraceWriter.add` (here,
with the format core: entries, journal, manifest), :meth:`~TraceWriter.add_packed` and its parts
(:mod:`parity.trace.packed`), and :meth:`~TraceWriter.add_batch` (``parity.trace._batch``). The
data files are written by :mod:`parity.trace.datafiles`, the JSON text by ``parity.trace._jsontext``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any

import numpy as np

from .._version import __version__
from ..errors import StageKeyError, TraceError, UsageError
from ..redact import redact_args
from ..safefs import atomic_file, atomic_write, open_new, refuse_symlink
from ._batch import _BatchWriting
from ._jsontext import (_dump, _emit, _entry_text, _indices_entry, _journal_text, _jsonable, _keyed, _plain, _Spilled,
                        _StageTexts)
from .checksum import crc32_hex
from .convert import as_array
from .datafiles import _MIN_STAGE_COST, _Pending, _write_shard_file
from .dtypes import DType
from .keys import make_key, split_key, validate_key
from .index import INDEX_THRESHOLD, file_number
from .index_writer import IndexBuilder, shard_offsets
from .layout import (DATA_DIR, FORMAT_NAME, INDEX, INDEXED_SCHEMA_VERSION, JOURNAL, MANIFEST, SCHEMA_VERSION, STAGE_TEXTS,
                     VOLATILE, data_file)
from .packed import PackedShard, PackedStage, _PackedWriting
from .storage import is_remote, local_path

# re-exported: importers, tests and benchmarks import these from here (homes: _jsontext, datafiles)
from ._jsontext import _dump_fast, _flat_texts  # noqa: F401
from .datafiles import _stage_write, _write_data_file, byte_chunks  # noqa: F401

_NO_OFFSETS = (np.empty(0, np.int64), np.empty(0, np.int64))

__all__ = ["TraceWriter", "PackedStage", "PackedShard", "SCHEMA_VERSION", "FORMAT_NAME", "environment_summary"]


def environment_summary() -> dict[str, str]:
    """Stable facts about the capturing machine (no environment variables, nothing secret).

    >>> sorted(environment_summary())
    ['machine', 'numpy', 'platform', 'python']
    """
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": sys.platform,
        "machine": platform.machine(),
    }


def _remote_staging(url: str) -> str:
    """A local temporary directory for a trace that will be uploaded to ``url``; refuses early a
    URL that holds something other than a parity trace."""
    import tempfile

    from .storage import open_remote

    remote = open_remote(url)
    if remote.exists() and not remote.exists(MANIFEST) and remote.fs.ls(remote.root):
        raise TraceError("is a non-empty directory that is not a parity trace; refusing to write into it.", path=url)
    return tempfile.mkdtemp(prefix="parity-upload-")


class TraceWriter(_PackedWriting, _BatchWriting):
    """Write stages, in execution order, into a ``NAME.trace/`` directory.

    Args:
        path: the trace directory. An existing parity trace there is replaced; any other existing
            non-empty directory or file is refused, so nothing of the user's is deleted. An fsspec
            URL (``s3://bucket/run/ref.trace``, ``memory://...``) is written to a local temporary
            directory with the same rules and uploaded on :meth:`close`, the manifest last
            (:mod:`parity.trace.remote`).
        meta: JSON-serialisable trace-level metadata (e.g. ``{"impl": "reference"}``).
        producer: who produced the trace (default ``"parity.record"``).
        command: the command line that produced the trace, as an argument list.
        buffer_bytes: bytes of small stages held before they are flushed to a shard. Stages larger
            than a quarter of this are written directly to their own shard.
        volatile: also write ``run.json`` with timestamps and host (kept out of the manifest so
            that two captures of the same values are byte-identical).
        index: list the stages in a stage index (``index.safetensors``, schema version 2: opens
            in a fraction of a second at a million stages) instead of the manifest: ``None``
            (default) when there are more than :data:`~parity.trace.index.INDEX_THRESHOLD`
            (65,536), ``True`` always, ``False`` never.

    Used as a context manager, the writer is closed when the block ends: the trace is complete, or
    incomplete (with the exception named) when the block raised.

    Example:
        >>> with TraceWriter("mine.trace", meta={"impl": "port"}) as w:
        ...     w.add("x", np.arange(3.0))
        ...     w.add("x", np.arange(3.0) * 2)   # second occurrence is kept as "x#1"
        'x'
        'x#1'
        >>> parity.load_trace("mine.trace").keys()
        ['x', 'x#1']
        >>> try:
        ...     with TraceWriter("failed.trace") as w:
        ...         _ = w.add("x", 1.0)
        ...         raise KeyError("boom")
        ... except KeyError:
        ...     pass
        >>> t = parity.load_trace("failed.trace")
        >>> t.complete, t.manifest["incomplete_reason"], t.keys()
        (False, 'KeyError raised during capture', ['x'])
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
        index: bool | None = None,
    ):
        self.url: str | None = None  # where the trace is uploaded on close, when path is a URL
        self._staging: str | None = None
        if is_remote(path):
            self.url, self._staging = str(path), _remote_staging(str(path))
            path = os.path.join(self._staging, "trace")
        self.path = local_path(path)
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
        self._index_mode = index
        self._index_builder = IndexBuilder() if index is not False else None  # the rows of a stage index
        self._files: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, int] = {}
        self._parsed_keys: dict[str, tuple[str, dict[str, str], str]] = {}
        self._index_names: set[str] = set()  # index names already checked
        self._keys_with_indices = False  # whether a key ever carried [indices] of its own
        self._shape_cache: dict[tuple[int, ...], tuple[int, str, str, str]] = {}
        self._pending: list[Any] = []  # datafiles._Pending stages and _batch._Run runs
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
        if index is not True:
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
            for name in (DATA_DIR, MANIFEST, JOURNAL, VOLATILE, INDEX):  # never write through a planted link
                if name in entries:
                    refuse_symlink(os.path.join(p, name), what="data directory" if name == DATA_DIR else "file")
            for name in entries:  # only our own files: manifest, journal, run.json, data/
                full = os.path.join(p, name)
                if name == DATA_DIR and os.path.isdir(full):
                    shutil.rmtree(full)
                elif name in (MANIFEST, JOURNAL, VOLATILE, INDEX) or name.endswith(".tmp"):
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

        >>> with TraceWriter("add.trace") as w:
        ...     w.add("energy", np.float32(1.5), indices={"step": 3}, provenance={"line": 12})
        ...     w.add("forces", np.zeros((2, 3)), axes=["atom", "xyz"], units="eV/angstrom")
        ...     w.add("status", "converged")   # a str is a text stage
        'energy[step=3]'
        'forces'
        'status'
        >>> t = parity.load_trace("add.trace")
        >>> t.stage("energy[step=3]").indices, t["forces"].shape, t["status"]
        ({'step': 3}, (2, 3), 'converged')
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

    def close(self, complete: bool = True, reason: str | None = None) -> None:
        """Flush buffered stages and write the final manifest (idempotent).

        Args:
            complete: mark the trace complete. Pass ``False`` when the computation failed.
            reason: why the trace is incomplete, stored in the manifest.

        >>> w = TraceWriter("cut.trace")
        >>> _ = w.add("x", 1.0)
        >>> w.close(complete=False, reason="the solver diverged")
        >>> w.close()   # closing again does nothing
        >>> t = parity.load_trace("cut.trace")
        >>> t.complete, t.manifest["incomplete_reason"]
        (False, 'the solver diverged')
        """
        with self._lock:
            if self._closed:
                return
            self._flush()
            self._write_manifest(complete=complete, reason=reason, final=True)
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
            if self.url is not None:
                self._upload()

    def _upload(self) -> None:
        """Copy the closed local trace to :attr:`url` (manifest last) and drop the local copy."""
        from .remote import upload_trace

        try:
            upload_trace(self.path, self.url, overwrite=True)
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)

    def update_meta(self, **items: Any) -> None:
        """Add or replace trace-level metadata before :meth:`close` (e.g. facts known only at the end).

        Raises:
            UsageError: a value is not JSON-serialisable.
            TraceError: the writer is closed.

        >>> with TraceWriter("meta.trace", meta={"impl": "port"}) as w:
        ...     w.update_meta(steps=40)
        >>> parity.load_trace("meta.trace").meta
        {'impl': 'port', 'steps': 40}
        """
        if self._closed:
            raise TraceError("the trace writer is closed; its metadata can no longer change.", path=self.path)
        self._meta.update(_jsonable(dict(items), "trace meta"))

    @property
    def keys(self) -> list[str]:
        """Keys recorded so far, in execution order.

        >>> with TraceWriter("keys.trace") as w:
        ...     _ = w.add("a", 1.0); _ = w.add("a", 2.0)
        ...     w.keys
        ['a', 'a#1']
        """
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

    # -- internals ----------------------------------------------------------------------------
    def _flush(self) -> None:
        pending, entries = self._pending, self._pending_entries
        self._pending, self._pending_entries, self._pending_bytes = [], [], 0
        self._pending_text_bytes = 0
        if pending:
            self._write_shard(pending, entries)
        elif entries:
            self._journal_append(entries, offsets=_NO_OFFSETS)

    def _write_shard(self, tensors: list[Any], entries: list[dict[str, Any] | tuple[str, str]]) -> None:
        """Write ``tensors`` (``_Pending`` stages, ``_batch._Run`` runs) as the next data file, then
        journal ``entries`` (theirs, and any text stages among them)."""
        rel = data_file(self._shard)
        self._shard += 1
        nbytes, crc = _write_shard_file(os.path.join(self.path, rel), tensors)
        self._files[rel] = {"bytes": nbytes, "crc32": crc32_hex(crc)}
        for e in entries:
            if type(e) is dict and e["kind"] == "tensor":
                e["file"] = rel
        offsets = shard_offsets(tensors) if self._index_builder is not None else _NO_OFFSETS
        self._journal_append(entries, file=(rel, self._files[rel]), offsets=offsets)

    def _journal_append(self, entries: list[Any], file: tuple[str, dict[str, Any]] | None = None,
                        offsets: tuple[Any, Any] | None = None, rows: Any = None) -> None:
        """Append journal lines for these entries (after the line of their data file), and their
        manifest text to the stage texts. An entry is a dict (rendered here), or the (manifest,
        journal, count[, index rows]) texts of one or many stages (str or UTF-8, joined as the
        manifest and the journal join entries), or a :class:`_Spilled` reference to such texts.
        Written entry by entry: no copy of all of them at once.

        The stage index (when one is kept) gets each entry's rows (``rows``: those of every
        entry, a packed shard's), and ``offsets`` (begins, ends) of their tensor stages in ``file``."""
        write = self._journal.write
        if file is not None:
            write(json.dumps({"file": file[0], **file[1]}, sort_keys=True).encode("utf-8") + b"\n")
        rendered = self._rendered
        index = self._index_builder
        for e in entries:
            if type(e) is _Spilled:
                assert self._spill is not None
                self._spill.seek(e.offset)
                e = (self._spill.read(e.manifest_bytes), self._spill.read(e.journal_bytes), e.count, e.rows)
            if type(e) is dict:
                text = _entry_text(e)
                if rendered is not None:
                    rendered.append(text)
                write(_journal_text(text).encode("utf-8") + b"\n")
                if index is not None:
                    index.add_entry(e)
            else:
                if rendered is not None:
                    rendered.append(e[0], e[2] if len(e) > 2 else 1)
                write(e[1] if type(e[1]) is bytes else e[1].encode("utf-8"))
                write(b"\n")
                if index is not None and rows is None:
                    index.add_rows(e[3])
        if index is not None:
            if rows is not None:
                index.add_rows(rows)
            index.add_file(file_number(file[0]) if file is not None else None, *(offsets or _NO_OFFSETS))
            if rendered is not None and self._index_mode is None and len(index) > INDEX_THRESHOLD:
                rendered.close()  # the trace will have a stage index: its manifest lists no stages
                self._rendered = None
        self._journal.flush()
        if self._spill is not None and not any(type(e) is _Spilled for e in self._pending_entries):
            self._spill.seek(0)
            self._spill.truncate()

    def _write_manifest(self, complete: bool, reason: str | None = None, final: bool = False) -> None:
        """Write the manifest: the first (``complete: false``, no stages: the journal lists them),
        or the ``final`` one, with every stage, or with the stage index it writes first."""
        index = None
        builder = self._index_builder
        if final and builder is not None and (self._index_mode or len(builder) > INDEX_THRESHOLD):
            with atomic_file(os.path.join(self.path, INDEX)) as f:
                nbytes, crc = builder.write(f)
            index = {"bytes": nbytes, "crc32": crc32_hex(crc), "file": INDEX, "stages": len(builder)}
        manifest: dict[str, Any] = {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION if index is None else INDEXED_SCHEMA_VERSION,
            "tool_version": __version__,
            "producer": self._producer,
            "complete": complete,
            "environment": environment_summary(),
            "meta": self._meta,
            "stages": self._rendered if self._rendered is not None else [],
            "files": dict(sorted(self._files.items())),
        }
        if index is not None:
            del manifest["stages"]
            manifest["index"] = index
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
