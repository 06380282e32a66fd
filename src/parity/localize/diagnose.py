"""Diagnoses: likely explanations of a divergent stage, computed from the data, each with its evidence.

Per stage (:func:`diagnose_stage`, called by the comparison engine for every failing stage when
:func:`parity.compare_traces` passes it :data:`DIAGNOSER`):

=============  ================================================================================
kind           what the data show
=============  ================================================================================
nonfinite      the candidate has NaN/Inf where the reference is finite
zero           the candidate is all zeros (an output never written, a skipped computation)
constant       the candidate holds one value everywhere, the reference does not
rounding       every error is within a few units of rounding of the stored dtype: noise, not a bug
sign_flip      candidate = −reference
scale          candidate = reference × s with a small residual; powers of ten, 2^k, π/180 and a
               few physical unit factors are flagged as likely unit mismatches
transpose      the candidate holds the reference with its axes permuted (rows vs columns)
permutation    the same values in another order
shift          the candidate is the reference shifted by one along an axis (off-by-one)
=============  ================================================================================

Per trace (:func:`diagnose_trace`, a post-pass over the whole comparison): the first stage where
NaN or Inf appears in the candidate; a group of vector stages that together form a square matrix
(``rot_row0``, ``rot_row1``... or ``R[i=0]``, ``R[i=1]``...) whose candidate rows are the
reference's columns; errors within the printed precision of a text log.

Large stages are subsampled (at most :data:`MAX_SAMPLE` elements, evenly spaced, the same flat
positions on both sides), so a diagnosis costs a bounded amount of time whatever the stage size.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..compare.align import apply_transforms
from ..compare.tolerance import default_tolerance
from ..results import Diagnosis, StageDiff, StageMetrics, Status
from ..trace.dtypes import DTYPES, to_float64
from ..trace.keys import split_key
from ..trace.reader import Stage, Trace

__all__ = ["diagnose_stage", "diagnose_trace", "classify_factor", "DataDiagnoser", "DIAGNOSER", "MAX_SAMPLE",
           "ROUNDING_UNITS"]

#: Most elements read from each side to diagnose one stage.
MAX_SAMPLE = 1 << 18
#: Errors of at most this many units of the stored dtype's rounding are called rounding noise.
ROUNDING_UNITS = 8.0
#: A scale factor is reported when ``||c - s·r|| / ||c||`` is at most this.
SCALE_RESIDUAL = 0.02
#: A reordering hypothesis (transpose, shift) holds when at least this fraction of elements agree.
MATCH_FRACTION = 0.99

# Factors that usually mean a unit slip: name, value. Powers of ten and of two are handled apart.
_UNIT_FACTORS = (
    ("degrees → radians (π/180)", math.pi / 180),
    ("radians → degrees (180/π)", 180 / math.pi),
    ("bohr → ångström", 0.529177210903),
    ("ångström → bohr", 1 / 0.529177210903),
    ("hartree → eV", 27.211386245988),
    ("eV → hartree", 1 / 27.211386245988),
    ("kcal → kJ", 4.184),
    ("kJ → kcal", 1 / 4.184),
    ("inch → cm", 2.54),
    ("cm → inch", 1 / 2.54),
)
_FACTOR_RTOL = 2e-3


def classify_factor(s: float) -> str | None:
    """Name a scale factor that usually means a unit mismatch, or ``None``.

    >>> classify_factor(1e-10), classify_factor(0.0625), classify_factor(math.pi / 180), classify_factor(1.7)
    ('power of ten (10^-10)', 'power of two (2^-4)', 'degrees → radians (π/180)', None)
    """
    if not math.isfinite(s) or s == 0:
        return None
    a = abs(s)
    k10 = round(math.log10(a))
    if k10 != 0 and abs(a / 10.0 ** k10 - 1) <= _FACTOR_RTOL:
        return f"power of ten (10^{k10})"
    k2 = round(math.log2(a))
    if k2 != 0 and abs(a / 2.0 ** k2 - 1) <= _FACTOR_RTOL:
        return f"power of two (2^{k2})"
    for name, f in _UNIT_FACTORS:
        if abs(a / f - 1) <= _FACTOR_RTOL:
            return name
    return None


# -- helpers ---------------------------------------------------------------------------------------
def _flat(arr: Any) -> np.ndarray:
    a = np.asarray(arr)
    return a.reshape(-1)


def _sample_index(n: int) -> np.ndarray | None:
    """Flat positions to read: all (``None``) when small, else evenly spaced."""
    if n <= MAX_SAMPLE:
        return None
    # n > MAX_SAMPLE makes the spacing >= 1, so the truncated positions are already strictly increasing
    # (np.unique here cost ~50 ms per stage).
    return np.linspace(0, n - 1, MAX_SAMPLE).astype(np.int64)


def _take(flat: np.ndarray, info, idx: np.ndarray | None) -> np.ndarray:
    raw = flat if idx is None else flat[idx]
    return to_float64(np.asarray(raw), info)


def _close(c: np.ndarray, r: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        ok = np.abs(c - r) <= atol + rtol * np.abs(r)
    ok |= (c == r)  # equal infinities
    ok |= np.isnan(c) & np.isnan(r)
    return ok


def _pct(x: float) -> str:
    if x == 0:
        return "0 %"
    if x < 1e-4:
        return "< 0.01 %"
    return f"{100 * x:.3g} %" if x >= 0.01 else f"{100 * x:.2g} %"


def _tolerance(rs: Stage, cs: Stage, metrics: StageMetrics | None) -> tuple[float, float]:
    if metrics is not None:
        return float(metrics.rtol), float(metrics.atol)
    t = default_tolerance(rs.dtype, cs.dtype)
    return t.rtol, t.atol


def _axis_name(stage: Stage, axis: int) -> str:
    if stage.axes and axis < len(stage.axes):
        return f'"{stage.axes[axis]}" (axis {axis})'
    return f"axis {axis}"


# -- per stage -------------------------------------------------------------------------------------
def diagnose_stage(ref_stage: Stage, cand_stage: Stage, ref_arr: Any, cand_arr: Any,
                   metrics: StageMetrics | None) -> list[Diagnosis]:
    """Likely explanations of why ``cand_arr`` differs from ``ref_arr``.

    Args:
        ref_stage, cand_stage: the two stages (as compared: after any transforms).
        ref_arr, cand_arr: their values in the stored dtype (memory maps are fine).
        metrics: the stage's metrics, or ``None`` when the shapes differ with the same element count.

    Returns:
        Diagnoses, strongest first; empty when nothing recognisable explains the divergence.

    Example:
        >>> import numpy as np
        >>> from parity.trace.reader import Stage
        >>> r = np.linspace(1.0, 2.0, 50); s = Stage("x", "tensor", "F64", (50,))
        >>> [d.summary for d in diagnose_stage(s, s, r, r * 1e-3, None)][:1]
        ['candidate = reference × 1.000e-03 (residual 0 %): a power of ten (10^-3), likely a unit mismatch']
    """
    if ref_stage.kind != "tensor" or cand_stage.kind != "tensor" or ref_arr is None or cand_arr is None:
        return []
    rinfo, cinfo = ref_stage.dtype_info, cand_stage.dtype_info
    rf, cf = _flat(ref_arr), _flat(cand_arr)
    n = rf.size
    if n == 0 or cf.size != n:
        return []
    rtol, atol = _tolerance(ref_stage, cand_stage, metrics)
    idx = _sample_index(n)
    r = _take(rf, rinfo, idx)
    c = _take(cf, cinfo, idx)
    same_shape = tuple(np.shape(ref_arr)) == tuple(np.shape(cand_arr))
    out: list[Diagnosis] = []

    rfin, cfin = np.isfinite(r), np.isfinite(c)
    bad = ~cfin & rfin
    if bad.any():
        k_nan = int((np.isnan(c) & rfin).sum())
        k_inf = int(bad.sum()) - k_nan
        first = int(np.flatnonzero(bad)[0])
        first_flat = int(idx[first]) if idx is not None else first
        where = tuple(int(i) for i in np.unravel_index(first_flat, np.shape(cand_arr)))
        what = " and ".join(x for x in (f"{k_nan} NaN" if k_nan else "", f"{k_inf} Inf" if k_inf else "") if x)
        sampled = f" (in {r.size} sampled elements)" if idx is not None else ""
        out.append(Diagnosis("nonfinite", f"the candidate has {what} where the reference is finite{sampled}; "
                             f"first at index {where}.",
                             {"nan": k_nan, "inf": k_inf, "first_index": list(where), "sampled": idx is not None}))
        if bad.all() or not cfin.any():
            return out

    both = rfin & cfin
    rb, cb = r[both], c[both]
    if rb.size == 0:
        return out
    if not same_shape:
        return out + _reorderings(ref_stage, cand_stage, rf, cf, rinfo, cinfo, rtol, atol, same_shape)

    # Unwritten or constant output.
    if np.all(cb == 0) and np.any(rb != 0):
        return out + [Diagnosis("zero", f"the candidate is all zeros where the reference is not "
                                f"(reference max |x| = {np.max(np.abs(rb)):.4g}): an output never written, "
                                "or a computation skipped.", {"ref_max_abs": float(np.max(np.abs(rb)))})]
    if rb.size > 1 and np.all(cb == cb[0]) and not np.all(rb == rb[0]):
        return out + [Diagnosis("constant", f"the candidate holds one value ({cb[0]:.6g}) everywhere; the reference "
                                f"varies from {rb.min():.4g} to {rb.max():.4g}: a broadcast or an unwritten buffer.",
                                {"value": float(cb[0]), "ref_min": float(rb.min()), "ref_max": float(rb.max())})]

    # Rounding noise of the stored dtype.
    rd = _rounding(ref_stage, cand_stage, rb, cb)
    if rd is not None:
        return out + [rd]

    # A constant factor: a unit slip or a sign flip.
    sc = _scale(rb, cb, rtol, atol)
    if sc is not None:
        return out + [sc]

    return out + _reorderings(ref_stage, cand_stage, rf, cf, rinfo, cinfo, rtol, atol, same_shape)


def _rounding(rs: Stage, cs: Stage, r: np.ndarray, c: np.ndarray) -> Diagnosis | None:
    infos = [d for d in (rs.dtype_info, cs.dtype_info) if d is not None and d.kind == "f"]
    if not infos:
        return None
    coarse = min(infos, key=lambda d: d.mantissa_bits)
    eps = 2.0 ** -coarse.mantissa_bits
    diff = np.abs(c - r)
    if not np.any(diff):
        return None
    scale = np.maximum(np.abs(r), np.abs(c))
    tiny = np.finfo(np.float64).tiny if coarse.code == "F64" else 2.0 ** -126
    with np.errstate(divide="ignore", invalid="ignore"):
        units = diff / (eps * np.maximum(scale, tiny))
    worst = float(np.max(units))
    if worst > ROUNDING_UNITS:
        return None
    return Diagnosis("rounding", f"every error is within {worst:.2g} units of rounding of {coarse.name} "
                     f"(max |Δ| {float(diff.max()):.3g}): likely rounding noise, not a bug; loosen this stage's "
                     "tolerance if it is expected.", {"max_rounding_units": worst, "dtype": coarse.code,
                                                      "max_abs_err": float(diff.max())})


def _scale(r: np.ndarray, c: np.ndarray, rtol: float, atol: float) -> Diagnosis | None:
    with np.errstate(over="ignore"):  # an overflowing sum of squares: no scale is told (below)
        rr = float(np.dot(r, r))
        cc = float(np.dot(c, c))
    if rr == 0 or cc == 0 or not math.isfinite(rr) or not math.isfinite(cc):
        return None
    s = float(np.dot(c, r)) / rr
    if s == 0 or not math.isfinite(s):
        return None
    resid = float(np.linalg.norm(c - s * r)) / math.sqrt(cc)
    if resid < 64 * np.finfo(np.float64).eps:
        resid = 0.0  # what is left is float64 rounding of c - s*r itself (BLAS-dependent), not a residual
    if resid > SCALE_RESIDUAL:
        return None
    if abs(s - 1) <= max(10 * rtol, 1e-6):
        return None  # not a factor: an error of another kind on values of the right size
    unit = classify_factor(s)
    evidence = {"factor": s, "residual": resid}
    if abs(s + 1) <= max(10 * rtol, 1e-3):
        return Diagnosis("sign_flip", f"candidate = −reference (factor {s:.6g}, residual {_pct(resid)}): a sign flip.",
                         evidence)
    if r.size < 3:
        # Any two numbers are related by some factor: the ratio is all the evidence there is.
        text = f"candidate = reference × {s:.6g} (from {r.size} value{'s' if r.size > 1 else ''} only)"
        evidence["values"] = int(r.size)
    else:
        text = f"candidate = reference × {s:.3e} (residual {_pct(resid)})"
    if unit is not None:
        evidence["likely"] = unit
        text += f": a {unit}, likely a unit mismatch"
        if s < 0:
            text += " and a sign flip"
    return Diagnosis("scale", text, evidence)


def _reorderings(rs: Stage, cs: Stage, rf: np.ndarray, cf: np.ndarray, rinfo, cinfo, rtol: float, atol: float,
                 same_shape: bool) -> list[Diagnosis]:
    n = rf.size
    if n < 2:
        return []
    rshape, cshape = tuple(rs.shape), tuple(cs.shape)
    sampled = _sample_index(n)
    idx = np.arange(n, dtype=np.int64) if sampled is None else sampled
    c = _take(cf, cinfo, idx)
    base_ok = None
    if same_shape:
        base_ok = float(_close(c, _take(rf, rinfo, idx), rtol, atol).mean())

    def holds(src: np.ndarray, valid: np.ndarray | None = None) -> float:
        cc = c if valid is None else c[valid]
        if cc.size == 0:
            return 0.0
        return float(_close(cc, _take(rf, rinfo, src), rtol, atol).mean())

    # 1) Axis permutations of the reference that give the candidate's memory order.
    shapes = [rshape]
    if len(rshape) == 1 and n >= 4 and int(math.isqrt(n)) ** 2 == n:
        k = int(math.isqrt(n))
        shapes.append((k, k))  # a flat dump of a square matrix
    for shape in shapes:
        nd = len(shape)
        if nd < 2:
            continue
        perms = (itertools.permutations(range(nd)) if nd <= 4 else
                 [tuple(range(nd))[::-1]] + [_swap(nd, a, b) for a, b in itertools.combinations(range(nd), 2)])
        for p in perms:
            if list(p) == list(range(nd)):
                continue
            pshape = tuple(shape[i] for i in p)
            if not same_shape and pshape != cshape:
                continue
            j = np.unravel_index(idx, pshape)
            k_idx = [None] * nd
            for d, axis in enumerate(p):
                k_idx[axis] = j[d]
            src = np.ravel_multi_index(tuple(k_idx), shape)
            frac = holds(src)
            if frac >= MATCH_FRACTION:
                return [_transpose_diag(rs, shape, p, frac, flat=shape is not rshape)]
    # 2) Off by one along an axis (or along the flat order of a vector): checked before (3), as a
    #    rotation by one is also a permutation but says more.
    if same_shape:
        shape = rshape if rshape else (n,)
        for axis in range(len(shape)):
            size = shape[axis]
            if size < 3:
                continue
            mi = np.unravel_index(idx, shape)
            pos = mi[axis]
            for delta in (1, -1):
                valid = (pos - delta >= 0) & (pos - delta < size)
                if valid.sum() < 2:
                    continue
                moved = list(mi)
                moved[axis] = pos - delta
                src = np.ravel_multi_index(tuple(m[valid] for m in moved), shape)
                frac = holds(src, valid)
                if frac >= MATCH_FRACTION and (base_ok is None or frac > base_ok + 0.05):
                    rel = "i-1" if delta == 1 else "i+1"
                    return [Diagnosis("shift", f"the candidate is the reference shifted by {delta:+d} along "
                                      f"{_axis_name(rs, axis)}: candidate[i] = reference[{rel}] for {_pct(frac)} of the "
                                      f"elements (only {_pct(base_ok or 0)} agree in place): an off-by-one.",
                                      {"axis": axis, "shift": delta, "matched": frac, "matched_in_place": base_ok})]
    # 3) Any other order: the same multiset of values.
    if n <= MAX_SAMPLE:
        rs_sorted = np.sort(_take(rf, rinfo, None))
        cs_sorted = np.sort(_take(cf, cinfo, None))
        if bool(np.all(_close(cs_sorted, rs_sorted, rtol, atol))) and (base_ok is None or base_ok < 1.0):
            return [Diagnosis("permutation", "the candidate holds the same values as the reference in another order "
                              "(sorted, they agree within tolerance): a wrong index mapping or layout.",
                              {"matched_in_place": base_ok})]
    return []


def _swap(nd: int, a: int, b: int) -> tuple[int, ...]:
    p = list(range(nd))
    p[a], p[b] = p[b], p[a]
    return tuple(p)


def _transpose_diag(rs: Stage, shape: tuple[int, ...], p: Sequence[int], frac: float, flat: bool) -> Diagnosis:
    nd = len(shape)
    names = [rs.axes[i] for i in p] if rs.axes and len(rs.axes) == nd and not flat else None
    if nd == 2:
        what = "rows and columns swapped (the candidate is the reference transposed)"
    else:
        what = f"axes permuted as {tuple(p)}"
    if flat:
        what += f", read as a {shape[0]}×{shape[1]} matrix"
    order = f" — candidate layout {names} vs reference {list(rs.axes)}" if names else ""
    return Diagnosis("transpose", f"the candidate holds the reference with {what}{order}; "
                     f"{_pct(frac)} of the elements match reference.transpose{tuple(p)}.",
                     {"permutation": list(p), "shape": list(shape), "matched": frac})


# -- per trace -------------------------------------------------------------------------------------
def diagnose_trace(results: Sequence[StageDiff], ref: Trace, cand: Trace, config: Any = None) -> list[StageDiff]:
    """Add trace-level diagnoses to the results of a comparison.

    * the first stage where NaN or Inf appears in the candidate and not in the reference;
    * groups of vector stages forming a square matrix whose candidate rows are the reference's
      columns (``rot_row0..2``, ``R[i=0..2]``);
    * failing stages whose errors are within the printed precision of a text log
      (``meta["printed_digits"]`` of an imported or captured trace).

    Returns:
        The results with diagnoses added (the same objects where nothing was added).

    >>> from parity.compare.diff import compare_stages
    >>> plain = compare_stages("ref.trace", "cand.trace")
    >>> out = diagnose_trace(plain.stages, parity.load_trace("ref.trace"), parity.load_trace("cand.trace"))
    >>> len(out) == len(plain.stages), sum(len(s.diagnoses) for s in out)  # no NaN, no matrix rows, no text log here
    (True, 0)
    """
    out = list(results)
    _first_nonfinite(out)
    _matrix_groups(out, ref, cand)
    _printed_precision(out, ref, cand, config)
    return out


def _add(out: list[StageDiff], i: int, d: Diagnosis) -> None:
    if any(x.kind == d.kind for x in out[i].diagnoses):
        return
    out[i] = replace(out[i], diagnoses=out[i].diagnoses + (d,))


def _first_nonfinite(out: list[StageDiff]) -> None:
    for i, sd in enumerate(out):
        if sd.status not in (Status.FAIL, Status.EXPECTED):
            continue
        m = sd.metrics
        if m is None:
            continue
        nan_new = max(m.nan_mismatch if m.cand_nan > m.ref_nan else 0, 0)
        inf_new = max(m.inf_mismatch if m.cand_inf > m.ref_inf else 0, 0)
        if nan_new or inf_new:
            what = "NaN" if nan_new else "Inf"
            earlier = sum(1 for x in out[:i] if x.has_metrics)
            _add(out, i, Diagnosis(
                "first_nonfinite",
                f"{what} first appears in the candidate at this stage ({m.cand_nan} NaN, {m.cand_inf} Inf; the reference "
                f"has {m.ref_nan} and {m.ref_inf}); the {earlier} compared stages before it carry none that the reference "
                "lacks.",
                {"cand_nan": m.cand_nan, "cand_inf": m.cand_inf, "ref_nan": m.ref_nan, "ref_inf": m.ref_inf,
                 "first_index": list(m.max_abs_index) if m.max_abs_index is not None else None}))
            return


_TRAILING_NUM = re.compile(r"^(.*?)([0-9]+)$")


def _groups(out: list[StageDiff]) -> Iterable[list[tuple[int, int]]]:
    """Lists of (result index, row number) of vector stages whose keys differ only by a row number."""
    by: dict[tuple, list[tuple[int, int]]] = {}
    for i, sd in enumerate(out):
        key = sd.key
        if not (key[-1:].isdigit() or "[" in key or "#" in key):
            continue  # no row number in its name nor its indices (split_key would find none): in no group
        if sd.ref is None or sd.cand is None or len(sd.ref.shape) != 1 or sd.ref.shape != sd.cand.shape:
            continue
        name, idx, occ = split_key(key)
        m = _TRAILING_NUM.match(name)
        if m and m.group(1):
            by.setdefault(("name", m.group(1), tuple(sorted(idx.items())), occ), []).append((i, int(m.group(2))))
        for k, v in idx.items():
            if v.lstrip("-").isdigit():
                rest = tuple(sorted((a, b) for a, b in idx.items() if a != k))
                by.setdefault(("index", name, k, rest, occ), []).append((i, int(v)))
    for members in by.values():
        if len(members) >= 2:
            yield sorted(members, key=lambda t: t[1])


def _matrix_groups(out: list[StageDiff], ref: Trace, cand: Trace) -> None:
    for members in _groups(out):
        k = len(members)
        rows = [n for _, n in members]
        if rows != list(range(rows[0], rows[0] + k)):
            continue
        sds = [out[i] for i, _ in members]
        if any(sd.ref.shape != (k,) for sd in sds) or not any(sd.status in (Status.FAIL, Status.EXPECTED) for sd in sds):
            continue
        try:
            R = np.stack([to_float64(np.asarray(ref[sd.ref.key]), DTYPES[sd.ref.dtype]) for sd in sds])
            C = np.stack([to_float64(np.asarray(cand[sd.cand.key]), DTYPES[sd.cand.dtype]) for sd in sds])
        except Exception:  # a side that is text, or a key gone: no matrix here
            continue
        tol = next((sd.tolerance for sd in sds if sd.tolerance is not None), None)
        rtol, atol = (tol.rtol, tol.atol) if tol else (1e-7, 1e-7)
        if bool(np.all(_close(C, R, rtol, atol))) or not bool(np.all(_close(C, R.T, rtol, atol))):
            continue
        first, last = sds[0].key, sds[-1].key
        d = Diagnosis("transpose", f"the {k} vector stages {first} … {last} form a {k}×{k} matrix, and the candidate's "
                      "rows are the reference's columns (rows vs columns swapped: a transposed matrix).",
                      {"stages": [sd.key for sd in sds], "matched": 1.0})
        for i, _ in members:
            if out[i].status in (Status.FAIL, Status.EXPECTED):
                _add(out, i, d)


def _printed_precision(out: list[StageDiff], ref: Trace, cand: Trace, config: Any) -> None:
    # meta is free-form (and may be hostile): only a plain integer counts
    digits = [t.meta.get("printed_digits") if isinstance(t.meta, dict) else None for t in (ref, cand)]
    digits = [d for d in digits if type(d) is int and 3 <= d <= 40]
    if not digits:
        return
    d = min(digits)
    unit = 10.0 ** (1 - d)
    for i, sd in enumerate(out):
        if sd.status not in (Status.FAIL, Status.EXPECTED) or sd.metrics is None or sd.ref is None or sd.cand is None:
            continue
        if any(x.kind in ("rounding", "scale", "sign_flip", "zero", "constant", "nonfinite") for x in sd.diagnoses):
            continue
        try:
            rs, cs = ref.stage(sd.ref.key), cand.stage(sd.cand.key)
            ra, ca = ref.array(rs), cand.array(cs)
            if config is not None and getattr(config, "transforms", ()):
                rs, ra, _ = apply_transforms(config.transforms, sd.key, "reference", rs, ra)
                cs, ca, _ = apply_transforms(config.transforms, sd.key, "candidate", cs, ca)
        except Exception:
            continue
        rf, cf = _flat(ra), _flat(ca)
        if rf.size != cf.size or rf.size == 0:
            continue
        idx = _sample_index(rf.size)
        r, c = _take(rf, rs.dtype_info, idx), _take(cf, cs.dtype_info, idx)
        fin = np.isfinite(r) & np.isfinite(c)
        if not fin.all():
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            units = np.abs(c - r) / (unit * np.maximum(np.abs(r), np.abs(c)))
        units = np.where(c == r, 0.0, units)
        worst = float(np.max(units))
        if worst <= 1.0:
            which = "both logs" if len(digits) == 2 else "the log"
            _add(out, i, Diagnosis("rounding", f"every error is within the printed precision ({d} significant digits "
                                   f"in {which}): likely print rounding, not a bug; print more digits (%.17g) or loosen "
                                   "this stage's tolerance.", {"printed_digits": d, "max_units": worst}))


class DataDiagnoser:
    """The :class:`~parity.compare.diff.Diagnoser` the comparison engine is given by
    :func:`parity.compare_traces`: :func:`diagnose_stage` per failing stage, then
    :func:`diagnose_trace` over the whole result.

    >>> from parity.compare.diff import compare_stages
    >>> diff = compare_stages("ref.trace", "cand.trace", diagnoser=DIAGNOSER)
    >>> [d.kind for d in diff.first_divergence.diagnoses]
    ['scale']
    """

    def stage(self, ref_stage: Stage, cand_stage: Stage, ref_arr: Any, cand_arr: Any,
              metrics: StageMetrics | None) -> list[Diagnosis]:
        return diagnose_stage(ref_stage, cand_stage, ref_arr, cand_arr, metrics)

    def trace(self, results: Sequence[StageDiff], ref: Trace, cand: Trace, config: Any) -> list[StageDiff]:
        return diagnose_trace(results, ref, cand, config)


#: The diagnoser parity ships (stateless; one instance serves every comparison).
DIAGNOSER = DataDiagnoser()
