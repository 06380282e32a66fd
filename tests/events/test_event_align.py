"""The sequence alignment: a minimal edit script (Myers), the patience fallback, block refinement."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from parity.events.align import diff_sequences, refine_block


def _lcs(a, b):
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            dp[i + 1][j + 1] = dp[i][j] + 1 if x == y else max(dp[i][j + 1], dp[i + 1][j])
    return dp[-1][-1]


def _check(a, b, ops):
    i = j = 0
    for tag, i1, i2, j1, j2 in ops:
        assert (i1, j1) == (i, j)
        if tag == "equal":
            assert a[i1:i2] == b[j1:j2]
        elif tag == "delete":
            assert j1 == j2
        else:
            assert tag == "insert" and i1 == i2
        i, j = i2, j2
    assert (i, j) == (len(a), len(b))


seqs = st.lists(st.integers(0, 5), max_size=30)


@settings(max_examples=300, deadline=None)
@given(seqs, seqs)
def test_myers_is_a_minimal_edit_script(a, b):
    ops = diff_sequences(a, b)
    _check(a, b, ops)
    assert sum(i2 - i1 for t, i1, i2, _, _ in ops if t == "equal") == _lcs(a, b)


@settings(max_examples=200, deadline=None)
@given(seqs, seqs)
def test_fallback_past_the_edit_budget_is_still_a_valid_script(a, b):
    _check(a, b, diff_sequences(a, b, max_d=1))


def test_long_logs_with_few_edits():
    a = list(range(50_000))
    b = a[:10] + a[11:30_000] + [-1] + a[30_000:]
    ops = diff_sequences(a, b)
    assert ops == [("equal", 0, 10, 0, 10), ("delete", 10, 11, 10, 10), ("equal", 11, 30_000, 10, 29_999),
                   ("insert", 30_000, 30_000, 29_999, 30_000), ("equal", 30_000, 50_000, 30_000, 50_000)]


def test_refine_pairs_edited_events_of_the_same_kind():
    ka, kb = ["turn", "result", "turn"], ["turn", "turn"]
    sim = {(0, 0): 0.9, (2, 1): 0.8}
    got = refine_block(3, 2, ka.__getitem__, kb.__getitem__, lambda i, j: sim.get((i, j), 0.1))
    assert got == [(0, 0), (1, None), (2, 1)]
    # beyond the matrix budget: greedy pairing by kind, in order
    assert refine_block(3, 2, ka.__getitem__, kb.__getitem__, lambda i, j: 0.5, max_cells=1) == [
        (0, 0), (1, None), (2, 1)]
