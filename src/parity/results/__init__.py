"""The result types every layer shares: one stage's metrics, one stage's comparison, one trace's.

:class:`TraceDiff` is what :func:`parity.compare_traces` returns and what every renderer reads:
one :class:`StageDiff` per stage, each with its :class:`StageMetrics`, the :class:`Tolerance`
applied and the :class:`Diagnosis` list that :mod:`parity.localize` attached. They are plain
frozen dataclasses with an exact JSON round trip (``to_dict`` / ``from_dict``), so a diff computed
on one machine can be rendered on another.

This package sits at the bottom of the layers (docs/architecture.md): it imports nothing of parity
but the error types and the version, so ``compare/`` (which fills these types), ``localize/``
(which adds diagnoses) and ``report/`` (which renders them) all depend on it and not on each other.

Example:
    >>> diff = parity.compare_traces("ref.trace", "cand.trace")
    >>> d = TraceDiff.from_dict(diff.to_dict())
    >>> d == diff, d.first_divergence.key, d.summary()["fail"] > 0
    (True, 'layers.0.attn_scores', True)

The types live in :mod:`parity.results.metrics` (one stage's values: :class:`Tolerance`,
:class:`StageMetrics`) and :mod:`parity.results.diff` (the comparison: :class:`StageDiff`,
:class:`TraceDiff` and what they hold); import them from here.
"""

from .diff import DIFF_SCHEMA_VERSION, Diagnosis, SideInfo, StageDiff, Status, TraceDiff, Verdict, by_key
from .metrics import StageMetrics, Tolerance

__all__ = ["by_key", "DIFF_SCHEMA_VERSION", "Verdict", "Status", "Diagnosis", "SideInfo", "Tolerance", "StageMetrics", "StageDiff",
           "TraceDiff"]
