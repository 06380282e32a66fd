"""One stage's comparison and one trace's: :class:`StageDiff` (with its :class:`SideInfo` and
:class:`Diagnosis` list) and :class:`TraceDiff`, the :class:`Status` and :class:`Verdict` values."""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from .._version import __version__
from ..errors import StageNotFoundError, UsageError
from .metrics import StageMetrics, Tolerance

__all__ = ["by_key", "DIFF_SCHEMA_VERSION", "Verdict", "Status", "Diagnosis", "SideInfo", "StageDiff", "TraceDiff"]

K = TypeVar("K")

#: Version of the JSON form of :class:`TraceDiff` (see docs/json-schema.md).
DIFF_SCHEMA_VERSION = 1


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
_STATUS_TABLES: dict[int, dict[str, list[StageDiff]]] = {}  # TraceDiff._by_status of live diffs, by id


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
        return list(self._by_status().get(status, ()))

    def _by_status(self) -> dict[str, list[StageDiff]]:
        """The stages by status, in order, made once (``stages`` is a tuple: they cannot change)."""
        table = _STATUS_TABLES.get(id(self))
        if table is None:
            table = {}
            for s in self.stages:
                group = table.get(s.status)
                if group is None:
                    group = table[s.status] = []
                group.append(s)
            _STATUS_TABLES[id(self)] = table  # (kept beside the object: its fields and __dict__ stay its own)
            weakref.finalize(self, _STATUS_TABLES.pop, id(self), None)
        return table

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
        failing = self._by_status().get(Status.FAIL)
        return failing[0] if failing else None

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
        table = self._by_status()
        counts = {k: len(table.get(k, ())) for k in (Status.PASS, Status.FAIL, Status.EXPECTED, Status.MISSING, Status.EXTRA)}
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
