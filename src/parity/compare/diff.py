"""Compare two traces stage by stage: the one result type every renderer reads.

:func:`compare_traces` walks the reference's stages in execution order, lines each up with a
candidate stage (by key, after aliases), checks kind, shape, layout and dtype before values, and
computes the metrics of :mod:`parity.compare.metrics` in one streaming pass per stage. The first
divergence is the first stage, in the reference's execution order, present on both sides whose
comparison fails.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import UsageError
from ..trace.dtypes import to_float64
from ..trace.reader import Stage, Trace, load_trace
from .align import apply_transforms
from .config import CompareConfig, load_config
from .floor import NoiseFloor, load_noise_floor, relative_rms
from .image import ImageMetrics, image_metrics, is_image_stage
from .logits import stage_extra
from .metrics import StageMetrics, compute_metrics
from .tolerance import Tolerance

__all__ = ["Diagnosis", "StageDiff", "TraceDiff", "compare_traces", "DIFF_SCHEMA_VERSION", "Status", "Verdict"]

#: Version of the JSON form of :class:`TraceDiff` (see docs/json-schema.md).
DIFF_SCHEMA_VERSION = 1


class Verdict:
    """Values of :attr:`TraceDiff.verdict` (the ``verdict`` field of the JSON document)."""

    PARITY = "parity"  #: every compared stage is within tolerance (exit 0)
    DIVERGENCE = "divergence"  #: at least one stage diverges, or a one-sided stage under ``strict`` (exit 1)
    NOTHING_COMPARED = "nothing_compared"  #: no stage is present on both sides (exit 1): never parity


class Status:
    """Values of :attr:`StageDiff.status`."""

    PASS = "pass"          # present on both sides and within tolerance
    FAIL = "fail"          # present on both sides and divergent
    EXPECTED = "expected"  # divergent, but declared as an expected divergence
    MISSING = "missing"    # only in the reference
    EXTRA = "extra"        # only in the candidate


@dataclass(frozen=True)
class Diagnosis:
    """A likely explanation of a divergent stage, with the evidence for it.

    Attributes:
        kind: short machine-readable name (``"scale"``, ``"transpose"``, ``"rounding"``...).
        summary: one human sentence, e.g. ``"candidate = reference × 1.000e-10 (residual 0.6 %)"``.
        evidence: numbers behind the summary.
    """

    kind: str
    summary: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "summary": self.summary, "evidence": dict(self.evidence)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Diagnosis:
        return cls(d["kind"], d["summary"], dict(d.get("evidence", {})))


@dataclass(frozen=True)
class SideInfo:
    """What one side stored for a stage."""

    key: str
    dtype: str | None
    shape: tuple[int, ...]
    axes: tuple[str, ...] | None = None
    units: str | None = None
    position: int = 0

    @classmethod
    def of(cls, s: Stage) -> SideInfo:
        return cls(s.key, s.dtype if s.kind == "tensor" else "TEXT", s.shape, s.axes, s.units, s.position)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "dtype": self.dtype, "shape": list(self.shape),
                "axes": list(self.axes) if self.axes is not None else None, "units": self.units, "position": self.position}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SideInfo:
        return cls(d["key"], d.get("dtype"), tuple(d.get("shape", ())), tuple(d["axes"]) if d.get("axes") is not None else None,
                   d.get("units"), int(d.get("position", 0)))


@dataclass(frozen=True)
class StageDiff:
    """The comparison of one stage.

    Attributes:
        key: the reference key (or the candidate key for an extra stage).
        status: one of :class:`Status`.
        ref: what the reference stored (``None`` for an extra stage).
        cand: what the candidate stored (``None`` for a missing stage).
        metrics: value metrics when both sides could be compared element-wise.
        tolerance: the tolerance applied.
        problem: why the stage fails: ``"values"``, ``"shape"``, ``"layout"``, ``"kind"``, ``"text"``,
            ``"cosine"``, ``"sqnr"``; ``None`` when it passes.
        message: one human sentence about the stage.
        notes: remarks that do not fail the stage (dtype differs, units differ...).
        expected_reason: the reason given for an expected divergence.
        diagnoses: likely explanations of a divergence.
        extra: further per-stage results, e.g. ``{"logits": {...}}`` (top-k agreement, KL divergence,
            greedy tokens) for logits stages; see :mod:`parity.compare.logits`.
    """

    key: str
    status: str
    ref: SideInfo | None = None
    cand: SideInfo | None = None
    metrics: StageMetrics | None = None
    tolerance: Tolerance | None = None
    problem: str | None = None
    message: str = ""
    notes: tuple[str, ...] = ()
    expected_reason: str | None = None
    diagnoses: tuple[Diagnosis, ...] = ()
    extra: Mapping[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.status in (Status.PASS, Status.EXPECTED)

    @property
    def diverged(self) -> bool:
        return self.status == Status.FAIL

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "status": self.status,
            "ref": self.ref.to_dict() if self.ref else None,
            "cand": self.cand.to_dict() if self.cand else None,
            "metrics": self.metrics.to_dict() if self.metrics else None,
            "tolerance": self.tolerance.to_dict() if self.tolerance else None,
            "problem": self.problem,
            "message": self.message,
            "notes": list(self.notes),
            "expected_reason": self.expected_reason,
            "diagnoses": [d.to_dict() for d in self.diagnoses],
            "extra": dict(self.extra) if self.extra else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StageDiff:
        tol = d.get("tolerance")
        return cls(
            key=d["key"], status=d["status"],
            ref=SideInfo.from_dict(d["ref"]) if d.get("ref") else None,
            cand=SideInfo.from_dict(d["cand"]) if d.get("cand") else None,
            metrics=StageMetrics.from_dict(d["metrics"]) if d.get("metrics") else None,
            tolerance=Tolerance(**tol) if tol else None,
            problem=d.get("problem"), message=d.get("message", ""), notes=tuple(d.get("notes", ())),
            expected_reason=d.get("expected_reason"),
            diagnoses=tuple(Diagnosis.from_dict(x) for x in d.get("diagnoses", ())),
            extra=d.get("extra") or None,
        )


@dataclass(frozen=True)
class TraceDiff:
    """The comparison of two traces. Truthy when parity holds.

    Attributes:
        ref_path, cand_path: the two traces.
        stages: one :class:`StageDiff` per stage, reference execution order first, then the
            candidate-only stages in candidate order.
        strict: whether stages present on one side only fail the comparison.
        ref_complete, cand_complete: whether each capture finished.
        ignored: number of stages left out by ``[ignore]``.
        unused_config: config entries that match nothing in this pair (warnings; errors under ``strict``).
        config_source: the config file used, if any.

    Example:
        >>> import numpy as np, tempfile, os, parity
        >>> d = tempfile.mkdtemp(); r, c = os.path.join(d, "r.trace"), os.path.join(d, "c.trace")
        >>> for path, scale in ((r, 1.0), (c, 1.001)):
        ...     with parity.record(path):
        ...         _ = parity.tap("a", np.ones(4)); _ = parity.tap("b", np.ones(4) * scale)
        >>> diff = parity.compare_traces(r, c)
        >>> bool(diff), diff.first_divergence.key
        (False, 'b')
    """

    ref_path: str
    cand_path: str
    stages: tuple[StageDiff, ...]
    strict: bool = False
    ref_complete: bool = True
    cand_complete: bool = True
    ignored: int = 0
    config_source: str | None = None
    tool_version: str = __version__
    unused_config: tuple[str, ...] = ()

    @property
    def compared(self) -> list[StageDiff]:
        """Stages present on both sides, in reference order."""
        return [s for s in self.stages if s.ref is not None and s.cand is not None]

    @property
    def divergent(self) -> list[StageDiff]:
        """Every failing stage present on both sides, in reference order."""
        return [s for s in self.stages if s.status == Status.FAIL]

    @property
    def missing(self) -> list[StageDiff]:
        return [s for s in self.stages if s.status == Status.MISSING]

    @property
    def extra(self) -> list[StageDiff]:
        return [s for s in self.stages if s.status == Status.EXTRA]

    @property
    def expected(self) -> list[StageDiff]:
        return [s for s in self.stages if s.status == Status.EXPECTED]

    @property
    def first_divergence(self) -> StageDiff | None:
        """The first failing stage in the reference's execution order, or ``None``."""
        for s in self.stages:
            if s.status == Status.FAIL:
                return s
        return None

    @property
    def nothing_compared(self) -> bool:
        """True when no stage is present on both sides: nothing was compared, so parity cannot hold."""
        return not self.compared

    @property
    def verdict(self) -> str:
        """``"parity"``, ``"divergence"`` or ``"nothing_compared"`` (see :class:`Verdict`)."""
        if self.nothing_compared:
            return Verdict.NOTHING_COMPARED
        if self.divergent or (self.strict and (self.missing or self.extra)):
            return Verdict.DIVERGENCE
        return Verdict.PARITY

    @property
    def passed(self) -> bool:
        """True when at least one stage was compared, no compared stage diverges and, if
        ``strict``, no stage is one-sided. Two traces that share no stage never pass."""
        return self.verdict == Verdict.PARITY

    def __bool__(self) -> bool:
        return self.passed

    def __getitem__(self, key: str) -> StageDiff:
        for s in self.stages:
            if s.key == key:
                return s
        raise KeyError(key)

    def __iter__(self) -> Iterator[StageDiff]:
        return iter(self.stages)

    def summary(self) -> dict[str, int]:
        """Counts of stages by status."""
        counts = {k: 0 for k in (Status.PASS, Status.FAIL, Status.EXPECTED, Status.MISSING, Status.EXTRA)}
        for s in self.stages:
            counts[s.status] += 1
        counts["ignored"] = self.ignored
        return counts

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (schema ``parity.diff`` version :data:`DIFF_SCHEMA_VERSION`)."""
        first = self.first_divergence
        return {
            "schema": "parity.diff",
            "schema_version": DIFF_SCHEMA_VERSION,
            "tool_version": self.tool_version,
            "ref": {"path": self.ref_path, "complete": self.ref_complete},
            "cand": {"path": self.cand_path, "complete": self.cand_complete},
            "passed": self.passed,
            "verdict": self.verdict,
            "strict": self.strict,
            "config": self.config_source,
            "first_divergence": first.key if first else None,
            "summary": self.summary(),
            "unused_config": list(self.unused_config),
            "stages": [s.to_dict() for s in self.stages],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TraceDiff:
        """Rebuild a result from its JSON form (e.g. a diff computed on another machine).

        Raises:
            UsageError: the document is not a parity diff of a version this parity reads.
        """
        if d.get("schema") != "parity.diff" or not isinstance(d.get("schema_version"), int) or d["schema_version"] > DIFF_SCHEMA_VERSION:
            raise UsageError(f"not a parity diff document of schema version <= {DIFF_SCHEMA_VERSION}.")
        return cls(
            ref_path=d["ref"]["path"], cand_path=d["cand"]["path"],
            stages=tuple(StageDiff.from_dict(s) for s in d["stages"]),
            strict=bool(d.get("strict", False)), ref_complete=bool(d["ref"].get("complete", True)),
            cand_complete=bool(d["cand"].get("complete", True)), ignored=int(d.get("summary", {}).get("ignored", 0)),
            config_source=d.get("config"), tool_version=d.get("tool_version", __version__),
            unused_config=tuple(str(u) for u in d.get("unused_config") or ()),
        )


#: Called for every divergent stage with (ref stage, cand stage, ref array, cand array, metrics);
#: metrics is None for a stage whose shapes differ with the same element count. Returns diagnoses. Set by :mod:`parity.localize` when it is importable.
Diagnoser = Callable[[Stage, Stage, Any, Any, StageMetrics], "list[Diagnosis]"]


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.3g}"


def _compare_stage(ref: Trace, cand: Trace, rs: Stage, cs: Stage, config: CompareConfig,
                   diagnoser: Diagnoser | None, floor: NoiseFloor | None = None) -> StageDiff:
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
        shape_dx = tuple(diagnoser(rs, cs, ra, ca, None)) if same_count and diagnoser is not None else ()
        return replace(base, status=Status.FAIL, problem="shape", notes=tuple(notes), diagnoses=shape_dx,
                       message=f"shape {rs.shape} != {cs.shape}{after}" + (" (same element count: declare a transform to map them; "
                                                                     "parity never flattens silently)." if same_count else "."))
    if rs.axes is not None and cs.axes is not None and rs.axes != cs.axes:
        return replace(base, status=Status.FAIL, problem="layout", notes=tuple(notes),
                       message=f"layout {list(rs.axes)} != {list(cs.axes)}; declare a permute transform to compare them.")
    if rs.dtype != cs.dtype:
        notes.append(f"dtype differs: {rs.dtype} vs {cs.dtype}")
    tol = config.tolerance.for_stage(rs.key, rs.dtype, cs.dtype)
    m = compute_metrics(ra, ca, ref_dtype=rs.dtype_info, cand_dtype=cs.dtype_info, rtol=tol.rtol, atol=tol.atol)
    problem, message = None, ""
    floor_info = None
    if floor is not None and floor.get(rs.key) is not None:
        ok, ratio = floor.judge(rs.key, rel_rms=relative_rms(m.sqnr_db), rms=m.rms_err)
        floor_info = {"rel_rms": floor.stages[rs.key].rel_rms, "rms": floor.stages[rs.key].rms,
                      "margin": floor.margin, "ratio": ratio if math.isfinite(ratio) else "inf"}
        notes.append(f"error is {_fmt(ratio)}× the noise floor (allowed {floor.margin:g}×); element-wise rtol/atol not applied")
        if m.nan_mismatch or m.inf_mismatch:
            ok = False
        if not ok:
            problem = "noise_floor"
            message = (f"error is {_fmt(ratio)}× the noise floor of this stage (allowed {floor.margin:g}×)"
                       + (f"; NaN pattern mismatches: {m.nan_mismatch}, Inf mismatches: {m.inf_mismatch}"
                          if m.nan_mismatch or m.inf_mismatch else "") + ".")
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
        diagnoses = tuple(diagnoser(rs, cs, ra, ca, m))
    extra = stage_extra(rs.key, ra, ca, rs.dtype_info, cs.dtype_info)
    if image is not None:
        extra = {**(extra or {}), "image": image.to_dict()}
    if floor_info is not None:
        extra = {**(extra or {}), "noise_floor": floor_info}
    return replace(base, status=status, metrics=m, tolerance=tol, problem=problem, message=message,
                   notes=tuple(notes), diagnoses=diagnoses, extra=extra)


def _image_metrics(rs: Stage, cs: Stage, ra: Any, ca: Any, tol: Tolerance, config: CompareConfig) -> ImageMetrics | None:
    """Image metrics of a 2-D stage that is an image: named image axes, a correlation floor, or ``[images]``."""
    if len(rs.shape) != 2 or rs.size < 2 or rs.dtype_info is None or cs.dtype_info is None:
        return None
    opted = getattr(config, "image_options", None)
    options = opted(rs.key) if opted is not None else None
    if not (is_image_stage(rs.shape, rs.axes or cs.axes) or tol.correlation_min is not None or options is not None):
        return None
    r = to_float64(np.asarray(ra), rs.dtype_info)
    c = to_float64(np.asarray(ca), cs.dtype_info)
    return image_metrics(r, c, **(options or {}))


def _trace_diagnoses(results: list[StageDiff], ref: Trace, cand: Trace, config: CompareConfig) -> list[StageDiff]:
    """Trace-level diagnoses (first NaN/Inf, matrices printed as rows...), when parity.localize has them."""
    try:
        from ..localize.diagnose import diagnose_trace
    except ImportError:
        return results
    return list(diagnose_trace(results, ref, cand, config))


def _default_diagnoser() -> Diagnoser | None:
    try:
        from ..localize.diagnose import diagnose_stage
    except ImportError:
        return None
    return diagnose_stage


def compare_traces(
    ref: str | os.PathLike[str] | Trace,
    cand: str | os.PathLike[str] | Trace,
    *,
    config: str | os.PathLike[str] | CompareConfig | Mapping[str, Any] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    stages: Mapping[str, Mapping[str, float]] | None = None,
    aliases: Mapping[str, str] | None = None,
    ignore: list[str] | None = None,
    expected: Mapping[str, str] | None = None,
    strict: bool | None = None,
    rename: Mapping[str, str] | None = None,
    transforms: Mapping[str, Any] | None = None,
    diagnose: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
    noise_floor: NoiseFloor | str | os.PathLike[str] | None = None,
) -> TraceDiff:
    """Compare a candidate trace against a reference trace, stage by stage.

    Keyword arguments are the same options as the TOML config (see :mod:`parity.compare.config`)
    and override it.

    Args:
        ref: the reference trace (path or loaded :class:`~parity.Trace`).
        cand: the candidate trace.
        config: a TOML path, a :class:`CompareConfig`, or a dict shaped like the TOML file.
        rtol, atol: tolerances for every stage (each replaces the dtype default on its own).
        stages: per-stage tolerance overrides by glob, e.g. ``{"layers.*.attn_probs": {"rtol": 1e-3}}``.
        aliases: candidate name → reference name.
        ignore: glob patterns of stages to leave out.
        expected: glob pattern → reason for known divergences (reported, not failed).
        strict: stages present on one side only fail the comparison.
        rename: regex → replacement for candidate keys, applied in order before ``aliases``.
        transforms: stage glob → transform table(s), as in the TOML ``[transforms]`` section
            (see :mod:`parity.compare.align`).
        diagnose: attach diagnoses to divergent stages (per stage, and trace-level ones such as
            the first stage where NaN appears).
        progress: called as ``progress(done, total, key)`` after each stage.
        noise_floor: per-stage noise floors (a :class:`~parity.compare.floor.NoiseFloor` or the
            file ``parity calibrate`` wrote): a stage with a floor passes when its relative RMS
            error is within the floor's margin, instead of the element-wise rtol/atol.

    Returns:
        A :class:`TraceDiff`; a numeric mismatch is a result, never an exception. For two event
        traces (``parity import --format events``), a :class:`parity.events.EventDiff` instead:
        events are aligned by edit distance (see docs/events.md).

    Raises:
        TraceFormatError: a trace cannot be read.
        ConfigError: the config is wrong, e.g. a pattern matches no stage.
    """
    rt = ref if isinstance(ref, Trace) else load_trace(ref)
    ct = cand if isinstance(cand, Trace) else load_trace(cand)
    from ..events import compare_events, is_event_trace  # no torch/numpy-heavy imports: cheap

    if is_event_trace(rt) and is_event_trace(ct):
        # event logs are aligned by edit distance, not by key (see parity.events): an EventDiff,
        # with the same passed / first_divergence / to_dict() surface
        return compare_events(rt, ct, config if isinstance(config, (str, os.PathLike)) else None)  # type: ignore[return-value]
    if config is None:
        cfg = CompareConfig()
    elif isinstance(config, CompareConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = CompareConfig.from_dict(config)
    else:
        cfg = load_config(config)
    cfg = cfg.merged(rtol=rtol, atol=atol, stages=stages, aliases=aliases, ignore=ignore, expected=expected, strict=strict,
                     rename=rename, transforms=transforms)
    unused = cfg.unused_entries(rt.keys(), ct.keys())
    if unused and cfg.strict:
        cfg.check_patterns(rt.keys(), ct.keys())  # raises, listing them all
    diagnoser = _default_diagnoser() if diagnose else None
    floor = load_noise_floor(noise_floor) if isinstance(noise_floor, (str, os.PathLike)) else noise_floor

    cand_by_ref: dict[str, Stage] = {}
    for cs in ct:
        target = cfg.rename_candidate(cs.key)
        if target in cand_by_ref:
            other = cand_by_ref[target].key
            raise UsageError(f'candidate stages "{other}" and "{cs.key}" both map to reference stage "{target}" after aliases.',
                             path=ct.path)
        cand_by_ref[target] = cs
    results: list[StageDiff] = []
    used: set[str] = set()
    ignored = 0
    total = len(rt)
    for i, rs in enumerate(rt):
        if cfg.is_ignored(rs.key):
            ignored += 1
            used.add(rs.key)
            continue
        cs = cand_by_ref.get(rs.key)
        if cs is None:
            results.append(StageDiff(key=rs.key, status=Status.MISSING, ref=SideInfo.of(rs),
                                     message="present in the reference only."))
        else:
            used.add(rs.key)
            sd = _compare_stage(rt, ct, rs, cs, cfg, diagnoser, floor)
            reason = cfg.expected_reason(rs.key)
            if reason is not None and sd.status == Status.FAIL:
                sd = replace(sd, status=Status.EXPECTED, expected_reason=reason)
            results.append(sd)
        if progress is not None:
            progress(i + 1, total, rs.key)
    for target, cs in cand_by_ref.items():
        if target in used:
            continue
        if cfg.is_ignored(target) or cfg.is_ignored(cs.key):
            ignored += 1
            continue
        results.append(StageDiff(key=cs.key, status=Status.EXTRA, cand=SideInfo.of(cs), message="present in the candidate only."))
    if diagnose:
        results = _trace_diagnoses(results, rt, ct, cfg)
    return TraceDiff(ref_path=rt.path, cand_path=ct.path, stages=tuple(results), strict=cfg.strict,
                     ref_complete=rt.complete, cand_complete=ct.complete, ignored=ignored, config_source=cfg.source,
                     unused_config=tuple(unused))
