"""Event logs in and out: parse JSONL, import into a trace (one text stage per record, holding
the record's exact line), export back byte for byte, and load events from either.

A record is one line holding a JSON object with the envelope ``{"v": 1, "kind": "..."}``.
Lines that are not (bad JSON, not an object, no ``v`` or ``kind``, an unknown ``v``, not UTF-8)
are *malformed*: reported with their line numbers and counted, never silently dropped. By default
a log with malformed lines is refused (:class:`~parity.errors.ImportFormatError` listing them);
with ``skip_malformed=True`` they are left out of the comparison, kept verbatim in the trace's
metadata (so the export still gives back the file) and warned about.

Event traces are ordinary traces: stage ``events.0003.assistant_turn[turn=1]`` is the fourth
record, and the manifest's ``meta["parity_events"]`` marks the trace as an event trace.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ImportFormatError, TraceFormatError, UsageError
from ..limits import MAX_NESTING, gc_paused
from ..safefs import atomic_file
from ..trace.reader import Trace, load_trace
from ..trace.writer import TraceWriter

__all__ = ["Event", "Malformed", "EventLog", "parse_jsonl", "read_jsonl", "import_events", "export_events",
           "load_events", "is_event_trace", "event_key", "EVENTS_META", "SUPPORTED_VERSIONS", "ImportSummary"]

EVENTS_META = "parity_events"
SUPPORTED_VERSIONS = (1,)
META_VERSION = 1
_KIND_RE = re.compile(r"[^A-Za-z0-9_+\-:@]")
_TURN_RE = re.compile(r"^[A-Za-z0-9_+\-.:@]+$")
_MAX_EXAMPLES = 10


@dataclass(frozen=True)
class Event:
    """One record of an event log.

    Attributes:
        index: position among the log's records (0-based; malformed lines are not records).
        kind: the record's ``kind``.
        turn: its ``turn`` (``None`` when it has none).
        line: 1-based line number in the source file.
        text: the record's exact line (without the line break).
        record: the parsed JSON object.
        key: the stage key it has (or would have) in an event trace.

    >>> e = parse_jsonl(b'{"v":1,"kind":"session_start"}\\n{"v":1,"kind":"user_prompt","turn":1,"text":"hi"}\\n').events[1]
    >>> e.index, e.kind, e.turn, e.line, e.key
    (1, 'user_prompt', 1, 2, 'events.0001.user_prompt[turn=1]')
    >>> e.record["text"]
    'hi'
    """

    index: int
    kind: str
    turn: Any
    line: int
    text: str
    record: dict[str, Any]
    key: str


@dataclass(frozen=True)
class Malformed:
    """A line that is not a valid record: its number, why, and its text (``None`` if not UTF-8).

    >>> m = parse_jsonl(b'{"v":1,"kind":"a"}\\nnot json\\n', skip_malformed=True).malformed[0]
    >>> m.describe(), m.text
    ('line 2: not valid JSON (Expecting value: line 1 column 1 (char 0))', 'not json')
    """

    line: int
    reason: str
    text: str | None = None
    hex: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"line": self.line, "reason": self.reason}
        if self.text is not None:
            d["text"] = self.text
        if self.hex is not None:
            d["hex"] = self.hex
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Malformed:
        return cls(int(d["line"]), str(d["reason"]), d.get("text"), d.get("hex"))

    def describe(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class EventLog:
    """The records of one log (parsed from JSONL or read from an event trace).

    Attributes:
        source: the file or trace it came from.
        events: the records, in order.
        malformed: lines that were not records (only with ``skip_malformed``).
        preset: the preset recorded at import time (``None`` if none).
        layout: what the byte-identical export needs besides the records (BOM, blank lines,
            whether the file ended with a newline).

    >>> log = parse_jsonl(b'{"v":1,"kind":"a"}\\n\\n{"v":1,"kind":"b"}', "s.jsonl")
    >>> log.source, len(log), [e.kind for e in log.events], log.layout
    ('s.jsonl', 2, ['a', 'b'], {'final_newline': False, 'blank_lines': {'2': ''}})
    """

    source: str
    events: list[Event]
    malformed: list[Malformed] = field(default_factory=list)
    preset: str | None = None
    layout: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.events)


def event_key(index: int, kind: str, turn: Any) -> str:
    """The stage key of record ``index``: ``events.NNNN.KIND[turn=T]``.

    Characters a key cannot hold are replaced by ``_`` in the kind (the record keeps the real one);
    a turn that is not a plain number or word is left out of the key.

    >>> event_key(3, "assistant_turn", 1)
    'events.0003.assistant_turn[turn=1]'
    >>> event_key(12, "hook event/x", None)
    'events.0012.hook_event_x'
    """
    safe = _KIND_RE.sub("_", kind)[:200] or "_"
    if not safe[0].isalnum() and safe[0] != "_":
        safe = "_" + safe
    key = f"events.{index:04d}.{safe}"
    if turn is not None and not isinstance(turn, bool) and isinstance(turn, (int, str)) and _TURN_RE.match(str(turn)) \
            and len(str(turn)) <= 64:
        key += f"[turn={turn}]"
    return key


def _depth_ok(text: str) -> bool:
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return True
    from ..trace.jsonsafe import nesting_depth

    return nesting_depth(text.encode("utf-8")) <= MAX_NESTING


def _reject_constant(name: str) -> Any:
    """``json.loads``'s ``parse_constant``: NaN and Infinity are not JSON; the line is malformed."""
    raise ImportFormatError(f"{name} is not a JSON number")


