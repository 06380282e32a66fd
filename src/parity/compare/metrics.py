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
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from ..errors import UsageError
from ..results import StageMetrics
from ..trace.dtypes import DType, is_float
from .chunks import ULP_BITS, ULP_NONE, ULP_SPACING, Side, Totals, Work, numpy_chunk, rescaled_sums, sums_need_rescaling

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
    "chunk_layout",
    "metrics_from_partials",
    "stage_rescaled_sums",
    "ChunkPartial",
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


def kernel_available() -> bool:
    """Whether the C kernel :mod:`parity.compare._kernel` was built and imported.

    >>> kernel_available() in (True, False)
    True
    """
    return _kernel is not None


def kernel_simd() -> str | None:
    """The instruction set the C kernel runs with (``"avx2"``, ``"sse2"``, ...), ``None`` if not built.

    >>> kernel_simd() is None or isinstance(kernel_simd(), str)
    True
    """
    return None if _kernel is None else _kernel.simd()


# ------------------------------------------------------------------------------------------------
# plug-in metrics


class Metric(Protocol):
    """A streaming metric: created by its factory per stage, fed float64 chunks in C order.

    ``update`` receives 1-d float64 chunks of the reference and the candidate (same length, NaN and
    Inf left in place); ``result`` returns the final value once every chunk has been seen (also
    when there were none, for an empty stage).

    >>> class MaxCand:
    ...     def __init__(self): self.v = 0.0
    ...     def update(self, r, c): self.v = max(self.v, float(np.max(c, initial=0.0)))
    ...     def result(self): return self.v
    >>> m = MaxCand(); m.update(np.zeros(3), np.array([1.0, 3.0, 2.0])); m.result()
    3.0
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

    >>> class MeanErr:
    ...     def __init__(self): self.s, self.n = 0.0, 0
    ...     def update(self, r, c): self.s += float(np.sum(c - r)); self.n += r.size
    ...     def result(self): return self.s / self.n if self.n else 0.0
    >>> register_metric("mean_err", MeanErr)
    >>> compute_metrics(np.zeros(4), np.full(4, 0.5), rtol=0, atol=1).extra
    {'mean_err': 0.5}
    >>> unregister_metric("mean_err")
    """
    if not isinstance(name, str) or not name:
        raise UsageError("a metric name must be a non-empty string")
    if name in _REGISTRY:
        raise UsageError(f"a metric named {name!r} is already registered; unregister_metric() it first")
    if not callable(factory):
        raise UsageError("factory must be callable (it is called once per stage to make a Metric)")
    _REGISTRY[name] = factory


def unregister_metric(name: str) -> None:
    """Stop computing the extra metric ``name`` (no error when it is not registered).

    >>> unregister_metric("never_registered")  # no error
    """
    _REGISTRY.pop(name, None)


def registered_metrics() -> tuple[str, ...]:
    """Names of the registered extra metrics, in registration order.

    >>> registered_metrics()
    ()
    """
    return tuple(_REGISTRY)


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
    ref, cand = _as_arrays(ref, cand)
    rtol, atol = _check_tol("rtol", rtol), _check_tol("atol", atol)
    threads = _check_run_args(backend, threads, chunk_elements)
    rs, cs = Side(ref, ref_dtype, "ref"), Side(cand, cand_dtype, "cand")
    n = int(ref.size)
    ulp = _ulp_plan(rs.dtype, cs.dtype)
    run, chunk_elements = _chunk_runner(rs, cs, rtol, atol, ulp, backend, chunk_elements)
    extras = {name: factory() for name, factory in _REGISTRY.items()}
    ranges = [(s, min(s + chunk_elements, n)) for s in range(0, n, chunk_elements)]
    nthreads = threads if n >= PARALLEL_MIN_ELEMENTS else 1
    tot = Totals()
    for (s, e), part in zip(ranges, _ordered(run, ranges, nthreads), strict=True):
        tot.add(part, s)
        if extras:
            r64, c64 = rs.widened(s, e), cs.widened(s, e)
            for m in extras.values():
                m.update(r64, c64)
    extra = {name: float(m.result()) for name, m in extras.items()}
    if sums_need_rescaling(tot):
        tot.sums, tot.scale_exp = rescaled_sums(rs, cs, n, min(chunk_elements, DEFAULT_CHUNK_ELEMENTS_NUMPY))
    return _finish(tot, n, ref.shape, rs.value, cs.value, rtol, atol, ulp, extra)


