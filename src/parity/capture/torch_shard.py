"""Sharded capture for :func:`parity.torch.capture` under ``torch.distributed`` (``shard_dims=``).

Each rank writes its own trace, ``NAME.trace/rank-NNNNN.trace`` (see
:mod:`parity.trace.sharded`), and records with every stage where its value sits in the logical
stage: ``shard_dims`` maps stage globs to the dimension along which a rank's value is a slice
(a column-parallel projection's output along ``-1``...); every other stage is replicated (each
rank holds the whole value). Slices are taken to be equal and in rank order, as tensor-parallel
layers cut them: rank ``r`` of ``w`` holding ``n`` elements along the dimension holds
``[r * n, (r + 1) * n)`` of ``w * n``. The reader checks that the slices tile each stage.

The rank and world size come from ``torch.distributed``; the only communication is one broadcast
when the capture starts, of an id that ties each rank's trace to this capture (so that a rank's
trace left in the directory by an earlier run is refused, not mixed in).
"""

from __future__ import annotations

import os
import re
import secrets
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import CaptureError, UsageError
from ..trace.sharded import prepare_sharded, replicated_placement, shard_placement
from .torch_hooks import glob_regex

__all__ = ["ShardPlan"]


class ShardPlan:
    """Which stages a rank holds a slice of, along which dimension; and the rank and world size.

    >>> plan = ShardPlan({"layers.*.up": -1}, rank=1, world_size=2)
    >>> plan.placement("layers.0.up", (3, 8))
    {'dim': 1, 'offset': 8, 'full_shape': [3, 16], 'rank': 1, 'world_size': 2}
    >>> plan.placement("layers.0.down", (3, 4))
    {'replicated': True, 'rank': 1, 'world_size': 2}
    """

    def __init__(self, dims: Mapping[str, int], rank: int, world_size: int, capture: str | None = None):
        if not isinstance(dims, Mapping):
            raise UsageError(f"shard_dims must map stage globs to dimensions, e.g. {{'layers.*.up_proj': -1}}, "
                             f"not {dims!r}.")
        self.dims: list[tuple[str, re.Pattern[str], int]] = []
        for pattern, dim in dims.items():
            if not isinstance(pattern, str) or isinstance(dim, bool) or not isinstance(dim, int):
                raise UsageError(f"shard_dims: {pattern!r}: {dim!r} must be a stage glob mapped to a dimension "
                                 "(an int).")
            self.dims.append((pattern, glob_regex(pattern), dim))
        if not (isinstance(rank, int) and isinstance(world_size, int) and 0 <= rank < world_size):
            raise UsageError(f"rank {rank!r} of world size {world_size!r}: expected 0 <= rank < world_size.")
        self.rank, self.world_size, self.capture = rank, world_size, capture
        self.used: set[str] = set()

    @classmethod
    def from_distributed(cls, dims: Mapping[str, int]) -> ShardPlan:
        """The plan of this process's rank in the default ``torch.distributed`` process group, with
        a capture id broadcast from rank 0 (the one collective of a sharded capture: every rank
        must enter it)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            raise UsageError("shard_dims= captures one shard per rank of a torch.distributed job, but "
                             "torch.distributed is not initialised (call torch.distributed.init_process_group first).")
        plan = cls(dims, dist.get_rank(), dist.get_world_size())  # checks dims before the collective
        token = [secrets.token_hex(8) if plan.rank == 0 else None]
        dist.broadcast_object_list(token, src=0)
        plan.capture = str(token[0])
        return plan

    def dim_of(self, key: str) -> int | None:
        for pattern, rx, dim in self.dims:
            if rx.match(key):
                self.used.add(pattern)
                return dim
        return None

    def placement(self, key: str, shape: Sequence[int] | None, path: str | None = None) -> dict[str, Any]:
        """The ``provenance["shard"]`` of this rank's value of shape ``shape`` (``None``: text) for ``key``.

        Raises:
            CaptureError: ``shard_dims`` gives a dimension the value does not have.
        """
        dim = self.dim_of(key)
        if dim is None:
            return replicated_placement(self.rank, self.world_size)
        ndim = len(shape) if shape is not None else 0
        d = dim + ndim if dim < 0 else dim
        if shape is None or not 0 <= d < ndim:
            what = "a text value" if shape is None else f"a value of shape {tuple(shape)}"
            raise CaptureError(f"shard_dims gives dimension {dim} for {what}; a sharded stage is a slice along one "
                               "of its dimensions.", path=path, stage=key)
        full = list(shape)
        full[d] = shape[d] * self.world_size
        return shard_placement(d, self.rank * shape[d], full, self.rank, self.world_size)

    def meta(self) -> dict[str, Any]:
        """The trace metadata that ties a rank's trace to its place in the capture."""
        shard: dict[str, Any] = {"rank": self.rank, "world_size": self.world_size}
        if self.capture is not None:
            shard["capture"] = self.capture
        return {"shard": shard}

    def prepare(self, path: str | os.PathLike[str]) -> str:
        """Make the sharded directory; the path of this rank's trace in it."""
        return prepare_sharded(path, self.rank, self.world_size, self.capture)


def _shape(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, str):
        return None
    return tuple(np.shape(value))


class ShardedSink:
    """The capture's writer sink, with each stage's placement added to its provenance."""

    def __init__(self, sink: Any, plan: ShardPlan):
        self.sink = sink
        self.plan = plan
        self.writer = sink.writer

    def put(self, key: str, value: Any, axes: Sequence[str] | None, provenance: Mapping[str, Any] | None,
            indices: Mapping[str, object] | None = None) -> None:
        shard = self.plan.placement(key, _shape(value), self.writer.path)
        self.sink.put(key, value, axes, {**(provenance or {}), "shard": shard}, indices)

    def close(self) -> None:
        self.sink.close()
        unused = [p for p, _, _ in self.plan.dims if p not in self.plan.used]
        if unused:
            warnings.warn(f"parity.torch.capture: shard_dims pattern(s) {', '.join(map(repr, unused))} matched no "
                          "captured stage; those stages, if any, were recorded as replicated.", stacklevel=4)
