"""Event traces: parity of agent sessions and other JSONL event logs (see docs/events.md).

Import a JSONL log (one ``{"v": 1, "kind": ...}`` record per line) into an event trace, compare
two logs with normalization (volatile ids and timestamps), an edit-distance alignment, field-level
diffs and a similarity score, and render the result::

    import parity.events as ev
    ev.import_events("ref.jsonl", "ref.trace", preset="ccpa")
    diff = ev.compare_events("ref.trace", "cand.jsonl")
    print(diff.passed, diff.score, diff.first_divergence)
"""

from .config import EventsConfig, load_events_config
from .diff import compare_event_dirs, compare_events, session_files
from .result import EventDiff, EventDirDiff, EventOp, EventRef, FieldDiff, FixtureResult, KindCounts
from .jsonl import (
    Event,
    EventLog,
    ImportSummary,
    Malformed,
    export_events,
    import_events,
    is_event_trace,
    load_events,
    parse_jsonl,
    read_jsonl,
    render_jsonl,
)
from .normalize import PathPattern, RuleSet, Tolerance
from .presets import PRESETS, preset_rules
from .record import EventRecorder, emit, record_events
from .report import (
    render_event_dirs_json,
    render_event_dirs_markdown,
    render_event_dirs_text,
    render_event_html,
    render_event_json,
    render_event_markdown,
    render_event_text,
    render_event_dirs_html,
)

__all__ = [
    "import_events", "export_events", "compare_events", "compare_event_dirs", "is_event_trace", "load_events",
    "parse_jsonl", "read_jsonl", "render_jsonl", "session_files", "record_events", "emit", "EventRecorder",
    "EventDiff", "EventDirDiff", "EventOp", "EventRef", "FieldDiff", "FixtureResult", "KindCounts", "Event",
    "EventLog", "ImportSummary", "Malformed", "EventsConfig", "load_events_config", "PathPattern", "RuleSet",
    "Tolerance", "PRESETS", "preset_rules",
    "render_event_text", "render_event_json", "render_event_markdown", "render_event_html",
    "render_event_dirs_text", "render_event_dirs_json", "render_event_dirs_markdown", "render_event_dirs_html",
]
