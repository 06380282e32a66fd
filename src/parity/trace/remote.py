"""Traces by URL: open a trace behind any fsspec filesystem, and write one there.

Reading (:func:`load_remote_trace`, what :func:`parity.load_trace` calls for a URL) fetches the
manifest, then two small byte ranges per data file (the safetensors length and header), and
then, per stage asked for, exactly that stage's bytes. The checks are the local reader's: the
same manifest, journal, header and size rules, the same messages, naming the URL.

Writing (:func:`upload_trace`, what :class:`~parity.trace.writer.TraceWriter` does on close
when its path is a URL) copies a finished local trace directory: the data files first, the
manifest last, so that the manifest marks a complete upload (see :mod:`parity.trace.storage`).

>>> parity.trace.remote.upload_trace("ref.trace", "memory://doc/ref.trace")
'memory://doc/ref.trace'
>>> t = parity.load_trace("memory://doc/ref.trace")
>>> t, float(t["embedding"][0, 0]) == float(parity.load_trace("ref.trace")["embedding"][0, 0])
(<Trace 'memory://doc/ref.trace': 31 stages, complete>, True)
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import TraceFormatError, UsageError
from .checksum import crc32, crc32_hex
from .layout import DATA_DIR, INDEX, JOURNAL, MANIFEST
from .manifest import parse_manifest, replay_journal_lines
from .reader import Stage, Trace, assemble_trace, check_file_entry, check_file_size, finish_indexed
from .safetensors_header import TensorEntry, data_start, parse_header
from .storage import RemoteDir, open_remote

__all__ = ["RemoteTrace", "load_remote_trace", "upload_trace"]


class RemoteTrace(Trace):
    """A :class:`~parity.trace.reader.Trace` whose files sit behind an fsspec URL.

    Stage values are fetched on demand, one ranged read per stage (nothing is cached: the
    comparison streams stage by stage), as read-only arrays.

    >>> t = load_remote_trace(upload_trace("cand.trace", "memory://doc/RemoteTrace/cand.trace", overwrite=True))
    >>> t.name, t.verify(), t["logits"].dtype, t["logits"].flags.writeable
    ('cand.trace', [], dtype('float32'), False)
    """

    def __init__(self, path: str, manifest: dict[str, Any], stages: list[Stage],
                 headers: dict[str, tuple[dict[str, TensorEntry], int]], *, remote: RemoteDir):
        super().__init__(path, manifest, stages, headers)
        self.remote = remote

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def _read(self, rel: str, begin: int, end: int, dtype: np.dtype) -> np.ndarray:
        """Bytes ``[begin, end)`` of data file ``rel``'s data buffer, fetched with one ranged read."""
        data_start = self._headers[rel][1]
        raw = self.remote.read_range(rel, data_start + begin, data_start + end, "data file")
        return np.frombuffer(raw, dtype=dtype)

    def verify(self) -> list[str]:
        """Re-checksum every data file against the manifest, streaming each file once."""
        problems = []
        for rel, info in self.manifest.get("files", {}).items():
            label = self.remote.label(rel)
            if "crc32" not in info:
                problems.append(f"{label}: the manifest gives no crc32 for this file (remote traces check CRC-32).")
                continue
            c = 0
            try:
                with self.remote.fs.open(self.remote.path(rel), "rb", block_size=1 << 22) as f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        c = crc32(block, c)
            except OSError as e:
                problems.append(f"{label}: cannot be read ({e}).")
                continue
            if crc32_hex(c) != info["crc32"]:
                problems.append(f"{label}: crc32 {crc32_hex(c)} does not match the manifest's {info['crc32']}.")
        return problems