#: One chunk's result from :func:`chunk_partials`: its first element, its partials, and the values
#: ``{flat index: (reference, candidate)}`` at the positions it names (its worst elements).
ChunkPartial = tuple[int, tuple, dict[int, tuple[float, float]]]


def chunk_layout(ref_dtype: DType, cand_dtype: DType) -> tuple[str, int]:
    """How :func:`compute_metrics` cuts a stage of these dtypes by default: the backend it resolves
    ``"auto"`` to (``"c"`` or ``"numpy"``) and the elements per chunk.

    :func:`chunk_partials` run with these two values wherever the data is (another process or
    machine), folded by :func:`metrics_from_partials`, gives the very metrics ``compute_metrics``
    gives: the same chunks, reduced in the same order.

    >>> from parity.trace.dtypes import DTYPES
    >>> chunk_layout(DTYPES["I32"], DTYPES["I32"])[1] == DEFAULT_CHUNK_ELEMENTS_NUMPY
    True
    """
    _, _, native = _backend_plan(ref_dtype, cand_dtype, _ulp_plan(ref_dtype, cand_dtype), "auto")
    return ("c" if _kernel is not None else "numpy"), (DEFAULT_CHUNK_ELEMENTS if native else DEFAULT_CHUNK_ELEMENTS_NUMPY)


def chunk_partials(ref: np.ndarray, cand: np.ndarray, start: int, end: int, *, ref_dtype: DType | None = None,
                   cand_dtype: DType | None = None, rtol: float, atol: float, backend: str,
                   chunk_elements: int) -> list[ChunkPartial]:
    """The partials of the chunks of elements ``[start, end)`` (C order) of one stage.

    ``start`` is a multiple of ``chunk_elements``, and so is ``end`` unless it is the stage's end;
    ``backend`` and ``chunk_elements`` are those of :func:`chunk_layout` when the result must equal
    :func:`compute_metrics`'s. Fold every range's partials, in order, with :func:`metrics_from_partials`.

    Raises:
        UsageError: the range is not made of whole chunks, or an argument :func:`compute_metrics` refuses.
    """
    ref, cand = _as_arrays(ref, cand)
    rtol, atol = _check_tol("rtol", rtol), _check_tol("atol", atol)
    _check_run_args(backend, 1, chunk_elements)
    n = int(ref.size)
    if not (0 <= start <= end <= n and start % chunk_elements == 0 and (end % chunk_elements == 0 or end == n)):
        raise UsageError(f"elements [{start}, {end}) of a stage of {n} are not whole chunks of {chunk_elements}")
    rs, cs = Side(ref, ref_dtype, "ref"), Side(cand, cand_dtype, "cand")
    run, size = _chunk_runner(rs, cs, rtol, atol, _ulp_plan(rs.dtype, cs.dtype), backend, chunk_elements)
    out = []
    for s in range(start, end, size):
        p = run(s, min(s + size, end))
        at = {s + i: (rs.value(s + i), cs.value(s + i)) for i in (p[8], p[10], p[12]) if i >= 0}
        out.append((s, tuple(p), at))
    return out


