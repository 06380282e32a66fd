"""Emit events from Python straight into an event trace: ``record_events()`` and ``emit()``.

Like :func:`parity.record` / :func:`parity.tap`: the active recording lives in a context
variable, so instrumented code needs no handle, and :func:`emit` outside a recording is a
no-op (instrumented code can ship).

>>> import os, tempfile, parity.events as ev
>>> path = os.path.join(tempfile.mkdtemp(), "s.trace")
>>> with ev.record_events(path, preset="ccpa"):
...     _ = ev.emit("session_start", session_id="abc", ts=1700000000)
...     _ = ev.emit("user_prompt", turn=1, text="list the files")
>>> [e.key for e in ev.load_events(path).events]
['events.0000.session_start', 'events.0001.user_prompt[turn=1]']
"""

from __future__ import annotations

import contextvars
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..capture.record import record
from ..errors import UsageError
from ..trace.writer import TraceWriter
from .jsonl import EVENTS_META, META_VERSION, check_record, event_key

__all__ = ["EventRecorder", "record_events", "emit"]

_ACTIVE: contextvars.ContextVar[EventRecorder | None] = contextvars.ContextVar("parity_events", default=None)


class EventRecorder:
    """Adds records to an event trace being written; see :func:`record_events`.

    >>> with record_events("s.trace") as rec:
    ...     rec.emit("user_prompt", turn=1, text="hi")
    ...     rec.emit_line('{"v":1,"kind":"session_end","stop_reason":"end_turn"}')
    'events.0000.user_prompt[turn=1]'
    'events.0001.session_end'
    >>> rec.count, rec.kinds
    (2, {'user_prompt': 1, 'session_end': 1})
    """

    def __init__(self, writer: TraceWriter):
        self.writer = writer
        self.count = 0
        self.kinds: dict[str, int] = {}

    def emit(self, kind: str, *, turn: Any = None, **fields: Any) -> str:
        """Record ``{"v": 1, "kind": kind, "turn": turn, **fields}`` (``turn`` left out when ``None``);
        return its stage key."""
        rec: dict[str, Any] = {"v": 1, "kind": kind}
        if turn is not None:
            rec["turn"] = turn
        rec.update(fields)
        return self.emit_record(rec)

    def emit_record(self, record: Mapping[str, Any]) -> str:
        """Record a whole record (a JSON object with ``v`` and ``kind``), as compact JSON."""
        try:
            line = json.dumps(dict(record), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise UsageError(f"an event record must be JSON-serialisable with finite numbers ({e}).") from None
        return self.emit_line(line)

    def emit_line(self, line: str) -> str:
        """Record one JSONL line exactly as given (checked: one JSON object with ``v`` and ``kind``)."""
        if not isinstance(line, str) or "\n" in line:
            raise UsageError("an event line must be one line of text (no newline).")
        rec, why = check_record(line)
        if rec is None:
            raise UsageError(f"not an event record: {why}.")
        key = event_key(self.count, rec["kind"], rec.get("turn"))
        got = self.writer.add(key, line, provenance={"line": self.count + 1})
        self.count += 1
        self.kinds[rec["kind"]] = self.kinds.get(rec["kind"], 0) + 1
        return got


@contextmanager
def record_events(path: str | os.PathLike[str], *, preset: str | None = None, meta: Mapping[str, Any] | None = None,
                  producer: str = "parity.events.record_events", **writer_options: Any) -> Iterator[EventRecorder]:
    """Record every :func:`emit` made inside the block into the event trace ``path``.

    Args:
        path: the ``NAME.trace`` directory to write.
        preset: the normalization preset later diffs use (``"ccpa"``).
        meta: extra trace metadata.
        **writer_options: passed to :func:`parity.record`.

    Yields:
        The :class:`EventRecorder` (``rec.emit(...)`` works too).

    >>> from parity.events import load_events
    >>> with record_events("s.trace", preset="ccpa"):
    ...     _ = emit("session_start", session_id="abc")
    >>> log = load_events("s.trace")
    >>> log.preset, log.events[0].text
    ('ccpa', '{"v":1,"kind":"session_start","session_id":"abc"}')
    """
    if preset is not None:
        from .presets import preset_rules

        preset_rules(preset)
    full = dict(meta or {})
    full[EVENTS_META] = {"v": META_VERSION, "preset": preset, "source": producer, "events": 0, "malformed": []}
    with record(path, meta=full, producer=producer, **writer_options) as writer:
        rec = EventRecorder(writer)
        token = _ACTIVE.set(rec)
        try:
            yield rec
        finally:
            _ACTIVE.reset(token)
            info = dict(full[EVENTS_META])
            info["events"] = rec.count
            writer.update_meta(**{EVENTS_META: info})


def emit(kind: str, *, turn: Any = None, **fields: Any) -> str | None:
    """Record an event in the active :func:`record_events` (its stage key), or do nothing (``None``).

    >>> emit("user_prompt", turn=1, text="hi") is None  # no recording: a no-op
    True
    >>> with record_events("s.trace"):
    ...     emit("user_prompt", turn=1, text="hi")
    'events.0000.user_prompt[turn=1]'
    """
    rec = _ACTIVE.get()
    if rec is None:
        return None
    return rec.emit(kind, turn=turn, **fields)
