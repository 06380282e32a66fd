"""Per-stage value metrics: one streaming pass over a reference and a candidate array.

:func:`compute_metrics` compares two arrays of the same shape element by element and returns a
:class:`StageMetrics`: how many elements fall outside the tolerance, the worst absolute and relative
errors and where they are, RMS error, cosine similarity, SQNR, the greatest ULP distance, and the
NaN/Inf bookkeeping. Everything is computed in float64 from exactly widened inputs.

Rules (the product's contract):

* **Tolerance** -- an element passes iff ``|c - r| <= atol + rtol * |r|`` (asymmetric, like
  ``numpy.isclose`` and ``torch.testing``). A difference exactly equal to the bound passes.
* **NaN** -- NaN against NaN at the same position matches and is left out of every error statistic.
  NaN against a number never matches (``nan_mismatch``). NaN never hides: when there is any NaN
  mismatch, ``max_abs_err``, ``max_rel_err``, ``rms_err`` and ``sqnr_db`` are NaN, and
  ``max_abs_index`` / ``max_rel_index`` / ``worst_fail_index`` point at the first (C-order) NaN
  mismatch.
* **Inf** -- the same infinity on both sides matches (error 0). An infinity against a finite value,
  or ``+inf`` against ``-inf``, is a mismatch whatever the tolerance (``inf_mismatch``; absolute and
  relative error ``inf``; ``rms_err`` ``inf``; ``sqnr_db`` ``-inf``).
* **Statistics domain** -- ``rms_err`` averages over every position that is not NaN on both sides
  (matching infinities count as error 0). ``cosine`` and ``sqnr_db`` use the positions where both
  sides are finite. Their float64 sums are recomputed over values scaled by a power of two when
  they overflow or underflow (magnitudes beyond about 1e154 or below about 1e-154).
* **Integers and bools** -- compared exactly unless a nonzero tolerance is given; 64-bit integers
  are compared as integers for the mismatch count even beyond 2**53, although the error statistics
  are float64 (so ``max_abs_err`` may round such a difference to 0).
* **ULP** (float stages only; ``None`` when either side is not a float) -- with the same dtype on
  both sides, the number of representable values between the two (ordered-integer distance of the
  bit patterns; ``+0`` and ``-0`` are 0 apart, the largest finite value and ``inf`` 1 apart, though
  an Inf mismatch makes the result ``inf``). With different dtypes, ``|c - r|`` in units of the
  spacing of the *coarser* dtype (fewer mantissa bits) at ``|r|`` (the spacing keeps the coarser
  dtype's subnormal floor below its smallest normal). NaN positions are left out.
* **Determinism** -- the input is cut into chunks that are reduced in chunk order; counts, indices
  and maxima do not depend on the chunk size, the thread count or the backend, and sums differ
  only by float rounding across chunk sizes or backends (never across thread counts).

Two backends give identical counts, indices and maxima: a fused single-pass C kernel
(:mod:`parity.compare._kernel`, built when a C compiler is available) and a chunked NumPy
implementation that is always there. ``backend="auto"`` uses the kernel when it is built.

Extra metrics can be plugged in with :func:`register_metric`; they see float64 chunks in order and
land in :attr:`StageMetrics.extra`.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from ..errors import UsageError
from ..results import StageMetrics
from ..trace.dtypes import DType, dtype_of_array, is_float, to_float64

try:  # the optional C accelerator
    from . import _kernel  # type: ignore[attr-defined]
except ImportError:  # no compiler at install time: NumPy fallback
    _kernel = None

__all__ = [
    "StageMetrics",
    "compute_metrics",
    "Metric",
    "register_metric",
    "unregister_metric",
    "registered_metrics",
    "kernel_available",
    "kernel_simd",
    "DEFAULT_CHUNK_ELEMENTS",
    "DEFAULT_CHUNK_ELEMENTS_NUMPY",
    "PARALLEL_MIN_ELEMENTS",
]

#: Elements per chunk when the C kernel reads the inputs directly (no per-chunk copies are made).
DEFAULT_CHUNK_ELEMENTS = 1 << 20
#: Elements per chunk for the NumPy backend and for widened (float64) chunks: every float64
#: temporary of a chunk is 256 KiB (about 3 MB of scratch per thread in all).
DEFAULT_CHUNK_ELEMENTS_NUMPY = 1 << 15
#: Stages with at least this many elements are processed by several threads.
PARALLEL_MIN_ELEMENTS = 1 << 22

# minimum normal exponent of each float dtype (for the spacing-based ULP of mixed-dtype stages)
_EMIN = {"F64": -1022, "F32": -126, "BF16": -126, "F16": -14, "F8_E4M3": -6, "F8_E5M2": -14}
# dtype codes the C kernel reads natively
_KCODE = {"F64": 0, "F32": 1, "F16": 2, "BF16": 3}
_ULP_NONE, _ULP_BITS, _ULP_SPACING = 0, 1, 2


def kernel_available() -> bool:
    """Whether the C kernel :mod:`parity.compare._kernel` was built and imported."""
    return _kernel is not None


def kernel_simd() -> str | None:
    """The instruction set the C kernel runs with (``"avx2"``, ``"sse2"``, ...), ``None`` if not built."""
    return None if _kernel is None else _kernel.simd()


# ------------------------------------------------------------------------------------------------
# plug-in metrics


class Metric(Protocol):
    """A streaming metric: created by its factory per stage, fed float64 chunks in C order.

    ``update`` receives 1-d float64 chunks of the reference and the candidate (same length, NaN and
    Inf left in place); ``result`` returns the final value once every chunk has been seen (also
    when there were none, for an empty stage).
    """

    def update(self, ref64: np.ndarray, cand64: np.ndarray) -> None: ...

    def result(self) -> float: ...


_REGISTRY: dict[str, Callable[[], Metric]] = {}


def register_metric(name: str, factory: Callable[[], Metric]) -> None:
    """Compute an extra metric for every stage; its value lands in ``StageMetrics.extra[name]``.

    Extra metrics are only evaluated when registered, on float64 chunks widened for them (they cost
    one more pass over the data, in the calling thread).

    Args:
        name: the key in ``StageMetrics.extra``.
        factory: called with no arguments once per stage; returns an object with ``update(ref64,
            cand64)`` and ``result() -> float`` (see :class:`Metric`).

    Raises:
        UsageError: ``name`` is empty or already registered.
        UsageError: ``factory`` is not callable.

    Example::

        class MeanErr:
            def __init__(self): self.s, self.n = 0.0, 0
            def update(self, r, c): self.s += float(np.sum(c - r)); self.n += r.size
            def result(self): return self.s / self.n if self.n else 0.0

        register_metric("mean_err", MeanErr)
    """
    if not isinstance(name, str) or not name:
        raise UsageError("a metric name must be a non-empty string")
    if name in _REGISTRY:
        raise UsageError(f"a metric named {name!r} is already registered; unregister_metric() it first")
    if not callable(factory):
        raise UsageError("factory must be callable (it is called once per stage to make a Metric)")
    _REGISTRY[name] = factory


def unregister_metric(name: str) -> None:
    """Stop computing the extra metric ``name`` (no error when it is not registered)."""
    _REGISTRY.pop(name, None)


def registered_metrics() -> tuple[str, ...]:
    """Names of the registered extra metrics, in registration order."""
    return tuple(_REGISTRY)


# ------------------------------------------------------------------------------------------------
# inputs


class _Side:
    """One input array with its stored dtype; hands out 1-d chunks in C order."""

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


def _argmax_or_none(vals: np.ndarray) -> tuple[float, int]:
    if vals.size == 0:
        return -1.0, -1
    i = int(np.argmax(vals))
    v = float(vals[i])
    return (v, i) if v >= 0 else (-1.0, -1)


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    """sum(x * y) in one pass, without BLAS."""
    return np.einsum("i,i->", x, y)


class _Work:
    """Reusable per-thread scratch arrays for one chunk size.

    Every NumPy temporary of a chunk lives here: a fresh large array per operation would cost page
    faults on every chunk (the allocator hands big blocks back to the OS), which dominates the
    NumPy path's time.
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


