"""Diagnoses: each kind recognised from the data, with its evidence; none for plain noise."""

import math

import numpy as np
import pytest

import parity
from parity import compare_traces
from parity.localize.diagnose import MAX_SAMPLE, classify_factor, diagnose_stage
from parity.trace.reader import Stage


def _stage(arr, dtype=None, axes=None, key="x"):
    arr = np.asarray(arr)
    code = dtype or {"float64": "F64", "float32": "F32", "float16": "F16"}[arr.dtype.name]
    return Stage(key, "tensor", code, tuple(arr.shape), axes=axes)


def _dx(ref, cand, metrics=None, **kw):
    return diagnose_stage(_stage(ref, **kw), _stage(cand, **kw), ref, cand, metrics)


@pytest.fixture
def r(rng):
    return rng.normal(size=(6, 5))


@pytest.mark.parametrize("factor, likely", [
    (1e-10, "power of ten (10^-10)"), (1e3, "power of ten (10^3)"), (2.0 ** -8, "power of two (2^-8)"),
    (math.pi / 180, "degrees → radians (π/180)"), (180 / math.pi, "radians → degrees (180/π)"),
    (0.529177210903, "bohr → ångström"),
])
def test_unit_like_factors_are_flagged(r, factor, likely):
    (d,) = _dx(r, r * factor)
    assert d.kind == "scale" and d.evidence["likely"] == likely
    assert d.evidence["factor"] == pytest.approx(factor, rel=1e-12)
    assert d.summary.startswith(f"candidate = reference × {factor:.3e} (residual")
    assert "likely a unit mismatch" in d.summary


def test_a_noisy_scale_reports_its_residual(rng, r):
    cand = r * 1e-10 * (1 + 0.006 * rng.normal(size=r.shape))
    (d,) = _dx(r, cand)
    assert d.kind == "scale" and 0.002 < d.evidence["residual"] < 0.012
    assert "(residual 0." in d.summary and "%" in d.summary


def test_other_factors_are_reported_without_a_unit(r):
    (d,) = _dx(r, r * 1.7)
    assert d.kind == "scale" and "likely" not in d.evidence and d.summary == (
        "candidate = reference × 1.700e+00 (residual 0 %)")
    assert classify_factor(1.7) is None and classify_factor(-1000.0) == "power of ten (10^3)"


def test_sign_flip(r):
    (d,) = _dx(r, -r)
    assert d.kind == "sign_flip" and d.summary.startswith("candidate = −reference")


def test_zero_and_constant_output(r):
    (d,) = _dx(r, np.zeros_like(r))
    assert d.kind == "zero" and "never written" in d.summary
    (d,) = _dx(r, np.full_like(r, 0.25))
    assert d.kind == "constant" and "one value (0.25)" in d.summary


def test_transpose_with_named_axes(rng):
    ref = rng.normal(size=(4, 4))
    (d,) = diagnose_stage(_stage(ref, axes=("rows", "cols")), _stage(ref.T, axes=("rows", "cols")), ref, ref.T.copy(), None)
    assert d.kind == "transpose" and "rows and columns swapped" in d.summary
    assert "candidate layout ['cols', 'rows'] vs reference ['rows', 'cols']" in d.summary


def test_axis_permutation_of_a_3d_stage_and_a_flat_square_dump(rng):
    ref = rng.normal(size=(3, 3, 3))
    cand = np.ascontiguousarray(np.transpose(ref, (2, 0, 1)))
    (d,) = _dx(ref, cand)
    assert d.kind == "transpose" and d.evidence["permutation"] == [2, 0, 1]
    m = rng.normal(size=(5, 5))
    (d,) = _dx(m.reshape(-1), m.T.reshape(-1))  # e.g. an APRT dump of a matrix
    assert d.kind == "transpose" and "read as a 5×5 matrix" in d.summary


def test_shape_mismatch_with_same_count_can_still_be_a_transpose(rng):
    ref = rng.normal(size=(2, 3))
    (d,) = _dx(ref, ref.T.copy())
    assert d.kind == "transpose"


def test_other_permutations(rng):
    ref = rng.normal(size=20)
    cand = ref[rng.permutation(20)]
    (d,) = _dx(ref, cand)
    assert d.kind == "permutation"


@pytest.mark.parametrize("axis, delta", [(0, 1), (0, -1), (1, 1)])
def test_off_by_one_shift(rng, axis, delta):
    ref = rng.normal(size=(40, 30))
    cand = np.roll(ref, delta, axis=axis)
    (d,) = diagnose_stage(_stage(ref, axes=("seq", "hidden")), _stage(cand, axes=("seq", "hidden")), ref, cand, None)
    assert d.kind == "shift" and d.evidence == pytest.approx({**d.evidence, "axis": axis, "shift": delta})
    assert f"shifted by {delta:+d} along \"{('seq', 'hidden')[axis]}\"" in d.summary


