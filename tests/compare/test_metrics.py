"""Tests of parity.compare.metrics: every metric against a direct NumPy/Python oracle, the NaN/Inf
rules, tolerance boundaries, mixed dtypes, integers, chunk/thread/backend invariance, serialisation."""

from __future__ import annotations

import doctest
import json
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parity.compare import metrics as M
from parity.compare.metrics import StageMetrics, compute_metrics
from parity.errors import UsageError
from parity.trace.dtypes import DTYPES, dtype_of_array

BACKENDS = ["numpy"] + (["c"] if M.kernel_available() else [])
FLOAT_NP = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
EMIN = {"F64": -1022, "F32": -126, "BF16": -126, "F16": -14, "F8_E4M3": -6, "F8_E5M2": -14}
EXACT_FIELDS = ("count", "mismatched", "mismatched_fraction", "max_abs_err", "max_abs_index", "max_abs_ref",
                "max_abs_cand", "max_rel_err", "max_rel_index", "max_rel_ref", "max_rel_cand", "max_ulp",
                "worst_fail_index", "ref_nan", "cand_nan", "ref_inf", "cand_inf", "nan_mismatch", "inf_mismatch",
                "rtol", "atol")
SUM_FIELDS = ("rms_err", "cosine", "sqnr_db")


# ------------------------------------------------------------------------------------------------
# helpers


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def close(a: float, b: float, rel: float = 1e-9) -> bool:
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        return same(a, b)
    return abs(a - b) <= rel * max(abs(a), abs(b)) + 1e-300


def assert_same_metrics(a: StageMetrics, b: StageMetrics, sums_rel: float = 1e-9, sqnr_abs: float = 1e-6) -> None:
    for f in EXACT_FIELDS:
        assert same(getattr(a, f), getattr(b, f)), (f, getattr(a, f), getattr(b, f))
    assert close(a.rms_err, b.rms_err, sums_rel), (a.rms_err, b.rms_err)
    assert close(a.cosine, b.cosine, sums_rel) or abs(a.cosine - b.cosine) < 1e-12, (a.cosine, b.cosine)
    if math.isfinite(a.sqnr_db) and math.isfinite(b.sqnr_db):
        assert abs(a.sqnr_db - b.sqnr_db) <= sqnr_abs, (a.sqnr_db, b.sqnr_db)
    else:
        assert same(a.sqnr_db, b.sqnr_db), (a.sqnr_db, b.sqnr_db)


