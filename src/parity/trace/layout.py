"""The layout of a ``NAME.trace/`` directory: its file names, and the format's name and version.

The writer creates these files and the reader looks for them (docs/format.md describes each):

>>> MANIFEST, JOURNAL, INDEX, data_file(3)
('manifest.json', 'journal.jsonl', 'index.safetensors', 'data/000003.safetensors')
"""

from __future__ import annotations

__all__ = ["FORMAT_NAME", "SCHEMA_VERSION", "INDEXED_SCHEMA_VERSION", "MANIFEST", "JOURNAL", "VOLATILE", "INDEX",
           "DATA_DIR", "data_file"]

FORMAT_NAME = "parity-trace"
SCHEMA_VERSION = 1  # a manifest that lists its stages
INDEXED_SCHEMA_VERSION = 2  # a manifest whose stages are in the stage index (INDEX), a trace of many stages
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"  # the stages of every renamed data file, while writing
VOLATILE = "run.json"  # timestamps and host: kept out of the manifest so that it is reproducible
STAGE_TEXTS = "stages.json.tmp"  # the manifest's stage entries while writing (see _jsontext.StageTexts)
SPILL = "pending.json.tmp"  # rendered entries waiting for their data file, when many are waiting
INDEX = "index.safetensors"  # the stage index of a trace of many stages (see parity.trace.index)
DATA_DIR = "data"


def data_file(n: int) -> str:
    """The path, relative to the trace directory, of data file number ``n``.

    >>> data_file(0), data_file(1234567)
    ('data/000000.safetensors', 'data/1234567.safetensors')
    """
    return f"{DATA_DIR}/{n:06d}.safetensors"
