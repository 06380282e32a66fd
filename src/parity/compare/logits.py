"""Logit comparisons: top-k agreement, KL divergence, and the first decode step whose greedy token differs.

Element-wise metrics say *how far* two logit tensors are; what a user of a language model needs
to know is whether the two sides would *say the same thing*. For every stage named ``logits``
(``logits``, ``logits[step=3]``, ``lm.logits``...) :func:`parity.compare_traces` therefore also
computes :class:`LogitsMetrics` over the last axis (the vocabulary), stored in
``StageDiff.extra["logits"]``:

* **top-k agreement** -- mean over positions of ``|top_k(ref) ∩ top_k(cand)| / k``;
* **top-1 agreement** -- fraction of positions with the same argmax;
* **KL divergence** ``KL(softmax(ref) || softmax(cand))`` in nats, mean and max over positions,
  computed in float64 with log-softmax (stable for large logits);
* **greedy tokens** -- the argmax at the last position of each batch row, i.e. the token greedy
  decoding picks at that step.

:func:`first_token_divergence` reports the first decode step whose greedy token differs. After
that step the two sides were fed different tokens, so later steps differ for that reason alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError
from ..trace.dtypes import DType, is_float, to_float64
from ..trace.keys import split_key
from .metrics import unravel as unravel_index

__all__ = ["LogitsMetrics", "TokenDivergence", "logits_metrics", "row_stats", "LogitsColumns", "is_logits_key", "stage_extra",
           "first_token_divergence", "describe_logits", "DEFAULT_TOP_K"]

DEFAULT_TOP_K = 5
_ROWS_PER_CHUNK_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class LogitsMetrics:
    """How two logit tensors agree as distributions over the vocabulary (the last axis).

    Attributes:
        k: the k of top-k agreement (at most the vocabulary size).
        positions: number of positions compared (product of the leading axes).
        topk_agreement: mean over positions of the shared fraction of the top-k tokens.
        top1_agreement: fraction of positions whose argmax is the same.
        kl_mean: mean ``KL(softmax(ref) || softmax(cand))`` in nats.
        kl_max: the largest per-position KL divergence.
        kl_max_position: index (leading axes) of that position.
        greedy_ref, greedy_cand: argmax at the last position of each batch row.
        greedy_match: whether the greedy tokens agree for every batch row.
        first_mismatch: first position (C order over the leading axes) whose argmax differs.

    The demo pair's ``logits`` stage (8 positions) keeps its greedy token in the float32 port:

    >>> sd = parity.compare_traces("ref.trace", "cand.trace")["logits"]
    >>> m = LogitsMetrics.from_dict(sd.extra["logits"])
    >>> m.positions, m.topk_agreement, m.top1_agreement, m.greedy_match, round(m.kl_max, 4)
    (8, 0.95, 1.0, True, 0.0318)
    """

    k: int
    positions: int
    topk_agreement: float
    top1_agreement: float
    kl_mean: float
    kl_max: float
    kl_max_position: tuple[int, ...] | None
    greedy_ref: tuple[int, ...]
    greedy_cand: tuple[int, ...]
    greedy_match: bool
    first_mismatch: tuple[int, ...] | None

    def to_dict(self) -> dict[str, Any]:
        def enc(x: float) -> float | str:
            return x if math.isfinite(x) else repr(x)  # JSON has no NaN/inf
        return {
            "k": self.k, "positions": self.positions, "topk_agreement": enc(self.topk_agreement),
            "top1_agreement": enc(self.top1_agreement), "kl_mean": enc(self.kl_mean), "kl_max": enc(self.kl_max),
            "kl_max_position": list(self.kl_max_position) if self.kl_max_position is not None else None,
            "greedy_ref": list(self.greedy_ref), "greedy_cand": list(self.greedy_cand),
            "greedy_match": self.greedy_match,
            "first_mismatch": list(self.first_mismatch) if self.first_mismatch is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LogitsMetrics:
        def dec(x: Any) -> float:
            return float(x)  # float("nan") / float("inf") read the encoded strings back
        return cls(
            k=int(d["k"]), positions=int(d["positions"]), topk_agreement=dec(d["topk_agreement"]),
            top1_agreement=dec(d["top1_agreement"]), kl_mean=dec(d["kl_mean"]), kl_max=dec(d["kl_max"]),
            kl_max_position=tuple(d["kl_max_position"]) if d.get("kl_max_position") is not None else None,
            greedy_ref=tuple(d["greedy_ref"]), greedy_cand=tuple(d["greedy_cand"]), greedy_match=bool(d["greedy_match"]),
            first_mismatch=tuple(d["first_mismatch"]) if d.get("first_mismatch") is not None else None,
        )


def _widen(arr: Any, dtype: DType | None) -> np.ndarray:
    a = np.asarray(arr)
    return to_float64(a, dtype) if dtype is not None else a.astype(np.float64)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)  # a row of -inf stays -inf instead of becoming NaN
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = x - m
        return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    # NaN sorts last in argpartition of -x: a NaN logit never makes the top k.
    return np.argpartition(-np.nan_to_num(x, nan=-np.inf), k - 1, axis=-1)[:, :k]


def row_stats(r: np.ndarray, c: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Per row (position) of two float64 ``[rows, vocab]`` matrices: both argmaxes, the number of
    shared top-``k`` tokens, and ``KL(softmax(r) || softmax(c))`` (NaN where a logit is NaN). Each
    row's values depend on that row alone (:mod:`parity.compare.batch` stacks many stages' rows).

    >>> [x.tolist() for x in row_stats(np.array([[0.0, 1.0, 5.0]]), np.array([[5.0, 1.0, 0.0]]), 1)][:3]
    [[2], [0], [0]]
    """
    ar = np.argmax(np.nan_to_num(r, nan=-np.inf), axis=-1)
    ac = np.argmax(np.nan_to_num(c, nan=-np.inf), axis=-1)
    tr, tc = _topk(r, k), _topk(c, k)
    agree = (tr[:, :, None] == tc[:, None, :]).sum(axis=(1, 2))
    lr, lc = _log_softmax(r), _log_softmax(c)
    with np.errstate(invalid="ignore", over="ignore"):
        pr = np.exp(lr)
        kl = np.where(pr > 0, pr * (lr - lc), 0.0).sum(axis=-1)
    nan_rows = np.isnan(r).any(axis=-1) | np.isnan(c).any(axis=-1)
    kl = np.where(nan_rows, np.nan, np.maximum(kl, 0.0))  # clip tiny negative rounding; NaN logits give NaN
    return ar, ac, agree, kl