def widen(arr: np.ndarray, code: str | None = None) -> np.ndarray:
    d = DTYPES[code] if code else dtype_of_array(arr)
    if d.code == "BF16" and arr.dtype == np.uint16:
        return (arr.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return arr.astype(np.float64)


def key(bits: int, width: int) -> int:
    sign = bits >> (width - 1)
    mag = bits & ((1 << (width - 1)) - 1)
    return -mag if sign else mag


def oracle(ref: np.ndarray, cand: np.ndarray, rcode: str, ccode: str, rtol: float, atol: float) -> dict:
    """The contract, written element by element in the most direct way."""
    r = widen(ref, rcode).ravel()
    c = widen(cand, ccode).ravel()
    shape = ref.shape
    n = r.size
    both_float = DTYPES[rcode].kind == "f" and DTYPES[ccode].kind == "f"
    out = dict(count=n, ref_nan=int(np.isnan(r).sum()), cand_nan=int(np.isnan(c).sum()),
               ref_inf=int(np.isinf(r).sum()), cand_inf=int(np.isinf(c).sum()))
    abs_err, rel_err, excess, ulps = [], [], [], []
    nan_mm = inf_mm = mism = 0
    first_nan = None
    finite_pairs = []
    n_err = 0
    rbits = ref.ravel().view(np.dtype(DTYPES[rcode].bits)) if both_float else None
    cbits = cand.ravel().view(np.dtype(DTYPES[ccode].bits)) if both_float else None
    for i in range(n):
        ri, ci = float(r[i]), float(c[i])
        if math.isnan(ri) and math.isnan(ci):
            continue
        n_err += 1
        if math.isnan(ri) or math.isnan(ci):
            nan_mm += 1
            mism += 1
            if first_nan is None:
                first_nan = i
            continue
        if math.isinf(ri) or math.isinf(ci):
            if ri == ci:
                abs_err.append((0.0, i))
                rel_err.append((0.0, i))
                ulps.append(0.0)
            else:
                inf_mm += 1
                mism += 1
                abs_err.append((math.inf, i))
                rel_err.append((math.inf, i))
                excess.append((math.inf, i))
                ulps.append(math.inf)
            continue
        d = abs(ci - ri)
        bound = atol + rtol * abs(ri)
        if d > bound:
            mism += 1
            excess.append((d - bound, i))
        abs_err.append((d, i))
        rel_err.append((0.0 if d == 0 else math.inf if ri == 0 else d / abs(ri), i))
        finite_pairs.append((ri, ci))
        if both_float:
            if rcode == ccode:
                w = DTYPES[rcode].itemsize * 8
                ulps.append(float(abs(key(int(rbits[i]), w) - key(int(cbits[i]), w))))
            else:
                coarse = min(DTYPES[rcode], DTYPES[ccode], key=lambda t: t.mantissa_bits)
                e = EMIN[coarse.code] if ri == 0 else max(math.frexp(abs(ri))[1] - 1, EMIN[coarse.code])
                ulps.append(d * 2.0 ** (coarse.mantissa_bits - e))

    # sums of squares/products, exactly rounded, over values scaled by 2**-E (no over/underflow)
    top = max((max(abs(a), abs(b)) for a, b in finite_pairs), default=0.0)
    E = math.frexp(top)[1] if top else 0
    sc = [(math.ldexp(a, -E), math.ldexp(b, -E)) for a, b in finite_pairs]
    sdd = math.fsum((b - a) ** 2 for a, b in sc)
    srr = math.fsum(a * a for a, b in sc)
    scc = math.fsum(b * b for a, b in sc)
    src = math.fsum(a * b for a, b in sc)

    def first_max(pairs):
        best = None
        for v, i in pairs:
            if best is None or v > best[0]:
                best = (v, i)
        return best

    def idx(flat):
        return None if flat is None else tuple(int(x) for x in np.unravel_index(flat, shape))

    out.update(nan_mismatch=nan_mm, inf_mismatch=inf_mm, mismatched=mism)
    out["mismatched_fraction"] = mism / n if n else 0.0
    if nan_mm:
        out.update(max_abs_err=math.nan, max_rel_err=math.nan, rms_err=math.nan, sqnr_db=math.nan)
        out["max_abs_index"] = out["max_rel_index"] = out["worst_fail_index"] = idx(first_nan)
        out["max_abs_ref"] = out["max_rel_ref"] = float(r[first_nan])
        out["max_abs_cand"] = out["max_rel_cand"] = float(c[first_nan])
    else:
        for name, pairs in (("abs", abs_err), ("rel", rel_err)):
            b = first_max(pairs)
            out[f"max_{name}_err"] = b[0] if b else 0.0
            out[f"max_{name}_index"] = idx(b[1]) if b else None
            out[f"max_{name}_ref"] = float(r[b[1]]) if b else 0.0
            out[f"max_{name}_cand"] = float(c[b[1]]) if b else 0.0
        b = first_max(excess)
        out["worst_fail_index"] = idx(b[1]) if b else None
        if inf_mm:
            out["rms_err"], out["sqnr_db"] = math.inf, -math.inf
        else:
            try:
                out["rms_err"] = math.ldexp(math.sqrt(sdd / n_err), E) if n_err else 0.0
            except OverflowError:
                out["rms_err"] = math.inf
            out["sqnr_db"] = (math.inf if sdd == 0 else -math.inf if srr == 0
                              else 10 * math.log10(srr / sdd))
    if srr == 0 and scc == 0:
        out["cosine"] = 1.0
    elif srr == 0 or scc == 0:
        out["cosine"] = 0.0
    else:
        out["cosine"] = max(-1.0, min(1.0, src / (math.sqrt(srr) * math.sqrt(scc))))
    out["max_ulp"] = (max(ulps) if ulps else 0.0) if both_float else None
    return out


def check_against_oracle(m: StageMetrics, o: dict) -> None:
    for f, v in o.items():
        got = getattr(m, f)
        if f in ("rms_err", "cosine"):
            assert close(got, v, 1e-9) or abs(got - v) < 1e-12, (f, got, v)
        elif f == "sqnr_db":
            assert (abs(got - v) < 1e-6) if (math.isfinite(got) and math.isfinite(v)) else same(got, v), (f, got, v)
        else:
            assert same(got, v), (f, got, v)


def specials(code: str) -> list[float]:
    fi = ml_dtypes.finfo(FLOAT_NP[code]) if code in ("BF16", "F8_E4M3", "F8_E5M2") else np.finfo(FLOAT_NP[code])
    out = [0.0, -0.0, float(fi.smallest_subnormal), -float(fi.smallest_subnormal), float(fi.smallest_normal),
           float(fi.max), -float(fi.max), 1.0, -1.0, math.nan]
    if code != "F8_E4M3":  # float8_e4m3fn has no infinities
        out += [math.inf, -math.inf]
    return out


def make_pair(rng: np.random.Generator, shape, rcode: str, ccode: str, p_special: float = 0.05):
    n = int(np.prod(shape, dtype=np.int64))
    scale = 10.0 ** rng.uniform(-2, 2)
    r = rng.standard_normal(n) * scale
    noise = rng.standard_normal(n) * scale * 10.0 ** rng.uniform(-6, -1)
    c = r + noise * (rng.random(n) < 0.7)
    for arr, code in ((r, rcode), (c, ccode)):
        sp = specials(code)
        mask = rng.random(n) < p_special
        arr[mask] = rng.choice(sp, int(mask.sum()))
    # equal specials at the same positions on both sides sometimes
    both = rng.random(n) < p_special / 2
    vals = rng.choice(sorted(set(specials(rcode)) & set(specials(ccode)), key=str), int(both.sum()))
    r[both] = vals
    c[both] = vals
    with np.errstate(over="ignore", invalid="ignore"):
        ra = r.astype(FLOAT_NP[rcode]).reshape(shape)
        ca = c.astype(FLOAT_NP[ccode]).reshape(shape)
    return ra, ca


def compute_all(ref, cand, **kw) -> list[StageMetrics]:
    return [compute_metrics(ref, cand, backend=b, **kw) for b in BACKENDS]


# ------------------------------------------------------------------------------------------------
# property tests against the oracle

FLOAT_CODES = ["F64", "F32", "F16", "BF16"]
SHAPES = st.one_of(
    st.just(()),
    st.just((0,)),
    st.just((3, 0)),
    st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple),
    st.integers(10, 120).map(lambda n: (n,)),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), shape=SHAPES, rcode=st.sampled_from(FLOAT_CODES),
       ccode=st.sampled_from(FLOAT_CODES), same_dtype=st.booleans(), p_special=st.sampled_from([0.0, 0.05, 0.3]),
       tol=st.sampled_from([(0.0, 0.0), (1e-3, 1e-5), (0.0, 1e-2), (0.1, 0.0)]),
       chunk=st.sampled_from([None, 1, 7, 64]))
