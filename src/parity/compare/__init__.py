"""Compare two traces: alignment, metrics, tolerances, the diff result."""

from .config import CompareConfig, load_config
from .diff import DIFF_SCHEMA_VERSION, Diagnosis, StageDiff, Status, TraceDiff, Verdict, compare_traces
from .metrics import StageMetrics, compute_metrics
from .tolerance import DEFAULT_TOLERANCES, Tolerance

__all__ = ["CompareConfig", "load_config", "compare_traces", "TraceDiff", "StageDiff", "Diagnosis", "Status", "Verdict",
           "StageMetrics", "compute_metrics", "Tolerance", "DEFAULT_TOLERANCES", "DIFF_SCHEMA_VERSION"]
