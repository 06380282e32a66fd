"""Many small stages judged together: the engine's fast path for traces of a million stages.

A decode-step or solver trace holds a million stages of a few values each; judged one by one, a
stage costs far more in Python (a :func:`~parity.compare.metrics.compute_metrics` call, the
result objects) than in arithmetic. :func:`judge` walks the matched stage pairs in order and puts
runs of consecutive *plain* pairs (two small tensors of one shape, dtypes the C kernel reads, no
transform, noise floor or image handling, no cosine/SQNR floor, no registered metric) of one
layout and tolerance through one call of the kernel's ``stages`` entry, which runs each stage
through the very chunk function ``compute_metrics`` runs it through (a stage this small is one
chunk), so every partial is the same, bit for bit. The logits extras of a run of logits stages
come from one pass over their stacked rows (:class:`~parity.compare.logits.LogitsColumns`).

A stage of a run that passes becomes a :class:`DeferredStageDiff`: its partials stay in the run's
columns and its :class:`~parity.results.StageMetrics` and :class:`~parity.results.SideInfo` are
made from them, by the same ``_finish`` that ``compute_metrics`` ends with, when read. Every
other stage of a run (one that fails, whose sums need rescaling, whose buffer the kernel cannot
read) is judged again by :func:`~parity.compare.diff.compare_stage`, diagnoses included. The
results equal those of ``compare_stage`` stage for stage (tests/compare/test_batch.py).

>>> from parity.compare.diff import compare_stage, compare_stages
>>> ref, cand = parity.load_trace("ref.trace"), parity.load_trace("cand.trace")
>>> fast = compare_stages(ref, cand)["embedding"]
>>> alone = compare_stage(ref, cand, ref.stage("embedding"), cand.stage("embedding"),
...                       parity.compare.config.as_config(None), None)
>>> type(fast).__name__, fast.metrics.max_abs_index, fast == alone, fast.to_dict() == alone.to_dict()
('DeferredStageDiff', (4, 16), True, True)
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from typing import Any

import numpy as np

from ..results import SideInfo, StageDiff, StageMetrics, Status, Tolerance
from ..trace.dtypes import DTYPES
from ..trace.reader import Stage, Trace
from .chunks import TINY_SUM, Totals
from . import logits as _logits
from .logits import LogitsColumns, is_logits_key, valid_key_is_logits
from .metrics import _KCODE, _REGISTRY, _finish, _kernel, _ulp_plan

__all__ = ["judge", "judged_run", "DeferredStageDiff", "extra_value", "judged_alone", "logits_runs", "max_rel_errors",
           "BATCH_MAX_ELEMENTS", "BATCH_STAGES"]

#: Stages of at most this many elements are judged in runs (larger ones gain nothing from it).
BATCH_MAX_ELEMENTS = 4096
#: Stages per kernel call (bounds the arrays held at once).
BATCH_STAGES = 4096

_LITTLE = sys.byteorder == "little"
_STAGE_INTS, _STAGE_FLOATS = 14, 12
# a passing stage keeps these partials: counts (int32) and maxima, sums, values (float64)
_KEEP_INTS = [0, 2, 3, 4, 5, 9, 10]  # both_nan, ref_nan, cand_nan, ref_inf, cand_inf, abs_idx, rel_idx
_KEEP_FLOATS = [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11]  # abs, rel, dd, rr, cc, rc, ulp, abs ref/cand, rel ref/cand
_FIELDS = tuple(f.name for f in fields(StageDiff))


class _Run:
    """The columns of the passing stages of one kernel call, and what they share."""

    __slots__ = ("ref_keys", "cand_keys", "ref_pos", "cand_pos", "ints", "floats", "ref_info", "cand_info", "shape",
                 "size", "tol", "notes", "ulp", "logits", "logits_rows")

    def __init__(self, layout: tuple, tol: Tolerance, notes: tuple[str, ...], ulp: tuple):
        rd, cd, shape, raxes, caxes, runits, cunits, _ = layout
        self.ref_info, self.cand_info = (rd, shape, raxes, runits), (cd, shape, caxes, cunits)
        self.logits: LogitsColumns | None = None  # the logits extras of a run of logits stages
        self.logits_rows: list[int] = []  # their rows there
        self.shape, self.size = shape, math.prod(shape)
        self.tol, self.notes, self.ulp = tol, notes, ulp
        self.ref_keys: list[str] = []
        self.cand_keys: list[str] = []

    def side(self, row: int, which: str) -> SideInfo:
        """Side ``which`` of row ``row``. ``ref_pos`` / ``cand_pos`` are the positions of the rows,
        or (an int) the position of row 0 of a run of consecutive stages, whose keys are then the
        trace's whole key list."""
        if which == "ref":
            keys, (dtype, shape, axes, units), pos = self.ref_keys, self.ref_info, self.ref_pos
        else:
            keys, (dtype, shape, axes, units), pos = self.cand_keys, self.cand_info, self.cand_pos
        if type(pos) is int:
            return SideInfo(keys[pos + row], dtype, shape, axes, units, pos + row)
        return SideInfo(keys[row], dtype, shape, axes, units, int(pos[row]))

    def extra(self, row: int) -> dict[str, Any] | None:
        return None if self.logits is None else self.logits.extra(self.logits_rows[row])

    def metrics(self, row: int) -> StageMetrics:
        """What ``compute_metrics`` returns for this stage: its one chunk's partials, folded and
        finished as there."""
        both_nan, ref_nan, cand_nan, ref_inf, cand_inf, abs_idx, rel_idx = self.ints[row].tolist()
        abs_max, rel_max, s_dd, s_rr, s_cc, s_rc, ulp, abs_r, abs_c, rel_r, rel_c = self.floats[row].tolist()
        tot = Totals()
        tot.add((both_nan, 0, ref_nan, cand_nan, ref_inf, cand_inf, 0, 0, -1, abs_max, abs_idx, rel_max, rel_idx,
                 -1.0, -1, s_dd, s_rr, s_cc, s_rc, ulp), 0)
        values = {rel_idx: (rel_r, rel_c), abs_idx: (abs_r, abs_c)}
        return _finish(tot, self.size, self.shape, lambda f: values[f][0], lambda f: values[f][1], self.tol.rtol,
                       self.tol.atol, self.ulp, {})


