"""Pin the curated public API: additions are deliberate, removals are breaking."""

import subprocess
import sys

import parity


def test_exported_names():
    assert sorted(parity.__all__) == sorted([
        "__version__", "record", "tap", "replay", "scope", "load_trace", "compare_traces", "load_config", "CompareConfig",
        "TraceDiff", "StageDiff", "StageMetrics", "Diagnosis", "Trace", "Stage", "TraceWriter",
        "ParityError", "UsageError", "ConfigError", "TraceError", "TraceFormatError", "StageKeyError",
        "StageNotFoundError", "ImportFormatError", "CaptureError",
    ])
    for name in parity.__all__:
        assert hasattr(parity, name), name


def test_import_parity_does_not_import_heavy_frameworks():
    code = ("import sys, parity, parity.cli; heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'dask', "
            "'matplotlib', 'plotly', 'jax') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