def _numpy_chunk(r: np.ndarray, c: np.ndarray, rtol: float, atol: float, ulp: tuple, w: _Work,
                 rbits: np.ndarray | None = None, cbits: np.ndarray | None = None,
                 int_ne: np.ndarray | None = None) -> tuple:
    """Partials of one chunk with NumPy (same per-element formulas as the C kernel).

    ``r``/``c`` are float64 chunks (they may live in ``w.f[0]``/``w.f[1]``, which are left alone);
    ``rbits``/``cbits`` the raw bit patterns (ULP_BITS only); ``int_ne`` the exact integer
    inequality (64-bit integer stages).
    """
    m = r.size
    F = [x[:m] for x in w.f[2:]]
    B = [x[:m] for x in w.b]
    U = [x[:m] for x in w.u]
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
        exc_max, exc_idx = _argmax_or_none(exc)

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
        rel_max, rel_idx = _argmax_or_none(rel)
        abs_max, abs_idx = _argmax_or_none(dv)

        # sums over positions finite on both sides; einsum, not np.dot: BLAS would start its own threads
        # (whose wake-up costs milliseconds per call on a busy machine), and 1-d `@` is slower still
        df, rf, cf = F[2], F[3], F[4]
        np.copyto(df, d)
        np.copyto(rf, r)
        np.copyto(cf, c)
        for x in (df, rf, cf):
            np.copyto(x, 0.0, where=nonfin)
        s_dd, s_rr = float(_dot(df, df)), float(_dot(rf, rf))
        s_cc, s_rc = float(_dot(cf, cf)), float(_dot(rf, cf))

        u = 0.0
        if inf_mm:
            u = math.inf
        elif ulp[0] == _ULP_BITS:
            wbits = ulp[1]
            rb, cb, dist, tmp = U
            np.copyto(rb, rbits, casting="unsafe")
            np.copyto(cb, cbits, casting="unsafe")
            same_sign = np.equal(np.right_shift(np.bitwise_xor(rb, cb, out=dist), wbits - 1, out=dist), 0, out=B[6])
            mag = np.uint64((1 << (wbits - 1)) - 1)
            ma, mb = np.bitwise_and(rb, mag, out=rb), np.bitwise_and(cb, mag, out=cb)
            np.subtract(np.maximum(ma, mb, out=dist), np.minimum(ma, mb, out=tmp), out=dist)
            np.copyto(dist, np.add(ma, mb, out=tmp), where=np.logical_not(same_sign, out=B[6]))
            np.copyto(dist, 0, where=nonfin)
            u = float(dist.max()) if m else 0.0
        elif ulp[0] == _ULP_SPACING:
            mant, emin = ulp[1], ulp[2]
            e = U[0]  # biased exponent of |r|, at least emin's; scale = 2**(m - e) built in the bits
            np.bitwise_and(np.right_shift(ar.view(np.uint64), 52, out=e), 0x7FF, out=e)
            np.maximum(e, np.uint64(emin + 1023), out=e)
            np.left_shift(np.subtract(np.uint64(mant + 2046), e, out=e), 52, out=e)
            uv = np.multiply(d, e.view(np.float64), out=F[2])
            np.copyto(uv, 0.0, where=nonfin)
            u = float(uv.max()) if m else 0.0
    mismatched = nan_mm + inf_mm + nfail
    return (both_nan, mismatched, ref_nan, cand_nan, ref_inf, cand_inf, nan_mm, inf_mm, first_nan, abs_max, abs_idx,
            rel_max, rel_idx, exc_max, exc_idx, s_dd, s_rr, s_cc, s_rc, u)


