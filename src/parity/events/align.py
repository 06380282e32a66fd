"""Sequence alignment of two event logs, fast enough for 100,000-event logs.

Events are compared by an *identity* (kind, turn and normalized content), interned to small
integers, so the alignment diffs two integer sequences:

1. the common prefix and suffix are stripped (linear);
2. the middle is diffed with Myers' O((N+M)·D) algorithm, which is linear when the logs differ
   in few places (D edits);
3. when the logs differ in many places (D above a budget), the middle is split at anchors — the
   identities occurring exactly once on each side, in increasing order on both (the longest
   increasing subsequence, as patience diff does) — and each gap is diffed again;
4. each block of changed events (deleted on one side, inserted on the other) is refined by
   :func:`refine_block`: a true edit-distance alignment (deletion 1, insertion 1, substitution of
   two events of the same kind ``2·(1 - similarity)``) that pairs an edited event with its
   counterpart instead of reporting a deletion plus an insertion.

Never an O(N·M) matrix on the whole logs: the matrix of step 4 is bounded by the block sizes
(``MAX_BLOCK_CELLS``; a greedy pairing by kind beyond).

>>> diff_sequences([1, 2, 3, 4], [1, 3, 4, 5])
[('equal', 0, 1, 0, 1), ('delete', 1, 2, 1, 1), ('equal', 2, 4, 1, 3), ('insert', 4, 4, 3, 4)]
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

__all__ = ["diff_sequences", "refine_block", "MAX_BLOCK_CELLS"]

Opcode = tuple[str, int, int, int, int]
MAX_BLOCK_CELLS = 250_000
_MYERS_MAX_D = 1000


def diff_sequences(a: Sequence[int], b: Sequence[int], *, max_d: int = _MYERS_MAX_D) -> list[Opcode]:
    """Opcodes ``(tag, i1, i2, j1, j2)`` turning ``a`` into ``b``; tags ``equal``, ``delete``, ``insert``
    (a replacement is a ``delete`` followed by an ``insert``), in order, covering both sequences.

    >>> diff_sequences([1, 2, 3], [1, 4, 3])  # 2 replaced by 4
    [('equal', 0, 1, 0, 1), ('delete', 1, 2, 1, 1), ('insert', 2, 2, 1, 2), ('equal', 2, 3, 2, 3)]
    """
    ops: list[Opcode] = []
    _diff(a, 0, len(a), b, 0, len(b), ops, max_d)
    return _merge(ops)


def _merge(ops: list[Opcode]) -> list[Opcode]:
    out: list[Opcode] = []
    for op in ops:
        if op[1] == op[2] and op[3] == op[4]:
            continue
        if out and out[-1][0] == op[0] and out[-1][2] == op[1] and out[-1][4] == op[3]:
            t, i1, _, j1, _ = out[-1]
            out[-1] = (t, i1, op[2], j1, op[4])
        else:
            out.append(op)
    # a delete/insert pair in either order reads better as delete then insert
    i = 0
    while i + 1 < len(out):
        x, y = out[i], out[i + 1]
        if x[0] == "insert" and y[0] == "delete":
            out[i] = ("delete", y[1], y[2], x[3], x[3])
            out[i + 1] = ("insert", y[2], y[2], x[3], x[4])
        i += 1
    return out


def _diff(a: Sequence[int], alo: int, ahi: int, b: Sequence[int], blo: int, bhi: int, ops: list[Opcode],
          max_d: int) -> None:
    # common prefix and suffix
    p = 0
    n = min(ahi - alo, bhi - blo)
    while p < n and a[alo + p] == b[blo + p]:
        p += 1
    if p:
        ops.append(("equal", alo, alo + p, blo, blo + p))
        alo += p
        blo += p
    s = 0
    n = min(ahi - alo, bhi - blo)
    while s < n and a[ahi - 1 - s] == b[bhi - 1 - s]:
        s += 1
    tail = ("equal", ahi - s, ahi, bhi - s, bhi) if s else None
    ahi -= s
    bhi -= s
    if alo == ahi or blo == bhi:
        ops.append(("delete", alo, ahi, blo, blo))
        ops.append(("insert", ahi, ahi, blo, bhi))
    else:
        got = _myers(a, alo, ahi, b, blo, bhi, max_d)
        if got is not None:
            ops.extend(got)
        else:
            _patience(a, alo, ahi, b, blo, bhi, ops, max_d)
    if tail:
        ops.append(tail)


def _myers(a: Sequence[int], alo: int, ahi: int, b: Sequence[int], blo: int, bhi: int, max_d: int
           ) -> list[Opcode] | None:
    """Myers' greedy diff of ``a[alo:ahi]`` and ``b[blo:bhi]``, or ``None`` past ``max_d`` edits."""
    n, m = ahi - alo, bhi - blo
    limit = min(n + m, max_d)
    offset = limit + 1
    v = [0] * (2 * limit + 3)
    trace: list[list[int]] = []
    for d in range(limit + 1):
        lo, hi = offset - d, offset + d + 1
        trace.append(v[lo - 1:hi + 1])
        for k in range(-d, d + 1, 2):
            ki = offset + k
            if k == -d or (k != d and v[ki - 1] < v[ki + 1]):
                x = v[ki + 1]
            else:
                x = v[ki - 1] + 1
            y = x - k
            while x < n and y < m and a[alo + x] == b[blo + y]:
                x += 1
                y += 1
            v[ki] = x
            if x >= n and y >= m:
                return _backtrack(trace, d, k, n, m, alo, blo, a, b)
    return None