def load_remote_trace(url: str, storage_options: Mapping[str, Any] | None = None) -> RemoteTrace:
    """Open the trace at ``url`` (``memory://...``, ``s3://bucket/run/ref.trace``...).

    Raises:
        TraceFormatError: no trace there, or a file is corrupt, truncated or foreign (naming its URL).
        UsageError: fsspec, or the filesystem package for the URL's scheme, is not installed.

    >>> load_remote_trace(upload_trace("ref.trace", "memory://doc/load_remote/ref.trace", overwrite=True))
    <Trace 'memory://doc/load_remote/ref.trace': 31 stages, complete>
    >>> try:
    ...     load_remote_trace("memory://doc/load_remote/none.trace")
    ... except parity.TraceFormatError as e:
    ...     print(e)
    memory://doc/load_remote/none.trace: no such trace.
    """
    remote = open_remote(url, storage_options)
    mpath = remote.label(MANIFEST)
    if not remote.exists(MANIFEST):
        if remote.exists("shards.json"):  # a sharded capture's directory: one logical trace of its ranks
            from .sharded import load_sharded_trace

            return load_sharded_trace(remote.url, storage_options=dict(storage_options or {}))  # type: ignore[return-value]
        what = "has no manifest.json: not a parity trace, or an upload that did not finish" if remote.exists() \
            else "no such trace"
        raise TraceFormatError(f"{what}.", path=remote.url)
    manifest, bad = parse_manifest(remote.read(MANIFEST, "manifest"), mpath)
    if "index" in manifest:
        return _load_indexed(remote, mpath, manifest, bad)
    origins: list[tuple[str, int]] = []
    deferred: list = []
    if not manifest.get("complete") and remote.exists(JOURNAL):
        data = remote.read(JOURNAL, "journal")
        replay_journal_lines(io.BytesIO(data), remote.label(JOURNAL), manifest, origins, deferred)
    headers: dict[str, tuple[dict[str, TensorEntry], int]] = {}
    for rel, info in manifest.get("files", {}).items():
        check_file_entry(rel, info, mpath)
        label = remote.label(rel)
        size = remote.size(rel, "data file")  # a missing file: "data file is missing."
        entries, _meta, start = parse_header(lambda a, b, rel=rel: remote.read_range(rel, a, min(b, size), "data file"),
                                             size, label)
        check_file_size(info, size, label)
        headers[rel] = (entries, start)
    return assemble_trace(RemoteTrace, remote.url, mpath, manifest, bad, origins, deferred, headers, remote=remote)


def _load_indexed(remote: RemoteDir, mpath: str, manifest: dict[str, Any], bad: list) -> RemoteTrace:
    """A remote trace whose stages are in its stage index: one read of the index, and per data
    file only its size and 8-byte header length (the index gives every stage's bytes)."""
    starts: dict[str, tuple[int, int]] = {}
    for rel, info in manifest.get("files", {}).items():
        check_file_entry(rel, info, mpath)
        size = remote.size(rel, "data file")  # a missing file: "data file is missing."
        check_file_size(info, size, remote.label(rel))
        prefix = remote.read_range(rel, 0, min(8, size), "data file")
        starts[rel] = (data_start(prefix, size, remote.label(rel)), size)
    if not remote.exists(INDEX):
        raise TraceFormatError("the stage index the manifest names is missing.", path=remote.label(INDEX))
    raw = remote.read(INDEX, "stage index")
    return finish_indexed(RemoteTrace, remote.url, mpath, manifest, bad, raw, remote.label(INDEX), starts, remote=remote)


def upload_trace(local: str | os.PathLike[str], url: str, storage_options: Mapping[str, Any] | None = None,
                 *, overwrite: bool = False) -> str:
    """Copy the trace directory ``local`` to ``url``: data files first, ``manifest.json`` last (a
    sharded trace: every rank's trace so, then ``shards.json``).

    Each file is streamed, never read whole. Returns ``url``.

    Raises:
        UsageError: ``url`` already holds a trace (pass ``overwrite=True`` to replace it).
        TraceFormatError: ``local`` is not a trace, or a file cannot be written.

    >>> url = upload_trace("ref.trace", "memory://doc/upload/ref.trace", overwrite=True)
    >>> try:
    ...     upload_trace("cand.trace", url)
    ... except parity.UsageError as e:
    ...     print(e)
    memory://doc/upload/ref.trace: a trace is already there; remove it first (or overwrite=True).
    """
    local = os.fspath(local)
    from .sharded import SHARDS, _read_index, is_sharded, rank_trace_name  # (sharded reads through this module)

    if is_sharded(local):  # every rank's trace, then shards.json: the sharded trace's completion marker
        world = _read_index(local)[0]
        remote = open_remote(url, storage_options)
        if remote.exists(SHARDS):
            if not overwrite:
                raise UsageError(f"{remote.url}: a trace is already there; remove it first (or overwrite=True).")
            remote.remove()
        for r in range(world):
            upload_trace(os.path.join(local, rank_trace_name(r)), remote.label(rank_trace_name(r)), storage_options,
                         overwrite=overwrite)
        remote.upload(os.path.join(local, SHARDS), SHARDS)
        return remote.url
    if not os.path.isfile(os.path.join(local, MANIFEST)):
        raise TraceFormatError("has no manifest.json; it is not a parity trace.", path=local)
    remote = open_remote(url, storage_options)
    if remote.exists(MANIFEST):
        if not overwrite:
            raise UsageError(f"{remote.url}: a trace is already there; remove it first (or overwrite=True).")
        remote.remove()
    data_dir = os.path.join(local, DATA_DIR)
    names = sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else []
    for name in names:
        if not name.startswith("."):
            remote.upload(os.path.join(data_dir, name), f"{DATA_DIR}/{name}")
    for name in sorted(os.listdir(local)):
        full = os.path.join(local, name)
        if name not in (MANIFEST, DATA_DIR) and not name.startswith(".") and os.path.isfile(full):
            remote.upload(full, name)
    remote.upload(os.path.join(local, MANIFEST), MANIFEST)
    return remote.url