class _Totals:
    """Chunk partials folded in chunk order."""

    def __init__(self) -> None:
        self.counts = [0] * 8  # both_nan, mismatched, ref_nan, cand_nan, ref_inf, cand_inf, nan_mm, inf_mm
        self.first_nan = -1
        self.best = [[-1.0, -1], [-1.0, -1], [-1.0, -1]]  # abs, rel, excess: value, global flat index
        self.sums = [0.0, 0.0, 0.0, 0.0]  # dd, rr, cc, rc
        self.scale_exp = 0  # the sums are of values scaled by 2**-scale_exp (see _rescaled_sums)
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


# ------------------------------------------------------------------------------------------------
# driver


def _ordered(fn: Callable[[int, int], tuple], ranges: list[tuple[int, int]], threads: int) -> Iterator[tuple]:
    """fn over ranges, results in range order; at most 2 * threads chunks in flight."""
    if threads <= 1 or len(ranges) <= 1:
        for s, e in ranges:
            yield fn(s, e)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="parity-metrics") as ex:
        window: deque = deque()
        for s, e in ranges:
            window.append(ex.submit(fn, s, e))
            if len(window) >= 2 * threads:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


@functools.lru_cache(maxsize=1)
def _default_threads() -> int:
    return min(2, os.cpu_count() or 1)  # os.cpu_count() is a system call: once per process