def _backtrack(trace: list[list[int]], d_end: int, k_end: int, n: int, m: int, alo: int, blo: int,
               a: Sequence[int], b: Sequence[int]) -> list[Opcode]:
    # trace[d] holds v[-d-1 .. d+1] (as it was before step d), indexed by k + d + 1
    moves: list[Opcode] = []
    x, y = n, m
    for d in range(d_end, 0, -1):
        snap = trace[d]
        k = x - y

        def get(kk: int, snap=snap, d=d) -> int:
            return snap[kk + d + 1]

        if k == -d or (k != d and get(k - 1) < get(k + 1)):
            prev_k = k + 1
        else:
            prev_k = k - 1
        prev_x = get(prev_k)
        prev_y = prev_x - prev_k
        # snake from (after the edit) to (x, y)
        if prev_k == k + 1:  # insertion: (prev_x, prev_y) -> (prev_x, prev_y + 1)
            sx, sy = prev_x, prev_y + 1
        else:  # deletion
            sx, sy = prev_x + 1, prev_y
        if x > sx:
            moves.append(("equal", alo + sx, alo + x, blo + sy, blo + y))
        if prev_k == k + 1:
            moves.append(("insert", alo + prev_x, alo + prev_x, blo + prev_y, blo + prev_y + 1))
        else:
            moves.append(("delete", alo + prev_x, alo + prev_x + 1, blo + prev_y, blo + prev_y))
        x, y = prev_x, prev_y
    if x > 0:
        moves.append(("equal", alo, alo + x, blo, blo + y))
    moves.reverse()
    return moves


def _patience(a: Sequence[int], alo: int, ahi: int, b: Sequence[int], blo: int, bhi: int, ops: list[Opcode],
              max_d: int) -> None:
    """Split at identities unique on both sides (in order on both), and diff the gaps."""
    count_a: dict[int, int] = {}
    for i in range(alo, ahi):
        count_a[a[i]] = count_a.get(a[i], 0) + 1
    count_b: dict[int, int] = {}
    pos_b: dict[int, int] = {}
    for j in range(blo, bhi):
        x = b[j]
        count_b[x] = count_b.get(x, 0) + 1
        pos_b[x] = j
    pairs = [(i, pos_b[a[i]]) for i in range(alo, ahi) if count_a[a[i]] == 1 and count_b.get(a[i]) == 1]
    anchors = _lis(pairs)
    if not anchors:
        ops.append(("delete", alo, ahi, blo, blo))
        ops.append(("insert", ahi, ahi, blo, bhi))
        return
    i0, j0 = alo, blo
    for i, j in anchors:
        if i > i0 or j > j0:
            _diff(a, i0, i, b, j0, j, ops, max_d)
        ops.append(("equal", i, i + 1, j, j + 1))
        i0, j0 = i + 1, j + 1
    if i0 < ahi or j0 < bhi:
        _diff(a, i0, ahi, b, j0, bhi, ops, max_d)


