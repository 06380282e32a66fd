"""Read a trace directory: the manifest (plus the journal of an interrupted capture) and
memory-mapped stage arrays."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import StageNotFoundError, TraceFormatError
from ._safetensors import TensorEntry, read_header
from .checksum import crc32, crc32_hex
from .dtypes import DTYPES, DType, storage_dtype
from .keys import validate_key
from .writer import FORMAT_NAME, JOURNAL, MANIFEST, SCHEMA_VERSION

__all__ = ["Stage", "Trace", "load_trace"]

_FILE_RE = re.compile(r"^data/[0-9]{6}\.safetensors$")


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
        """Stage keys in execution order."""
        return [s.key for s in self._stages]

    def stage(self, key: str) -> Stage:
        """The :class:`Stage` stored under ``key``.

        Raises:
            StageNotFoundError: no such stage.
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
        """Values of ``stage``: a memory-mapped read-only array, or the text of a text stage."""
        if stage.kind == "text":
            return stage.text or ""
        assert stage.file is not None and stage.dtype is not None
        entries, data_start = self._headers[stage.file]
        entry = entries[stage.key]
        mm = self._maps.get(stage.file)
        if mm is None:
            full = os.path.join(self.path, stage.file)
            with open(full, "rb") as f:
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


def _read_manifest(path: str) -> dict[str, Any]:
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        if os.path.exists(path):
            raise TraceFormatError("is not a trace directory (a trace is a directory holding manifest.json).", path=path)
        raise TraceFormatError("no such trace directory.", path=path)
    try:
        with open(mpath, "rb") as f:
            raw = f.read()
    except FileNotFoundError as e:
        raise TraceFormatError("has no manifest.json; it is not a parity trace.", path=path) from e
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise TraceFormatError(f"is not valid JSON ({e}); the manifest is corrupt.", path=mpath) from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise TraceFormatError(f'is not a parity trace manifest (expected "format": "{FORMAT_NAME}").', path=mpath)
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 1:
        raise TraceFormatError(
            f"has schema_version {version!r}; this parity reads versions 1 to {SCHEMA_VERSION} (upgrade parity).", path=mpath
        )
    return manifest


def _replay_journal(path: str, manifest: dict[str, Any]) -> None:
    """Fold the journal of an interrupted capture into ``manifest`` (in place)."""
    jpath = os.path.join(path, JOURNAL)
    if manifest.get("complete") or not os.path.exists(jpath):
        return
    stages, files = list(manifest.get("stages", [])), dict(manifest.get("files", {}))
    known = {s.get("key") for s in stages}
    with open(jpath, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # the writer died mid-line; everything before it is whole
            try:
                rec = json.loads(line)
            except ValueError:
                break
            if "file" in rec and "stage" not in rec:
                files[rec["file"]] = {k: v for k, v in rec.items() if k != "file"}
            elif "stage" in rec and rec["stage"].get("key") not in known:
                stages.append(rec["stage"])
                known.add(rec["stage"].get("key"))
    manifest["stages"], manifest["files"] = stages, files
    manifest.setdefault("incomplete_reason", "capture was interrupted")


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Open a trace directory for reading.

    Checks the manifest and every data file's header and size (cheap); call
    :meth:`Trace.verify` to also check the checksum (CRC-32) of every data file.

    Args:
        path: the ``NAME.trace`` directory.

    Returns:
        A :class:`Trace`; ``trace.complete`` is False for an interrupted capture.

    Raises:
        TraceFormatError: the directory is not a trace, or a file is corrupt, truncated or foreign.
    """
    path = os.fspath(path)
    manifest = _read_manifest(path)
    _replay_journal(path, manifest)
    mpath = os.path.join(path, MANIFEST)
    headers: dict[str, tuple[dict[str, TensorEntry], int]] = {}
    files = manifest.get("files", {})
    for rel in files:
        if not isinstance(rel, str) or not _FILE_RE.match(rel):
            raise TraceFormatError(f"lists data file {rel!r}; data files must be named data/NNNNNN.safetensors.", path=mpath)
        entries, _meta, start = read_header(os.path.join(path, rel))
        headers[rel] = (entries, start)
    stages: list[Stage] = []
    seen: set[str] = set()
    for pos, raw in enumerate(manifest.get("stages", [])):
        try:
            key = validate_key(raw["key"])
            kind = raw.get("kind", "tensor")
        except (KeyError, TypeError) as e:
            raise TraceFormatError(f"stage #{pos} has no key.", path=mpath) from e
        except Exception as e:
            raise TraceFormatError(f"stage #{pos}: {e}", path=mpath) from e
        if key in seen:
            raise TraceFormatError("is listed twice.", path=mpath, stage=key)
        seen.add(key)
        axes = tuple(raw["axes"]) if raw.get("axes") is not None else None
        common = dict(key=key, kind=kind, axes=axes, units=raw.get("units"), indices=dict(raw.get("indices", {})),
                      provenance=dict(raw.get("provenance", {})), occurrence=int(raw.get("occurrence", 0)), position=pos)
        if kind == "text":
            if not isinstance(raw.get("text"), str):
                raise TraceFormatError("is a text stage without text.", path=mpath, stage=key)
            stages.append(Stage(dtype=None, shape=(), text=raw["text"], **common))
            continue
        if kind != "tensor":
            raise TraceFormatError(f"has unknown kind {kind!r}; expected tensor or text.", path=mpath, stage=key)
        rel = raw.get("file")
        if rel not in headers:
            raise TraceFormatError(f"points at data file {rel!r}, which the manifest does not list.", path=mpath, stage=key)
        entry = headers[rel][0].get(key)
        if entry is None:
            raise TraceFormatError(f"is not in data file {rel}.", path=mpath, stage=key)
        shape = tuple(int(s) for s in raw.get("shape", []))
        if raw.get("dtype") != entry.dtype or shape != entry.shape:
            raise TraceFormatError(
                f"manifest says {raw.get('dtype')} {shape} but {rel} holds {entry.dtype} {entry.shape}.", path=mpath, stage=key
            )
        if axes is not None and len(axes) != len(shape):
            raise TraceFormatError(f"axes {list(axes)} do not match shape {shape}.", path=mpath, stage=key)
        stages.append(Stage(dtype=entry.dtype, shape=shape, file=rel, **common))
    return Trace(path, manifest, stages, headers)
