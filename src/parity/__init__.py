"""parity: find where two implementations of the same numerical computation stop agreeing.

Capture named stages from each implementation, store them in an exact trace format, compare two
traces stage by stage, and get the first divergent stage in execution order::

    import parity
    with parity.record("ref.trace"):
        run_reference()          # calls parity.tap("layers.0.attn_probs", probs) ...
    with parity.record("cand.trace"):
        run_candidate()
    diff = parity.compare_traces("ref.trace", "cand.trace")
    print(diff.first_divergence)
"""

from ._version import __version__
from .capture.record import record, replay, scope, tap
from .compare import CompareConfig, load_config
from .localize import compare_traces
from .results import Diagnosis, StageDiff, StageMetrics, TraceDiff
from .errors import (
    CaptureError,
    ConfigError,
    ImportFormatError,
    ParityError,
    StageKeyError,
    StageNotFoundError,
    TraceError,
    TraceFormatError,
    UsageError,
)
from .trace import Stage, Trace, TraceWriter, load_trace

__all__ = [
    "__version__",
    "record",
    "tap",
    "replay",
    "scope",
    "load_trace",
    "compare_traces",
    "load_config",
    "CompareConfig",
    "TraceDiff",
    "StageDiff",
    "StageMetrics",
    "Diagnosis",
    "Trace",
    "Stage",
    "TraceWriter",
    "ParityError",
    "UsageError",
    "ConfigError",
    "TraceError",
    "TraceFormatError",
    "StageKeyError",
    "StageNotFoundError",
    "ImportFormatError",
    "CaptureError",
]