def logits_metrics(ref: Any, cand: Any, *, k: int = DEFAULT_TOP_K, ref_dtype: DType | None = None,
                   cand_dtype: DType | None = None) -> LogitsMetrics:
    """Compare two logit arrays of the same shape over their last axis.

    Args:
        ref, cand: arrays shaped ``[..., vocab]`` (e.g. ``[batch, seq, vocab]``), any float dtype.
        k: top-k size (clipped to the vocabulary size).
        ref_dtype, cand_dtype: the stored dtypes (needed for bf16/f8 read without ml_dtypes).

    Returns:
        The :class:`LogitsMetrics`.

    Raises:
        ValueError: the shapes differ or the arrays are scalars.

    Example:
        >>> import numpy as np
        >>> r = np.array([[[0.0, 1.0, 5.0], [2.0, 0.0, 1.0]]])
        >>> m = logits_metrics(r, r[..., ::-1], k=1)
        >>> m.top1_agreement, m.greedy_ref, m.greedy_cand, m.first_mismatch
        (0.0, (0,), (2,), (0, 0))
    """
    r_all, c_all = np.asarray(ref), np.asarray(cand)
    if r_all.shape != c_all.shape:
        raise UsageError(f"logits shapes differ: {r_all.shape} vs {c_all.shape}.")
    if r_all.ndim == 0 or r_all.shape[-1] == 0:
        raise UsageError(f"logits need a vocabulary axis; got shape {r_all.shape}.")
    vocab = r_all.shape[-1]
    lead = r_all.shape[:-1]
    n = int(np.prod(lead, dtype=np.int64)) if lead else 1
    k = max(1, min(int(k), vocab))
    r2, c2 = r_all.reshape(n, vocab), c_all.reshape(n, vocab)
    rows = max(1, _ROWS_PER_CHUNK_BYTES // (8 * vocab))
    agree_sum = 0.0
    top1_same = 0
    kl_sum = 0.0
    kl_max, kl_arg = -math.inf, -1
    first_bad = -1
    argmax_r = np.empty(n, np.int64)
    argmax_c = np.empty(n, np.int64)
    for lo in range(0, n, rows):
        r = _widen(r2[lo:lo + rows], ref_dtype)
        c = _widen(c2[lo:lo + rows], cand_dtype)
        ar, ac, agree, kl = row_stats(r, c, k)
        argmax_r[lo:lo + len(r)], argmax_c[lo:lo + len(c)] = ar, ac
        same = ar == ac
        top1_same += int(same.sum())
        if first_bad < 0 and not same.all():
            first_bad = lo + int(np.argmin(same))
        agree_sum += float(agree.sum()) / k
        kl_sum += float(kl.sum())
        if np.isnan(kl).any():
            i = int(np.argmax(np.isnan(kl)))
            if not math.isnan(kl_max):
                kl_max, kl_arg = math.nan, lo + i
        elif not math.isnan(kl_max) and len(kl):
            i = int(np.argmax(kl))
            if kl[i] > kl_max:
                kl_max, kl_arg = float(kl[i]), lo + i
    if lead:
        last_r = argmax_r.reshape(lead)[..., -1].reshape(-1) if len(lead) >= 2 else argmax_r[-1:]
        last_c = argmax_c.reshape(lead)[..., -1].reshape(-1) if len(lead) >= 2 else argmax_c[-1:]
    else:
        last_r, last_c = argmax_r, argmax_c
    unravel = (lambda i: unravel_index(i, lead)) if lead else (lambda i: ())
    return LogitsMetrics(
        k=k, positions=n, topk_agreement=agree_sum / n, top1_agreement=top1_same / n, kl_mean=kl_sum / n,
        kl_max=kl_max, kl_max_position=unravel(kl_arg) if kl_arg >= 0 else None,
        greedy_ref=tuple(int(x) for x in last_r), greedy_cand=tuple(int(x) for x in last_c),
        greedy_match=bool(np.array_equal(last_r, last_c)),
        first_mismatch=unravel(first_bad) if first_bad >= 0 else None,
    )


def valid_key_is_logits(key: str) -> bool:
    """:func:`is_logits_key` of a key known to be valid (a stage index's: checked when it was
    read), without checking it again: its name is what comes before ``[`` or ``#``.

    >>> [valid_key_is_logits(k) for k in ("logits[step=3]", "lm.logits#1", "logits_bias", "x.logits.y")]
    [True, True, False, False]
    """
    if key.endswith("logits"):  # (no indices, no occurrence: the key is its name)
        return key == "logits" or key.endswith(".logits")
    if "logits" not in key or ("[" not in key and "#" not in key):
        return False
    cut = min(i for i in (key.find("["), key.find("#")) if i >= 0)
    name = key[:cut]
    return name == "logits" or name.endswith(".logits")


def is_logits_key(key: str) -> bool:
    """Whether a stage key names logits: ``logits``, ``logits[step=3]``, ``decoder.logits#1``...

    >>> is_logits_key("logits[step=3]"), is_logits_key("decoder.logits#1"), is_logits_key("logits_bias")
    (True, True, False)
    """
    try:
        name = split_key(key)[0]
    except Exception:  # noqa: BLE001 - not a valid key: not logits
        return False
    return name == "logits" or name.endswith(".logits")


def stage_extra(key: str, ref: Any, cand: Any, ref_dtype: DType | None, cand_dtype: DType | None,
                k: int = DEFAULT_TOP_K) -> dict[str, Any] | None:
    """The ``StageDiff.extra`` entry for a stage: ``{"logits": {...}}`` for float logits, else ``None``.

    >>> from parity.trace.dtypes import dtype_of_array
    >>> x = np.array([[0.0, 1.0, 5.0]]); f64 = dtype_of_array(x)
    >>> stage_extra("logits", x, x[..., ::-1], f64, f64, k=1)["logits"]["greedy_cand"]
    [0]
    >>> stage_extra("hidden", x, x, f64, f64) is None
    True
    """
    if not is_logits_key(key) or ref_dtype is None or cand_dtype is None:
        return None
    if not (is_float(ref_dtype) and is_float(cand_dtype)):
        return None
    r, c = np.asarray(ref), np.asarray(cand)
    if r.shape != c.shape or r.ndim == 0 or r.size == 0:
        return None
    return {"logits": logits_metrics(r, c, k=k, ref_dtype=ref_dtype, cand_dtype=cand_dtype).to_dict()}


def _flat(arrays: Any) -> np.ndarray:
    """The values of a list of stage arrays, or of a ``(stages, size)`` array of them, back to back."""
    if isinstance(arrays, np.ndarray):
        return arrays.reshape(-1)
    return np.concatenate([np.asarray(a).reshape(-1) for a in arrays])


class LogitsColumns:
    """:func:`stage_extra` of many logits stages of one shape and dtypes (``refs[i]`` against
    ``cands[i]``: two lists of arrays, or two ``(stages, size)`` arrays), from one
    :func:`row_stats` pass over their stacked rows; :meth:`extra` gives
    stage ``i``'s, equal to ``stage_extra`` of that stage alone (each stage is one chunk of rows
    there, its per-stage sums are the same sums). For stages of fewer than
    ``_ROWS_PER_CHUNK_BYTES // (8 * vocab)`` rows.

    >>> r, f32 = [np.float32([0, 1, 5]), np.float32([2, 0, 1])], parity.trace.dtypes.DTYPES["F32"]
    >>> cols = LogitsColumns(r, [x[::-1].copy() for x in r], f32, f32, (3,), k=1)
    >>> cols.extra(1) == stage_extra("logits", r[1], r[1][::-1], f32, f32, k=1)
    True
    """

    def __init__(self, refs: Any, cands: Any, ref_dtype: DType, cand_dtype: DType, shape: tuple[int, ...],
                 k: int = DEFAULT_TOP_K):
        lead, vocab = shape[:-1], shape[-1]
        n = math.prod(lead)
        self.lead, self.n, self.k = lead, n, max(1, min(int(k), vocab))
        count = len(refs)
        r = to_float64(_flat(refs), ref_dtype).reshape(count * n, vocab)
        c = to_float64(_flat(cands), cand_dtype).reshape(count * n, vocab)
        ar, ac, agree, kl = row_stats(r, c, self.k)
        same = (ar == ac).reshape(count, n)
        self.top1 = same.sum(axis=1)
        self.first_bad = np.where(same.all(axis=1), -1, np.argmin(same, axis=1))
        self.agree = agree.reshape(count, n).sum(axis=1)
        kl2 = kl.reshape(count, n)
        # each stage's float64 sum of its rows' KL, as logits_metrics sums one chunk (one element: itself)
        self.kl_sum = kl2[:, 0].copy() if n == 1 else np.array([float(row.sum()) for row in kl2], np.float64)
        nan = np.isnan(kl2)
        at = np.argmax(kl2, axis=1)
        top = kl2[np.arange(count), at]
        self.kl_max = np.where(nan.any(axis=1), np.nan, np.where(top > -np.inf, top, -np.inf))
        self.kl_arg = np.where(nan.any(axis=1), np.argmax(nan, axis=1), np.where(top > -np.inf, at, -1))
        ar2, ac2 = ar.reshape(count, n), ac.reshape(count, n)
        if len(lead) >= 2:
            ar2, ac2 = ar2.reshape((count, *lead))[..., -1].reshape(count, -1), ac2.reshape((count, *lead))[..., -1].reshape(count, -1)
        elif lead:
            ar2, ac2 = ar2[:, -1:], ac2[:, -1:]
        self.last_r, self.last_c = np.ascontiguousarray(ar2), np.ascontiguousarray(ac2)  # columns: 8 bytes a value

    def worst(self, rows: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For stages ``rows``: their top-k agreement, their KL max with NaN as ``inf``, and whether
        their greedy tokens differ; the values :meth:`extra` gives, as arrays."""
        r = np.asarray(rows, np.intp)
        topk = (0.0 + self.agree[r].astype(np.float64) / self.k) / self.n
        kl = self.kl_max[r].astype(np.float64)
        return topk, np.where(np.isnan(kl), np.inf, kl), (self.last_r[r] != self.last_c[r]).any(axis=1)

    def extra(self, i: int) -> dict[str, Any]:
        """``stage_extra(...)`` of stage ``i``: ``{"logits": LogitsMetrics(...).to_dict()}``."""
        n, lead = self.n, self.lead
        unravel = (lambda j: unravel_index(j, lead)) if lead else (lambda j: ())
        last_r, last_c = self.last_r[i].tolist(), self.last_c[i].tolist()
        kl_arg, first_bad = int(self.kl_arg[i]), int(self.first_bad[i])
        m = LogitsMetrics(
            k=self.k, positions=n, topk_agreement=(0.0 + float(int(self.agree[i])) / self.k) / n,
            top1_agreement=int(self.top1[i]) / n, kl_mean=(0.0 + float(self.kl_sum[i])) / n,
            kl_max=float(self.kl_max[i]), kl_max_position=unravel(kl_arg) if kl_arg >= 0 else None,
            greedy_ref=tuple(last_r), greedy_cand=tuple(last_c), greedy_match=last_r == last_c,
            first_mismatch=unravel(first_bad) if first_bad >= 0 else None)
        return {"logits": m.to_dict()}


@dataclass(frozen=True)
class TokenDivergence:
    """The first decode step whose greedy token differs.

    Attributes:
        step: the step index (``0`` for a stage without a step index).
        key: the logits stage of that step.
        ref_tokens, cand_tokens: the greedy token of each batch row on each side.

    >>> div = TokenDivergence(step=2, key="logits[step=2]", ref_tokens=(7,), cand_tokens=(3,))
    >>> f"step {div.step}: {list(div.ref_tokens)} vs {list(div.cand_tokens)}"
    'step 2: [7] vs [3]'
    """

    step: int
    key: str
    ref_tokens: tuple[int, ...]
    cand_tokens: tuple[int, ...]


def _step_of(key: str) -> int:
    _, idx, occ = split_key(key)
    if "step" in idx:
        try:
            return int(idx["step"])
        except ValueError:
            pass
    return occ  # repeated forward calls without a step index are numbered occurrences


def first_token_divergence(source: Any, cand: Any = None, *, k: int = DEFAULT_TOP_K) -> TokenDivergence | None:
    """The first decode step at which the two sides' greedy tokens differ.

    Args:
        source: a :class:`~parity.compare.diff.TraceDiff` (its logits stages carry the greedy
            tokens), or the reference trace (path or :class:`~parity.Trace`) when ``cand`` is given.
        cand: the candidate trace, when ``source`` is the reference trace.
        k: top-k size when computing from traces.

    Returns:
        A :class:`TokenDivergence` (``.step`` is the step index), or ``None`` when every captured
        step agrees or no logits stage was compared.

    Example:
        >>> import numpy as np, tempfile, os, parity
        >>> from parity.compare.logits import first_token_divergence
        >>> d = tempfile.mkdtemp(); r, c = os.path.join(d, "r.trace"), os.path.join(d, "c.trace")
        >>> for path, flip in ((r, False), (c, True)):
        ...     with parity.record(path):
        ...         for step in range(3):
        ...             x = np.eye(4, dtype=np.float32)[None, None, step]
        ...             _ = parity.tap("logits", x[..., ::-1] if flip and step == 2 else x, step=step)
        >>> first_token_divergence(r, c).step
        2
    """
    found: list[tuple[int, str, tuple[int, ...], tuple[int, ...]]] = []
    if cand is None:
        return _scan(source)[3]
    else:
        from ..trace.reader import Trace, load_trace

        rt = source if isinstance(source, Trace) else load_trace(os.fspath(source))
        ct = cand if isinstance(cand, Trace) else load_trace(os.fspath(cand))
        ckeys = set(ct.keys())
        for rs in rt:
            if rs.kind != "tensor" or not is_logits_key(rs.key) or rs.key not in ckeys:
                continue
            cs = ct.stage(rs.key)
            extra = stage_extra(rs.key, rt[rs.key], ct[cs.key], rs.dtype_info, cs.dtype_info, k=k)
            if extra is None:
                continue
            m = LogitsMetrics.from_dict(extra["logits"])
            if not m.greedy_match:
                found.append((_step_of(rs.key), rs.key, m.greedy_ref, m.greedy_cand))
    if not found:
        return None
    step, key, rtok, ctok = min(found, key=lambda f: f[0])
    return TokenDivergence(step, key, rtok, ctok)


def _scan(diff: Any) -> tuple[int, Any, Any, TokenDivergence | None]:
    """One pass over the logits extras of a diff (none held): how many stages have them, the
    ``(key, extra)`` of the lowest top-k agreement and of the highest KL (the first such, NaN
    counting as the worst), and the first decode step whose greedy token differs."""
    from .batch import extra_value, logits_runs  # (batch judges logits stages with this module)

    count, topk, kl = 0, None, None
    found = []
    for group, cols, rows in logits_runs(getattr(diff, "stages", ())):
        if cols is not None:  # a run's stages: its columns at once
            v, w, differ = cols.worst(rows)
            extra_of: Callable[[int], Any] = lambda j, cols=cols, rows=rows: cols.extra(rows[j])["logits"]
        else:
            lg = extra_value(group[0], "logits")
            if lg is None:
                continue
            top, most = float(lg["topk_agreement"]), float(lg["kl_max"])  # as LogitsMetrics.from_dict reads them
            v, w = [-1.0 if math.isnan(top) else top], [math.inf if math.isnan(most) else most]
            differ = [not bool(lg["greedy_match"])]
            extra_of = lambda j, lg=lg: lg
        count += len(v)
        j, i = int(np.argmin(v)), int(np.argmax(w))
        if topk is None or v[j] < topk[2]:
            topk = (group[j].key, extra_of(j), float(v[j]))
        if kl is None or w[i] > kl[2]:
            kl = (group[i].key, extra_of(i), float(w[i]))
        for b in np.flatnonzero(differ).tolist():
            m = LogitsMetrics.from_dict(extra_of(b))
            found.append((_step_of(group[b].key), group[b].key, m.greedy_ref, m.greedy_cand))
    div = None
    if found:
        step, key, rtok, ctok = min(found, key=lambda f: f[0])
        div = TokenDivergence(step, key, rtok, ctok)
    return count, topk, kl, div


def describe_logits(diff: Any) -> list[str]:
    """Plain-text lines summarising the logits stages of a diff (used by the text report).

    >>> for line in describe_logits(parity.compare_traces("ref.trace", "cand.trace")):
    ...     print(line)
    Logits (1 stage(s)): top-5 agreement min 0.95 (logits) · KL max 0.0318 nats (logits)
      greedy tokens agree at every compared step.
    """
    count, worst_topk, worst_kl, div = _scan(diff)
    if not count:
        return []
    top, kl = LogitsMetrics.from_dict(worst_topk[1]), LogitsMetrics.from_dict(worst_kl[1])
    lines = [f"Logits ({count} stage(s)): top-{top.k} agreement min {top.topk_agreement:.4g} "
             f"({worst_topk[0]}) · KL max {kl.kl_max:.3g} nats ({worst_kl[0]})"]
    if div is None:
        lines.append("  greedy tokens agree at every compared step.")
    else:
        lines.append(f"  first differing greedy token: step {div.step} ({div.key}): reference "
                     f"{list(div.ref_tokens)}, candidate {list(div.cand_tokens)}")
    return lines
