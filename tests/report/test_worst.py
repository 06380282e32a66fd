"""worst_elements: the top-k absolute errors with N-d indices, streaming, deterministic."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from parity.errors import UsageError
from parity.report import worst_elements
from parity.report.worst import element_errors
from parity.trace.dtypes import DTYPES


def brute_force(ref, cand, k):
    r, c = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    err = element_errors(r, c)
    order = sorted(range(err.size), key=lambda i: (-err[i], i))
    return [(tuple(int(j) for j in np.unravel_index(i, ref.shape)), float(err[i])) for i in order[:k] if err[i] > 0]


def test_example_indices_values_and_order():
    ref = np.zeros((3, 4), dtype=np.float32)
    cand = ref.copy()
    cand[2, 1], cand[0, 3], cand[1, 1] = 5.0, -2.0, 0.5
    got = worst_elements(ref, cand, k=2)
    assert [(w.index, w.ref, w.cand, w.abs_err, w.rel_err) for w in got] == [
        ((2, 1), 0.0, 5.0, 5.0, math.inf), ((0, 3), 0.0, -2.0, 2.0, math.inf)]
    assert worst_elements(ref, ref, k=5) == []  # identical: nothing to list


def test_relative_error_and_to_dict():
    w = worst_elements(np.array([2.0, 4.0]), np.array([2.5, 4.0]), k=3)
    assert len(w) == 1 and w[0].index == (0,) and w[0].rel_err == 0.25
    assert w[0].to_dict() == {"index": [0], "ref": 2.0, "cand": 2.5, "abs_err": 0.5, "rel_err": 0.25}


def test_nan_and_inf_rules():
    ref = np.array([np.nan, np.inf, 1.0, np.nan, -np.inf, 3.0])
    cand = np.array([np.nan, np.inf, np.nan, 1.0, np.inf, 3.5])
    got = worst_elements(ref, cand, k=10)
    # NaN vs NaN and inf vs inf agree; one-sided NaN and +inf vs -inf rank first (infinite error), in index order.
    assert [w.index for w in got] == [(2,), (3,), (4,), (5,)]
    assert [w.abs_err for w in got] == [math.inf, math.inf, math.inf, 0.5]
    assert got[0].to_dict()["cand"] == "nan" and got[0].to_dict()["abs_err"] == "inf"


def test_ties_go_to_the_lowest_index_whatever_the_chunking():
    ref = np.zeros(1000)
    cand = np.ones(1000)  # every element ties
    for chunk in (1, 7, 64, 1000, 5000):
        assert [w.index for w in worst_elements(ref, cand, k=5, chunk=chunk)] == [(0,), (1,), (2,), (3,), (4,)]


def test_streaming_matches_one_pass_on_a_large_stage(rng):
    ref = rng.normal(size=(64, 33, 17)).astype(np.float32)
    cand = ref + rng.normal(scale=1e-3, size=ref.shape).astype(np.float32)
    cand[10, 20, 5] += 1.0
    one = worst_elements(ref, cand, k=25, chunk=ref.size)
    many = worst_elements(ref, cand, k=25, chunk=997)
    assert one == many
    assert one[0].index == (10, 20, 5) and cand[one[0].index] == np.float32(one[0].cand)
    assert [(w.index, w.abs_err) for w in one] == brute_force(ref, cand, 25)


def test_bf16_stored_as_bits_and_scalars():
    bits_ref = np.array([0x3F80, 0x4000], dtype=np.uint16)  # 1.0, 2.0 in bfloat16
    bits_cand = np.array([0x3F80, 0x4040], dtype=np.uint16)  # 1.0, 3.0
    got = worst_elements(bits_ref, bits_cand, k=2, ref_dtype=DTYPES["BF16"], cand_dtype=DTYPES["BF16"])
    assert [(w.index, w.ref, w.cand) for w in got] == [((1,), 2.0, 3.0)]
    scalar = worst_elements(np.float64(1.0), np.float64(1.5))
    assert [(w.index, w.abs_err) for w in scalar] == [((), 0.5)]


def test_bad_input_is_a_clear_error():
    with pytest.raises(UsageError, match=r"one shape, got \(2,\) and \(3,\)"):
        worst_elements(np.zeros(2), np.zeros(3))
    with pytest.raises(UsageError, match="k >= 1"):
        worst_elements(np.zeros(2), np.zeros(2), k=0)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), k=st.integers(1, 12), chunk=st.integers(1, 40))
def test_property_equals_brute_force(data, k, chunk):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=6))
    elems = st.floats(-1e6, 1e6, width=32) | st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0])
    ref = data.draw(hnp.arrays(np.float32, shape, elements=elems))
    cand = data.draw(hnp.arrays(np.float32, shape, elements=elems))
    got = worst_elements(ref, cand, k=k, chunk=chunk)
    assert [(w.index, w.abs_err) for w in got] == brute_force(ref, cand, k)
