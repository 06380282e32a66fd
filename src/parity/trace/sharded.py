"""Sharded traces: one logical trace written by the ranks of a ``torch.distributed`` job.

Each rank writes an ordinary trace of its own values into the sharded directory; the reader
presents them as one trace whose stages have their full shapes, and reassembles a stage when it
is read, so that a tensor-parallel capture diffs against a single-process reference directly::

    NAME.trace/
      shards.json          {"format": "parity-sharded-trace", "schema_version": 1, "world_size": 2,
                            "ranks": ["rank-00000.trace", "rank-00001.trace"], "capture": "9f2c..."}
      rank-00000.trace/    rank 0's values: an ordinary parity trace
      rank-00001.trace/    rank 1's ...

Every stage entry of a rank's trace says where its values sit in the logical stage, in its
``provenance``: ``"shard": {"dim": 1, "offset": 16, "full_shape": [4, 32], "rank": 1,
"world_size": 2}`` for a slice along ``dim`` starting at ``offset``, ``"shard": {"replicated":
true, ...}`` (or no ``shard`` at all) for a value every rank holds whole.

Reading (:func:`load_sharded_trace`, what :func:`parity.load_trace` calls for such a directory)
checks, from the manifests alone: every rank's trace is there and belongs to this capture; every
rank has the same stages, with the same dtype, kind and placement; the slices of a sharded stage
tile its full dimension exactly (no gap, no overlap) and agree on the other dimensions. Each
violation is a :class:`~parity.errors.TraceFormatError` naming the rank and the stage.

A replicated stage is read from rank 0 and, by default, checked against every other rank's copy
(bit for bit) the first time it is read: copies that differ make the logical value undefined,
and the read raises naming the stage and the rank (see docs/scale.md for why this is an error and
not a result); ``check_replicas=False`` reads rank 0's copy alone.

A sharded trace written by hand (``parity.torch.capture(..., shard_dims=...)`` writes it for you):

>>> for r in range(2):
...     meta = {"shard": {"rank": r, "world_size": 2}}
...     with parity.trace.TraceWriter(prepare_sharded("tp.trace", r, 2), meta=meta) as w:
...         _ = w.add("h", np.full((1, 2), r), provenance={"shard": shard_placement(1, 2 * r, (1, 4), r, 2)})
>>> t = parity.load_trace("tp.trace")
>>> t, t.stage("h").shape, t["h"].tolist()
(<ShardedTrace 'tp.trace': 1 stages over 2 ranks, complete>, (1, 4), [[0, 0, 1, 1]])
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import TraceError, TraceFormatError
from ..safefs import atomic_write, check_inside
from .entries import short_repr
from .jsonsafe import load_json
from .layout import FORMAT_NAME, MANIFEST, SCHEMA_VERSION
from .reader import Stage, Trace, load_trace
from .storage import RemoteDir, is_remote, open_remote

__all__ = ["SHARDS", "ShardedTrace", "is_sharded", "prepare_sharded", "rank_trace_name",
           "shard_placement", "replicated_placement"]

SHARDS = "shards.json"
SHARDS_FORMAT = "parity-sharded-trace"
SHARDS_VERSION = 1
_RANK_RE = re.compile(r"rank-[0-9]{5}\.trace")


def rank_trace_name(rank: int) -> str:
    """The name, inside the sharded directory, of rank ``rank``'s trace.

    >>> rank_trace_name(1)
    'rank-00001.trace'
    """
    return f"rank-{rank:05d}.trace"


def shard_placement(dim: int, offset: int, full_shape: Sequence[int], rank: int, world_size: int) -> dict[str, Any]:
    """The ``provenance["shard"]`` of a value that is the slice ``[offset, offset + n)`` along
    ``dim`` of a logical stage of shape ``full_shape``.

    >>> shard_placement(1, 16, (4, 32), rank=1, world_size=2)
    {'dim': 1, 'offset': 16, 'full_shape': [4, 32], 'rank': 1, 'world_size': 2}
    """
    return {"dim": int(dim), "offset": int(offset), "full_shape": [int(n) for n in full_shape], "rank": int(rank),
            "world_size": int(world_size)}


def replicated_placement(rank: int, world_size: int) -> dict[str, Any]:
    """The ``provenance["shard"]`` of a value every rank holds whole.

    >>> replicated_placement(0, 2)
    {'replicated': True, 'rank': 0, 'world_size': 2}
    """
    return {"replicated": True, "rank": int(rank), "world_size": int(world_size)}


def is_sharded(path: str | os.PathLike[str]) -> bool:
    """Whether the local directory ``path`` is a sharded trace (``shards.json``, no ``manifest.json``).

    >>> is_sharded("ref.trace")
    False
    """
    path = os.fspath(path)
    return os.path.isfile(os.path.join(path, SHARDS)) and not os.path.lexists(os.path.join(path, MANIFEST))


def _index_bytes(world_size: int, capture: str | None) -> bytes:
    doc: dict[str, Any] = {"format": SHARDS_FORMAT, "schema_version": SHARDS_VERSION, "world_size": world_size,
                           "ranks": [rank_trace_name(r) for r in range(world_size)]}
    if capture is not None:
        doc["capture"] = capture
    return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()


def prepare_sharded(path: str | os.PathLike[str], rank: int, world_size: int, capture: str | None = None,
                    storage_options: dict[str, Any] | None = None) -> str:
    """Make the sharded directory ``path`` for a capture by ``world_size`` ranks and return the
    path of rank ``rank``'s trace in it (which the caller then writes with a
    :class:`~parity.trace.writer.TraceWriter`).

    Every rank calls this at the start of its capture, with no communication: each writes the
    same ``shards.json`` atomically (so a rank that dies before writing anything is named as
    missing by the reader), and rank 0 removes the traces of ranks ``>= world_size`` that an
    earlier, wider capture left there. ``capture``, an id the ranks share (the capture broadcasts
    one), goes into ``shards.json`` and, through the rank's trace metadata (``meta["shard"]``),
    lets the reader refuse a rank's trace left by an earlier capture into the same directory.
    ``path`` may be an fsspec URL (``s3://runs/tp.trace``): ``shards.json`` is then uploaded, and
    each rank's trace is written to the URL as any trace is (staged locally, manifest last).

    Raises:
        TraceError: ``path`` is a file, an unsharded trace, or a directory holding anything else.

    >>> prepare_sharded("tp.trace", rank=1, world_size=2)
    'tp.trace/rank-00001.trace'
    >>> sorted(os.listdir("tp.trace"))
    ['shards.json']
    """
    if not 0 <= rank < world_size:
        raise TraceError(f"rank {rank} is not in 0..{world_size - 1} (world size {world_size}).", path=path)
    path = os.fspath(path)
    if is_remote(path):
        return _prepare_remote(path, rank, world_size, capture, storage_options)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise TraceError("exists and is not a directory; refusing to replace it with a sharded trace.", path=path)
    os.makedirs(path, exist_ok=True)
    entries = os.listdir(path)
    if MANIFEST in entries:
        raise TraceError("holds an unsharded trace; a sharded capture does not replace it (remove it, or write "
                         "somewhere else).", path=path)
    foreign = [n for n in entries if n != SHARDS and not _RANK_RE.fullmatch(n) and not n.startswith(f".{SHARDS}.")]
    if foreign:
        raise TraceError(f"is a non-empty directory that is not a sharded trace (it holds {short_repr(foreign[0])}); "
                         "refusing to write into it.", path=path)
    atomic_write(os.path.join(path, SHARDS), _index_bytes(world_size, capture))
    if rank == 0:
        for name in entries:
            stale = os.path.join(path, name)
            if (_RANK_RE.fullmatch(name) and int(name[5:10]) >= world_size and not os.path.islink(stale)
                    and os.path.isfile(os.path.join(stale, MANIFEST))):
                import shutil

                shutil.rmtree(stale)
    return os.path.join(path, rank_trace_name(rank))


def _prepare_remote(url: str, rank: int, world_size: int, capture: str | None,
                    storage_options: dict[str, Any] | None) -> str:
    """:func:`prepare_sharded` at a URL (the same checks; a PUT of ``shards.json``)."""
    remote = open_remote(url, storage_options)
    if remote.exists(MANIFEST):
        raise TraceError("holds an unsharded trace; a sharded capture does not replace it (remove it, or write "
                         "somewhere else).", path=remote.url)
    names = remote.names()
    foreign = [n for n in names if n != SHARDS and not _RANK_RE.fullmatch(n) and not n.startswith(".tmp-")]
    if foreign:
        raise TraceError(f"is a non-empty directory that is not a sharded trace (it holds {short_repr(foreign[0])}); "
                         "refusing to write into it.", path=remote.url)
    remote.write(SHARDS, _index_bytes(world_size, capture))
    if rank == 0:
        for name in names:
            if _RANK_RE.fullmatch(name) and int(name[5:10]) >= world_size and remote.exists(f"{name}/{MANIFEST}"):
                open_remote(remote.label(name), storage_options).remove()
    return remote.label(rank_trace_name(rank))


# -- reading ---------------------------------------------------------------------------------------

class _Plan:
    """How one logical stage is made from the ranks' stages: their (rank, stage) in offset order,
    and the dimension they are joined along (``None``: replicated)."""

    __slots__ = ("dim", "parts")

    def __init__(self, dim: int | None, parts: list[tuple[int, Stage]]):
        self.dim = dim
        self.parts = parts


class ShardedTrace(Trace):
    """A :class:`~parity.trace.reader.Trace` made of the per-rank traces of a sharded capture.

    Iterating yields the logical stages (full shapes, rank 0's order); :meth:`array` reads each
    rank's slice and concatenates them along the stage's dimension (a new read-only array), or
    reads a replicated stage from rank 0, checking it against the other ranks' copies unless
    :attr:`check_replicas` is false.

    Attributes:
        world_size: number of ranks.
        check_replicas: check replicated stages across ranks on their first read (default True).

    >>> from parity.trace.writer import TraceWriter
    >>> for r in range(2):
    ...     w = TraceWriter(prepare_sharded("tp.trace", r, 2), meta={"shard": {"rank": r, "world_size": 2}}, volatile=False)
    ...     _ = w.add("h", np.full((1, 2), r, np.float32), provenance={"shard": shard_placement(1, 2 * r, (1, 4), r, 2)})
    ...     w.close(complete=True, reason=None)
    >>> t = parity.load_trace("tp.trace"); (type(t).__name__, t.world_size, t["h"].tolist())
    ('ShardedTrace', 2, [[0.0, 0.0, 1.0, 1.0]])
    """

    def __init__(self, path: str, manifest: dict[str, Any], stages: list[Stage], ranks: list[Trace],
                 plans: dict[str, _Plan], *, check_replicas: bool = True):
        super().__init__(path, manifest, stages, {})
        self._ranks = ranks
        self._plans = plans
        self._replicas_ok: set[str] = set()
        self.check_replicas = check_replicas

    @property
    def world_size(self) -> int:
        return len(self._ranks)

    def rank(self, rank: int) -> Trace:
        """Rank ``rank``'s own trace (its slices, unassembled)."""
        return self._ranks[rank]

    def __repr__(self) -> str:
        state = "complete" if self.complete else "INCOMPLETE"
        return f"<ShardedTrace {self.path!r}: {len(self)} stages over {self.world_size} ranks, {state}>"

    def array(self, stage: Stage) -> np.ndarray | str:
        """Values of the logical ``stage``: the ranks' slices joined in offset order, or a replicated
        stage's value (checked against every rank's copy on its first read).

        Raises:
            TraceFormatError: a replicated stage whose copies differ between ranks (naming the rank).
        """
        plan = self._plans[stage.key]
        if plan.dim is None:
            rank0, first = plan.parts[0]
            value = self._ranks[rank0].array(first)
            if self.check_replicas and stage.key not in self._replicas_ok:
                for r, s in plan.parts[1:]:
                    self._check_replica(stage.key, value, r, self._ranks[r].array(s))
                self._replicas_ok.add(stage.key)
            return value
        pieces = [self._ranks[r].array(s) for r, s in plan.parts]
        out = np.concatenate(pieces, axis=plan.dim)
        out.flags.writeable = False
        return out

    range_reads = False  # (a range of a stage is read from the whole stage, reassembled)

    def _elements(self, stage: Stage, start: int, end: int) -> np.ndarray:
        """Elements ``start..end-1`` (C order) of ``stage``, from the stage reassembled."""
        return np.asarray(self.array(stage)).reshape(-1)[start:end]

    def _check_replica(self, key: str, ref: np.ndarray | str, rank: int, other: np.ndarray | str) -> None:
        if isinstance(ref, str) or isinstance(other, str):
            if ref != other:
                raise TraceFormatError(f"is recorded as replicated, but rank {rank}'s text differs from rank 0's; "
                                       "the ranks disagree, so the logical value is undefined.",
                                       path=self.path, stage=key)
            return
        bits = f"u{ref.dtype.itemsize}"
        a, b = ref.reshape(-1).view(bits), other.reshape(-1).view(bits)
        if np.array_equal(a, b):
            return
        differ = a != b
        first = np.unravel_index(int(np.argmax(differ)), ref.shape) if ref.ndim else ()
        raise TraceFormatError(
            f"is recorded as replicated, but rank {rank}'s copy differs from rank 0's in {int(differ.sum())} of "
            f"{a.size} values (first at index {tuple(int(i) for i in first)}); the ranks disagree, so the logical "
            f"value is undefined. Compare the ranks with trace.rank({rank}), or set check_replicas=False to read "
            "rank 0's copy.", path=self.path, stage=key)

    def verify(self) -> list[str]:
        """Re-checksum every rank's data files (each message names the rank's file)."""
        return [p for t in self._ranks for p in t.verify()]


def _read_index(path: str, remote: RemoteDir | None = None) -> tuple[int, str | None]:
    """The world size and capture id ``shards.json`` declares, after checking the document."""
    if remote is not None:
        ipath = remote.label(SHARDS)
        raw = remote.read(SHARDS, "shard index", limit=1 << 20)
    else:
        ipath = os.path.join(path, SHARDS)
        with open(ipath, "rb") as f:
            raw = f.read()
    doc, bad = load_json(raw, path=ipath, what="shard index")
    if type(doc) is not dict or doc.get("format") != SHARDS_FORMAT:
        raise TraceFormatError(f'is not a sharded-trace index (expected "format": "{SHARDS_FORMAT}").', path=ipath)
    version = doc.get("schema_version")
    if type(version) is not int or not 1 <= version <= SHARDS_VERSION:
        raise TraceFormatError(f"has schema_version {short_repr(version)}; this parity reads version "
                               f"{SHARDS_VERSION} (upgrade parity).", path=ipath)
    world = doc.get("world_size")
    if type(world) is not int or world < 1 or bad:
        raise TraceFormatError(f"world_size must be a positive integer, got {short_repr(world)}.", path=ipath)
    if doc.get("ranks") != [rank_trace_name(r) for r in range(world)]:
        raise TraceFormatError(f'"ranks" must list rank-00000.trace ... {rank_trace_name(world - 1)} in order '
                               f"(world size {world}), got {short_repr(doc.get('ranks'))}.", path=ipath)
    capture = doc.get("capture")
    if capture is not None and type(capture) is not str:
        raise TraceFormatError(f'"capture" must be a string (the capture id), got {short_repr(capture)}.', path=ipath)
    return world, capture


def _open_ranks(path: str, world: int, capture: str | None, follow_symlinks: bool,
                remote: RemoteDir | None = None, storage_options: dict[str, Any] | None = None) -> list[Trace]:
    ranks = []
    for r in range(world):
        sub = remote.label(rank_trace_name(r)) if remote is not None else os.path.join(path, rank_trace_name(r))
        if not (remote.exists(rank_trace_name(r)) if remote is not None else os.path.lexists(sub)):
            raise TraceFormatError(f"rank {r}'s trace {rank_trace_name(r)} is missing (world size {world}): that "
                                   "rank did not capture, or its files were not copied.", path=path)
        if remote is None:
            check_inside(path, sub, follow_symlinks=follow_symlinks, what=f"trace of rank {r}")
        t = load_trace(sub, follow_symlinks=follow_symlinks, storage_options=storage_options)
        info = t.meta.get("shard")
        if type(info) is dict and (info.get("rank") != r or info.get("world_size") != world):
            raise TraceFormatError(f"rank {r}'s trace says it is rank {short_repr(info.get('rank'))} of "
                                   f"{short_repr(info.get('world_size'))}; it belongs to another capture.", path=sub)
        if capture is not None and (type(info) is not dict or info.get("capture") != capture):
            theirs = info.get("capture") if type(info) is dict else None
            raise TraceFormatError(f"rank {r}'s trace was written by capture {short_repr(theirs)}, not by capture "
                                   f"{capture!r} (the index's): it was left by an earlier capture, so rank {r} did "
                                   "not start this one.", path=sub)
        ranks.append(t)
    return ranks


def _placement(s: Stage, r: int, world: int, where: str) -> dict[str, Any] | None:
    """The checked ``provenance["shard"]`` of rank ``r``'s stage ``s``: ``None`` when replicated."""
    info = s.provenance.get("shard")
    if info is None or (type(info) is dict and info.get("replicated") is True):
        if type(info) is dict and (info.get("rank") not in (None, r) or info.get("world_size") not in (None, world)):
            raise TraceFormatError(f"rank {r}: the placement says rank {short_repr(info.get('rank'))} of "
                                   f"{short_repr(info.get('world_size'))}.", path=where, stage=s.key)
        return None
    bad = type(info) is not dict or not all(type(info.get(k)) is int for k in ("dim", "offset", "rank", "world_size"))
    full = info.get("full_shape") if type(info) is dict else None
    if bad or type(full) is not list or not all(type(n) is int and n >= 0 for n in full):
        raise TraceFormatError(f"rank {r}: the placement must be {{dim, offset, full_shape, rank, world_size}} "
                               f"(integers) or {{replicated: true}}, got {short_repr(info)}.", path=where, stage=s.key)
    if info["rank"] != r or info["world_size"] != world:
        raise TraceFormatError(f"rank {r}: the placement says rank {info['rank']} of {info['world_size']}, but this "
                               f"is rank {r} of {world}.", path=where, stage=s.key)
    if s.kind != "tensor" or not 0 <= info["dim"] < len(s.shape) or len(full) != len(s.shape):
        raise TraceFormatError(f"rank {r}: a slice along dim {info['dim']} of a {len(full)}-d stage does not fit "
                               f"the stored {s.kind} of shape {s.shape}.", path=where, stage=s.key)
    return info


def _plan(key: str, per_rank: list[Stage], world: int, path: str, pos: int) -> tuple[Stage, _Plan]:
    """Check the ranks' stages ``per_rank`` of ``key`` against each other; the logical stage and its plan."""
    first = per_rank[0]
    places = [_placement(s, r, world, path) for r, s in enumerate(per_rank)]
    for r, s in enumerate(per_rank[1:], 1):
        if s.kind != first.kind or s.dtype != first.dtype:
            raise TraceFormatError(f"rank {r} stores {s.dtype or s.kind}, rank 0 {first.dtype or first.kind}.",
                                   path=path, stage=key)
        if (places[r] is None) != (places[0] is None):
            sharded = r if places[r] is not None else 0
            raise TraceFormatError(f"rank {sharded} stores a slice, rank {r if sharded == 0 else 0} the whole value "
                                   "(replicated); the ranks disagree on the placement.", path=path, stage=key)
        if places[0] is None and s.shape != first.shape:
            raise TraceFormatError(f"is replicated, but rank {r} holds shape {s.shape} and rank 0 {first.shape}.",
                                   path=path, stage=key)
    sliced = [p for p in places if p is not None]
    if not sliced:
        replicated = {"replicated": True, "world_size": world}
        return _logical(first, first.shape, replicated, pos), _Plan(None, list(enumerate(per_rank)))
    dim, full = sliced[0]["dim"], tuple(sliced[0]["full_shape"])
    order = _tiling(key, per_rank, sliced, dim, full, path)
    return _logical(first, full, {"dim": dim, "world_size": world}, pos), _Plan(dim, [(r, per_rank[r]) for r in order])


def _tiling(key: str, per_rank: list[Stage], places: list[dict[str, Any]], dim: int, full: tuple[int, ...],
            path: str) -> list[int]:
    """The ranks in offset order, once their slices are checked to tile ``full`` along ``dim`` exactly."""
    for r, (s, p) in enumerate(zip(per_rank, places)):
        if p["dim"] != dim or tuple(p["full_shape"]) != full:
            raise TraceFormatError(f"rank {r} places its slice along dim {p['dim']} of {tuple(p['full_shape'])}, "
                                   f"rank 0 along dim {dim} of {full}.", path=path, stage=key)
        if s.shape[:dim] + s.shape[dim + 1:] != full[:dim] + full[dim + 1:]:
            raise TraceFormatError(f"rank {r} holds shape {s.shape}, which is not a slice along dim {dim} of {full}.",
                                   path=path, stage=key)
    order = sorted(range(len(places)), key=lambda r: (places[r]["offset"], r))
    end = 0
    for r in order:
        start, stop = places[r]["offset"], places[r]["offset"] + per_rank[r].shape[dim]
        if start != end:
            what = (f"overlaps the slices before it (which end at {end})" if start < end
                    else f"leaves [{end}, {start}) uncovered")
            raise TraceFormatError(f"rank {r}'s slice [{start}, {stop}) along dim {dim} {what}; the slices must tile "
                                   f"0..{full[dim]} exactly.", path=path, stage=key)
        end = stop
    if end != full[dim]:
        raise TraceFormatError(f"the ranks' slices along dim {dim} end at {end}, short of the full size {full[dim]} "
                               f"(rank {order[-1]} holds the last slice).", path=path, stage=key)
    return order


def _logical(s: Stage, shape: tuple[int, ...], shard: dict[str, Any], pos: int) -> Stage:
    return Stage(key=s.key, kind=s.kind, dtype=s.dtype, shape=tuple(shape), axes=s.axes, units=s.units,
                 indices=dict(s.indices), provenance={**s.provenance, "shard": shard}, occurrence=s.occurrence,
                 position=pos, text=s.text)


def _common_keys(ranks: list[Trace], path: str) -> list[str]:
    """The logical stage keys (rank 0's order). Complete ranks must hold the same stages (an error
    names the rank and the stage); when a rank is incomplete, the stages every rank holds."""
    keys = ranks[0].keys()
    if not all(t.complete for t in ranks):
        return [k for k in keys if all(k in t for t in ranks[1:])]
    for r, t in enumerate(ranks[1:], 1):
        missing = next((k for k in keys if k not in t), None)
        if missing is not None:
            raise TraceFormatError(f"rank {r}'s trace has no such stage; rank 0 has it.", path=t.path, stage=missing)
        extra = next((k for k in t.keys() if k not in ranks[0]), None)
        if extra is not None:
            raise TraceFormatError(f"rank {r}'s trace has this stage, but rank 0's has not.", path=t.path, stage=extra)
    return keys


def _manifest(ranks: list[Trace], world: int) -> dict[str, Any]:
    """The logical trace's manifest: rank 0's fields, the files of every rank, completeness of all."""
    m0 = ranks[0].manifest
    manifest = {k: m0[k] for k in ("format", "schema_version", "tool_version", "producer", "command", "environment")
                if k in m0}
    manifest["meta"] = {**ranks[0].meta, "shard": {"world_size": world}}
    manifest["files"] = {f"{rank_trace_name(r)}/{rel}": info for r, t in enumerate(ranks)
                         for rel, info in t.manifest.get("files", {}).items()}
    manifest["complete"] = all(t.complete for t in ranks)
    if not manifest["complete"]:
        manifest["incomplete_reason"] = "; ".join(f"rank {r}: {t.manifest.get('incomplete_reason', 'interrupted')}"
                                                  for r, t in enumerate(ranks) if not t.complete)
    manifest["world_size"] = world
    return manifest


def load_sharded_trace(path: str | os.PathLike[str], *, follow_symlinks: bool = False,
                       check_replicas: bool = True, storage_options: dict[str, Any] | None = None) -> ShardedTrace:
    """Open the sharded trace directory ``path`` (or fsspec URL) as one logical trace.

    Raises:
        TraceFormatError: ``shards.json`` is malformed; a rank's trace is missing, corrupt or from
            another capture; the ranks disagree on a stage (missing, dtype, placement), or its
            slices do not tile the full dimension (each message names the rank and the stage).
    """
    path = os.fspath(path)
    remote = open_remote(path, storage_options) if is_remote(path) else None
    if remote is not None:
        path = remote.url
    world, capture = _read_index(path, remote)
    ranks = _open_ranks(path, world, capture, follow_symlinks, remote, storage_options)
    stages: list[Stage] = []
    plans: dict[str, _Plan] = {}
    for pos, key in enumerate(_common_keys(ranks, path)):
        logical, plan = _plan(key, [t.stage(key) for t in ranks], world, path, pos)
        stages.append(logical)
        plans[key] = plan
    return ShardedTrace(path, _manifest(ranks, world), stages, ranks, plans, check_replicas=check_replicas)

