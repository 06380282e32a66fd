"""Compare two traces: alignment, metrics, tolerances, the per-stage comparison engine.

:func:`compare_stages` judges every stage; it knows nothing of diagnoses (they are passed in, see
:class:`~parity.compare.diff.Diagnoser`) nor of event traces. The result types are in
:mod:`parity.results`. ``compare_traces`` here is the deprecated old path of :func:`compare_stages`
(no diagnoses, with a warning): the front door with diagnoses, event traces and ``local=`` is
:func:`parity.compare_traces`.
"""

from ..results import DIFF_SCHEMA_VERSION, Diagnosis, StageDiff, StageMetrics, Status, TraceDiff, Verdict
from .config import OVERRIDES, CompareConfig, as_config, load_config
from .diff import compare_stages, compare_traces
from .metrics import compute_metrics
from .tolerance import DEFAULT_TOLERANCES, Tolerance

__all__ = ["CompareConfig", "load_config", "as_config", "OVERRIDES", "compare_stages", "compare_traces", "TraceDiff",
           "StageDiff", "Diagnosis", "Status", "Verdict", "StageMetrics", "compute_metrics", "Tolerance",
           "DEFAULT_TOLERANCES", "DIFF_SCHEMA_VERSION"]
