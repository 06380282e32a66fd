"""Two traces of a million stages compared from their stage indexes' columns.

:func:`~parity.compare.batch.judge` still costs a few microseconds a stage in Python: the two
:class:`~parity.trace.stage.Stage` objects, the candidate lookup, the layout checks, one array
view per side. When both traces list their stages in a stage index (:mod:`parity.trace.index`)
and candidate stages are matched by their own key, :class:`ColumnPlan` makes those decisions for
whole blocks of rows with NumPy over the index columns: which pairs are plain (the very checks of
:class:`~parity.compare.batch._Planner`: tensors of one shape, dtypes the kernel reads, no axes
or units, small, keys of one class), and which consecutive plain pairs form a *run* (one layout,
one key class, back to back in one data file on each side). A run is read as one
``(stages, size)`` array per side (:meth:`parity.trace.reader.Trace.rows`) and judged by one call
of the kernel's ``rows`` entry (the chunk function ``compute_metrics`` runs each stage through);
its passing stages become :class:`~parity.compare.batch.DeferredStageDiff` objects, made without
any ``Stage``. Everything else (failing stages, stages that are not plain, missing ones) goes the
per-stage way, so every result equals what :func:`~parity.compare.diff.compare_stage` gives
(tests/compare/test_columns.py).

>>> import os, tempfile
>>> from parity.trace import TraceWriter, load_trace
>>> d = tempfile.mkdtemp()
>>> for name, bump in (("r", 0.0), ("c", 1.0)):
...     with TraceWriter(os.path.join(d, name), index=True) as w:
...         v = np.ones(40, np.float32); v[-1] += bump
...         _ = w.add_batch([f"iter.{i}.x" for i in range(10)], [(4,)] * 10, v)
>>> plan = ColumnPlan.build(load_trace(os.path.join(d, "r")), load_trace(os.path.join(d, "c")),
...                         parity.compare.config.as_config(None), None)
>>> [(s.kind, s.first, s.end) for s in plan.segments()]
[('run', 0, 10)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..results import StageDiff
from ..trace.dtypes import DTYPES
from ..trace.index import StageIndex
from ..trace.reader import Stage, Trace
from .batch import BATCH_MAX_ELEMENTS, _bits, _deferred, _Planner, judge, judged_run
from .metrics import _KCODE, _REGISTRY, _kernel

__all__ = ["ColumnPlan", "Segment", "RUN_STAGES"]

#: Stages per run at most (bounds the arrays one kernel call holds); rows are planned in blocks of
#: :data:`_BLOCK` (bounds the planner's own columns), runs never cross a block.
RUN_STAGES = 8192
_BLOCK = 8 * RUN_STAGES
_ROW_NUMBERS = list(range(RUN_STAGES))  # one int object per row number, shared by every run
_MAX_NDIM = 4  # pairs of more dimensions are planned one by one
_DTYPE_CODES = tuple(DTYPES)
_KERNEL_READS = np.zeros(256, bool)
_KERNEL_READS[[i for i, c in enumerate(_DTYPE_CODES) if c in _KCODE]] = True
_ITEMSIZE = np.array([DTYPES[c].itemsize for c in _DTYPE_CODES] + [1] * (256 - len(_DTYPE_CODES)), np.int64)

Finish = Callable[[Stage, "Stage | None", "StageDiff | None"], StageDiff]
Alone = Callable[[Stage, Stage], StageDiff]


@dataclass(frozen=True)
class Segment:
    """Reference rows ``first..end-1``: a ``"run"`` of plain pairs (candidate rows
    ``cand_first..``), or ``"rows"`` judged stage by stage."""

    kind: str
    first: int
    end: int
    cand_first: int = -1


class ColumnPlan:
    """How two indexed traces are compared (see the module docstring); :meth:`build` tells
    whether they can be.

    Attributes:
        ignored: how many reference stages ``[ignore]`` leaves out.
    """

    def __init__(self, rt: Trace, ct: Trace, rix: StageIndex, cix: StageIndex, planner: _Planner, crow: np.ndarray,
                 ignored: np.ndarray | None):
        self.rt, self.ct, self.rix, self.cix, self.planner = rt, ct, rix, cix, planner
        self.crow, self._ignored = crow, ignored
        self.ignored = int(ignored.sum()) if ignored is not None else 0

    @classmethod
    def build(cls, rt: Trace, ct: Trace, config: Any, floor: Any) -> ColumnPlan | None:
        """The plan for ``rt`` against ``ct``; ``None`` unless both list (some) stages in a stage
        index, candidate stages are matched by their own key (no renames or aliases) and the C
        kernel's ``rows`` entry is there (and no metric is registered)."""
        rix, cix = getattr(rt, "index", None), getattr(ct, "index", None)
        if (not isinstance(rix, StageIndex) or not isinstance(cix, StageIndex) or config.renames or config.aliases
                or _kernel is None or not hasattr(_kernel, "rows") or _REGISTRY or not rix.n or not cix.n):
            return None
        rkeys = rix.keys
        if rkeys == cix.keys:
            crow = np.arange(rix.n, dtype=np.int64)
        else:
            row = cix.row
            crow = np.fromiter((-1 if (r := row(k)) is None else r for k in rkeys), np.int64, rix.n)
        ignored = np.fromiter(map(config.is_ignored, rkeys), bool, rix.n) if config.ignore else None
        return cls(rt, ct, rix, cix, _Planner(config, floor), crow, ignored)

    # -- planning -------------------------------------------------------------------------------------
    def segments(self) -> Iterator[Segment]:
        """The reference rows in order, as runs and stretches judged stage by stage."""
        for b0 in range(0, self.rix.n, _BLOCK):
            yield from self._block(b0, min(self.rix.n, b0 + _BLOCK))

    def _block(self, b0: int, b1: int) -> Iterator[Segment]:
        rix, cix, crow = self.rix, self.cix, self.crow[b0:b1]
        c = np.maximum(crow, 0)
        rdt, cdt = rix.dtype[b0:b1], cix.dtype[c]
        ok = (crow >= 0) & _KERNEL_READS[rdt] & _KERNEL_READS[cdt] & (rix.meta[b0:b1] < 0) & (cix.meta[c] < 0)
        if self._ignored is not None:
            ok &= ~self._ignored[b0:b1]
        cls = self.planner.key_classes(rix.keys[b0:b1])
        ok &= cls >= 0
        rdims, cdims = _dims(rix, np.arange(b0, b1)), _dims(cix, c)
        ok &= (rix.ndim[b0:b1] <= _MAX_NDIM) & (rix.ndim[b0:b1] == cix.ndim[c]) & (rdims == cdims).all(axis=1)
        rb, re_ = rix.begin[b0:b1], rix.end[b0:b1]
        size = (re_ - rb) // _ITEMSIZE[rdt]
        ok &= (size > 0) & (size <= BATCH_MAX_ELEMENTS)
        cb, ce, rf, cf = cix.begin[c], cix.end[c], rix.file[b0:b1], cix.file[c]
        cut = np.ones(b1 - b0, bool)  # a run starts here
        cut[1:] = (~ok[:-1] | (rdt[1:] != rdt[:-1]) | (cdt[1:] != cdt[:-1]) | (cls[1:] != cls[:-1])
                   | (rdims[1:] != rdims[:-1]).any(axis=1) | (rf[1:] != rf[:-1]) | (cf[1:] != cf[:-1])
                   | (rb[1:] != re_[:-1]) | (cb[1:] != ce[:-1]) | (crow[1:] != crow[:-1] + 1))
        edges = np.flatnonzero(cut & ok | np.concatenate(([True], ok[1:] != ok[:-1])))
        ends = np.append(edges[1:], b1 - b0)
        for a, e in zip(edges.tolist(), ends.tolist()):
            if not ok[a]:
                yield Segment("rows", b0 + a, b0 + e)
                continue
            for s in range(a, e, RUN_STAGES):
                yield Segment("run", b0 + s, b0 + min(e, s + RUN_STAGES), int(crow[s]))

    # -- judging --------------------------------------------------------------------------------------
    def walk(self, alone: Alone, finish: Finish) -> Iterator[tuple[int, str, list[StageDiff]]]:
        """``(rows done, last key, results)`` segment by segment: every reference stage's result in
        order (ignored stages left out), ``finish(rs, cs, sd)`` applied to those judged alone or
        missing (``cs``/``sd`` ``None``)."""
        for seg in self.segments():
            out = self._run(seg, alone, finish) if seg.kind == "run" else None
            if out is None:
                out = self._rows(seg.first, seg.end, alone, finish)
            yield seg.end, self.rix.keys[seg.end - 1], out

    def _rows(self, first: int, end: int, alone: Alone, finish: Finish) -> list[StageDiff]:
        crow, cix, ign = self.crow, self.cix, self._ignored

        def items() -> Iterator[tuple[int, Stage, Stage | None]]:
            for i, rs in zip(range(first, end), self.rix.stages(first, end)):
                if ign is None or not ign[i]:
                    c = int(crow[i])
                    yield i, rs, (cix.stage(c) if c >= 0 else None)

        return [finish(rs, cs, sd) for _, rs, cs, sd in judge(self.rt, self.ct, items(), self.planner.config, alone,
                                                              self.planner.floor)]

    def _run(self, seg: Segment, alone: Alone, finish: Finish) -> list[StageDiff] | None:
        """The results of a run, ``None`` when it is not plain after all (its layout or tolerance
        says judge it alone) or its values cannot be read at once."""
        r0, r1, c0 = seg.first, seg.end, seg.cand_first
        n = r1 - r0
        rs0, cs0 = self.rix.stage(r0), self.cix.stage(c0)
        layout = self.planner.layout(rs0, cs0)
        tol = self.planner.tolerance(rs0, cs0, layout) if layout is not None else None
        if tol is None:
            return None
        ref, cand = self.rt.rows(r0, r1), self.ct.rows(c0, c0 + n)
        rbits, cbits = (_bits(ref), _bits(cand)) if ref is not None and cand is not None else (None, None)
        if rbits is None or cbits is None:
            return None
        run, rows = judged_run(layout, tol, n, ref, cand, lambda *args: _kernel.rows(rbits, cbits, n, *args))
        ref = cand = rbits = cbits = None  # (not held while the results are made)
        rkeys, ckeys = self.rix.keys, self.cix.keys
        if rows.size == n:  # (the keys are the traces' lists, the positions r0 + row and c0 + row)
            run.ref_keys, run.cand_keys, run.ref_pos, run.cand_pos = rkeys, ckeys, r0, c0
            return [_deferred(rkeys[r0 + j], run, j) for j in _ROW_NUMBERS[:n]]
        picked = rows.tolist()
        run.ref_keys, run.cand_keys = [rkeys[r0 + k] for k in picked], [ckeys[c0 + k] for k in picked]
        run.ref_pos, run.cand_pos = rows + r0, rows + c0
        out: list[StageDiff] = []
        j = 0
        ok = np.zeros(n, bool)
        ok[rows] = True
        for k in range(n):
            if ok[k]:
                out.append(_deferred(rkeys[r0 + k], run, _ROW_NUMBERS[j]))
                j += 1
            else:
                rs, cs = self.rix.stage(r0 + k), self.cix.stage(c0 + k)
                out.append(finish(rs, cs, alone(rs, cs)))
        return out

    def extras(self) -> Iterator[tuple[str, Stage]]:
        """``(key, stage)`` of the candidate stages no reference stage is matched to, in candidate order."""
        cn = self.cix.n
        if cn == self.rix.n and bool((self.crow == np.arange(cn)).all()):
            return iter(())
        matched = np.zeros(cn, bool)
        matched[self.crow[self.crow >= 0]] = True
        return ((self.cix.keys[r], self.cix.stage(r)) for r in np.flatnonzero(~matched).tolist())


def _dims(ix: StageIndex, rows: np.ndarray) -> np.ndarray:
    """``(len(rows), 4)`` dimensions of those rows, -1 past a row's last (and for rows of more)."""
    starts = ix.shape_start[rows]
    ndim = ix.ndim[rows].astype(np.int64)
    j = np.arange(_MAX_NDIM)
    if ix.dims.size == 0:
        return np.full((rows.size, _MAX_NDIM), -1, np.int64)
    at = np.minimum(starts[:, None] + j, ix.dims.size - 1)
    return np.where((j < ndim[:, None]) & (ndim[:, None] <= _MAX_NDIM), ix.dims[at], -1)