_new = object.__new__


class DeferredStageDiff(StageDiff):
    """A passing :class:`~parity.results.StageDiff` of a run (see the module docstring) whose
    ``ref``, ``cand`` and ``metrics`` are made from the run's columns when read (a few hundred
    bytes a stage instead of a few kilobytes). It equals, hashes, copies and serialises as the
    plain ``StageDiff`` it stands for; :func:`dataclasses.replace` returns a plain one.

    >>> import dataclasses
    >>> from parity.results import StageDiff
    >>> from parity.compare.diff import compare_stages
    >>> sd = compare_stages("ref.trace", "cand.trace").stages[0]
    >>> isinstance(sd, StageDiff), type(dataclasses.replace(sd)) is StageDiff
    (True, True)
    """

    __slots__ = ("key", "status", "_run", "_row")

    def __new__(cls, *args: Any, **kwargs: Any) -> StageDiff:  # type: ignore[misc]
        return StageDiff(*args, **kwargs)  # dataclasses.replace() and copies: a plain StageDiff

    @property  # type: ignore[override]
    def ref(self) -> SideInfo:
        return self._run.side(self._row, "ref")

    @property  # type: ignore[override]
    def cand(self) -> SideInfo:
        return self._run.side(self._row, "cand")

    @property  # type: ignore[override]
    def metrics(self) -> StageMetrics:
        return self._run.metrics(self._row)

    @property  # type: ignore[override]
    def tolerance(self) -> Tolerance:
        return self._run.tol

    @property  # type: ignore[override]
    def notes(self) -> tuple[str, ...]:
        return self._run.notes

    @property  # type: ignore[override]
    def extra(self) -> dict[str, Any] | None:
        return self._run.extra(self._row)

    @property
    def has_metrics(self) -> bool:
        return True

    def extra_value(self, name: str) -> Any:
        return self._run.extra(self._row)["logits"] if name == "logits" and self._run.logits is not None else None

    @property
    def two_sided(self) -> bool:
        return True

    def plain(self) -> StageDiff:
        """The plain :class:`StageDiff` with the same fields."""
        return StageDiff(*(getattr(self, f) for f in _FIELDS))

    def to_dict(self) -> dict[str, Any]:
        return self.plain().to_dict()  # every deferred field made once

    def __reduce__(self) -> tuple:
        return (StageDiff, tuple(getattr(self, f) for f in _FIELDS))

    def __repr__(self) -> str:
        return repr(self.plain())


_set_key, _set_status, _set_run, _set_row = (DeferredStageDiff.__dict__[n].__set__ for n in ("key", "status", "_run", "_row"))


def _deferred(key: str, run: _Run, row: int) -> DeferredStageDiff:
    sd = _new(DeferredStageDiff)
    _set_key(sd, key)
    _set_status(sd, Status.PASS)
    _set_run(sd, run)
    _set_row(sd, row)
    return sd


