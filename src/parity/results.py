"""The result types every layer shares: one stage's metrics, one stage's comparison, one trace's.

:class:`TraceDiff` is what :func:`parity.compare_traces` returns and what every renderer reads:
one :class:`StageDiff` per stage, each with its :class:`StageMetrics`, the :class:`Tolerance`
applied and the :class:`Diagnosis` list that :mod:`parity.localize` attached. They are plain
frozen dataclasses with an exact JSON round trip (``to_dict`` / ``from_dict``), so a diff computed
on one machine can be rendered on another.

This module sits at the bottom of the layers (docs/architecture.md): it imports nothing of parity
but the error types and the version, so ``compare/`` (which fills these types), ``localize/``
(which adds diagnoses) and ``report/`` (which renders them) all depend on it and not on each other.

Example:
    >>> diff = parity.compare_traces("ref.trace", "cand.trace")
    >>> d = TraceDiff.from_dict(diff.to_dict())
    >>> d == diff, d.first_divergence.key, d.summary()["fail"] > 0
    (True, 'layers.0.attn_scores', True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from ._version import __version__
from .errors import StageNotFoundError, UsageError

__all__ = ["by_key", "DIFF_SCHEMA_VERSION", "Verdict", "Status", "Diagnosis", "SideInfo", "Tolerance", "StageMetrics", "StageDiff",
           "TraceDiff"]

K = TypeVar("K")

#: Version of the JSON form of :class:`TraceDiff` (see docs/json-schema.md).
DIFF_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Tolerance:
    """How close a candidate stage must be to its reference.

    Attributes:
        rtol: relative tolerance.
        atol: absolute tolerance.
        cosine_min: optional floor on cosine similarity (stage fails below it).
        sqnr_min_db: optional floor on the signal-to-quantization-noise ratio in dB.
        correlation_min: optional floor on the Pearson correlation of a 2-D stage (an image: see
            :mod:`parity.compare.image`); setting it makes the stage an image.

    >>> Tolerance(1e-5, 1e-8, cosine_min=0.999).to_dict()
    {'rtol': 1e-05, 'atol': 1e-08, 'cosine_min': 0.999}
    """

    rtol: float
    atol: float
    cosine_min: float | None = None
    sqnr_min_db: float | None = None
    correlation_min: float | None = None

    def to_dict(self) -> dict[str, float]:
        d = {"rtol": self.rtol, "atol": self.atol}
        if self.cosine_min is not None:
            d["cosine_min"] = self.cosine_min
        if self.sqnr_min_db is not None:
            d["sqnr_min_db"] = self.sqnr_min_db
        if self.correlation_min is not None:
            d["correlation_min"] = self.correlation_min
        return d


def by_key(items: Iterable[K], key: str) -> K:
    """The first of ``items`` whose ``.key`` is ``key`` (stages of a diff, of a localization...).

    Raises:
        StageNotFoundError: none has that key (a :class:`KeyError` too).

    >>> by_key(parity.compare_traces("ref.trace", "cand.trace").stages, "embedding").status
    'pass'
    """
    for item in items:
        if item.key == key:
            return item
    raise StageNotFoundError(f'no stage "{key}" in this result.', stage=key)


# -- one stage's value metrics ----------------------------------------------------------------
def _enc(x: float) -> float | str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf") if math.isinf(x) else float(x)


def _dec(x: Any) -> float:
    if isinstance(x, str):
        if x in ("nan", "inf", "-inf"):
            return float(x)
        raise UsageError(f"{x!r} is not a number; only 'nan', 'inf' and '-inf' may be given as strings")
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise UsageError(f"{x!r} is not a number")
    return float(x)


def _same_float(a: float | None, b: float | None) -> bool:
    return a is b if a is None or b is None else (a == b or (math.isnan(a) and math.isnan(b)))


_FLOAT_FIELDS = ("mismatched_fraction", "max_abs_err", "max_abs_ref", "max_abs_cand", "max_rel_err", "max_rel_ref",
                 "max_rel_cand", "rms_err", "cosine", "sqnr_db", "max_ulp", "rtol", "atol")
_INT_FIELDS = ("count", "mismatched", "ref_nan", "cand_nan", "ref_inf", "cand_inf", "nan_mismatch", "inf_mismatch")
_INDEX_FIELDS = ("max_abs_index", "max_rel_index", "worst_fail_index")


@dataclass(frozen=True, eq=False)
class StageMetrics:
    """Metrics of one stage: a candidate array against its reference.

    Equality treats NaN fields as equal to NaN, so ``StageMetrics.from_dict(m.to_dict()) == m``.

    Attributes:
        count: elements compared (the array size; NaN-vs-NaN positions count and match).
        mismatched: elements outside tolerance, NaN and Inf pattern mismatches included.
        mismatched_fraction: ``mismatched / count`` (0.0 when ``count == 0``).
        max_abs_err: greatest ``|c - r|``; NaN when there is a NaN mismatch.
        max_abs_index: N-d index (in the reference's shape) of that element, first in C order on ties;
            the first NaN mismatch when there is one; ``None`` when no position has an error
            (empty stage, or NaN on both sides everywhere).
        max_abs_ref: reference value there (float64; 0.0 when the index is ``None``).
        max_abs_cand: candidate value there.
        max_rel_err: greatest ``|c - r| / |r|`` (0 when both are 0, inf when ``r == 0 != c``).
        max_rel_index: index of that element (same rules as ``max_abs_index``).
        max_rel_ref: reference value there.
        max_rel_cand: candidate value there.
        rms_err: ``sqrt(mean((c - r)**2))`` over positions not NaN on both sides.
        cosine: cosine similarity over positions finite on both sides; 1.0 when both are all zero,
            0.0 when exactly one is.
        sqnr_db: ``10 * log10(sum r**2 / sum (c - r)**2)`` over positions finite on both sides;
            ``inf`` when the error is zero, ``-inf`` with an Inf mismatch, NaN with a NaN mismatch.
        max_ulp: greatest ULP distance (see the module docstring); ``None`` for non-float stages.
        worst_fail_index: index of the element furthest outside tolerance by
            ``|c - r| - (atol + rtol * |r|)`` (NaN mismatches first, then Inf mismatches); ``None``
            when every element passes.
        ref_nan: NaN count of the reference.
        cand_nan: NaN count of the candidate.
        ref_inf: Inf count of the reference.
        cand_inf: Inf count of the candidate.
        nan_mismatch: positions where exactly one side is NaN.
        inf_mismatch: positions, NaN excluded, where the infinities differ (Inf vs finite, +inf vs -inf).
        rtol: relative tolerance applied.
        atol: absolute tolerance applied.
        extra: results of the metrics registered with :func:`register_metric`, by name.

    >>> m = parity.compare_traces("ref.trace", "cand.trace")["embedding"].metrics
    >>> m.passed, StageMetrics.from_dict(m.to_dict()) == m
    (True, True)
    """

    count: int
    mismatched: int
    mismatched_fraction: float
    max_abs_err: float
    max_abs_index: tuple[int, ...] | None
    max_abs_ref: float
    max_abs_cand: float
    max_rel_err: float
    max_rel_index: tuple[int, ...] | None
    max_rel_ref: float
    max_rel_cand: float
    rms_err: float
    cosine: float
    sqnr_db: float
    max_ulp: float | None
    worst_fail_index: tuple[int, ...] | None
    ref_nan: int
    cand_nan: int
    ref_inf: int
    cand_inf: int
    nan_mismatch: int
    inf_mismatch: int
    rtol: float
    atol: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when no element is outside tolerance (``mismatched == 0``)."""
        return self.mismatched == 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (``json.dumps`` accepts it with ``allow_nan=False`` too): inf/nan as the
        strings ``"inf"``, ``"-inf"``, ``"nan"``, indices as lists, and ``"passed"`` for readers
        (:meth:`from_dict` ignores it)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _INDEX_FIELDS:
                out[f.name] = None if v is None else [int(i) for i in v]
            elif f.name in _INT_FIELDS:
                out[f.name] = int(v)
            elif f.name == "extra":
                out[f.name] = {str(k): _enc(float(x)) for k, x in v.items()}
            else:
                out[f.name] = None if v is None else _enc(float(v))
        out["passed"] = self.passed
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageMetrics:
        """Rebuild a :class:`StageMetrics` from :meth:`to_dict` output ``d`` (exact round trip;
        unknown keys such as ``"passed"`` are ignored).

        Raises:
            UsageError: a field is missing or has a value of the wrong kind.
        """
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in d:
                if f.name == "extra":
                    continue
                raise UsageError(f"stage metrics lack the field {f.name!r}")
            v = d[f.name]
            if f.name in _INDEX_FIELDS:
                kw[f.name] = None if v is None else tuple(int(i) for i in v)
            elif f.name in _INT_FIELDS:
                if isinstance(v, bool) or not isinstance(v, int):
                    raise UsageError(f"stage metrics field {f.name!r} must be an integer, not {v!r}")
                kw[f.name] = v
            elif f.name == "extra":
                if not isinstance(v, dict):
                    raise UsageError(f"stage metrics field 'extra' must be an object, not {v!r}")
                kw[f.name] = {str(k): _dec(x) for k, x in v.items()}
            elif f.name == "max_ulp" and v is None:
                kw[f.name] = None
            else:
                kw[f.name] = _dec(v)
        return cls(**kw)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StageMetrics):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name in _FLOAT_FIELDS:
                if not _same_float(a, b):
                    return False
            elif f.name == "extra":
                if a.keys() != b.keys() or not all(_same_float(a[k], b[k]) for k in a):
                    return False
            elif a != b:
                return False
        return True

    def __hash__(self) -> int:
        return hash(tuple(("nan" if isinstance(v, float) and math.isnan(v) else v)
                          for f in fields(self) if f.name != "extra" for v in [getattr(self, f.name)]))