def _check_tol(name: str, v: float) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, not {v!r}") from None
    if math.isnan(v) or v < 0:
        raise UsageError(f"{name} must be >= 0, not {v}")
    return v


def compute_metrics(
    ref: np.ndarray,
    cand: np.ndarray,
    *,
    ref_dtype: DType | None = None,
    cand_dtype: DType | None = None,
    rtol: float,
    atol: float,
    chunk_elements: int | None = None,
    threads: int | None = None,
    backend: str = "auto",
) -> StageMetrics:
    """Compare ``cand`` against ``ref`` element by element in one streaming pass.

    The inputs are read in chunks (never widened whole), so the extra memory stays at a few MB
    whatever their size; they may be read-only ``np.memmap`` or ``np.frombuffer`` arrays.

    Args:
        ref: the reference array, of any storable dtype (float64/32/16, bfloat16 as an
            ``ml_dtypes`` array or as uint16 bit patterns, float8, integers, bool).
        cand: the candidate array, same shape; its dtype may differ from the reference's.
        ref_dtype: the stage dtype of ``ref``; default ``dtype_of_array(ref)``. Give it for raw bit
            pattern arrays (e.g. ``DTYPES["BF16"]`` for a uint16 array).
        cand_dtype: the same for ``cand``.
        rtol: relative tolerance (>= 0).
        atol: absolute tolerance (>= 0). An element passes iff ``|c - r| <= atol + rtol * |r|``.
        chunk_elements: elements per chunk; default :data:`DEFAULT_CHUNK_ELEMENTS` when the C kernel
            reads the dtypes natively (it copies nothing), else :data:`DEFAULT_CHUNK_ELEMENTS_NUMPY`
            (the NumPy path and widened chunks keep about 100 bytes of scratch per chunk element
            and thread).
        threads: worker threads for stages of at least :data:`PARALLEL_MIN_ELEMENTS` elements;
            default ``min(2, os.cpu_count())``. Results do not depend on it.
        backend: ``"auto"`` (the C kernel when built, else NumPy), ``"c"`` (require the kernel) or
            ``"numpy"``. 64-bit integer stages and same-dtype float8 stages always use NumPy.

    Returns:
        the :class:`StageMetrics` of the stage.

    Raises:
        UsageError: the shapes differ, a tolerance is negative or NaN, an array cannot hold its
            declared dtype, or an argument is out of range.
        UsageError: an array's dtype cannot be stored (complex, object, ...).
        UsageError: ``backend="c"`` but the C kernel is not built.

    Example:
        >>> import numpy as np
        >>> ref = np.array([1.0, 2.0, 3.0, np.nan], dtype=np.float32)
        >>> cand = np.array([1.0, 2.5, 3.0, np.nan], dtype=np.float32)
        >>> m = compute_metrics(ref, cand, rtol=0.0, atol=0.1)
        >>> m.mismatched, m.max_abs_err, m.max_abs_index, m.passed
        (1, 0.5, (1,), False)
        >>> m.max_ulp  # float32 values between 2.0 and 2.5
        2097152.0
    """
    if not isinstance(ref, np.ndarray):
        ref = np.asarray(ref)
    if not isinstance(cand, np.ndarray):
        cand = np.asarray(cand)
    if ref.shape != cand.shape:
        raise UsageError(f"reference shape {ref.shape} and candidate shape {cand.shape} differ")
    rtol = _check_tol("rtol", rtol)
    atol = _check_tol("atol", atol)
    if backend not in ("auto", "c", "numpy"):
        raise UsageError(f"backend must be 'auto', 'c' or 'numpy', not {backend!r}")
    if backend == "c" and _kernel is None:
        raise UsageError("the C kernel parity.compare._kernel is not built (reinstall parity with a C "
                           "compiler available), use backend='numpy' or 'auto'")
    if threads is None:
        threads = _default_threads()
    elif not isinstance(threads, int) or threads < 1:
        raise UsageError(f"threads must be a positive integer, not {threads!r}")
    if chunk_elements is not None and (not isinstance(chunk_elements, int) or chunk_elements < 1):
        raise UsageError(f"chunk_elements must be a positive integer, not {chunk_elements!r}")

    rs, cs = _Side(ref, ref_dtype, "ref"), _Side(cand, cand_dtype, "cand")
    rd, cd = rs.dtype, cs.dtype
    n = int(ref.size)
    both_float = is_float(rd) and is_float(cd)
    both_int = not is_float(rd) and not is_float(cd)
    int_exact = both_int and (rd.itemsize == 8 or cd.itemsize == 8)

    if not both_float:
        ulp: tuple = (_ULP_NONE,)
    elif rd == cd:
        ulp = (_ULP_BITS, rd.itemsize * 8)
    else:
        coarse = min((rd, cd), key=lambda t: (t.mantissa_bits, -_EMIN[t.code]))
        ulp = (_ULP_SPACING, coarse.mantissa_bits, _EMIN[coarse.code])

    use_c = _kernel is not None and backend != "numpy" and not int_exact and not (
        ulp[0] == _ULP_BITS and rd.code not in _KCODE)
    native = use_c and rd.code in _KCODE and cd.code in _KCODE
    if chunk_elements is None:
        chunk_elements = DEFAULT_CHUNK_ELEMENTS if native else DEFAULT_CHUNK_ELEMENTS_NUMPY

    local = threading.local()

    def work() -> _Work:
        w = getattr(local, "w", None)
        if w is None:
            w = local.w = _Work(chunk_elements)
        return w

    if use_c:
        kulp = ulp if len(ulp) == 3 else (ulp[0], 0, 0)
        if native:
            rcode, ccode = _KCODE[rd.code], _KCODE[cd.code]

            def run(s: int, e: int) -> tuple:
                return _kernel.chunk(rs.raw(s, e).view(rs.bits_dtype), cs.raw(s, e).view(cs.bits_dtype),
                                     rcode, ccode, rtol, atol, *kulp)
        else:

            def run(s: int, e: int) -> tuple:
                w = work()
                return _kernel.chunk(w.widen(rs.raw(s, e), rd, 0), w.widen(cs.raw(s, e), cd, 1), 0, 0, rtol, atol,
                                     *kulp)
    else:

        def run(s: int, e: int) -> tuple:
            w = work()
            rraw, craw = rs.raw(s, e), cs.raw(s, e)
            r64, c64 = w.widen(rraw, rd, 0), w.widen(craw, cd, 1)
            rbits = rraw.view(rs.bits_dtype) if ulp[0] == _ULP_BITS else None
            cbits = craw.view(cs.bits_dtype) if ulp[0] == _ULP_BITS else None
            # exact integer inequality; w.b[6] is not written by _numpy_chunk before it reads int_ne
            int_ne = np.not_equal(rraw, craw, out=w.b[6][: e - s]) if int_exact else None
            return _numpy_chunk(r64, c64, rtol, atol, ulp, w, rbits, cbits, int_ne)

    extras = {name: factory() for name, factory in _REGISTRY.items()}
    ranges = [(s, min(s + chunk_elements, n)) for s in range(0, n, chunk_elements)]
    nthreads = threads if n >= PARALLEL_MIN_ELEMENTS else 1
    tot = _Totals()
    for (s, e), part in zip(ranges, _ordered(run, ranges, nthreads), strict=True):
        tot.add(part, s)
        if extras:
            r64, c64 = rs.widened(s, e), cs.widened(s, e)
            for m in extras.values():
                m.update(r64, c64)
    extra = {name: float(m.result()) for name, m in extras.items()}
    if _sums_need_rescaling(tot):
        tot.sums, tot.scale_exp = _rescaled_sums(rs, cs, n, min(chunk_elements, DEFAULT_CHUNK_ELEMENTS_NUMPY))
    return _finish(tot, n, ref.shape, rs, cs, rtol, atol, ulp, extra)