def metrics_from_partials(parts: Iterable[ChunkPartial], shape: tuple[int, ...], *, ref_dtype: DType,
                          cand_dtype: DType, rtol: float, atol: float,
                          rescale: Callable[[], tuple[list[float], int]]) -> StageMetrics:
    """The :class:`StageMetrics` of a stage from the :func:`chunk_partials` of all its chunks, in order.

    ``rescale()`` is called only when the float64 sums over- or underflowed; it returns
    :func:`stage_rescaled_sums` of the stage (a second pass over the data, wherever it is).

    >>> from parity.trace.dtypes import DTYPES
    >>> r = np.arange(10.0); c = r + 0.5 * (r == 7)
    >>> kw = dict(rtol=0.0, atol=0.1, backend="numpy", chunk_elements=4)
    >>> parts = chunk_partials(r, c, 0, 4, **kw) + chunk_partials(r, c, 4, 10, **kw)
    >>> m = metrics_from_partials(parts, r.shape, ref_dtype=DTYPES["F64"], cand_dtype=DTYPES["F64"],
    ...                           rtol=0.0, atol=0.1, rescale=lambda: ([0.0] * 4, 0))
    >>> m.max_abs_index, m.max_abs_cand, m == compute_metrics(r, c, **kw)
    ((7,), 7.5, True)
    """
    tot = Totals()
    values: dict[int, tuple[float, float]] = {}
    for s, p, at in parts:
        tot.add(p, s)
        values.update(at)
    n = int(np.prod(shape, dtype=np.int64))
    if sums_need_rescaling(tot):
        tot.sums, tot.scale_exp = rescale()
    return _finish(tot, n, tuple(shape), lambda f: values[f][0], lambda f: values[f][1], _check_tol("rtol", rtol),
                   _check_tol("atol", atol), _ulp_plan(ref_dtype, cand_dtype), {})


def stage_rescaled_sums(ref: np.ndarray, cand: np.ndarray, *, ref_dtype: DType | None = None,
                        cand_dtype: DType | None = None, chunk_elements: int) -> tuple[list[float], int]:
    """The four sums of a stage over values scaled by a power of two, and that power, as
    :func:`compute_metrics` recomputes them when the plain sums over- or underflow.

    >>> stage_rescaled_sums(np.array([1e200, 2e200]), np.array([1e200, 2e200]), chunk_elements=1 << 20)[1]
    666
    """
    ref, cand = _as_arrays(ref, cand)
    rs, cs = Side(ref, ref_dtype, "ref"), Side(cand, cand_dtype, "cand")
    return rescaled_sums(rs, cs, int(ref.size), min(chunk_elements, DEFAULT_CHUNK_ELEMENTS_NUMPY))


def _as_arrays(ref: Any, cand: Any) -> tuple[np.ndarray, np.ndarray]:
    ref = ref if isinstance(ref, np.ndarray) else np.asarray(ref)
    cand = cand if isinstance(cand, np.ndarray) else np.asarray(cand)
    if ref.shape != cand.shape:
        raise UsageError(f"reference shape {ref.shape} and candidate shape {cand.shape} differ")
    return ref, cand


def _check_run_args(backend: str, threads: int | None, chunk_elements: int | None) -> int:
    """Check ``backend``, ``threads`` and ``chunk_elements``; the thread count to use."""
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
    return threads


def _ulp_plan(rd: DType, cd: DType) -> tuple:
    """How ULP distances are measured for these dtypes (see :data:`~parity.compare.chunks.ULP_NONE`)."""
    if not (is_float(rd) and is_float(cd)):
        return (ULP_NONE,)
    if rd == cd:
        return (ULP_BITS, rd.itemsize * 8)
    coarse = min((rd, cd), key=lambda t: (t.mantissa_bits, -_EMIN[t.code]))
    return (ULP_SPACING, coarse.mantissa_bits, _EMIN[coarse.code])


def _backend_plan(rd: DType, cd: DType, ulp: tuple, backend: str) -> tuple[bool, bool, bool]:
    """(exact 64-bit integer inequality, use the C kernel, the kernel reads both dtypes natively)."""
    int_exact = not is_float(rd) and not is_float(cd) and (rd.itemsize == 8 or cd.itemsize == 8)
    use_c = _kernel is not None and backend != "numpy" and not int_exact and not (
        ulp[0] == ULP_BITS and rd.code not in _KCODE)
    return int_exact, use_c, use_c and rd.code in _KCODE and cd.code in _KCODE