def check_record(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse one line: ``(record, None)``, or ``(None, why it is malformed)``.

    >>> check_record('{"v": 1, "kind": "user_prompt", "turn": 1, "text": "hi"}')[0]["kind"]
    'user_prompt'
    >>> check_record('{"kind": "user_prompt"}')[1]
    'no "v" field (the envelope is {"v": 1, "kind": ...})'
    """
    if not _depth_ok(text):
        return None, f"nests JSON more than {MAX_NESTING} levels deep"
    try:
        rec = json.loads(text, parse_constant=_reject_constant)
    except ImportFormatError as e:
        return None, f"not valid JSON ({e.message})"
    except ValueError as e:
        msg = str(e)
        return None, f"not valid JSON ({msg})"
    except RecursionError:
        return None, "nests JSON too deeply"
    if type(rec) is not dict:
        return None, f"not a JSON object (a {type(rec).__name__ if rec is not None else 'null'})"
    if "v" not in rec:
        return None, 'no "v" field (the envelope is {"v": 1, "kind": ...})'
    v = rec["v"]
    if type(v) is not int or v not in SUPPORTED_VERSIONS:
        return None, f"unknown envelope version v={json.dumps(v)[:40]} (this parity reads v=" + \
            ", ".join(map(str, SUPPORTED_VERSIONS)) + ")"
    kind = rec.get("kind")
    if "kind" not in rec:
        return None, 'no "kind" field'
    if type(kind) is not str or not kind:
        return None, f'"kind" must be a non-empty string, got {json.dumps(kind)[:40]}'
    return rec, None


def parse_jsonl(data: bytes, source: str = "<bytes>", *, skip_malformed: bool = False) -> EventLog:
    """Parse the bytes of a JSONL event log.

    Raises:
        ImportFormatError: malformed lines (without ``skip_malformed``), listing the first ten
            with their line numbers and the total.

    >>> log = parse_jsonl(b'{"v":1,"kind":"session_start","ts":5}\\n{"v":1,"kind":"user_prompt","turn":1}\\n')
    >>> [e.key for e in log.events]
    ['events.0000.session_start', 'events.0001.user_prompt[turn=1]']
    >>> parse_jsonl(b'{"v":1,"kind":"a"}\\nnot json\\n', "s.jsonl")
    Traceback (most recent call last):
    ...
    parity.errors.ImportFormatError: s.jsonl: 1 malformed line of 2: line 2: not valid JSON (Expecting value: line 1 column 1 (char 0)); fix the log, or pass --skip-malformed to compare without them (they are then counted and kept in the trace's metadata).
    """
    layout: dict[str, Any] = {}
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        layout["bom"] = True
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
        final_newline = True
    else:
        final_newline = False
    if not final_newline:
        layout["final_newline"] = False
    events: list[Event] = []
    malformed: list[Malformed] = []
    blank: dict[str, str] = {}
    loads = json.loads
    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            malformed.append(Malformed(number, f"not UTF-8 text (invalid byte at column {e.start + 1})", None, raw.hex()))
            continue
        if not text.strip():
            blank[str(number)] = text
            continue
        # fast path: an ordinary record; anything unusual goes through check_record for its reason
        rec = None
        if text.count("{") + text.count("[") <= MAX_NESTING:
            try:
                rec = loads(text, parse_constant=_reject_constant)
            except (ValueError, ImportFormatError, RecursionError):
                rec = None
        if type(rec) is not dict or type(rec.get("v")) is not int or rec["v"] not in SUPPORTED_VERSIONS \
                or type(rec.get("kind")) is not str or not rec["kind"]:
            rec, why = check_record(text)
            if rec is None:
                malformed.append(Malformed(number, why or "malformed", text))
                continue
        kind = rec["kind"]
        turn = rec.get("turn")
        i = len(events)
        events.append(Event(i, kind, turn, number, text, rec, event_key(i, kind, turn)))
    if blank:
        layout["blank_lines"] = blank
    if malformed and not skip_malformed:
        raise ImportFormatError(_malformed_message(malformed, len(lines)), path=source)
    return EventLog(source, events, malformed, None, layout)


def _malformed_message(malformed: Sequence[Malformed], total: int) -> str:
    shown = "; ".join(m.describe() for m in malformed[:_MAX_EXAMPLES])
    more = f"; and {len(malformed) - _MAX_EXAMPLES} more" if len(malformed) > _MAX_EXAMPLES else ""
    n = len(malformed)
    return (f"{n} malformed line{'s' if n != 1 else ''} of {total}: {shown}{more}; fix the log, or pass "
            "--skip-malformed to compare without them (they are then counted and kept in the trace's metadata).")


def _read_bytes(path: str) -> bytes:
    if os.path.isdir(path):
        raise ImportFormatError("is a directory; expected a JSONL event log (one JSON record per line).", path=path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImportFormatError("no such file.", path=path) from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ImportFormatError(f"is a damaged gzip file ({e}).", path=path) from None
    return data


def read_jsonl(path: str | os.PathLike[str], *, skip_malformed: bool = False) -> EventLog:
    """Parse a JSONL event log file (plain or gzip). See :func:`parse_jsonl`.

    >>> import gzip
    >>> _ = open("s.jsonl.gz", "wb").write(gzip.compress(b'{"v":1,"kind":"session_start"}\\n'))
    >>> [e.key for e in read_jsonl("s.jsonl.gz").events]
    ['events.0000.session_start']
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    with gc_paused():
        return parse_jsonl(data, path, skip_malformed=skip_malformed)


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_events` wrote: the trace, its record count, per-kind counts, malformed lines.

    >>> _ = open("s.jsonl", "w").write('{"v":1,"kind":"user_prompt","turn":1}\\n{"v":1,"kind":"user_prompt","turn":2}\\n')
    >>> s = import_events("s.jsonl", "s.trace")
    >>> s.path, s.events, s.kinds, s.malformed
    ('s.trace', 2, {'user_prompt': 2}, [])
    """

    path: str
    events: int
    kinds: dict[str, int]
    malformed: list[Malformed]
    preset: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "events": self.events, "kinds": dict(self.kinds),
                "malformed": [m.to_dict() for m in self.malformed], "preset": self.preset}


def _meta(log: EventLog, preset: str | None, source: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"v": META_VERSION, "preset": preset, "source": os.path.basename(source),
                            "events": len(log.events), "malformed": [m.to_dict() for m in log.malformed]}
    if log.layout:
        meta["layout"] = log.layout
    return meta


def write_events(writer: TraceWriter, log: EventLog) -> None:
    """Add the records of ``log`` to an open writer, one text stage each (exact line, its line number)."""
    for e in log.events:
        key = writer.add(e.key, e.text, provenance={"line": e.line})
        if key != e.key:  # pragma: no cover - keys are unique by position
            raise TraceFormatError(f"record on line {e.line} was stored as {key!r}, not {e.key!r}.", path=writer.path)


def import_events(src: str | os.PathLike[str], out_trace: str | os.PathLike[str], *, preset: str | None = None,
                  config: Any = None, skip_malformed: bool = False, meta: Mapping[str, Any] | None = None
                  ) -> ImportSummary:
    """Import a JSONL event log into an event trace: each record a text stage holding its line.

    Args:
        src: the ``.jsonl`` file (plain or gzip).
        out_trace: the trace directory to write.
        preset: normalization preset recorded in the trace (``"ccpa"``), used by later diffs.
        config: a TOML path or dict whose ``[events] preset`` is used when ``preset`` is not given.
        skip_malformed: keep going past malformed lines (counted and kept in the metadata).
        meta: extra trace metadata.

    Raises:
        ImportFormatError: the log has malformed lines (without ``skip_malformed``), or cannot be read.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "s.jsonl")
    >>> _ = open(p, "w").write('{"v":1,"kind":"session_start","session_id":"abc"}\\n')
    >>> s = import_events(p, os.path.join(d, "s.trace"), preset="ccpa")
    >>> s.events, is_event_trace(s.path)
    (1, True)
    """
    from .config import load_events_config
    from .presets import preset_rules

    src = os.fspath(src)
    cfg = load_events_config(config)
    preset = preset if preset is not None else cfg.preset
    preset_rules(preset)  # an unknown preset is refused before anything is written
    log = read_jsonl(src, skip_malformed=skip_malformed)
    full_meta = dict(meta or {})
    full_meta[EVENTS_META] = _meta(log, preset, src)
    with TraceWriter(out_trace, meta=full_meta, producer="parity events import") as w:
        write_events(w, log)
    kinds: dict[str, int] = {}
    for e in log.events:
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
    return ImportSummary(os.fspath(out_trace), len(log.events), kinds, log.malformed, preset)


def is_event_trace(trace: str | os.PathLike[str] | Trace) -> bool:
    """Whether ``trace`` (a path or a loaded trace) is an event trace (``meta["parity_events"]``).

    A path that is not a readable trace is not an event trace (``False``, no error).

    >>> _ = open("s.jsonl", "w").write('{"v":1,"kind":"session_start"}\\n')
    >>> _ = import_events("s.jsonl", "s.trace")
    >>> is_event_trace("s.trace"), is_event_trace("ref.trace"), is_event_trace("s.jsonl")
    (True, False, False)
    """
    if not isinstance(trace, Trace):
        path = os.fspath(trace)
        try:
            with open(os.path.join(path, "manifest.json"), "rb") as f:
                head = f.read()
            meta = json.loads(head).get("meta", {})
        except (OSError, ValueError, AttributeError, RecursionError):
            return False
        return isinstance(meta, dict) and isinstance(meta.get(EVENTS_META), dict)
    return isinstance(trace.meta.get(EVENTS_META), dict)


def _from_trace(t: Trace) -> EventLog:
    info = t.meta.get(EVENTS_META)
    if not isinstance(info, dict):
        raise UsageError("is not an event trace (its metadata has no parity_events); import a JSONL log with "
                         "parity events import.", path=t.path)
    events: list[Event] = []
    for s in t:
        if s.kind != "text" or not s.key.startswith("events."):
            raise TraceFormatError(f"stage {s.key!r} is not an event record (an events.NNNN.KIND text stage).",
                                   path=t.path)
        text = s.text or ""
        rec, why = check_record(text)
        line = s.provenance.get("line")
        if rec is None:
            raise TraceFormatError(f"stage {s.key!r} holds a malformed record ({why}).", path=t.path)
        i = len(events)
        events.append(Event(i, rec["kind"], rec.get("turn"), line if type(line) is int else i + 1, text, rec, s.key))
    malformed = [Malformed.from_dict(m) for m in info.get("malformed", []) if isinstance(m, dict) and "line" in m]
    preset = info.get("preset") if isinstance(info.get("preset"), str) else None
    layout = info.get("layout") if isinstance(info.get("layout"), dict) else {}
    return EventLog(t.path, events, malformed, preset, layout)


def load_events(src: str | os.PathLike[str] | Trace | EventLog, *, skip_malformed: bool = False) -> EventLog:
    """The records of an event trace, or of a JSONL file parsed on the fly.

    >>> _ = open("s.jsonl", "w").write('{"v":1,"kind":"session_start"}\\n')
    >>> _ = import_events("s.jsonl", "s.trace", preset="ccpa")
    >>> [(log.source, log.preset, len(log)) for log in (load_events("s.jsonl"), load_events("s.trace"))]
    [('s.jsonl', None, 1), ('s.trace', 'ccpa', 1)]
    """
    if isinstance(src, EventLog):
        return src
    if isinstance(src, Trace):
        return _from_trace(src)
    path = os.fspath(src)
    if os.path.isdir(path):
        with gc_paused():
            return _from_trace(load_trace(path))
    return read_jsonl(path, skip_malformed=skip_malformed)


def export_events(trace: str | os.PathLike[str] | Trace, out: str | os.PathLike[str]) -> int:
    """Write an event trace back as the JSONL file it was imported from, byte for byte.

    Records, malformed lines kept by ``skip_malformed``, blank lines, a byte-order mark and the
    final newline come back as they were (a gzip source comes back uncompressed). Returns the bytes written.

    Example:
        >>> line = '{"v":1,"kind":"user_prompt","turn":1,"text":"hi"}\\r\\n'
        >>> _ = open("s.jsonl", "w", newline="").write(line)
        >>> _ = import_events("s.jsonl", "s.trace")
        >>> export_events("s.trace", "back.jsonl"), open("back.jsonl", newline="").read() == line
        (51, True)
    """
    log = load_events(trace if isinstance(trace, Trace) else load_trace(os.fspath(trace)))
    data = render_jsonl(log)
    with atomic_file(os.fspath(out)) as f:
        f.write(data)
    return len(data)


def render_jsonl(log: EventLog) -> bytes:
    """The bytes of the JSONL file ``log`` came from.

    >>> data = b'\\xef\\xbb\\xbf{"v":1,"kind":"a"}\\n\\n{"v":1,"kind":"b"}'  # a BOM, a blank line, no final newline
    >>> render_jsonl(parse_jsonl(data)) == data
    True
    """
    by_line: dict[int, bytes] = {}
    for e in log.events:
        by_line[e.line] = e.text.encode("utf-8")
    for m in log.malformed:
        by_line[m.line] = m.text.encode("utf-8") if m.text is not None else bytes.fromhex(m.hex or "")
    for n, text in (log.layout.get("blank_lines") or {}).items():
        by_line[int(n)] = str(text).encode("utf-8")
    last = max(by_line, default=0)
    out = b"\n".join(by_line.get(i, b"") for i in range(1, last + 1))
    if last and log.layout.get("final_newline", True):
        out += b"\n"
    if log.layout.get("bom"):
        out = b"\xef\xbb\xbf" + out
    return out


def iter_kinds(events: Iterable[Event]) -> dict[str, int]:
    """Records per kind, in order of first appearance."""
    out: dict[str, int] = {}
    for e in events:
        out[e.kind] = out.get(e.kind, 0) + 1
    return out