# -- which pairs are plain ----------------------------------------------------------------------------
class _Planner:
    """Tells the run layout of a plain pair (``None``: judge it alone), caching what it can."""

    def __init__(self, config: Any, floor: Any):
        self.config, self.floor = config, floor
        self.sizes: dict[tuple[int, ...], int] = {}
        self.tols: dict[tuple, Tolerance] = {}

    def layout(self, rs: Stage, cs: Stage) -> tuple | None:
        if rs.kind != "tensor" or cs.kind != "tensor":
            return None
        shape, rd, cd = rs.shape, rs.dtype, cs.dtype
        if shape != cs.shape or rd not in _KCODE or cd not in _KCODE:
            return None
        size = self.sizes.get(shape)
        if size is None:
            size = self.sizes[shape] = math.prod(shape)
        if size > BATCH_MAX_ELEMENTS:
            return None
        raxes, caxes = rs.axes, cs.axes
        if raxes is not None and caxes is not None and raxes != caxes:
            return None
        key = rs.key
        logits = "logits" in key and is_logits_key(key) and len(shape) > 0 and size > 0  # stage_extra's logits
        if logits and size // shape[-1] > max(1, _logits._ROWS_PER_CHUNK_BYTES // (8 * shape[-1])):
            return None  # logits_metrics would take its rows in several chunks
        cfg = self.config
        if cfg.transforms_stage(key):
            return None
        if self.floor is not None and self.floor.get(key) is not None:
            return None
        return (rd, cd, shape, raxes, caxes, rs.units, cs.units, logits)

    def key_classes(self, keys: list[str]) -> np.ndarray:
        """One number per key (valid keys: those of a stage index) telling what :meth:`layout` and :meth:`tolerance` read of the key
        (logits or not, the tolerance patterns and ``[images]`` patterns it matches), equal for two
        keys only when those are the same; -1 for a key whose pair is judged alone (a transform or a
        noise floor applies to it). Two stage pairs of one layout (dtypes, shape, no axes or units)
        whose keys share a class get the same layout and tolerance."""
        cfg, floor = self.config, self.floor
        logits = [valid_key_is_logits(k) for k in keys]  # (stage index keys: checked when read)
        rules, images = cfg.tolerance, cfg.images
        if not (cfg.transforms or floor is not None or rules.stages or images):
            return np.array(logits, np.int32).reshape(len(keys))
        ids: dict[tuple, int] = {}
        out = np.empty(len(keys), np.int32)
        for i, (k, lg) in enumerate(zip(keys, logits)):
            if (floor is not None and floor.get(k) is not None) or cfg.transforms_stage(k):
                out[i] = -1
                continue
            cls = (lg, rules.matching(k), bool(images) and cfg.image_options(k) is not None)
            out[i] = ids.setdefault(cls, len(ids))
        return out

    def tolerance(self, rs: Stage, cs: Stage, layout: tuple) -> Tolerance | None:
        """The stage's tolerance, ``None`` when it has a stage-level floor or makes it an image."""
        tol = self.config.tolerance.for_stage(rs.key, layout[0], layout[1])
        if tol.cosine_min is not None or tol.sqnr_min_db is not None or tol.correlation_min is not None:
            return None
        if len(layout[2]) == 2:
            from .diff import _image_options

            if _image_options(rs, cs, tol, self.config)[0]:
                return None
        return tol


def _notes(layout: tuple) -> tuple[str, ...]:
    """The notes :func:`~parity.compare.diff.compare_stage` gives a plain pair of this layout."""
    rd, cd, _, _, _, runits, cunits, _ = layout
    notes = []
    if runits != cunits and (runits or cunits):
        notes.append(f"units differ: {runits!r} vs {cunits!r}")
    if rd != cd:
        notes.append(f"dtype differs: {rd} vs {cd}")
    return tuple(notes)


# -- judging -------------------------------------------------------------------------------------------
Alone = Callable[[Stage, Stage], StageDiff]


