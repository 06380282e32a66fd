"""Streaming, crash-safe, deterministic trace writer.

Small stages are buffered (at most ``buffer_bytes``) and flushed together into one safetensors
shard; a large stage goes straight from the caller's array to its own shard. Each shard is written
under a temporary name and renamed, then its stages are appended to ``journal.jsonl``; closing
writes the final ``manifest.json`` and removes the journal. A writer killed at any point leaves
``manifest.json`` (``complete: false``) plus the journal of every shard already renamed, which
:func:`parity.load_trace` reads as an incomplete trace.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import StageKeyError, TraceError, UsageError
from ._safetensors import TensorEntry, encode_header
from .convert import as_array
from .dtypes import DType
from .keys import make_key, split_key, validate_key

__all__ = ["TraceWriter", "SCHEMA_VERSION", "FORMAT_NAME", "environment_summary"]

FORMAT_NAME = "parity-trace"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
VOLATILE = "run.json"
DATA_DIR = "data"
_CHUNK = 16 * 1024 * 1024


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
_JOURNAL_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False)


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
        out.append("\n" + " " * level + "}")
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


def _atomic_write(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _jsonable(value: Any, what: str) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{what} must be JSON-serialisable (no NaN, no objects): {e}.") from e
    return value


class _Pending:
    __slots__ = ("key", "array", "dtype")

    def __init__(self, key: str, array: np.ndarray, dtype: DType):
        self.key, self.array, self.dtype = key, array, dtype


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
        self._command = list(command) if command is not None else None
        self._buffer_limit = max(int(buffer_bytes), 1)
        self._direct_threshold = max(self._buffer_limit // 4, 1)
        self._volatile = volatile
        self._lock = threading.RLock()
        self._stages: list[dict[str, Any]] = []
        self._files: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, int] = {}
        self._parsed_keys: dict[str, tuple[str, dict[str, str], str]] = {}
        self._pending: list[_Pending] = []
        self._pending_entries: list[dict[str, Any]] = []  # every entry not yet journaled, in order
        self._pending_bytes = 0
        self._shard = 0
        self._closed = False
        self._started = _dt.datetime.now(_dt.timezone.utc)
        self._prepare_directory()
        self._journal = open(os.path.join(self.path, JOURNAL), "w", encoding="utf-8")
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
            for name in entries:  # only our own files: manifest, journal, run.json, data/
                full = os.path.join(p, name)
                if name == DATA_DIR and os.path.isdir(full) and not os.path.islink(full):
                    shutil.rmtree(full)
                elif name in (MANIFEST, JOURNAL, VOLATILE) or name.endswith(".tmp"):
                    os.remove(full)
        os.makedirs(os.path.join(p, DATA_DIR), exist_ok=True)

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
        parsed = self._parsed_keys.get(key)
        if parsed is None:  # a capture repeats its keys: parse and validate each one once
            name, idx, occ = split_key(validate_key(key))
            if occ:
                raise StageKeyError("do not pass an #occurrence yourself; parity numbers repeated keys.", stage=key)
            parsed = (name, idx, make_key(name, idx))
            if len(self._parsed_keys) < 100_000:
                self._parsed_keys[key] = parsed
        name, idx, plain = parsed
        merged: dict[str, object] = dict(idx)
        if indices:
            merged.update(indices)
            base = make_key(name, merged)
        else:
            base = plain
        converted = as_array(value, stage=base)
        entry: dict[str, Any] = {}
        if isinstance(converted, str):
            entry.update(kind="text", text=converted)
            arr, dtype = None, None
        else:
            arr, dtype = converted
            entry.update(kind="tensor", dtype=dtype.code, shape=list(arr.shape))
            if axes is not None:
                axes = [str(a) for a in axes]
                if len(axes) != arr.ndim:
                    raise UsageError(f"axes {axes} name {len(axes)} dimensions but the value has shape {tuple(arr.shape)}.", stage=base)
                entry["axes"] = axes
        if units is not None:
            entry["units"] = str(units)
        if merged:
            entry["indices"] = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in sorted(merged.items())}
        if provenance:
            prov = dict(provenance)
            entry["provenance"] = prov if _plain(prov) else _jsonable(prov, f'provenance of "{base}"')
        with self._lock:
            n = self._seen.get(base, 0)
            self._seen[base] = n + 1
            final = f"{base}#{n}" if n else base  # = make_key(name, merged, occurrence=n); base is valid
            if n:
                entry["occurrence"] = n
            entry["key"] = final
            self._stages.append(entry)
            if arr is None:
                self._pending_entries.append(entry)
            elif arr.nbytes >= self._direct_threshold:
                self._flush()
                self._write_shard([_Pending(final, arr, dtype)], [entry])
            else:
                # Copy: the caller may mutate its array after tap() returns.
                self._pending.append(_Pending(final, np.array(arr, copy=True, order="C"), dtype))
                self._pending_entries.append(entry)
                self._pending_bytes += arr.nbytes
                if self._pending_bytes >= self._buffer_limit:
                    self._flush()
            return final
            assert dtype is not None
            if arr.nbytes >= self._direct_threshold:
                self._flush()
                self._write_shard([_Pending(final, arr, dtype)], [entry])
            else:
                # Copy: the caller may mutate its array after tap() returns.
                self._pending.append(_Pending(final, np.array(arr, copy=True, order="C"), dtype))
                self._pending_entries.append(entry) if hasattr(self, "_pending_entries") else setattr(self, "_pending_entries", [entry])
                self._pending_bytes += arr.nbytes
                if self._pending_bytes >= self._buffer_limit:
                    self._flush()
            return final

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
            if self._volatile:
                now = _dt.datetime.now(_dt.timezone.utc)
                _atomic_write(
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
        return [s["key"] for s in self._stages]

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close(complete=False, reason=f"{exc_type.__name__} raised during capture")

    # -- internals ----------------------------------------------------------------------------
    def _flush(self) -> None:
        pending, entries = self._pending, self._pending_entries
        self._pending, self._pending_entries, self._pending_bytes = [], [], 0
        if pending:
            self._write_shard(pending, entries)
        elif entries:
            self._journal_append(entries)

    def _write_shard(self, tensors: list[_Pending], entries: list[dict[str, Any]]) -> None:
        rel = f"{DATA_DIR}/{self._shard:06d}.safetensors"
        self._shard += 1
        # Widest items first keeps every tensor aligned to its itemsize (as safetensors does).
        order = sorted(range(len(tensors)), key=lambda i: -tensors[i].dtype.itemsize)
        layout, offset = [], 0
        for i in order:
            t = tensors[i]
            layout.append(TensorEntry(t.key, t.dtype.code, tuple(t.array.shape), offset, offset + t.array.nbytes))
            offset += t.array.nbytes
        header = encode_header(layout, {"format": FORMAT_NAME})
        full = os.path.join(self.path, rel)
        tmp = full + ".tmp"
        h = hashlib.sha256()
        with open(tmp, "wb") as f:
            f.write(header)
            h.update(header)
            small: list[bytes] = []  # many tiny stages (scalars from a log): one write per ~1 MiB
            held = 0
            for i in order:
                arr = tensors[i].array
                if arr.nbytes <= 4096:
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
                        h.update(block)
                        small, held = [], 0
                    chunks = _byte_chunks(arr)
                for chunk in chunks:
                    f.write(chunk)
                    h.update(chunk)
            if small:
                block = b"".join(small)
                f.write(block)
                h.update(block)
        os.replace(tmp, full)
        self._files[rel] = {"bytes": len(header) + offset, "sha256": h.hexdigest()}
        for e in entries:
            if e["kind"] == "tensor":
                e["file"] = rel
        self._journal_append(entries, file=(rel, self._files[rel]))

    def _journal_append(self, entries: list[dict[str, Any]], file: tuple[str, dict[str, Any]] | None = None) -> None:
        lines = []
        if file is not None:
            lines.append(json.dumps({"file": file[0], **file[1]}, sort_keys=True))
        encode = _JOURNAL_ENCODER.encode  # same text as json.dumps(sort_keys=True, ensure_ascii=False)
        lines.extend(encode({"stage": e}) for e in entries)
        self._journal.write("\n".join(lines) + "\n")
        self._journal.flush()

    def _write_manifest(self, complete: bool, reason: str | None = None) -> None:
        manifest: dict[str, Any] = {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "tool_version": __version__,
            "producer": self._producer,
            "complete": complete,
            "environment": environment_summary(),
            "meta": self._meta,
            "stages": self._stages,
            "files": dict(sorted(self._files.items())),
        }
        if self._command is not None:
            manifest["command"] = self._command
        if reason:
            manifest["incomplete_reason"] = reason
        _atomic_write(os.path.join(self.path, MANIFEST), _dump_fast(manifest))


def _byte_chunks(arr: np.ndarray):
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
