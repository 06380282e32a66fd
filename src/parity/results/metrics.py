"""One stage's value metrics: the :class:`Tolerance` a stage is judged by and the
:class:`StageMetrics` of a candidate array against its reference, with their exact JSON form
(non-finite floats as ``"nan"`` / ``"inf"`` / ``"-inf"``)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import UsageError

__all__ = ["Tolerance", "StageMetrics"]


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
        for name, kind in _plan():
            v = getattr(self, name)
            if kind == 0:  # a float
                out[name] = None if v is None else _enc(float(v))
            elif kind == 1:  # an index
                out[name] = None if v is None else [int(i) for i in v]
            elif kind == 2:  # a count
                out[name] = int(v)
            else:
                out[name] = {str(k): _enc(float(x)) for k, x in v.items()}
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


@functools.cache
def _plan() -> tuple[tuple[str, int], ...]:
    """:meth:`StageMetrics.to_dict`'s fields in order, each with its kind: 0 float, 1 index, 2 count, 3 extra."""
    return tuple((f.name, 1 if f.name in _INDEX_FIELDS else 2 if f.name in _INT_FIELDS else 3 if f.name == "extra" else 0)
                 for f in fields(StageMetrics))
