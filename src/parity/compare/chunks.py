"""The NumPy side of :func:`~parity.compare.metrics.compute_metrics`: inputs, per-chunk partials, totals.

One chunk of a stage gives a tuple of partials (counts, maxima with their chunk-local indices,
the four sums, the greatest ULP distance); :class:`Totals` folds them in chunk order. The C
kernel (:mod:`parity.compare._kernel`) returns the same tuple from the same per-element formulas,
so the two backends are interchangeable chunk by chunk. The rules they implement are in
:mod:`parity.compare.metrics`.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from ..errors import UsageError
from ..trace.dtypes import DType, dtype_of_array, to_float64

__all__ = ["Side", "Work", "numpy_chunk", "Totals", "sums_need_rescaling", "rescaled_sums", "ULP_NONE", "ULP_BITS",
           "ULP_SPACING"]

#: How a chunk's ULP distance is measured: not at all (a non-float side), by bit patterns (one
#: float dtype), or by the spacing of the coarser dtype (two float dtypes).
ULP_NONE, ULP_BITS, ULP_SPACING = 0, 1, 2


# ------------------------------------------------------------------------------------------------
# inputs


class Side:
    """One input array with its stored dtype; hands out 1-d chunks in C order.

    >>> side = Side(np.array([[1.0, 2.5], [4.0, 8.0]], np.float32), None, "cand")
    >>> side.dtype.name, side.widened(1, 3)
    ('float32', array([2.5, 4. ]))
    """

    def __init__(self, arr: np.ndarray, d: DType | None, what: str):
        if d is None:
            d = dtype_of_array(arr)
        if not isinstance(d, DType):
            raise UsageError(f"{what}_dtype must be a parity DType, not {type(d).__name__}")
        dt = arr.dtype
        try:
            same = dtype_of_array(arr) == d
        except TypeError:
            same = False
        raw_bits = dt.kind == "u" and dt.itemsize == d.itemsize
        if not (same or raw_bits):
            raise UsageError(f"the {what} array has dtype {dt}, which cannot hold a {d.name} stage "
                             f"(give the {d.name} array itself or its raw {np.dtype(d.bits)} bit patterns)")
        self.arr = arr
        self.dtype = d
        self.native = dt.byteorder in ("=", "|") or dt.byteorder == ("<" if sys.byteorder == "little" else ">")
        # chunks are handed out as the typed NumPy dtype when there is one, else as raw bits
        self.view_dtype = np.dtype(d.numpy) if d.numpy is not None else np.dtype(d.bits)
        self.bits_dtype = np.dtype(d.bits)
        self.flat = arr.reshape(-1) if arr.flags.c_contiguous else None

    def raw(self, s: int, e: int) -> np.ndarray:
        """Elements [s, e) in C order, native byte order, as ``view_dtype``."""
        chunk = self.flat[s:e] if self.flat is not None else np.asarray(self.arr.flat[s:e])
        if not self.native:
            chunk = chunk.byteswap().view(chunk.dtype.newbyteorder("="))
        return chunk.view(self.view_dtype)

    def widened(self, s: int, e: int) -> np.ndarray:
        """Elements [s, e) widened exactly to float64."""
        return to_float64(self.raw(s, e), self.dtype, out=np.empty(e - s, np.float64))

    def value(self, flat_index: int) -> float:
        return float(self.widened(flat_index, flat_index + 1)[0])


# ------------------------------------------------------------------------------------------------
# per-chunk partials (the C kernel returns the same tuple)
#
#   (both_nan, mismatched, ref_nan, cand_nan, ref_inf, cand_inf, nan_mismatch, inf_mismatch,
#    first_nan, abs_max, abs_idx, rel_max, rel_idx, exc_max, exc_idx, s_dd, s_rr, s_cc, s_rc, ulp)
#
# indices are chunk-local (-1: none), maxima -1.0 when there is none.


def argmax_or_none(vals: np.ndarray) -> tuple[float, int]:
    if vals.size == 0:
        return -1.0, -1
    i = int(np.argmax(vals))
    v = float(vals[i])
    return (v, i) if v >= 0 else (-1.0, -1)


def dot(x: np.ndarray, y: np.ndarray) -> float:
    """sum(x * y) in one pass, without BLAS."""
    return np.einsum("i,i->", x, y)


class Work:
    """Reusable per-thread scratch arrays for one chunk size.

    Every NumPy temporary of a chunk lives here: a fresh large array per operation would cost page
    faults on every chunk (the allocator hands big blocks back to the OS), which dominates the
    NumPy path's time.

    >>> w = Work(1024)
    >>> len(w.f), w.f[0].shape, w.f[0].dtype
    (7, (1024,), dtype('float64'))
    """

    def __init__(self, n: int):
        self.n = n
        self.f = [np.empty(n, np.float64) for _ in range(7)]  # 0, 1: widened inputs
        self.b = [np.empty(n, np.bool_) for _ in range(7)]
        self.u = [np.empty(n, np.uint64) for _ in range(4)]
        self.u32 = np.empty(n, np.uint32)

    def widen(self, raw: np.ndarray, d: DType, slot: int) -> np.ndarray:
        """``raw`` (stored as ``d``) widened exactly into float buffer ``slot``."""
        out = self.f[slot][: raw.size]
        if d.code == "BF16":  # bf16 is the top half of an f32
            u = self.u32[: raw.size]
            np.left_shift(raw.view(np.uint16), 16, out=u, dtype=np.uint32)
            np.copyto(out, u.view(np.float32))
            return out
        return to_float64(raw, d, out=out)


def numpy_chunk(r: np.ndarray, c: np.ndarray, rtol: float, atol: float, ulp: tuple, w: Work,
                 rbits: np.ndarray | None = None, cbits: np.ndarray | None = None,
                 int_ne: np.ndarray | None = None) -> tuple:
    """Partials of one chunk with NumPy (same per-element formulas as the C kernel).

    ``r``/``c``: float64 chunks (they may live in ``w.f[0]``/``w.f[1]``, which are left alone); ``rbits``/``cbits``:
    the raw bit patterns (ULP_BITS only); ``int_ne``: the exact integer inequality (64-bit integer stages).

    >>> numpy_chunk(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.5, 4.0]), 0.0, 0.1, (ULP_NONE,), Work(3))[9:15]
    (0.5, 1, 0.25, 1, 0.4, 1)
    """
    m = r.size
    F = [x[:m] for x in w.f[2:]]
    B = [x[:m] for x in w.b]
    cnt = np.count_nonzero
    with np.errstate(all="ignore"):
        rn, cn = np.isnan(r, out=B[0]), np.isnan(c, out=B[1])
        ref_nan, cand_nan = int(cnt(rn)), int(cnt(cn))
        one_nan = np.not_equal(rn, cn, out=B[2])
        nan_mm = int(cnt(one_nan))
        first_nan = int(np.argmax(one_nan)) if nan_mm else -1
        both_nan = (ref_nan + cand_nan - nan_mm) // 2
        anynan = np.logical_or(rn, cn, out=B[0])
        ri, ci = np.isinf(r, out=B[1]), np.isinf(c, out=B[2])
        ref_inf, cand_inf = int(cnt(ri)), int(cnt(ci))
        infany = np.logical_or(ri, ci, out=B[1])
        nonfin = np.logical_or(anynan, infany, out=B[2])  # not finite on both sides
        fin = np.logical_not(nonfin, out=B[3])
        inf_mm = 0
        if ref_inf or cand_inf:
            infpos = np.greater(infany, anynan, out=B[1])  # an infinity, no NaN
            inf_mm_mask = np.logical_and(infpos, np.not_equal(r, c, out=B[4]), out=B[4])
            inf_match = np.greater(infpos, inf_mm_mask, out=B[1])
            inf_mm = int(cnt(inf_mm_mask))
        ar = np.abs(r, out=F[0])
        d = np.abs(np.subtract(c, r, out=F[1]), out=F[1])
        bound = np.add(np.multiply(ar, rtol, out=F[2]), atol, out=F[2])
        fail = np.greater(d, bound, out=B[5])
        if int_ne is not None:
            if rtol == 0 and atol == 0:
                np.copyto(fail, int_ne)
            else:
                np.logical_and(fail, int_ne, out=fail)
        np.logical_and(fail, fin, out=fail)
        nfail = int(cnt(fail))
        exc = np.subtract(d, bound, out=F[3])
        np.copyto(exc, -1.0, where=np.logical_not(fail, out=B[6]))
        if inf_mm:
            np.copyto(exc, np.inf, where=inf_mm_mask)
        exc_max, exc_idx = argmax_or_none(exc)

        rel = np.divide(d, ar, out=F[2])
        np.copyto(rel, 0.0, where=np.equal(d, 0.0, out=B[6]))
        np.copyto(rel, -1.0, where=nonfin)
        dv = F[3]
        np.copyto(dv, d)
        np.copyto(dv, -1.0, where=nonfin)
        if inf_mm or ref_inf or cand_inf:
            for x in (rel, dv):
                np.copyto(x, 0.0, where=inf_match)
                if inf_mm:
                    np.copyto(x, np.inf, where=inf_mm_mask)
        rel_max, rel_idx = argmax_or_none(rel)
        abs_max, abs_idx = argmax_or_none(dv)

        # sums over positions finite on both sides; einsum, not np.dot: BLAS would start its own threads
        # (whose wake-up costs milliseconds per call on a busy machine), and 1-d `@` is slower still
        df, rf, cf = F[2], F[3], F[4]
        np.copyto(df, d)
        np.copyto(rf, r)
        np.copyto(cf, c)
        for x in (df, rf, cf):
            np.copyto(x, 0.0, where=nonfin)
        s_dd, s_rr = float(dot(df, df)), float(dot(rf, rf))
        s_cc, s_rc = float(dot(cf, cf)), float(dot(rf, cf))

        u = math.inf if inf_mm else chunk_ulp(ulp, ar, d, nonfin, rbits, cbits, w, m)
    mismatched = nan_mm + inf_mm + nfail
    return (both_nan, mismatched, ref_nan, cand_nan, ref_inf, cand_inf, nan_mm, inf_mm, first_nan, abs_max, abs_idx,
            rel_max, rel_idx, exc_max, exc_idx, s_dd, s_rr, s_cc, s_rc, u)


def chunk_ulp(ulp: tuple, ar: np.ndarray, d: np.ndarray, nonfin: np.ndarray, rbits: np.ndarray | None,
              cbits: np.ndarray | None, w: Work, m: int) -> float:
    """The greatest ULP distance of a chunk without an Inf mismatch (0.0 for :data:`ULP_NONE`).

    ``ar`` is ``|r|``, ``d`` is ``|c - r|`` and ``nonfin`` the positions not finite on both sides;
    the scratch used is ``w.u``, ``w.b[6]`` and ``w.f[4]`` (``numpy_chunk`` is done with them).
    """
    U = [x[:m] for x in w.u]
    b6, f = w.b[6][:m], w.f[4][:m]
    if m == 0 or ulp[0] == ULP_NONE:
        return 0.0
    with np.errstate(all="ignore"):
        if ulp[0] == ULP_BITS:
            wbits = ulp[1]
            rb, cb, dist, tmp = U
            np.copyto(rb, rbits, casting="unsafe")
            np.copyto(cb, cbits, casting="unsafe")
            same_sign = np.equal(np.right_shift(np.bitwise_xor(rb, cb, out=dist), wbits - 1, out=dist), 0, out=b6)
            mag = np.uint64((1 << (wbits - 1)) - 1)
            ma, mb = np.bitwise_and(rb, mag, out=rb), np.bitwise_and(cb, mag, out=cb)
            np.subtract(np.maximum(ma, mb, out=dist), np.minimum(ma, mb, out=tmp), out=dist)
            np.copyto(dist, np.add(ma, mb, out=tmp), where=np.logical_not(same_sign, out=b6))
            np.copyto(dist, 0, where=nonfin)
            return float(dist.max())
        mant, emin = ulp[1], ulp[2]
        e = U[0]  # biased exponent of |r|, at least emin's; scale = 2**(m - e) built in the bits
        np.bitwise_and(np.right_shift(ar.view(np.uint64), 52, out=e), 0x7FF, out=e)
        np.maximum(e, np.uint64(emin + 1023), out=e)
        np.left_shift(np.subtract(np.uint64(mant + 2046), e, out=e), 52, out=e)
        uv = np.multiply(d, e.view(np.float64), out=f)
        np.copyto(uv, 0.0, where=nonfin)
        return float(uv.max())


class Totals:
    """Chunk partials folded in chunk order.

    Indices become global (chunk-local index + ``offset``); a tie keeps the earlier chunk's index:

    >>> p = numpy_chunk(np.array([1.0, 2.0]), np.array([1.0, 2.5]), 0.0, 0.1, (ULP_NONE,), Work(2))
    >>> t = Totals()
    >>> t.add(p, 0); t.add(p, 2)
    >>> t.counts[1], t.best[0], t.sums
    (2, [0.5, 1], [0.5, 10.0, 14.5, 12.0])
    """

    def __init__(self) -> None:
        self.counts = [0] * 8  # both_nan, mismatched, ref_nan, cand_nan, ref_inf, cand_inf, nan_mm, inf_mm
        self.first_nan = -1
        self.best = [[-1.0, -1], [-1.0, -1], [-1.0, -1]]  # abs, rel, excess: value, global flat index
        self.sums = [0.0, 0.0, 0.0, 0.0]  # dd, rr, cc, rc
        self.scale_exp = 0  # the sums are of values scaled by 2**-scale_exp (see rescaled_sums)
        self.ulp = 0.0

    def add(self, p: tuple, offset: int) -> None:
        for k in range(8):
            self.counts[k] += p[k]
        if self.first_nan < 0 and p[8] >= 0:
            self.first_nan = p[8] + offset
        for k, (v, i) in enumerate(((p[9], p[10]), (p[11], p[12]), (p[13], p[14]))):
            if i >= 0 and v > self.best[k][0]:
                self.best[k] = [v, i + offset]
        for k in range(4):
            self.sums[k] += p[15 + k]
        if p[19] > self.ulp:
            self.ulp = p[19]


# float64 sums of squares over- or underflow for |values| beyond about 1e154 or below about 1e-154
TINY_SUM = 2.0**-900


def sums_need_rescaling(tot: Totals) -> bool:
    """Whether the float64 sums of ``tot`` overflowed or (nearly) underflowed (see :func:`rescaled_sums`).

    >>> t = Totals()
    >>> t.add(numpy_chunk(np.array([1e200]), np.array([2e200]), 0.0, 0.0, (ULP_NONE,), Work(1)), 0)
    >>> t.sums, sums_need_rescaling(t)
    ([inf, inf, inf, inf], True)
    """
    s_dd, s_rr, s_cc, s_rc = tot.sums
    if not all(math.isfinite(x) for x in tot.sums):
        return True
    return s_rr < TINY_SUM or s_cc < TINY_SUM or (s_dd < TINY_SUM and tot.best[0][0] > 0)


def rescaled_sums(rs: Side, cs: Side, n: int, chunk: int) -> tuple[list[float], int]:
    """The four sums again, over values scaled by 2**-E so that the largest finite one is below 1.

    Only run when the plain float64 sums overflowed or (nearly) underflowed. Two NumPy passes: the
    greatest magnitude among positions finite on both sides, then the scaled sums.

    >>> r, c = Side(np.array([1e200, 2e200]), None, "ref"), Side(np.array([1e200, 3e200]), None, "cand")
    >>> sums, exp = rescaled_sums(r, c, 2, 1024)
    >>> exp, [round(x, 4) for x in sums]
    (666, [0.1067, 0.5334, 1.0667, 0.7467])
    """
    top = 0.0
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        r, c = rs.widened(s, e), cs.widened(s, e)
        fin = np.isfinite(r) & np.isfinite(c)
        if fin.any():
            top = max(top, float(np.max(np.abs(r[fin]))), float(np.max(np.abs(c[fin]))))
    if top == 0.0:
        return [0.0, 0.0, 0.0, 0.0], 0
    exp = math.frexp(top)[1]
    sums = [0.0, 0.0, 0.0, 0.0]
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        r, c = rs.widened(s, e), cs.widened(s, e)
        fin = np.isfinite(r) & np.isfinite(c)
        r = np.ldexp(np.where(fin, r, 0.0), -exp)
        c = np.ldexp(np.where(fin, c, 0.0), -exp)
        d = np.abs(c - r)
        sums[0] += float(dot(d, d))
        sums[1] += float(dot(r, r))
        sums[2] += float(dot(c, c))
        sums[3] += float(dot(r, c))
    return sums, exp