def judge(ref: Trace, cand: Trace, items: Iterable[tuple[Any, Stage, Stage | None]], config: Any, alone: Alone,
          floor: Any = None) -> Iterator[tuple[Any, Stage, Stage | None, StageDiff | None]]:
    """``(tag, rs, cs, result)`` for every ``(tag, rs, cs)`` of ``items``, in order: the
    :class:`StageDiff` that ``alone(rs, cs)`` (the engine's per-stage judgement) gives, ``None``
    where ``cs`` is ``None``; plain pairs judged in runs (see the module docstring).

    >>> from parity.compare.config import as_config
    >>> from parity.compare.diff import compare_stage
    >>> ref, cand, cfg = parity.load_trace("ref.trace"), parity.load_trace("cand.trace"), as_config("parity.toml")
    >>> cs = {s.key: s for s in cand}
    >>> out = list(judge(ref, cand, [(i, s, cs[s.key]) for i, s in enumerate(ref)], cfg,
    ...                  lambda rs, cs: compare_stage(ref, cand, rs, cs, cfg, None)))
    >>> len(out), [sd.key for *_, sd in out if not sd.passed][0]
    (31, 'layers.0.attn_scores')
    """
    if _kernel is None or not hasattr(_kernel, "stages") or _REGISTRY:  # (a kernel built before stages())
        for tag, rs, cs in items:
            yield tag, rs, cs, (alone(rs, cs) if cs is not None else None)
        return
    planner = _Planner(config, floor)
    pending: list[tuple[Any, Stage, Stage]] = []
    group: tuple | None = None
    for tag, rs, cs in items:
        layout = planner.layout(rs, cs) if cs is not None else None
        tol = planner.tolerance(rs, cs, layout) if layout is not None else None  # type: ignore[arg-type]
        if tol is None:
            if pending:
                yield from _judge_run(ref, cand, pending, group, alone)  # type: ignore[arg-type]
                pending = []
            yield tag, rs, cs, (alone(rs, cs) if cs is not None else None)
            continue
        this = (layout, tol)
        if pending and (this != group or len(pending) >= BATCH_STAGES):
            yield from _judge_run(ref, cand, pending, group, alone)  # type: ignore[arg-type]
            pending = []
        group = this
        pending.append((tag, rs, cs))  # type: ignore[arg-type]
    if pending:
        yield from _judge_run(ref, cand, pending, group, alone)  # type: ignore[arg-type]


def _bits(arr: np.ndarray) -> Any:
    """What the kernel reads of a stage array: itself, or its raw bits (a dtype NumPy cannot
    export, e.g. ml_dtypes' bfloat16); ``None`` for a byte order the kernel does not read."""
    dt = arr.dtype
    if not dt.isnative:
        return None
    return arr if dt.kind in "fiub" else arr.view(f"u{dt.itemsize}")


def judged_run(layout: tuple, tol: Tolerance, n: int, refs: Any, cands: Any,
               call: Callable[..., None] | None) -> tuple[_Run, np.ndarray]:
    """Judge ``n`` stages of one layout and tolerance with one kernel call, ``call(rtype, ctype,
    rtol, atol, ulp_mode, ulp_m, ulp_emin, ints, floats)`` (``None``: the kernel cannot read them);
    the :class:`_Run` of the passing ones (its ``ints``, ``floats`` and logits columns filled, from
    ``refs`` / ``cands``: lists of arrays or two ``(n, size)`` arrays) and their row numbers. The
    caller fills in the run's keys and positions."""
    rd, cd = DTYPES[layout[0]], DTYPES[layout[1]]
    ulp = _ulp_plan(rd, cd)
    ints = np.empty((n, _STAGE_INTS), np.int64)
    flts = np.empty((n, _STAGE_FLOATS), np.float64)
    if call is not None:
        call(_KCODE[rd.code], _KCODE[cd.code], tol.rtol, tol.atol, *(ulp if len(ulp) == 3 else (ulp[0], 0, 0)), ints,
             flts)
        ok = _deferrable(ints, flts)
    else:
        ok = np.zeros(n, bool)
    run = _Run(layout, tol, _notes(layout), ulp)
    rows = np.flatnonzero(ok)
    if layout[-1] and rows.size:
        run.logits, run.logits_rows = LogitsColumns(refs, cands, rd, cd, layout[2]), rows.tolist()
    run.ints = ints[rows][:, _KEEP_INTS].astype(np.int32)
    run.floats = flts[rows][:, _KEEP_FLOATS]
    return run, rows


def _judge_run(ref: Trace, cand: Trace, pending: list[tuple[Any, Stage, Stage]], group: tuple[tuple, Tolerance],
               alone: Alone) -> Iterator[tuple[Any, Stage, Stage, StageDiff]]:
    layout, tol = group
    ref_arrays = [ref.array(rs) for _, rs, _ in pending]
    cand_arrays = [cand.array(cs) for _, _, cs in pending]
    refs, cands = [_bits(a) for a in ref_arrays], [_bits(a) for a in cand_arrays]
    readable = _LITTLE and all(a is not None for a in refs) and all(a is not None for a in cands)
    run, rows = judged_run(layout, tol, len(pending), ref_arrays, cand_arrays,
                           (lambda *args: _kernel.stages(refs, cands, *args)) if readable else None)
    refs = cands = ref_arrays = cand_arrays = None  # (the arrays are not held while the results are yielded)
    row_of = dict(zip(rows.tolist(), range(rows.size)))
    for k in rows.tolist():
        _, rs, cs = pending[k]
        run.ref_keys.append(rs.key)
        run.cand_keys.append(cs.key)
    run.ref_pos = np.array([pending[k][1].position for k in rows.tolist()], np.int64)
    run.cand_pos = np.array([pending[k][2].position for k in rows.tolist()], np.int64)
    for k, (tag, rs, cs) in enumerate(pending):
        r = row_of.get(k)
        yield tag, rs, cs, (alone(rs, cs) if r is None else _deferred(rs.key, run, r))