def _chunk_runner(rs: Side, cs: Side, rtol: float, atol: float, ulp: tuple, backend: str,
                  chunk_elements: int | None) -> tuple[Callable[[int, int], tuple], int]:
    """``run(start, end)`` giving the partials of one chunk (C kernel or NumPy), and the chunk size."""
    rd, cd = rs.dtype, cs.dtype
    int_exact, use_c, native = _backend_plan(rd, cd, ulp, backend)
    if chunk_elements is None:
        chunk_elements = DEFAULT_CHUNK_ELEMENTS if native else DEFAULT_CHUNK_ELEMENTS_NUMPY
    size = chunk_elements
    local = threading.local()

    def work() -> Work:
        w = getattr(local, "w", None)
        if w is None:
            w = local.w = Work(size)
        return w

    kulp = ulp if len(ulp) == 3 else (ulp[0], 0, 0)
    if native:
        rcode, ccode = _KCODE[rd.code], _KCODE[cd.code]

        def run(s: int, e: int) -> tuple:
            return _kernel.chunk(rs.raw(s, e).view(rs.bits_dtype), cs.raw(s, e).view(cs.bits_dtype),
                                 rcode, ccode, rtol, atol, *kulp)
    elif use_c:

        def run(s: int, e: int) -> tuple:
            w = work()
            return _kernel.chunk(w.widen(rs.raw(s, e), rd, 0), w.widen(cs.raw(s, e), cd, 1), 0, 0, rtol, atol, *kulp)
    else:

        def run(s: int, e: int) -> tuple:
            w = work()
            rraw, craw = rs.raw(s, e), cs.raw(s, e)
            r64, c64 = w.widen(rraw, rd, 0), w.widen(craw, cd, 1)
            rbits = rraw.view(rs.bits_dtype) if ulp[0] == ULP_BITS else None
            cbits = craw.view(cs.bits_dtype) if ulp[0] == ULP_BITS else None
            # exact integer inequality; w.b[6] is not written by numpy_chunk before it reads int_ne
            int_ne = np.not_equal(rraw, craw, out=w.b[6][: e - s]) if int_exact else None
            return numpy_chunk(r64, c64, rtol, atol, ulp, w, rbits, cbits, int_ne)
    return run, chunk_elements


def unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``np.unravel_index(flat, shape)`` as a tuple of ints, for a valid ``flat`` (C order), in
    plain Python: a stage's worst index is one of these, and NumPy's call costs microseconds.

    >>> unravel(7, (2, 3, 4)), unravel(5, (8,)), unravel(0, ())
    ((0, 1, 3), (5,), ())
    """
    if len(shape) == 1:
        return (int(flat),)
    out = []
    for d in reversed(shape):
        flat, r = divmod(int(flat), d)
        out.append(r)
    return tuple(reversed(out))


def _finish(tot: Totals, n: int, shape: tuple, rvalue: Callable[[int], float], cvalue: Callable[[int], float],
            rtol: float, atol: float, ulp: tuple, extra: dict[str, float]) -> StageMetrics:
    both_nan, mismatched, ref_nan, cand_nan, ref_inf, cand_inf, nan_mm, inf_mm = tot.counts
    s_dd, s_rr, s_cc, s_rc = tot.sums
    n_err = n - both_nan

    def at(flat: int) -> tuple[tuple[int, ...] | None, float, float]:
        if flat < 0:
            return None, 0.0, 0.0
        return unravel(flat, shape), rvalue(flat), cvalue(flat)

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
    worst_idx = None if worst_flat < 0 else unravel(worst_flat, shape)
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
        max_ulp=None if ulp[0] == ULP_NONE else float(tot.ulp),
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