def _lis(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The longest subsequence of ``pairs`` (sorted by the first item) increasing in the second."""
    tails: list[int] = []
    tail_idx: list[int] = []
    prev = [-1] * len(pairs)
    for n, (_, j) in enumerate(pairs):
        k = bisect.bisect_left(tails, j)
        if k == len(tails):
            tails.append(j)
            tail_idx.append(n)
        else:
            tails[k] = j
            tail_idx[k] = n
        prev[n] = tail_idx[k - 1] if k else -1
    out = []
    n = tail_idx[-1] if tail_idx else -1
    while n >= 0:
        out.append(pairs[n])
        n = prev[n]
    out.reverse()
    return out


def refine_block(na: int, nb: int, kind_a: Callable[[int], str], kind_b: Callable[[int], str],
                 similarity: Callable[[int, int], float], *, max_cells: int = MAX_BLOCK_CELLS
                 ) -> list[tuple[int | None, int | None]]:
    """Align a block of ``na`` deleted and ``nb`` inserted events by edit distance.

    Returns pairs ``(i, j)`` (block-relative) in order: ``(i, j)`` a substitution (the same event,
    edited), ``(i, None)`` a deletion, ``(None, j)`` an insertion. Only events of the same kind are
    substituted, at cost ``2·(1 - similarity(i, j))`` (deletion and insertion cost 1 each). Blocks
    of more than ``max_cells`` pairs are paired greedily, in order, by kind.

    >>> refine_block(2, 1, ["a", "b"].__getitem__, ["b"].__getitem__, lambda i, j: 0.5)
    [(0, None), (1, 0)]
    """
    if na == 0 or nb == 0:
        return [(i, None) for i in range(na)] + [(None, j) for j in range(nb)]
    if na * nb > max_cells:
        return _greedy(na, nb, kind_a, kind_b)
    ka = [kind_a(i) for i in range(na)]
    kb = [kind_b(j) for j in range(nb)]
    # cost[i][j]: aligning a[:i] with b[:j]
    cost = [[0.0] * (nb + 1) for _ in range(na + 1)]
    back = [[0] * (nb + 1) for _ in range(na + 1)]  # 0 diag, 1 up (delete), 2 left (insert)
    for i in range(1, na + 1):
        cost[i][0] = float(i)
        back[i][0] = 1
    for j in range(1, nb + 1):
        cost[0][j] = float(j)
        back[0][j] = 2
    for i in range(1, na + 1):
        row, prow = cost[i], cost[i - 1]
        brow = back[i]
        ki = ka[i - 1]
        for j in range(1, nb + 1):
            best, how = prow[j] + 1.0, 1
            left = row[j - 1] + 1.0
            if left < best:
                best, how = left, 2
            if kb[j - 1] == ki:
                sub = prow[j - 1] + 2.0 * (1.0 - similarity(i - 1, j - 1))
                if sub <= best:
                    best, how = sub, 0
            row[j] = best
            brow[j] = how
    out: list[tuple[int | None, int | None]] = []
    i, j = na, nb
    while i > 0 or j > 0:
        how = back[i][j]
        if how == 0:
            out.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif how == 1:
            out.append((i - 1, None))
            i -= 1
        else:
            out.append((None, j - 1))
            j -= 1
    out.reverse()
    return out


def _greedy(na: int, nb: int, kind_a: Callable[[int], str], kind_b: Callable[[int], str]
            ) -> list[tuple[int | None, int | None]]:
    out: list[tuple[int | None, int | None]] = []
    i = j = 0
    while i < na and j < nb:
        if kind_a(i) == kind_b(j):
            out.append((i, j))
            i += 1
            j += 1
        else:
            out.append((i, None))
            i += 1
    out += [(x, None) for x in range(i, na)] + [(None, y) for y in range(j, nb)]
    return out
