"""The per-stage comparison engine: line two traces up and judge every stage.

:func:`compare_stages` walks the reference's stages in execution order, lines each up with a
candidate stage (by key, after renames and aliases), checks kind, shape, layout and dtype before
values, and computes the metrics of :mod:`parity.compare.metrics` in one streaming pass per stage.
Its result is a :class:`~parity.results.TraceDiff` (the result types live in
:mod:`parity.results`; they are re-exported here for the old import paths).

The engine judges stages; it does not explain them. Diagnoses come from a :class:`Diagnoser`
passed in (:data:`parity.localize.diagnose.DIAGNOSER` is the one parity ships), and event traces
go to :mod:`parity.events`: :func:`parity.compare_traces` (in :mod:`parity.localize.divergence`)
composes the three. ``compare_traces`` here is the deprecated old path of :func:`compare_stages`.

Example:
    >>> diff = compare_stages("ref.trace", "cand.trace", rtol=1e-4, atol=1e-6)
    >>> diff.first_divergence.key, diff.first_divergence.diagnoses  # no diagnoser given
    ('layers.0.attn_scores', ())
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from ..errors import UsageError
from ..limits import gc_paused
from ..results import DIFF_SCHEMA_VERSION, Diagnosis, SideInfo, StageDiff, StageMetrics, Status, TraceDiff, Verdict
from ..trace.dtypes import to_float64
from ..trace.reader import Stage, Trace, load_trace
from .align import apply_transforms
from .batch import judge
from .columns import ColumnPlan
from .config import CompareConfig, as_config
from .floor import NoiseFloor, load_noise_floor, relative_rms
from .image import ImageMetrics, image_metrics, is_image_stage
from .logits import is_logits_key, stage_extra
from .metrics import compute_metrics
from .tolerance import Tolerance

__all__ = ["compare_stages", "compare_traces", "collector_paused", "Diagnoser", "Executor", "Progress", "DIFF_SCHEMA_VERSION", "Diagnosis",
           "SideInfo", "StageDiff", "TraceDiff", "Status", "Verdict"]

#: Called as ``progress(done, total, key)`` after each reference stage.
Progress = Callable[[int, int, str], None]


class Diagnoser(Protocol):
    """What the engine calls to explain divergences (passed in; see :mod:`parity.localize.diagnose`).

    ``stage`` is called for every failing stage with the two stages and arrays as compared (after
    transforms) and the metrics, ``None`` for a stage whose shapes differ with the same element
    count; ``trace`` once at the end with every result, and returns them with trace-level
    diagnoses added (the first stage where NaN appears, ...).

    >>> class Blame:
    ...     def stage(self, rs, cs, ra, ca, metrics): return [Diagnosis("note", f"{rs.key} differs")]
    ...     def trace(self, results, ref, cand, config): return results
    >>> compare_stages("ref.trace", "cand.trace", diagnoser=Blame()).first_divergence.diagnoses[0].summary
    'layers.0.attn_scores differs'
    """

    def stage(self, ref_stage: Stage, cand_stage: Stage, ref_arr: Any, cand_arr: Any,
              metrics: StageMetrics | None) -> Iterable[Diagnosis]: ...

    def trace(self, results: Sequence[StageDiff], ref: Trace, cand: Trace, config: CompareConfig) -> Sequence[StageDiff]: ...


class Executor(Protocol):
    """Where the stages are compared: given the matched ``(reference, candidate)`` stage pairs in
    reference order, yields each pair's :class:`StageDiff` in that order, exactly as
    :func:`compare_stage` gives it. The default compares them one after another in this process;
    :class:`parity.compare.executor.DaskExecutor` spreads the work over a Dask cluster.

    >>> class Here:
    ...     def results(self, ref, cand, pairs, config, diagnoser, floor):
    ...         return (compare_stage(ref, cand, rs, cs, config, diagnoser, floor) for rs, cs in pairs)
    >>> compare_stages("ref.trace", "cand.trace", executor=Here()).first_divergence.key
    'layers.0.attn_scores'
    """

    def results(self, ref: Trace, cand: Trace, pairs: Sequence[tuple[Stage, Stage]], config: CompareConfig,
                diagnoser: Diagnoser | None, floor: NoiseFloor | None) -> Iterator[StageDiff]: ...


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.3g}"


def compare_stage(ref: Trace, cand: Trace, rs: Stage, cs: Stage, config: CompareConfig,
                  diagnoser: Diagnoser | None, floor: NoiseFloor | None = None,
                  metrics: StageMetrics | None = None) -> StageDiff:
    """The :class:`StageDiff` of one matched stage pair (``metrics``: the stage's
    :func:`~parity.compare.metrics.compute_metrics`, when computed elsewhere; see :class:`Executor`).

    >>> ref, cand = load_trace("ref.trace"), load_trace("cand.trace")
    >>> compare_stage(ref, cand, ref.stage("logits"), cand.stage("logits"), as_config(None), None).problem
    'values'
    """
    ri, ci = SideInfo.of(rs), SideInfo.of(cs)
    base = StageDiff(key=rs.key, status=Status.PASS, ref=ri, cand=ci)
    notes = []
    ra = ca = None
    transformed = False
    if rs.kind == "tensor" and cs.kind == "tensor":
        ra, ca = ref.array(rs), cand.array(cs)
        if config.transforms:  # the stages as they are after the declared transforms
            rs, ra, r_steps = apply_transforms(config.transforms, rs.key, "reference", rs, ra)
            cs, ca, c_steps = apply_transforms(config.transforms, rs.key, "candidate", cs, ca)
            transformed = bool(r_steps or c_steps)
            notes += [f"{side} transformed: {', '.join(steps)}" for side, steps in (("reference", r_steps), ("candidate", c_steps))
                      if steps]
    if rs.units != cs.units and (rs.units or cs.units):
        notes.append(f"units differ: {rs.units!r} vs {cs.units!r}")
    if rs.kind != cs.kind:
        return replace(base, status=Status.FAIL, problem="kind", notes=tuple(notes),
                       message=f"reference stored {rs.kind}, candidate stored {cs.kind}.")
    if rs.kind == "text":
        same = rs.text == cs.text
        return replace(base, status=Status.PASS if same else Status.FAIL, problem=None if same else "text", notes=tuple(notes),
                       message="" if same else f"text differs: {rs.text!r} vs {cs.text!r}.")
    if rs.shape != cs.shape:
        same_count = rs.size == cs.size
        after = " after transforms" if transformed else ""
        # Same count, other shape: the diagnoser can still tell a transpose (no metrics exist).
        shape_dx = tuple(diagnoser.stage(rs, cs, ra, ca, None)) if same_count and diagnoser is not None else ()
        return replace(base, status=Status.FAIL, problem="shape", notes=tuple(notes), diagnoses=shape_dx,
                       message=f"shape {rs.shape} != {cs.shape}{after}" + (" (same element count: declare a transform to map them; "
                                                                     "parity never flattens silently)." if same_count else "."))
    if rs.axes is not None and cs.axes is not None and rs.axes != cs.axes:
        return replace(base, status=Status.FAIL, problem="layout", notes=tuple(notes),
                       message=f"layout {list(rs.axes)} != {list(cs.axes)}; declare a permute transform to compare them.")
    if rs.dtype != cs.dtype:
        notes.append(f"dtype differs: {rs.dtype} vs {cs.dtype}")
    tol = config.tolerance.for_stage(rs.key, rs.dtype, cs.dtype)
    m = metrics if metrics is not None else compute_metrics(ra, ca, ref_dtype=rs.dtype_info, cand_dtype=cs.dtype_info,
                                                           rtol=tol.rtol, atol=tol.atol)
    problem, message = None, ""
    floor_info = None
    if floor is not None and floor.get(rs.key) is not None:
        problem, message, floor_info = _floor_verdict(floor, rs.key, m)
        notes.append(f"error is {_fmt(floor_info['ratio'])}× the noise floor (allowed {floor.margin:g}×); "
                     "element-wise rtol/atol not applied")
    elif not m.passed:
        problem = "values"
        message = (f"{m.mismatched} / {m.count} elements ({100 * m.mismatched_fraction:.3g}%) outside tolerance; "
                   f"greatest absolute difference {_fmt(m.max_abs_err)} at index {m.max_abs_index} "
                   f"(up to {_fmt(tol.atol + tol.rtol * abs(m.max_abs_ref))} allowed).")
        if m.nan_mismatch or m.inf_mismatch:
            message += f" NaN pattern mismatches: {m.nan_mismatch}; Inf mismatches: {m.inf_mismatch}."
    elif tol.cosine_min is not None and not (m.cosine >= tol.cosine_min):
        problem, message = "cosine", f"cosine similarity {m.cosine:.9g} below the floor {tol.cosine_min}."
    elif tol.sqnr_min_db is not None and not (m.sqnr_db >= tol.sqnr_min_db):
        problem, message = "sqnr", f"SQNR {m.sqnr_db:.4g} dB below the floor {tol.sqnr_min_db} dB."
    image = _image_metrics(rs, cs, ra, ca, tol, config)
    if problem is None and image is not None and tol.correlation_min is not None and not (image.pearson >= tol.correlation_min):
        problem, message = "correlation", f"Pearson correlation {image.pearson:.9g} below the floor {tol.correlation_min}."
    status = Status.PASS if problem is None else Status.FAIL
    diagnoses: tuple[Diagnosis, ...] = ()
    if problem is not None and diagnoser is not None:
        diagnoses = tuple(diagnoser.stage(rs, cs, ra, ca, m))
    extra = stage_extra(rs.key, ra, ca, rs.dtype_info, cs.dtype_info)
    if image is not None:
        extra = {**(extra or {}), "image": image.to_dict()}
    if floor_info is not None:
        extra = {**(extra or {}), "noise_floor": floor_info}
    return replace(base, status=status, metrics=m, tolerance=tol, problem=problem, message=message,
                   notes=tuple(notes), diagnoses=diagnoses, extra=extra)


def _image_options(rs: Stage, cs: Stage, tol: Tolerance, config: CompareConfig) -> tuple[bool, dict[str, Any] | None]:
    """Whether a stage is an image (a 2-D stage with named image axes, a correlation floor, or
    ``[images]`` options), and its ``[images]`` options."""
    if len(rs.shape) != 2 or rs.size < 2 or rs.dtype_info is None or cs.dtype_info is None:
        return False, None
    opted = getattr(config, "image_options", None)
    options = opted(rs.key) if opted is not None else None
    return is_image_stage(rs.shape, rs.axes or cs.axes) or tol.correlation_min is not None or options is not None, options


def streamable(rs: Stage, cs: Stage, config: CompareConfig) -> bool:
    """Whether a stage pair's result depends on its values only through
    :func:`~parity.compare.metrics.compute_metrics` (two tensors of one shape and layout, no
    transforms, not an image nor logits), so that its metrics may be computed chunk by chunk elsewhere.

    >>> ref, cand, cfg = load_trace("ref.trace"), load_trace("cand.trace"), as_config(None)
    >>> streamable(ref.stage("embedding"), cand.stage("embedding"), cfg), streamable(ref.stage("logits"), cand.stage("logits"), cfg)
    (True, False)
    """
    if rs.kind != "tensor" or cs.kind != "tensor" or rs.shape != cs.shape or is_logits_key(rs.key):
        return False
    if rs.axes is not None and cs.axes is not None and rs.axes != cs.axes:
        return False
    if config.transforms_stage(rs.key):
        return False
    return not _image_options(rs, cs, config.tolerance.for_stage(rs.key, rs.dtype, cs.dtype), config)[0]


def _image_metrics(rs: Stage, cs: Stage, ra: Any, ca: Any, tol: Tolerance, config: CompareConfig) -> ImageMetrics | None:
    """Image metrics of a 2-D stage that is an image (see :func:`_image_options`)."""
    image, options = _image_options(rs, cs, tol, config)
    if not image:
        return None
    r = to_float64(np.asarray(ra), rs.dtype_info)
    c = to_float64(np.asarray(ca), cs.dtype_info)
    return image_metrics(r, c, **(options or {}))


def _floor_verdict(floor: NoiseFloor, key: str, m: StageMetrics) -> tuple[str | None, str, dict[str, Any]]:
    """(problem, message, the ``noise_floor`` extra) of a stage judged against its noise floor."""
    ok, ratio = floor.judge(key, rel_rms=relative_rms(m.sqnr_db), rms=m.rms_err)
    info = {"rel_rms": floor.stages[key].rel_rms, "rms": floor.stages[key].rms, "margin": floor.margin,
            "ratio": ratio if math.isfinite(ratio) else "inf"}
    if ok and not (m.nan_mismatch or m.inf_mismatch):
        return None, "", info
    message = (f"error is {_fmt(ratio)}× the noise floor of this stage (allowed {floor.margin:g}×)"
               + (f"; NaN pattern mismatches: {m.nan_mismatch}, Inf mismatches: {m.inf_mismatch}"
                  if m.nan_mismatch or m.inf_mismatch else "") + ".")
    return "noise_floor", message, info


def compare_stages(ref: str | os.PathLike[str] | Trace, cand: str | os.PathLike[str] | Trace,
                   config: str | os.PathLike[str] | CompareConfig | Mapping[str, Any] | None = None, *,
                   diagnoser: Diagnoser | None = None, progress: Progress | None = None,
                   noise_floor: NoiseFloor | str | os.PathLike[str] | None = None, executor: Executor | None = None,
                   **overrides: Any) -> TraceDiff:
    """Compare a candidate trace against a reference trace, stage by stage (no diagnoses unless a
    ``diagnoser`` is given; :func:`parity.compare_traces` gives one and handles event traces).

    Args:
        ref, cand: the two traces (paths or loaded :class:`~parity.Trace`).
        config, **overrides: the comparison config and keyword overrides of its fields, as
            :func:`~parity.compare.config.as_config` takes them (see :class:`CompareConfig`).
        diagnoser: explains failing stages (see :class:`Diagnoser`).
        progress: called as ``progress(done, total, key)`` after each reference stage.
        noise_floor: per-stage noise floors (a :class:`~parity.compare.floor.NoiseFloor` or the
            file ``parity calibrate`` wrote): a stage with a floor passes when its relative RMS
            error is within the floor's margin, instead of the element-wise rtol/atol.
        executor: where the stages are compared (see :class:`Executor`); default one after
            another in this process. The result does not depend on it.

    Raises:
        TraceFormatError: a trace cannot be read.
        ConfigError: the config is wrong (with ``strict``, an entry that matches nothing).
        UsageError: an unknown override, or two candidate stages map to one reference stage.

    >>> d = compare_stages("ref.trace", "cand.trace", "parity.toml", ignore=["layers.*"])
    >>> d.summary()["ignored"], [s.key for s in d.stages]
    (28, ['embedding', 'final_norm', 'logits'])
    """
    rt = ref if isinstance(ref, Trace) else load_trace(ref)
    ct = cand if isinstance(cand, Trace) else load_trace(cand)
    cfg = as_config(config, **overrides)
    unused = cfg.unused_entries(rt.keys(), ct.keys())
    if unused and cfg.strict:
        cfg.check_patterns(rt.keys(), ct.keys())  # raises, listing them all
    floor = load_noise_floor(noise_floor) if isinstance(noise_floor, (str, os.PathLike)) else noise_floor
    with collector_paused():
        results, ignored = _walk(rt, ct, cfg, diagnoser, floor, progress, executor)
        if diagnoser is not None:
            results = list(diagnoser.trace(results, rt, ct, cfg))
    return TraceDiff(ref_path=rt.path, cand_path=ct.path, stages=tuple(results), strict=cfg.strict,
                     ref_complete=rt.complete, cand_complete=ct.complete, ignored=ignored, config_source=cfg.source,
                     unused_config=tuple(unused))


#: The collector pause of the comparison (:func:`parity.limits.gc_paused`).
collector_paused = gc_paused


def compare_traces(ref: str | os.PathLike[str] | Trace, cand: str | os.PathLike[str] | Trace,
                   config: str | os.PathLike[str] | CompareConfig | Mapping[str, Any] | None = None,
                   **kwargs: Any) -> TraceDiff:
    """The old import path ``parity.compare.compare_traces``: :func:`compare_stages`, which
    attaches no diagnoses (the engine cannot reach :mod:`parity.localize`, the layer above it).

    Deprecated, with a :class:`DeprecationWarning`, so that the missing diagnoses are never
    silent: call :func:`parity.compare_traces` (diagnoses, event traces, ``local=``), or
    :func:`compare_stages` for the plain comparison.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     d = compare_traces("ref.trace", "cand.trace")
    >>> w[0].category.__name__, d.first_divergence.diagnoses
    ('DeprecationWarning', ())
    """
    warnings.warn("parity.compare.compare_traces is the plain per-stage comparison, without diagnoses; call "
                  "parity.compare_traces (diagnoses, event traces) or parity.compare.compare_stages",
                  DeprecationWarning, stacklevel=2)
    return compare_stages(ref, cand, config, **kwargs)


class _SameKeys:
    """Candidate stages by their own key (no renames, no aliases), made when asked for: a trace of
    a million stages then holds no million candidate :class:`Stage` objects while it is compared."""

    def __init__(self, ct: Trace):
        self.ct = ct

    def get(self, key: str) -> Stage | None:
        return self.ct.stage(key) if key in self.ct else None

    def unused(self, used: Container[str]) -> Iterator[tuple[str, Stage]]:
        """``(key, stage)`` of the candidate stages whose key is not in ``used``, in candidate order."""
        return ((k, self.ct.stage(k)) for k in self.ct.keys() if k not in used)


def _candidates_by_reference(ct: Trace, cfg: CompareConfig) -> dict[str, Stage] | _SameKeys:
    """Candidate stages by the reference key they map to (after renames and aliases)."""
    if not cfg.renames and not cfg.aliases:
        return _SameKeys(ct)
    cand_by_ref: dict[str, Stage] = {}
    for cs in ct:
        target = cfg.rename_candidate(cs.key)
        if target in cand_by_ref:
            other = cand_by_ref[target].key
            raise UsageError(f'candidate stages "{other}" and "{cs.key}" both map to reference stage "{target}" after aliases.',
                             path=ct.path)
        cand_by_ref[target] = cs
    return cand_by_ref


def _walk(rt: Trace, ct: Trace, cfg: CompareConfig, diagnoser: Diagnoser | None, floor: NoiseFloor | None,
          progress: Progress | None, executor: Executor | None = None) -> tuple[list[StageDiff], int]:
    """Every stage's result (reference order, then candidate-only stages) and the number ignored.

    Without an executor the stages stream through :func:`parity.compare.batch.judge` (runs of
    small plain stages in one kernel call, the same results as :func:`compare_stage`), or, for two
    traces with stage indexes, through a :class:`~parity.compare.columns.ColumnPlan`."""
    cand_by_ref = _candidates_by_reference(ct, cfg)
    used = rt  # the reference keys (a candidate stage mapped to none of them is extra), held by the trace
    total = len(rt)

    def finish(rs: Stage, cs: Stage | None, sd: StageDiff | None) -> StageDiff:
        if cs is None or sd is None:
            return StageDiff(key=rs.key, status=Status.MISSING, ref=SideInfo.of(rs), message="present in the reference only.")
        if sd.status == Status.FAIL:
            reason = cfg.expected_reason(rs.key)
            if reason is not None:
                return replace(sd, status=Status.EXPECTED, expected_reason=reason)
        return sd

    def alone(rs: Stage, cs: Stage) -> StageDiff:
        return compare_stage(rt, ct, rs, cs, cfg, diagnoser, floor)

    results: list[StageDiff] = []
    plan = ColumnPlan.build(rt, ct, cfg, floor) if executor is None and isinstance(cand_by_ref, _SameKeys) else None
    if plan is not None:
        ignored = plan.ignored
        for done, key, chunk in plan.walk(alone, finish):
            results.extend(chunk)
            if progress is not None:
                progress(done, total, key)
        rest: Iterable[tuple[str, Stage]] = plan.extras()
    else:
        ignored = 0

        def plan_items() -> Iterator[tuple[int, Stage, Stage | None]]:  # reference position, stage, its candidate
            nonlocal ignored
            for i, rs in enumerate(rt):
                if cfg.is_ignored(rs.key):
                    ignored += 1
                else:
                    yield i, rs, cand_by_ref.get(rs.key)

        if executor is not None:
            planned = list(plan_items())
            judged = iter(executor.results(rt, ct, [(rs, cs) for _, rs, cs in planned if cs is not None], cfg,
                                           diagnoser, floor))
            stream: Iterable[tuple[int, Stage, Stage | None, StageDiff | None]] = (
                (i, rs, cs, next(judged) if cs is not None else None) for i, rs, cs in planned)
        else:
            stream = judge(rt, ct, plan_items(), cfg, alone, floor)
        for i, rs, cs, sd in stream:
            results.append(finish(rs, cs, sd))
            if progress is not None:
                progress(i + 1, total, rs.key)
        rest = (cand_by_ref.unused(used) if isinstance(cand_by_ref, _SameKeys) else
                ((t, cs) for t, cs in cand_by_ref.items() if t not in used))
    for target, cs in rest:
        if cfg.is_ignored(target) or cfg.is_ignored(cs.key):
            ignored += 1
            continue
        results.append(StageDiff(key=cs.key, status=Status.EXTRA, cand=SideInfo.of(cs), message="present in the candidate only."))
    return results, ignored