def test_rounding_noise_of_the_stored_dtype(rng):
    ref = rng.normal(size=100).astype(np.float32)
    cand = np.nextafter(ref, np.float32(np.inf))  # one ulp away everywhere
    (d,) = _dx(ref, cand)
    assert d.kind == "rounding" and "units of rounding of float32" in d.summary and d.evidence["max_rounding_units"] <= 2


def test_nonfinite_output(rng):
    ref = rng.normal(size=50)
    cand = ref.copy()
    cand[[7, 9]] = np.nan
    cand[11] = np.inf
    d = _dx(ref, cand)[0]
    assert d.kind == "nonfinite" and d.evidence["nan"] == 2 and d.evidence["inf"] == 1
    assert d.evidence["first_index"] == [7]


def test_noise_gets_no_diagnosis(rng):
    ref = rng.normal(size=(20, 20))
    assert _dx(ref, ref + 0.1 * rng.normal(size=ref.shape)) == []


def test_large_stages_are_subsampled_and_still_diagnosed(rng):
    n = 4 * MAX_SAMPLE + 3
    ref = rng.normal(size=n).astype(np.float32)
    (d,) = _dx(ref, (ref * np.float32(1000)).astype(np.float32))
    assert d.kind == "scale" and d.evidence["likely"] == "power of ten (10^3)"


# -- trace level ----------------------------------------------------------------------------------


def _record(path, stages):
    with parity.record(path):
        for k, v in stages:
            parity.tap(k, v)
    return str(path)


def test_first_stage_where_nan_appears(tmp_path, rng):
    a, b, c = rng.normal(size=5), rng.normal(size=5), rng.normal(size=5)
    ref = _record(tmp_path / "r.trace", [("a", a), ("b", b), ("c", c)])
    b2, c2 = b * 1.5, c.copy()
    c2[2] = np.nan
    b2[0] = np.nan
    cand = _record(tmp_path / "c.trace", [("a", a), ("b", b2), ("c", c2)])
    diff = compare_traces(ref, cand)
    kinds = {s.key: [d.kind for d in s.diagnoses] for s in diff.divergent}
    assert "first_nonfinite" in kinds["b"] and "first_nonfinite" not in kinds["c"]
    (d,) = [x for x in diff["b"].diagnoses if x.kind == "first_nonfinite"]
    assert d.summary.startswith("NaN first appears in the candidate at this stage (1 NaN")


def test_vector_stages_with_an_index_forming_a_transposed_matrix(tmp_path, rng):
    m = rng.normal(size=(4, 4))
    ref = _record(tmp_path / "r.trace", [(f"R[i={i}]", m[i]) for i in range(4)])
    cand = _record(tmp_path / "c.trace", [(f"R[i={i}]", m[:, i].copy()) for i in range(4)])
    diff = compare_traces(ref, cand)
    assert diff.first_divergence.key == "R[i=0]"
    (d,) = [x for x in diff.first_divergence.diagnoses if x.kind == "transpose"]
    assert "R[i=0] … R[i=3] form a 4×4 matrix" in d.summary


def test_errors_within_the_printed_precision_of_a_log(tmp_path):
    vals = [math.pi * 10 ** k for k in range(-3, 4)]
    (tmp_path / "c.log").write_text("TRACE_C: v=" + " ".join("%g" % v for v in vals) + "\nTRACE_C: w=1.23457\n")
    (tmp_path / "py.log").write_text("TRACE_PY: v=" + " ".join(repr(v) for v in vals) + "\nTRACE_PY: w=1.5\n")
    from parity.importers import import_files
    ref = import_files([tmp_path / "c.log"], tmp_path / "c.trace", prefixes=["TRACE_C"]).path
    cand = import_files([tmp_path / "py.log"], tmp_path / "p.trace", prefixes=["TRACE_PY"]).path
    assert parity.load_trace(ref).meta["printed_digits"] == 6
    diff = compare_traces(ref, cand)
    (d,) = diff["v"].diagnoses
    assert d.kind == "rounding" and "printed precision (6 significant digits" in d.summary
    assert not any(x.kind == "rounding" for x in diff["w"].diagnoses)  # 1.5 vs 1.23457 is no print rounding


def test_a_lagging_vector_with_a_fresh_first_element_is_a_shift(rng):
    ref = rng.normal(size=64)
    cand = np.concatenate([[0.0], ref[:-1]])  # candidate[i] = reference[i-1]: not a permutation
    (d,) = _dx(ref, cand)
    assert d.kind == "shift" and d.evidence["shift"] == 1 and "candidate[i] = reference[i-1]" in d.summary
