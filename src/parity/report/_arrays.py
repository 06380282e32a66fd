"""Reopen the traces behind a :class:`TraceDiff` so that reports can show values, not just metrics.

A diff carries metrics only. Worst-element tables, histograms and heat maps need the stage
arrays, so the Markdown and HTML renderers take ``traces=``: :data:`AUTO` (reopen
``diff.ref_path`` / ``diff.cand_path`` when both are readable traces), ``None`` (metrics only),
or a ``(ref, cand)`` pair of :class:`~parity.Trace` objects or paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..compare.diff import StageDiff, Status, TraceDiff
from ..errors import ParityError, UsageError
from ..trace.dtypes import DType
from ..trace.reader import Trace, load_trace

__all__ = ["AUTO", "SAVED", "StageArrays", "TracePair", "resolve_traces", "detail_stages", "stage_worst", "ProgressCallback"]

#: ``progress(done, total, key)`` after each unit of work (as :func:`parity.compare_traces`).
ProgressCallback = Callable[[int, int, str], None]


class _Auto:
    def __repr__(self) -> str:
        return "AUTO"


#: Reopen the traces named in the diff, when they exist (the renderers' default).
AUTO: Any = _Auto()


class _Saved:
    def __repr__(self) -> str:
        return "SAVED"


#: The diff was read back from a saved result: show no values, and say that figures needing them
#: are unavailable (``parity report`` without ``--with-traces``).
SAVED: Any = _Saved()


@dataclass(frozen=True)
class StageArrays:
    """Both sides' stored values of one stage, with their dtypes (for exact widening)."""

    ref: np.ndarray
    cand: np.ndarray
    ref_dtype: DType
    cand_dtype: DType


class TracePair:
    """The reference and candidate traces, opened for reading stage values.

    Args:
        ref, cand: the traces.
        transforms: the ``[transforms]`` of the comparison's config, re-applied so that values and
            indices are those the metrics saw; ``None`` when unknown (transformed stages are then
            left out rather than shown wrongly).
    """

    def __init__(self, ref: Trace, cand: Trace, transforms: tuple[Any, ...] | None = ()):
        self.ref, self.cand = ref, cand
        self.transforms = transforms

    def arrays(self, sd: StageDiff) -> StageArrays | None:
        """Values of ``sd`` on both sides as the comparison saw them, or ``None`` when it has no
        element-wise comparison (one-sided, text, shape mismatch), when its transforms are unknown,
        or when the trace no longer holds what the diff saw."""
        if sd.ref is None or sd.cand is None or sd.metrics is None:
            return None
        if sd.ref.key not in self.ref or sd.cand.key not in self.cand:
            return None
        rs, cs = self.ref.stage(sd.ref.key), self.cand.stage(sd.cand.key)
        if rs.kind != "tensor" or cs.kind != "tensor":
            return None
        if (rs.dtype, rs.shape, cs.dtype, cs.shape) != (sd.ref.dtype, sd.ref.shape, sd.cand.dtype, sd.cand.shape):
            return None
        ra, ca = self.ref.array(rs), self.cand.array(cs)
        assert not isinstance(ra, str) and not isinstance(ca, str)
        transformed = any(" transformed: " in n for n in sd.notes)
        if transformed and not self.transforms:
            return None
        if self.transforms:
            from ..compare.align import apply_transforms

            try:
                rs, ra, _ = apply_transforms(self.transforms, sd.key, "reference", rs, ra)
                cs, ca, _ = apply_transforms(self.transforms, sd.key, "candidate", cs, ca)
            except ParityError:
                return None
        if ra.shape != ca.shape or ra.size != sd.metrics.count:
            return None
        assert rs.dtype_info is not None and cs.dtype_info is not None
        return StageArrays(ra, ca, rs.dtype_info, cs.dtype_info)


def _open(side: Trace | str | os.PathLike[str]) -> Trace:
    return side if isinstance(side, Trace) else load_trace(side)


def _transforms(diff: TraceDiff) -> tuple[Any, ...] | None:
    """The transforms of the diff's config file; ``None`` when they cannot be known."""
    if diff.config_source is None:
        # compare_traces() called without a config file: no transforms unless given as a dict,
        # which the diff does not record; stages noted as transformed are then left out.
        return ()
    try:
        from ..compare.config import load_config

        return tuple(getattr(load_config(diff.config_source), "transforms", ()))
    except (ParityError, OSError):
        return None


def resolve_traces(diff: TraceDiff, traces: Any) -> tuple[TracePair | None, str | None]:
    """Turn the ``traces=`` argument of a renderer into a :class:`TracePair`.

    Returns:
        ``(pair, note)``: ``pair`` is ``None`` when no values can be shown, and ``note`` then says
        why in one sentence (``None`` when ``traces=None`` was asked for explicitly).

    Raises:
        UsageError: ``traces`` is neither AUTO, None nor a pair.
        TraceFormatError: an explicitly given trace cannot be read.
    """
    if traces is None:
        return None, None
    if traces is SAVED:
        return None, ("Re-rendered from a saved result: worst elements, histograms and heat maps need the stage "
                      "values and are unavailable here (parity report --with-traces reopens the traces).")
    if traces is AUTO:
        paths = (diff.ref_path, diff.cand_path)
        if not all(os.path.isfile(os.path.join(p, "manifest.json")) for p in paths):
            return None, (f"The traces {diff.ref_path} and {diff.cand_path} are not readable from here, "
                          "so worst elements, histograms and heat maps are left out.")
        try:
            return TracePair(load_trace(paths[0]), load_trace(paths[1]), _transforms(diff)), None
        except ParityError as e:
            return None, f"The traces could not be reopened ({e}), so values are left out."
    if isinstance(traces, (tuple, list)) and len(traces) == 2:
        return TracePair(_open(traces[0]), _open(traces[1]), _transforms(diff)), None
    raise UsageError(f"traces= must be AUTO, SAVED, None or a (ref, cand) pair of traces or paths, not {traces!r}.")


def detail_stages(diff: TraceDiff, limit: int) -> list[StageDiff]:
    """Stages that get a detailed section: the first divergence, the other divergent stages in
    execution order, then expected divergences; at most ``limit``."""
    fails = [s for s in diff.stages if s.status == Status.FAIL]
    expected = [s for s in diff.stages if s.status == Status.EXPECTED]
    return (fails + expected)[: max(limit, 0)]


def stage_worst(diff: TraceDiff, sd: StageDiff | None, k: int = 10, *, traces: Any = AUTO) -> list:
    """The ``k`` worst elements of stage ``sd`` of ``diff`` (``[]`` when its values are not available).

    Example:
        >>> import numpy as np, tempfile, os, parity
        >>> d = tempfile.mkdtemp(); r, c = os.path.join(d, "r.trace"), os.path.join(d, "c.trace")
        >>> for path, bump in ((r, 0.0), (c, 1.0)):
        ...     with parity.record(path):
        ...         _ = parity.tap("x", np.array([[0.0, bump], [0.0, 0.0]]))
        >>> diff = parity.compare_traces(r, c)
        >>> [w.index for w in stage_worst(diff, diff.first_divergence, 3)]
        [(0, 1)]
    """
    from .worst import worst_elements

    if sd is None or k < 1:
        return []
    pair, _ = resolve_traces(diff, traces)
    data = pair.arrays(sd) if pair is not None else None
    if data is None:
        return []
    return worst_elements(data.ref, data.cand, k, ref_dtype=data.ref_dtype, cand_dtype=data.cand_dtype)