def test_metrics_match_oracle(seed, shape, rcode, ccode, same_dtype, p_special, tol, chunk):
    if same_dtype:
        ccode = rcode
    rng = np.random.default_rng(seed)
    ref, cand = make_pair(rng, shape, rcode, ccode, p_special)
    rtol, atol = tol
    o = oracle(ref, cand, rcode, ccode, rtol, atol)
    for m in compute_all(ref, cand, rtol=rtol, atol=atol, chunk_elements=chunk):
        check_against_oracle(m, o)
        assert m.passed == (o["mismatched"] == 0)


@pytest.mark.parametrize("rcode,ccode", [("F8_E4M3", "F8_E4M3"), ("F8_E5M2", "F32"), ("F32", "F8_E4M3"),
                                         ("F8_E5M2", "F8_E4M3"), ("F16", "BF16"), ("F64", "F16")])
def test_float8_and_rare_pairs_match_oracle(rcode, ccode, rng):
    for shape in [(0,), (), (50,), (4, 33)]:
        ref, cand = make_pair(rng, shape, rcode, ccode, 0.1)
        o = oracle(ref, cand, rcode, ccode, 1e-2, 1e-3)
        for m in compute_all(ref, cand, rtol=1e-2, atol=1e-3, chunk_elements=16):
            check_against_oracle(m, o)