# -- one stage's and one trace's comparison -------------------------------------------------------
class Verdict:
    """Values of :attr:`TraceDiff.verdict` (the ``verdict`` field of the JSON document).

    >>> parity.compare_traces("ref.trace", "cand.trace").verdict == Verdict.DIVERGENCE
    True
    """

    PARITY = "parity"  #: every compared stage is within tolerance (exit 0)
    DIVERGENCE = "divergence"  #: at least one stage diverges, or a one-sided stage under ``strict`` (exit 1)
    NOTHING_COMPARED = "nothing_compared"  #: no stage is present on both sides (exit 1): never parity


class Status:
    """Values of :attr:`StageDiff.status`.

    >>> [s.key for s in parity.compare_traces("ref.trace", "cand.trace") if s.status == Status.PASS][:2]
    ['embedding', 'layers.0.attn_norm']
    """

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

    >>> d = Diagnosis("scale", "candidate = reference × 2", {"factor": 2.0})
    >>> Diagnosis.from_dict(d.to_dict()) == d
    True
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
    """What one side stored for a stage.

    >>> sd = parity.compare_traces("ref.trace", "cand.trace")["layers.0.q_proj"]
    >>> sd.ref.dtype, sd.cand.dtype, sd.cand.shape, sd.cand.axes
    ('F64', 'F32', (8, 32), ('seq', 'hidden'))
    >>> SideInfo.from_dict(sd.cand.to_dict()) == sd.cand
    True
    """

    key: str
    dtype: str | None
    shape: tuple[int, ...]
    axes: tuple[str, ...] | None = None
    units: str | None = None
    position: int = 0

    @classmethod
    def of(cls, s: Any) -> SideInfo:
        """What a :class:`parity.Stage` (or anything with its attributes) stored.

        >>> SideInfo.of(parity.load_trace("ref.trace").stage("embedding")).dtype
        'F64'
        """
        return cls(s.key, s.dtype if s.kind == "tensor" else "TEXT", s.shape, s.axes, s.units, s.position)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "dtype": self.dtype, "shape": list(self.shape),
                "axes": list(self.axes) if self.axes is not None else None, "units": self.units, "position": self.position}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SideInfo:
        return cls(d["key"], d.get("dtype"), tuple(d.get("shape", ())), tuple(d["axes"]) if d.get("axes") is not None else None,
                   d.get("units"), int(d.get("position", 0)))


