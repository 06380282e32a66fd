"""The trace data model and its on-disk store (see docs/format.md)."""

from .dtypes import DTYPES, DType
from .keys import make_key, split_key, validate_key
from .reader import Stage, Trace, load_trace
from .writer import SCHEMA_VERSION, TraceWriter

__all__ = ["DTYPES", "DType", "Stage", "Trace", "TraceWriter", "load_trace", "make_key", "split_key",
           "validate_key", "SCHEMA_VERSION"]
