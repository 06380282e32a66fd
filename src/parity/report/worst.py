"""The worst elements of a stage: the top-k absolute errors with their N-d indices and both values.

The metrics keep only the single worst element of a stage; a report shows several, so a user can
go straight to them (``ref[3, 17, 5]``) in a debugger. :func:`worst_elements` streams through the
two arrays in chunks (bounded memory: a memory-mapped stage is never widened whole) and keeps a
running top-k with :func:`numpy.argpartition`, so the cost is one pass and ``O(chunk + k)`` memory.

Error of one element, in float64: ``|cand - ref|``; both NaN, or the same infinity on both sides,
count as agreeing (error 0); a NaN or infinity on one side only is an infinite error, so such
elements rank first. Ties go to the lower flat index, so the result is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError
from ..trace.dtypes import DType, dtype_of_array, to_float64

__all__ = ["WorstElement", "worst_elements", "element_errors"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class WorstElement:
    """One element of a stage with a large error.

    Attributes:
        index: the N-d index into the stage, e.g. ``(0, 3, 17)`` (``()`` for a scalar).
        ref: the reference value (float64).
        cand: the candidate value (float64).
        abs_err: ``|cand - ref|`` (``inf`` when a NaN / Inf appears on one side only).
        rel_err: ``abs_err / |ref|`` (``inf`` when ``ref`` is 0 and the values differ, 0 when equal).

    >>> ref, cand = parity.load_trace("ref.trace"), parity.load_trace("cand.trace")
    >>> w = worst_elements(ref["layers.0.attn_scores"], cand["layers.0.attn_scores"], k=1)[0]
    >>> w.index, round(w.ref, 5), round(w.cand, 5), round(w.rel_err, 3)
    ((1, 0, 5), -3.59065, -1.79533, 0.5)
    """

    index: tuple[int, ...]
    ref: float
    cand: float
    abs_err: float
    rel_err: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: non-finite numbers become the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
        return {"index": list(self.index), "ref": _json_float(self.ref), "cand": _json_float(self.cand),
                "abs_err": _json_float(self.abs_err), "rel_err": _json_float(self.rel_err)}


def _json_float(x: float) -> float | str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def element_errors(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Per-element ``|c - r|`` of two float64 arrays with the NaN / Inf rules of this module.

    >>> element_errors(np.array([1.0, np.nan, np.inf, 0.0]), np.array([1.5, np.nan, np.inf, np.nan]))
    array([0.5, 0. , 0. , inf])
    """
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(c - r)
    bad = np.isnan(err)
    if bad.any():
        # NaN error: NaN on a side, or inf - inf. Agreeing when both sides are the same non-finite value.
        agree = (np.isnan(r) & np.isnan(c)) | (r == c)
        err[bad] = np.where(agree[bad], 0.0, np.inf)
    return err


def _float_info(arr: np.ndarray, dtype: DType | None) -> DType:
    if dtype is not None:
        return dtype
    try:
        return dtype_of_array(arr)
    except TypeError as e:
        raise UsageError(f"worst_elements() cannot compare arrays of dtype {arr.dtype}: {e}.") from e


def worst_elements(
    ref: np.ndarray,
    cand: np.ndarray,
    k: int = 10,
    *,
    ref_dtype: DType | None = None,
    cand_dtype: DType | None = None,
    chunk: int = _CHUNK,
) -> list[WorstElement]:
    """The ``k`` elements with the largest absolute error, largest first.

    Args:
        ref: reference values (any storable dtype; memory-mapped arrays are read chunk by chunk).
        cand: candidate values, same shape as ``ref``.
        k: how many elements to return (fewer when the stage is smaller).
        ref_dtype, cand_dtype: the stored dtypes (``Stage.dtype_info``); needed for bfloat16 or
            float8 stages read back as raw bit patterns, inferred from the arrays otherwise.
        chunk: elements widened to float64 at a time (bounds memory).

    Returns:
        Up to ``k`` :class:`WorstElement`, by decreasing ``abs_err``, ties by increasing index.
        Elements with zero error are never listed, so an identical pair gives ``[]``.

    Raises:
        UsageError: the shapes differ, ``k`` or ``chunk`` is not positive, or a dtype is not numeric.

    Example:
        >>> import numpy as np
        >>> r = np.zeros((2, 3)); c = r.copy(); c[1, 2] = 0.5; c[0, 1] = -2.0
        >>> [(w.index, w.cand, w.abs_err) for w in worst_elements(r, c, k=5)]
        [((0, 1), -2.0, 2.0), ((1, 2), 0.5, 0.5)]
    """
    ref, cand = np.asarray(ref), np.asarray(cand)
    if ref.shape != cand.shape:
        raise UsageError(f"worst_elements() needs arrays of one shape, got {ref.shape} and {cand.shape}.")
    if k < 1 or chunk < 1:
        raise UsageError(f"worst_elements() needs k >= 1 and chunk >= 1, got k={k}, chunk={chunk}.")
    rinfo, cinfo = _float_info(ref, ref_dtype), _float_info(cand, cand_dtype)
    rflat, cflat = ref.reshape(-1), cand.reshape(-1)
    n = rflat.size
    chunk = max(chunk, k)
    # Running top-k: flat indices and their errors (only ever k + chunk long).
    best_idx = np.empty(0, dtype=np.int64)
    best_err = np.empty(0, dtype=np.float64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        err = element_errors(to_float64(rflat[start:stop], rinfo), to_float64(cflat[start:stop], cinfo))
        if err.size > k:
            # argpartition picks arbitrarily among ties at the k-th value; keep the lowest indices.
            thr = err[np.argpartition(-err, k - 1)[k - 1]]
            above = np.flatnonzero(err > thr)
            part = np.concatenate([above, np.flatnonzero(err == thr)[: k - above.size]])
        else:
            part = np.arange(err.size)
        idx = np.concatenate([best_idx, part.astype(np.int64) + start])
        errs = np.concatenate([best_err, err[part]])
        # lexsort: last key is primary; ties broken by the lower flat index for determinism.
        order = np.lexsort((idx, -errs))[:k]
        best_idx, best_err = idx[order], errs[order]
    out = []
    for flat_i, e in zip(best_idx.tolist(), best_err.tolist()):
        if not e > 0:
            continue
        r = float(to_float64(rflat[flat_i:flat_i + 1], rinfo)[0])
        c = float(to_float64(cflat[flat_i:flat_i + 1], cinfo)[0])
        if math.isinf(e):
            rel = math.inf
        else:
            rel = e / abs(r) if r != 0 else math.inf
        index = tuple(int(i) for i in np.unravel_index(flat_i, ref.shape)) if ref.ndim else ()
        out.append(WorstElement(index, r, c, float(e), rel))
    return out