# float64 sums of squares over- or underflow for |values| beyond about 1e154 or below about 1e-154
_TINY_SUM = 2.0**-900


def _sums_need_rescaling(tot: _Totals) -> bool:
    s_dd, s_rr, s_cc, s_rc = tot.sums
    if not all(math.isfinite(x) for x in tot.sums):
        return True
    return s_rr < _TINY_SUM or s_cc < _TINY_SUM or (s_dd < _TINY_SUM and tot.best[0][0] > 0)


def _rescaled_sums(rs: _Side, cs: _Side, n: int, chunk: int) -> tuple[list[float], int]:
    """The four sums again, over values scaled by 2**-E so that the largest finite one is below 1.

    Only run when the plain float64 sums overflowed or (nearly) underflowed. Two NumPy passes: the
    greatest magnitude among positions finite on both sides, then the scaled sums.
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
        sums[0] += float(_dot(d, d))
        sums[1] += float(_dot(r, r))
        sums[2] += float(_dot(c, c))
        sums[3] += float(_dot(r, c))
    return sums, exp


def _finish(tot: _Totals, n: int, shape: tuple, rs: _Side, cs: _Side, rtol: float, atol: float, ulp: tuple,
            extra: dict[str, float]) -> StageMetrics:
    both_nan, mismatched, ref_nan, cand_nan, ref_inf, cand_inf, nan_mm, inf_mm = tot.counts
    s_dd, s_rr, s_cc, s_rc = tot.sums
    n_err = n - both_nan

    def at(flat: int) -> tuple[tuple[int, ...] | None, float, float]:
        if flat < 0:
            return None, 0.0, 0.0
        idx = tuple(int(i) for i in np.unravel_index(flat, shape))
        return idx, rs.value(flat), cs.value(flat)

    if nan_mm:
        abs_err = rel_err = rms = sqnr = math.nan
        abs_flat = rel_flat = worst_flat = tot.first_nan
    else:
        (abs_err, abs_flat), (rel_err, rel_flat), (_, worst_flat) = tot.best
        abs_err = max(abs_err, 0.0)
        rel_err = max(rel_err, 0.0)
        if inf_mm:
            rms, sqnr = math.inf, -math.inf
        else:
            rms = math.sqrt(s_dd / n_err) if n_err else 0.0
            try:
                rms = math.ldexp(rms, tot.scale_exp)
            except OverflowError:
                rms = math.inf
            if s_dd == 0:
                sqnr = math.inf
            elif s_rr == 0:
                sqnr = -math.inf
            else:
                sqnr = 10.0 * (math.log10(s_rr) - math.log10(s_dd))
    if s_rr == 0 and s_cc == 0:
        cosine = 1.0
    elif s_rr == 0 or s_cc == 0:
        cosine = 0.0
    else:
        cosine = s_rc / (math.sqrt(s_rr) * math.sqrt(s_cc))
        if cosine > 1.0:
            cosine = 1.0
        elif cosine < -1.0:
            cosine = -1.0
    abs_idx, abs_r, abs_c = at(abs_flat)
    rel_idx, rel_r, rel_c = at(rel_flat)
    worst_idx = None if worst_flat < 0 else tuple(int(i) for i in np.unravel_index(worst_flat, shape))
    return StageMetrics(
        count=n,
        mismatched=mismatched,
        mismatched_fraction=mismatched / n if n else 0.0,
        max_abs_err=float(abs_err),
        max_abs_index=abs_idx,
        max_abs_ref=abs_r,
        max_abs_cand=abs_c,
        max_rel_err=float(rel_err),
        max_rel_index=rel_idx,
        max_rel_ref=rel_r,
        max_rel_cand=rel_c,
        rms_err=float(rms),
        cosine=float(cosine),
        sqnr_db=float(sqnr),
        max_ulp=None if ulp[0] == _ULP_NONE else float(tot.ulp),
        worst_fail_index=worst_idx,
        ref_nan=ref_nan,
        cand_nan=cand_nan,
        ref_inf=ref_inf,
        cand_inf=cand_inf,
        nan_mismatch=nan_mm,
        inf_mismatch=inf_mm,
        rtol=rtol,
        atol=atol,
        extra=extra,
    )