def _deferrable(ints: np.ndarray, flts: np.ndarray) -> np.ndarray:
    """Rows that the kernel read, that pass, and whose sums ``compute_metrics`` keeps as they are
    (``sums_need_rescaling`` false)."""
    s_dd, s_rr, s_cc = flts[:, 3], flts[:, 4], flts[:, 5]
    with np.errstate(invalid="ignore"):
        rescale = (~np.isfinite(flts[:, 3:7]).all(axis=1)) | (s_rr < TINY_SUM) | (s_cc < TINY_SUM) | (
            (s_dd < TINY_SUM) & (flts[:, 0] > 0))
    return (ints[:, 13] == 1) & (ints[:, 1] == 0) & ~rescale


def extra_value(sd: Any, name: str) -> Any:
    """``sd.extra[name]`` (``None``: absent or no ``sd``), through
    :meth:`~parity.results.StageDiff.extra_value` where ``sd`` has it, so that a deferred stage makes
    no other extra (the renderers ask every stage for its image and noise floor).

    >>> extra_value(parity.StageDiff("x", "pass", extra={"image": 1}), "image"), extra_value(None, "image")
    (1, None)
    """
    if sd is None:
        return None
    get = getattr(sd, "extra_value", None)
    return get(name) if get is not None else (getattr(sd, "extra", None) or {}).get(name)


def judged_alone(stages: Iterable[Any]) -> list[Any]:
    """The results of ``stages`` that are not :class:`DeferredStageDiff` (those of a run), in order:
    the only ones that can hold image metrics or a noise-floor judgement.

    >>> from parity.compare.diff import compare_stages
    >>> d = compare_stages("ref.trace", "cand.trace")
    >>> len(judged_alone(d.stages)) < len(d.stages), all(not s.passed for s in judged_alone(d.stages))
    (True, True)
    """
    return [sd for sd in stages if sd.__class__ is not DeferredStageDiff]


def logits_runs(stages: Iterable[Any]) -> Iterator[tuple[list[Any], LogitsColumns | None, list[int]]]:
    """The results of ``stages`` that may hold logits extras, in order and in groups:
    ``(results, columns, rows)`` for consecutive results of one run of logits stages (their
    logits extras are rows ``rows`` of ``columns``), ``([result], None, [])`` for a result judged
    alone. The results of other runs hold none and are left out.

    >>> from parity.compare.diff import compare_stages
    >>> [(len(g), cols is not None) for g, cols, _ in logits_runs(compare_stages("ref.trace", "cand.trace").stages)][-1]
    (1, False)
    """
    group: list[Any] = []
    rows: list[int] = []
    run: Any = None
    for sd in stages:
        r = sd._run if sd.__class__ is DeferredStageDiff else None
        if r is not None and r.logits is None:
            continue
        if group and r is not run:
            yield group, run.logits, rows
            group, rows, run = [], [], None
        if r is None:
            yield [sd], None, []
            continue
        run = r
        group.append(sd)
        rows.append(r.logits_rows[sd._row])
    if group:
        yield group, run.logits, rows


def max_rel_errors(stages: Iterable[Any]) -> np.ndarray:
    """Each result's ``metrics.max_rel_err`` (NaN where it has no metrics), a run's stages read from
    the run's columns without making their :class:`~parity.results.StageMetrics`.

    >>> from parity.compare.diff import compare_stages
    >>> d = compare_stages("ref.trace", "cand.trace")
    >>> bool((max_rel_errors(d.stages) == [s.metrics.max_rel_err for s in d.stages]).all())
    True
    """
    out = []
    for sd in stages:
        if sd.__class__ is DeferredStageDiff:  # (a passing run stage: no NaN mismatch, as _finish reads it)
            out.append(max(float(sd._run.floats[sd._row, 1]), 0.0))
        else:
            m = sd.metrics
            out.append(math.nan if m is None or m.max_rel_err is None else m.max_rel_err)
    return np.array(out, np.float64)