# ------------------------------------------------------------------------------------------------
# the rules, one by one


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_vs_nan_matches_and_is_excluded(backend):
    ref = np.array([1.0, np.nan, 3.0])
    cand = np.array([1.5, np.nan, 3.0])
    m = compute_metrics(ref, cand, rtol=0, atol=0, backend=backend)
    assert (m.mismatched, m.nan_mismatch, m.ref_nan, m.cand_nan) == (1, 0, 1, 1)
    assert m.max_abs_err == 0.5 and m.max_abs_index == (0,)
    assert m.rms_err == pytest.approx(math.sqrt(0.25 / 2))  # mean over the 2 positions not NaN on both sides
    assert not m.passed


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_never_hides(backend):
    ref = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    cand = np.array([[1e6, 2.0], [np.nan, np.nan]], np.float32)
    ref[1, 1] = np.nan  # NaN vs NaN: a match
    m = compute_metrics(ref, cand, rtol=1e-3, atol=1e-3, backend=backend)
    assert m.nan_mismatch == 1 and m.mismatched == 2
    assert math.isnan(m.max_abs_err) and math.isnan(m.max_rel_err) and math.isnan(m.rms_err)
    assert math.isnan(m.sqnr_db)
    assert m.max_abs_index == m.max_rel_index == m.worst_fail_index == (1, 0)
    assert m.max_abs_ref == 3.0 and math.isnan(m.max_abs_cand)
    assert m.cosine == pytest.approx(np.dot([1, 2], [1e6, 2]) / (math.hypot(1, 2) * math.hypot(1e6, 2)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_nan_mismatch_in_c_order(backend):
    ref = np.zeros((3, 4))
    cand = np.zeros((3, 4))
    cand[2, 0] = np.nan
    ref[1, 3] = np.nan
    m = compute_metrics(ref, cand, rtol=0, atol=0, backend=backend, chunk_elements=5)
    assert m.max_abs_index == (1, 3) and m.nan_mismatch == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_inf_rules(backend):
    inf = np.inf
    ref = np.array([inf, -inf, inf, 5.0, inf, 1.0])
    cand = np.array([inf, -inf, -inf, inf, 7.0, 1.0])
    m = compute_metrics(ref, cand, rtol=1.0, atol=1.0, backend=backend)
    assert m.inf_mismatch == 3 and m.mismatched == 3 and m.nan_mismatch == 0
    assert (m.ref_inf, m.cand_inf) == (4, 4)
    assert m.max_abs_err == inf and m.max_abs_index == (2,)
    assert m.max_rel_err == inf and m.max_rel_index == (2,)
    assert m.worst_fail_index == (2,)
    assert m.rms_err == inf and m.sqnr_db == -inf
    assert m.max_ulp == inf
    # matching infinities alone: error 0
    m = compute_metrics(ref[:2], cand[:2], rtol=0, atol=0, backend=backend)
    assert m.passed and m.max_abs_err == 0 and m.max_abs_index == (0,) and m.rms_err == 0 and m.sqnr_db == inf
    assert m.max_ulp == 0 and m.cosine == 1.0  # no finite position on either side


@pytest.mark.parametrize("backend", BACKENDS)
def test_tolerance_boundary_is_inclusive(backend):
    ref = np.array([1.0, 1.0, -2.0, 0.0])
    # bound = 0.25 + 0.25 * |r|: 0.5, 0.5, 0.75, 0.25 -> differences exactly at the bound pass
    cand = np.array([1.5, 0.5, -1.25, -0.25])
    m = compute_metrics(ref, cand, rtol=0.25, atol=0.25, backend=backend)
    assert m.passed and m.mismatched == 0 and m.worst_fail_index is None
    step = np.abs(cand - ref) * (1 + 2.0**-40)  # just past the bound
    cand2 = ref + np.where(cand >= ref, step, -step)
    assert np.all(np.abs(cand2 - ref) > 0.25 + 0.25 * np.abs(ref))
    m2 = compute_metrics(ref, cand2, rtol=0.25, atol=0.25, backend=backend)
    assert m2.mismatched == 4 and not m2.passed


@pytest.mark.parametrize("backend", BACKENDS)
def test_tolerance_is_asymmetric(backend):
    lo, hi = np.array([80.0]), np.array([90.0])
    # |d| = 10; the bound scales with the reference: 0.12 * 80 = 9.6 fails, 0.12 * 90 = 10.8 passes
    assert not compute_metrics(lo, hi, rtol=0.12, atol=0, backend=backend).passed
    assert compute_metrics(hi, lo, rtol=0.12, atol=0, backend=backend).passed
    assert compute_metrics(lo, hi, rtol=0.125, atol=0, backend=backend).passed  # 10 <= 10 exactly


@pytest.mark.parametrize("backend", BACKENDS)
def test_worst_fail_is_by_excess_not_abs_error(backend):
    ref = np.array([1000.0, 1.0, 3.0])
    cand = np.array([1005.0, 2.0, 3.0])
    m = compute_metrics(ref, cand, rtol=0.01, atol=0.0, backend=backend)
    assert m.max_abs_index == (0,) and m.max_abs_err == 5.0
    assert m.worst_fail_index == (1,) and m.mismatched == 1
    assert m.max_rel_index == (1,) and m.max_rel_err == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_relative_error_rules(backend):
    ref = np.array([0.0, 0.0, 2.0, -4.0])
    cand = np.array([0.0, 1e-30, 3.0, -5.0])
    m = compute_metrics(ref, cand, rtol=0, atol=1, backend=backend)
    assert m.max_rel_err == math.inf and m.max_rel_index == (1,)
    m = compute_metrics(ref[[0, 2, 3]], cand[[0, 2, 3]], rtol=0, atol=1, backend=backend)
    assert m.max_rel_err == 0.5 and m.max_rel_index == (1,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cosine_and_sqnr_special_cases(backend):
    z = np.zeros(4)
    x = np.array([1.0, -2.0, 3.0, 0.5])
    m = compute_metrics(z, z, rtol=0, atol=0, backend=backend)
    assert m.cosine == 1.0 and m.sqnr_db == math.inf and m.rms_err == 0.0
    assert compute_metrics(z, x, rtol=0, atol=10, backend=backend).cosine == 0.0
    assert compute_metrics(x, z, rtol=0, atol=10, backend=backend).cosine == 0.0
    assert compute_metrics(z, x, rtol=0, atol=10, backend=backend).sqnr_db == -math.inf
    m = compute_metrics(x, -x, rtol=0, atol=10, backend=backend)
    assert m.cosine == -1.0
    assert m.sqnr_db == pytest.approx(10 * math.log10(1 / 4))
    m = compute_metrics(x, x, rtol=0, atol=0, backend=backend)
    assert m.cosine == pytest.approx(1.0) and m.sqnr_db == math.inf and m.passed


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_sums_survive_float64_overflow_and_underflow(backend, scale):
    ref = np.array([1.0, 2.0, 0.0, 4.0]) * scale
    cand = np.array([1.0, -2.0, 0.0, 4.5]) * scale
    m = compute_metrics(ref, cand, rtol=0, atol=0, backend=backend)
    unit = compute_metrics(ref / scale, cand / scale, rtol=0, atol=0, backend=backend)
    assert m.cosine == pytest.approx(unit.cosine, rel=1e-12)
    assert m.sqnr_db == pytest.approx(unit.sqnr_db, rel=1e-12)
    assert m.rms_err == pytest.approx(unit.rms_err * scale, rel=1e-12)
    assert m.max_abs_err == 4.0 * scale and m.max_abs_index == (1,)


# ------------------------------------------------------------------------------------------------
# ULP


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("code", ["F64", "F32", "F16", "BF16"])
def test_ulp_same_dtype(backend, code):
    dt = FLOAT_NP[code]
    fi = ml_dtypes.finfo(dt) if code == "BF16" else np.finfo(dt)
    tiny = dt.type(fi.smallest_subnormal)

    def ulp(r, c):
        return compute_metrics(np.array(r, dt), np.array(c, dt), rtol=1, atol=1, backend=backend).max_ulp

    bits_dt = np.dtype(DTYPES[code].bits)
    after_one = (np.array([1.0], dt).view(bits_dt) + 1).view(dt)
    assert ulp([1.0], [1.0]) == 0
    assert ulp([1.0], after_one) == 1
    assert ulp([-1.0], -after_one) == 1
    assert ulp([0.0], [-0.0]) == 0  # +0 and -0 are the same point
    assert ulp([tiny], [-tiny]) == 2  # across zero: -tiny, 0, +tiny
    assert ulp([fi.smallest_normal], [0.0]) == 2.0 ** fi.nmant  # every subnormal in between
    bits = np.array([1.0, 2.0], dt).view(np.dtype(DTYPES[code].bits)).astype(np.int64)
    assert ulp([1.0], [2.0]) == float(bits[1] - bits[0]) == 2.0 ** fi.nmant  # one binade
    assert ulp([-1.0], [1.0]) == 2 * float(bits[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_ulp_float64_extremes(backend):
    big = np.finfo(np.float64).max
    m = compute_metrics(np.array([-big]), np.array([big]), rtol=0, atol=0, backend=backend)
    assert m.max_ulp == float(2 * (2**63 - 2**52 - 1))  # exact distance, beyond int64
    assert m.max_abs_err == math.inf  # the difference overflows float64
    m = compute_metrics(np.array([big, 1.0]), np.array([np.inf, 1.0]), rtol=0, atol=0, backend=backend)
    assert m.max_ulp == math.inf and m.inf_mismatch == 1  # an Inf mismatch is never rounding noise


@pytest.mark.parametrize("backend", BACKENDS)
def test_ulp_mixed_dtypes_uses_coarser_spacing(backend):
    ref = np.array([1.0, 1.0, 0.0, 3.0, 1e-40], np.float32)
    # bf16 spacing at 1.0 is 2^-7; at 3.0 it is 2^-6; near 0 it is bf16's smallest subnormal 2^-133
    cand = np.array([1.0 + 2**-7, 1.0, 2**-133, 3.0 - 2**-6, 1e-40], ml_dtypes.bfloat16)
    m = compute_metrics(ref, cand, rtol=1, atol=1, backend=backend)
    expected = [abs(float(cand[i]) - float(ref[i])) / s
                for i, s in enumerate([2**-7, 2**-7, 2**-133, 2**-6, 2**-133])]
    assert m.max_ulp == max(expected)
    m = compute_metrics(ref[:2], cand[:2], rtol=1, atol=1, backend=backend)
    assert m.max_ulp == 1.0
    m = compute_metrics(cand[:2], ref[:2], rtol=1, atol=1, backend=backend)  # either order: bf16 is coarser
    assert m.max_ulp == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_float_stages_have_no_ulp(backend):
    a = np.arange(5, dtype=np.int32)
    assert compute_metrics(a, a, rtol=0, atol=0, backend=backend).max_ulp is None
    assert compute_metrics(a, a.astype(np.float32), rtol=0, atol=0, backend=backend).max_ulp is None


# ------------------------------------------------------------------------------------------------
# integers and bools


@pytest.mark.parametrize("backend", BACKENDS)
def test_integers_exact(backend):
    ref = np.array([1, 2, 3, -4], np.int32)
    cand = np.array([1, 2, 4, -4], np.int32)
    m = compute_metrics(ref, cand, rtol=0, atol=0, backend=backend)
    assert m.mismatched == 1 and m.max_abs_err == 1.0 and m.max_abs_index == (2,) and m.worst_fail_index == (2,)
    assert compute_metrics(ref, cand, rtol=0, atol=1, backend=backend).passed


@pytest.mark.parametrize("backend", BACKENDS)
def test_int64_beyond_2_53_compared_exactly(backend):
    big = 2**60
    ref = np.array([big, 5], np.int64)
    cand = np.array([big + 1, 5], np.int64)
    m = compute_metrics(ref, cand, rtol=0, atol=0, backend=backend)
    assert m.mismatched == 1 and m.worst_fail_index == (0,)
    assert m.max_abs_err == 0.0  # float64 cannot see the difference; the count still does
    m = compute_metrics(np.array([2**64 - 1], np.uint64), np.array([-1], np.int64), rtol=0, atol=0, backend=backend)
    assert m.mismatched == 1
    m = compute_metrics(ref, cand, rtol=0, atol=2, backend=backend)
    assert m.passed


@pytest.mark.parametrize("backend", BACKENDS)
def test_bool_and_mixed_int_widths(backend):
    ref = np.array([True, False, True])
    cand = np.array([True, True, True])
    m = compute_metrics(ref, cand, rtol=0, atol=0, backend=backend)
    assert m.mismatched == 1 and m.max_abs_index == (1,) and m.max_abs_ref == 0.0 and m.max_abs_cand == 1.0
    m = compute_metrics(np.array([1, 300], np.int16), np.array([1, 300], np.uint16), rtol=0, atol=0, backend=backend)
    assert m.passed and m.count == 2


@pytest.mark.parametrize("rcode,ccode", [("I64", "I64"), ("U8", "I32"), ("BOOL", "U8"), ("I32", "F32"),
                                         ("U64", "I64"), ("I16", "F64")])
def test_integer_stages_match_oracle(rcode, ccode, rng):
    info = {c: np.iinfo(np.dtype(DTYPES[c].numpy)) for c in (rcode, ccode) if DTYPES[c].kind in "iu"}

    def draw(code, n):
        if code == "BOOL":
            return rng.random(n) < 0.5
        if DTYPES[code].kind == "f":
            return rng.integers(-50, 50, n).astype(np.dtype(DTYPES[code].numpy))
        lo, hi = max(info[code].min, -100), min(info[code].max, 100)
        return rng.integers(lo, hi, n, endpoint=True).astype(np.dtype(DTYPES[code].numpy))

    ref = draw(rcode, 300)
    cand = np.where(rng.random(300) < 0.8, ref, draw(ccode, 300)).astype(np.dtype(DTYPES[ccode].numpy))
    for tol in [(0, 0), (0.1, 2)]:
        o = oracle(ref, cand, rcode, ccode, *tol)
        for m in compute_all(ref, cand, rtol=tol[0], atol=tol[1], chunk_elements=37):
            check_against_oracle(m, o)


# ------------------------------------------------------------------------------------------------
# inputs


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_zero_d(backend):
    for shape in [(0,), (2, 0, 3)]:
        for dt in [np.float32, np.int64]:
            m = compute_metrics(np.zeros(shape, dt), np.zeros(shape, dt), rtol=0, atol=0, backend=backend)
            assert m.count == 0 and m.passed and m.mismatched_fraction == 0.0
            assert m.max_abs_err == 0 and m.max_rel_err == 0 and m.rms_err == 0
            assert m.cosine == 1.0 and m.sqnr_db == math.inf
            assert m.max_abs_index is None and m.max_rel_index is None and m.worst_fail_index is None
    m = compute_metrics(np.float32(2.0).reshape(()), np.array(2.5, np.float32), rtol=0, atol=0, backend=backend)
    assert m.count == 1 and m.max_abs_index == () and m.max_abs_err == 0.5 and m.worst_fail_index == ()
    assert m.max_ulp == 2**21


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_nan_on_both_sides(backend):
    a = np.full((2, 3), np.nan, np.float32)
    m = compute_metrics(a, a.copy(), rtol=0, atol=0, backend=backend)
    assert m.passed and m.count == 6 and m.max_abs_index is None and m.max_abs_err == 0.0 and m.rms_err == 0.0
    assert m.max_ulp == 0.0 and m.cosine == 1.0


def test_argument_errors():
    a = np.zeros(3)
    with pytest.raises(UsageError, match="shape"):
        compute_metrics(a, np.zeros(4), rtol=0, atol=0)
    with pytest.raises(UsageError, match="rtol"):
        compute_metrics(a, a, rtol=-1, atol=0)
    with pytest.raises(UsageError, match="atol"):
        compute_metrics(a, a, rtol=0, atol=math.nan)
    with pytest.raises(UsageError, match="backend"):
        compute_metrics(a, a, rtol=0, atol=0, backend="gpu")
    with pytest.raises(UsageError, match="threads"):
        compute_metrics(a, a, rtol=0, atol=0, threads=0)
    with pytest.raises(UsageError, match="chunk_elements"):
        compute_metrics(a, a, rtol=0, atol=0, chunk_elements=0)
    with pytest.raises(UsageError, match="cannot hold"):
        compute_metrics(a, a, ref_dtype=DTYPES["F32"], rtol=0, atol=0)
    with pytest.raises(TypeError):
        compute_metrics(a.astype(complex), a.astype(complex), rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_bit_patterns_equal_ml_dtypes_array(backend, rng):
    ref, cand = make_pair(rng, (40, 7), "BF16", "BF16", 0.05)
    bf = DTYPES["BF16"]
    a = compute_metrics(ref, cand, rtol=1e-2, atol=1e-3, backend=backend)
    b = compute_metrics(ref.view(np.uint16), cand.view(np.uint16), ref_dtype=bf, cand_dtype=bf, rtol=1e-2, atol=1e-3,
                        backend=backend)
    assert a == b
    r32 = ref.astype(np.float32)
    c = compute_metrics(r32, cand.view(np.uint16), cand_dtype=bf, rtol=1e-2, atol=1e-3, backend=backend)
    d = compute_metrics(r32, cand, rtol=1e-2, atol=1e-3, backend=backend)
    assert c == d


@pytest.mark.parametrize("backend", BACKENDS)
def test_memmap_frombuffer_noncontiguous_bigendian(backend, tmp_path, rng):
    ref, cand = make_pair(rng, (64, 48), "F32", "F32", 0.02)
    want = compute_metrics(ref, cand, rtol=1e-4, atol=1e-6, backend=backend)
    path = tmp_path / "cand.f32"
    cand.tofile(path)
    mm = np.memmap(path, np.float32, "r", shape=cand.shape)
    ro = np.frombuffer(ref.tobytes(), np.float32).reshape(ref.shape)
    assert not ro.flags.writeable
    assert compute_metrics(ro, mm, rtol=1e-4, atol=1e-6, backend=backend) == want
    be = compute_metrics(ref.astype(">f4"), cand.astype(">f4"), rtol=1e-4, atol=1e-6, backend=backend)
    assert be == want
    # a transposed (non-contiguous) pair: indices refer to the given shape
    t = compute_metrics(ref.T, cand.T, rtol=1e-4, atol=1e-6, backend=backend, chunk_elements=100)
    tc = compute_metrics(np.ascontiguousarray(ref.T), np.ascontiguousarray(cand.T), rtol=1e-4, atol=1e-6,
                         backend=backend)
    assert_same_metrics(t, tc)
    del mm


@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_stays_bounded(backend, tmp_path):
    import tracemalloc

    n = 6_000_000  # 24 MB per float32 input
    path = tmp_path / "ref.f32"
    np.arange(n, dtype=np.float32).tofile(path)
    ref = np.memmap(path, np.float32, "r", shape=(n,))
    cand = np.ones(n, np.float32)
    tracemalloc.start()
    try:
        m = compute_metrics(ref, cand, rtol=1e-3, atol=0, backend=backend)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert m.count == n and m.mismatched == n - 1
    limit = 1 << 20 if backend == "c" else 8 << 20  # the C kernel copies nothing; NumPy keeps a few chunks
    assert peak < limit, peak
    del ref


# ------------------------------------------------------------------------------------------------
# determinism: chunking, threads, backends, instruction sets


def big_pair(rng, n, rcode, ccode, p_special):
    ref, cand = make_pair(rng, (n,), rcode, ccode, p_special)
    return ref, cand


@pytest.mark.parametrize("rcode,ccode", [("F32", "F32"), ("F64", "F64"), ("F16", "F16"), ("BF16", "BF16"),
                                         ("F32", "BF16"), ("BF16", "F32"), ("F64", "F32"), ("F16", "F64"),
                                         ("F8_E4M3", "F16")])
def test_chunk_size_invariance(rcode, ccode, rng):
    ref, cand = big_pair(rng, 20_011, rcode, ccode, 0.0005)
    for backend in BACKENDS:
        base = compute_metrics(ref, cand, rtol=1e-3, atol=1e-4, backend=backend, chunk_elements=10**9)
        for chunk in [7, 1000, 4096, None]:
            m = compute_metrics(ref, cand, rtol=1e-3, atol=1e-4, backend=backend, chunk_elements=chunk)
            assert_same_metrics(m, base, sums_rel=1e-12, sqnr_abs=1e-9)


@pytest.mark.skipif(not M.kernel_available(), reason="C kernel not built")
@pytest.mark.parametrize("rcode,ccode", [("F32", "F32"), ("F64", "F64"), ("F16", "F16"), ("BF16", "BF16"),
                                         ("F32", "BF16"), ("BF16", "F32"), ("F32", "F64"), ("F64", "BF16"),
                                         ("F16", "F32"), ("BF16", "F16"), ("F8_E5M2", "F32")])
@pytest.mark.parametrize("p_special", [0.0, 0.0002, 0.05])
def test_c_kernel_equals_numpy(rcode, ccode, p_special, rng):
    ref, cand = big_pair(rng, 30_001, rcode, ccode, p_special)
    tol = dict(rtol=1e-3, atol=1e-5)
    want = compute_metrics(ref, cand, backend="numpy", chunk_elements=8_192, **tol)
    got = compute_metrics(ref, cand, backend="c", chunk_elements=8_192, **tol)
    assert_same_metrics(got, want)
    try:  # the baseline (non-AVX2) code gives the same answer
        M._kernel.set_simd(False)
        base = compute_metrics(ref, cand, backend="c", chunk_elements=8_192, **tol)
    finally:
        M._kernel.set_simd(True)
    assert_same_metrics(base, want)


@pytest.mark.skipif(not M.kernel_available(), reason="C kernel not built")
@pytest.mark.parametrize("simd", [True, False])
def test_c_kernel_ties_and_first_index(simd, rng):
    # quantised values: the maxima are reached many times; the first (C-order) index must win
    n = 50_000
    ref = rng.integers(0, 4, n).astype(np.float32)
    cand = ref + rng.integers(0, 2, n).astype(np.float32)
    cand[12_345] = ref[12_345] + 1.0
    try:
        M._kernel.set_simd(simd)
        for chunk in [1000, 4099, None]:
            got = compute_metrics(ref, cand, rtol=0, atol=0.5, backend="c", chunk_elements=chunk)
            want = compute_metrics(ref, cand, rtol=0, atol=0.5, backend="numpy", chunk_elements=chunk)
            assert_same_metrics(got, want)
            first = int(np.argmax(np.abs(cand - ref)))
            assert got.max_abs_index == (first,) and got.worst_fail_index == (first,)
    finally:
        M._kernel.set_simd(True)


def test_thread_count_does_not_change_anything(rng, monkeypatch):
    monkeypatch.setattr(M, "PARALLEL_MIN_ELEMENTS", 1000)
    ref, cand = big_pair(rng, 50_000, "F32", "BF16", 0.001)
    for backend in BACKENDS:
        one = compute_metrics(ref, cand, rtol=1e-2, atol=1e-3, backend=backend, threads=1, chunk_elements=3000)
        for threads in [2, 3]:
            many = compute_metrics(ref, cand, rtol=1e-2, atol=1e-3, backend=backend, threads=threads,
                                   chunk_elements=3000)
            assert many == one  # bit for bit, sums included


def test_backend_c_requires_the_kernel(monkeypatch):
    monkeypatch.setattr(M, "_kernel", None)
    a = np.ones(3)
    with pytest.raises(UsageError, match="not built"):
        compute_metrics(a, a, rtol=0, atol=0, backend="c")
    assert compute_metrics(a, a, rtol=0, atol=0).passed  # auto falls back to NumPy
    assert not M.kernel_available() and M.kernel_simd() is None


# ------------------------------------------------------------------------------------------------
# serialisation, extras


def test_to_dict_from_dict_round_trip():
    ref = np.array([1.0, np.nan, np.inf, 2.0, -np.inf])
    cand = np.array([1.0, 0.0, -np.inf, 2.5, -np.inf])
    for m in [compute_metrics(ref, cand, rtol=0, atol=0), compute_metrics(ref[[0, 2, 3]], cand[[0, 2, 3]], rtol=0,
                                                                          atol=0),
              compute_metrics(np.zeros(0), np.zeros(0), rtol=1e-3, atol=0),
              compute_metrics(np.arange(4), np.arange(4), rtol=0, atol=0)]:
        d = m.to_dict()
        text = json.dumps(d, allow_nan=False)
        back = StageMetrics.from_dict(json.loads(text))
        assert back == m and back.to_dict() == d
        assert d["passed"] == m.passed
        assert all(isinstance(v, list) or v is None for k, v in d.items() if k.endswith("_index"))
    m = compute_metrics(ref, cand, rtol=0, atol=0)
    d = m.to_dict()
    assert d["max_abs_err"] == "nan" and d["sqnr_db"] == "nan" and d["max_ulp"] == "inf"
    assert StageMetrics.from_dict(d).max_abs_index == (1,)
    with pytest.raises(UsageError):
        StageMetrics.from_dict({k: v for k, v in d.items() if k != "count"})
    with pytest.raises(UsageError):
        StageMetrics.from_dict({**d, "cosine": "big"})
    assert hash(StageMetrics.from_dict(d)) == hash(m)


class _MaxSignedErr:
    def __init__(self):
        self.v = -math.inf
        self.n = 0

    def update(self, ref64, cand64):
        assert ref64.dtype == np.float64 and cand64.dtype == np.float64 and ref64.shape == cand64.shape
        self.n += ref64.size
        if ref64.size:
            self.v = max(self.v, float(np.max(cand64 - ref64)))

    def result(self):
        return self.v if self.n else 0.0


def test_registered_metric_lands_in_extra(rng):
    ref, cand = big_pair(rng, 10_000, "F32", "F32", 0.0)
    try:
        M.register_metric("max_signed_err", _MaxSignedErr)
        assert "max_signed_err" in M.registered_metrics()
        with pytest.raises(UsageError):
            M.register_metric("max_signed_err", _MaxSignedErr)
        m = compute_metrics(ref, cand, rtol=0, atol=0, chunk_elements=777)
        assert m.extra["max_signed_err"] == float(np.max(cand.astype(np.float64) - ref.astype(np.float64)))
        assert StageMetrics.from_dict(json.loads(json.dumps(m.to_dict()))) == m
        assert compute_metrics(ref[:0], cand[:0], rtol=0, atol=0).extra == {"max_signed_err": 0.0}
    finally:
        M.unregister_metric("max_signed_err")
    assert compute_metrics(ref, cand, rtol=0, atol=0).extra == {}
    with pytest.raises(UsageError):
        M.register_metric("x", 3)


def test_docstring_example_runs():
    failures, tried = doctest.testmod(M, verbose=False)
    assert tried > 0 and failures == 0