@dataclass(frozen=True, eq=False)
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

    >>> s = parity.compare_traces("ref.trace", "cand.trace")["layers.0.attn_scores"]
    >>> s.status, s.problem, s.diverged, StageDiff.from_dict(s.to_dict()) == s
    ('fail', 'values', True, True)
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
    def two_sided(self) -> bool:  # present on both sides
        return self.ref is not None and self.cand is not None

    @property
    def has_metrics(self) -> bool:  # metrics is set (a deferred StageDiff answers without making them)
        return self.metrics is not None

    def extra_value(self, name: str) -> Any:  # extra[name], None if absent (a deferred one makes only that)
        return (self.extra or {}).get(name)

    def __eq__(self, other: object) -> bool:  # field by field, whatever the subclass (parity.compare.batch)
        if not isinstance(other, StageDiff):
            return NotImplemented
        return self is other or all(a is b or a == b for f in _STAGE_DIFF_FIELDS
                                    for a, b in [(getattr(self, f), getattr(other, f))])

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, f) for f in _STAGE_DIFF_FIELDS))

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


_STAGE_DIFF_FIELDS = tuple(f.name for f in fields(StageDiff))


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
        return [s for s in self.stages if s.two_sided]

    def with_status(self, status: str) -> list[StageDiff]:
        """The stages of one :class:`Status`, in order.

        >>> len(parity.compare_traces("ref.trace", "cand.trace").with_status(Status.FAIL)) > 0
        True
        """
        return [s for s in self.stages if s.status == status]

    @property
    def divergent(self) -> list[StageDiff]:
        """Every failing stage present on both sides, in reference order."""
        return self.with_status(Status.FAIL)

    @property
    def missing(self) -> list[StageDiff]:
        """Stages only in the reference."""
        return self.with_status(Status.MISSING)

    @property
    def extra(self) -> list[StageDiff]:
        """Stages only in the candidate, in candidate order."""
        return self.with_status(Status.EXTRA)

    @property
    def expected(self) -> list[StageDiff]:
        """Divergent stages declared as expected (``[expected]``)."""
        return self.with_status(Status.EXPECTED)

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
        return not any(s.two_sided for s in self.stages)

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
        return by_key(self.stages, key)

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
        return {**self.head_dict(), "stages": [s.to_dict() for s in self.stages]}

    def head_dict(self) -> dict[str, Any]:  # to_dict() but its last key, "stages" (report.json streams them)
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
