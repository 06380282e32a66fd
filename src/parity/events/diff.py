"""Compare two event logs: normalize, align by edit distance, diff the divergent events field by
field, count per kind, score.

**Score.** Every aligned pair of events contributes its similarity ``s``: 1 for events equal
after normalization (numbers under a tolerance within it, numbered ids consistent), and for an
edited event (a substitution) the fraction of its leaf fields that agree,
``s = (fields - differing) / fields`` over the union of both events' leaf fields. Inserted and
deleted events contribute 0. Then

    score = 2 · Σ s / (N_ref + N_cand)

which is 1 exactly when every event has an equal counterpart, 0 when nothing matches, and the
ratio of :class:`difflib.SequenceMatcher` when edited events count as unmatched.

**Verdict.** Without a minimum score, parity holds when no event diverges. With ``min_score``
(``--min-score``, ``[events] min_score``), parity holds when ``score >= min_score``. Two empty
logs compare nothing: never parity.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ParityError, UsageError
from ..trace.reader import Trace
from .align import diff_sequences, refine_block
from .config import EventsConfig, load_events_config
from .jsonl import Event, EventLog, gc_paused, load_events
from .normalize import Normalized, Normalizer, NumberedId, RuleSet, TolerantNumber, format_path, unmark
from .presets import preset_rules

__all__ = ["FieldDiff", "EventRef", "EventOp", "KindCounts", "EventDiff", "compare_events", "FixtureResult",
           "EventDirDiff", "compare_event_dirs", "EVENTS_DIFF_SCHEMA", "EVENTS_DIFF_SCHEMA_VERSION"]

EVENTS_DIFF_SCHEMA = "parity.events.diff"
EVENTS_DIFF_SCHEMA_VERSION = 1
EVENTS_DIRS_SCHEMA = "parity.events.dirs"
_TEXT_DIFF_MIN = 60  # strings longer than this (or multi-line) get a unified diff


@dataclass(frozen=True)
class FieldDiff:
    """One field that differs between two aligned events.

    Attributes:
        path: the field path, e.g. ``content[1].input.command``.
        ref, cand: the normalized values (``None`` with ``ref_absent``/``cand_absent`` when one
            side lacks the field).
        note: why they differ when not plain inequality (a tolerance, a numbered id).
        text_diff: a unified diff of the two strings (long or multi-line text fields).
    """

    path: str
    ref: Any = None
    cand: Any = None
    ref_absent: bool = False
    cand_absent: bool = False
    note: str = ""
    text_diff: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "ref": self.ref, "cand": self.cand}
        if self.ref_absent:
            d["ref_absent"] = True
        if self.cand_absent:
            d["cand_absent"] = True
        if self.note:
            d["note"] = self.note
        if self.text_diff is not None:
            d["text_diff"] = list(self.text_diff)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FieldDiff:
        return cls(d["path"], d.get("ref"), d.get("cand"), bool(d.get("ref_absent")), bool(d.get("cand_absent")),
                   d.get("note", ""), list(d["text_diff"]) if d.get("text_diff") is not None else None)

    def describe(self) -> str:
        """``path: ref -> cand`` on one line (values as compact JSON, cut to 80 characters)."""
        r = "(absent)" if self.ref_absent else _short_json(self.ref)
        c = "(absent)" if self.cand_absent else _short_json(self.cand)
        return f"{self.path}: {r} -> {c}" + (f"  [{self.note}]" if self.note else "")


def _short_json(v: Any, limit: int = 80) -> str:
    text = json.dumps(v, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[:limit - 12] + "…" + text[-10:]


@dataclass(frozen=True)
class EventRef:
    """One event as a report names it: position, stage key, kind, turn, source line, a summary,
    and (for events shown in detail) the normalized record."""

    index: int
    key: str
    kind: str
    turn: Any
    line: int
    summary: str
    record: Any = None

    def to_dict(self) -> dict[str, Any]:
        d = {"index": self.index, "key": self.key, "kind": self.kind, "turn": self.turn, "line": self.line,
             "summary": self.summary}
        if self.record is not None:
            d["record"] = self.record
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EventRef:
        return cls(d["index"], d["key"], d["kind"], d.get("turn"), d.get("line", 0), d.get("summary", ""),
                   d.get("record"))

    def label(self) -> str:
        """``#4 assistant_turn turn=2 (line 5)``."""
        turn = f" turn={self.turn}" if self.turn is not None else ""
        return f"#{self.index} {self.kind}{turn} (line {self.line})"


@dataclass(frozen=True)
class EventOp:
    """A divergent step of the alignment: an edited event (``changed``), or one ``deleted``
    (reference only) or ``inserted`` (candidate only). ``fields`` is ``None`` past ``max_detail``."""

    op: str
    ref: EventRef | None
    cand: EventRef | None
    similarity: float = 0.0
    fields: list[FieldDiff] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "ref": self.ref.to_dict() if self.ref else None,
                "cand": self.cand.to_dict() if self.cand else None, "similarity": self.similarity,
                "fields": [f.to_dict() for f in self.fields] if self.fields is not None else None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EventOp:
        return cls(d["op"], EventRef.from_dict(d["ref"]) if d.get("ref") else None,
                   EventRef.from_dict(d["cand"]) if d.get("cand") else None, float(d.get("similarity", 0.0)),
                   [FieldDiff.from_dict(f) for f in d["fields"]] if d.get("fields") is not None else None)

    @property
    def kind(self) -> str:
        side = self.ref or self.cand
        return side.kind if side else ""

    def describe(self) -> str:
        """One line: ``changed #4 assistant_turn turn=2 (line 5) ~ #4 ... (line 5), similarity 0.83``."""
        if self.op == "changed":
            assert self.ref and self.cand
            return f"changed {self.ref.label()} ~ cand {self.cand.label()}, similarity {self.similarity:.2f}"
        side = self.ref if self.op == "deleted" else self.cand
        assert side is not None
        where = "reference only" if self.op == "deleted" else "candidate only"
        return f"{self.op} {side.label()} ({where}): {side.summary}"


@dataclass
class KindCounts:
    """Events of one kind: on each side, and how they aligned."""

    ref: int = 0
    cand: int = 0
    equal: int = 0
    changed: int = 0
    deleted: int = 0
    inserted: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: Mapping[str, int]) -> KindCounts:
        return cls(**{k: int(d.get(k, 0)) for k in ("ref", "cand", "equal", "changed", "deleted", "inserted")})


@dataclass
class EventDiff:
    """The result of comparing two event logs (serializable: :meth:`to_dict` / :meth:`from_dict`).

    Attributes:
        ref_path, cand_path: what was compared.
        preset: the normalization preset used.
        verdict: ``parity``, ``divergence`` or ``nothing_compared``.
        score: similarity in [0, 1] (see the module docstring).
        min_score: the gate, when one was set.
        n_ref, n_cand: records on each side.
        equal, changed, deleted, inserted: how the events aligned.
        ops: the divergent steps, in alignment order (the first is :attr:`first_divergence`).
        alignment: the whole alignment as runs ``[tag, ref_start, ref_end, cand_start, cand_end]``
            with tags ``equal``, ``changed``, ``deleted``, ``inserted``.
        kinds: per-kind :class:`KindCounts`, in order of first appearance.
        unused_rules: normalization rules that matched no field of either log.
        malformed: malformed lines left out, per side (``{"ref": [...], "cand": [...]}``).
        notes: anything else a reader should know.
        rules: every rule applied (one line each).
    """

    ref_path: str
    cand_path: str
    preset: str | None
    verdict: str
    score: float
    min_score: float | None
    n_ref: int
    n_cand: int
    equal: int
    changed: int
    deleted: int
    inserted: int
    ops: list[EventOp] = field(default_factory=list)
    alignment: list[list[Any]] = field(default_factory=list)
    kinds: dict[str, KindCounts] = field(default_factory=dict)
    unused_rules: list[str] = field(default_factory=list)
    malformed: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether parity holds (the verdict is ``parity``)."""
        return self.verdict == "parity"

    @property
    def exact(self) -> bool:
        """Whether no event diverges (also when a ``min_score`` let the diff pass)."""
        return not self.ops and (self.n_ref or self.n_cand) > 0

    @property
    def first_divergence(self) -> EventOp | None:
        """The first divergent step in alignment order, or ``None``."""
        return self.ops[0] if self.ops else None

    @property
    def deletions(self) -> list[EventOp]:
        return [o for o in self.ops if o.op == "deleted"]

    @property
    def insertions(self) -> list[EventOp]:
        return [o for o in self.ops if o.op == "inserted"]

    @property
    def hunks(self) -> list[list[Any]]:
        """Runs of the alignment that are not ``equal``, merged when adjacent:
        ``[ref_start, ref_end, cand_start, cand_end]``."""
        out: list[list[Any]] = []
        for tag, i1, i2, j1, j2 in self.alignment:
            if tag == "equal":
                continue
            if out and out[-1][1] == i1 and out[-1][3] == j1:
                out[-1][1], out[-1][3] = i2, j2
            else:
                out.append([i1, i2, j1, j2])
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (schema ``parity.events.diff`` version 1; see docs/events.md)."""
        return {
            "schema": EVENTS_DIFF_SCHEMA, "schema_version": EVENTS_DIFF_SCHEMA_VERSION,
            "ref": self.ref_path, "cand": self.cand_path, "preset": self.preset, "verdict": self.verdict,
            "passed": self.passed, "score": self.score, "min_score": self.min_score,
            "counts": {"ref": self.n_ref, "cand": self.n_cand, "equal": self.equal, "changed": self.changed,
                       "deleted": self.deleted, "inserted": self.inserted},
            "first_divergence": self.first_divergence.to_dict() if self.first_divergence else None,
            "ops": [o.to_dict() for o in self.ops],
            "alignment": [list(r) for r in self.alignment],
            "kinds": {k: v.to_dict() for k, v in self.kinds.items()},
            "unused_rules": list(self.unused_rules), "malformed": {k: list(v) for k, v in self.malformed.items()},
            "notes": list(self.notes), "rules": list(self.rules),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EventDiff:
        """Rebuild a result from :meth:`to_dict`'s form.

        Raises:
            UsageError: not a ``parity.events.diff`` document of a version this parity reads.
        """
        if not isinstance(d, Mapping) or d.get("schema") != EVENTS_DIFF_SCHEMA:
            raise UsageError(f"not a {EVENTS_DIFF_SCHEMA} document.")
        if not isinstance(d.get("schema_version"), int) or d["schema_version"] > EVENTS_DIFF_SCHEMA_VERSION:
            raise UsageError(f"{EVENTS_DIFF_SCHEMA} schema_version {d.get('schema_version')!r}; this parity reads "
                             f"1 to {EVENTS_DIFF_SCHEMA_VERSION}.")
        c = d["counts"]
        return cls(d["ref"], d["cand"], d.get("preset"), d["verdict"], float(d["score"]), d.get("min_score"),
                   c["ref"], c["cand"], c["equal"], c["changed"], c["deleted"], c["inserted"],
                   [EventOp.from_dict(o) for o in d.get("ops", [])], [list(r) for r in d.get("alignment", [])],
                   {k: KindCounts.from_dict(v) for k, v in d.get("kinds", {}).items()}, list(d.get("unused_rules", [])),
                   {k: list(v) for k, v in d.get("malformed", {}).items()}, list(d.get("notes", [])),
                   list(d.get("rules", [])))


# -- comparing values ---------------------------------------------------------------------------------

class _Ids:
    """The correspondence of numbered ids (per group) established by the aligned pairs so far."""

    def __init__(self) -> None:
        self.r2c: dict[tuple[str, int], int] = {}
        self.c2r: dict[tuple[str, int], int] = {}

    def check(self, r: NumberedId, c: NumberedId, commit: bool) -> str:
        """``""`` when consistent, else a note saying why not."""
        if r.group != c.group:
            return f"a {r.group} id against a {c.group} id"
        rk, ck = (r.group, r.n), (c.group, c.n)
        have = self.r2c.get(rk)
        if have is not None:
            if have == c.n:
                return ""
            return (f"reference <{r.group}-{r.n}> corresponds to candidate <{c.group}-{have}> (aligned earlier), "
                    f"not <{c.group}-{c.n}>")
        back = self.c2r.get(ck)
        if back is not None:
            return (f"candidate <{c.group}-{c.n}> corresponds to reference <{r.group}-{back}> (aligned earlier), "
                    f"not <{r.group}-{r.n}>")
        if commit:
            self.r2c[rk] = c.n
            self.c2r[ck] = r.n
        return ""


_ABSENT = object()


def _leaves(v: Any) -> int:
    t = type(v)
    if t is dict:
        return sum(_leaves(x) for x in v.values()) or 1
    if t is list:
        return sum(_leaves(x) for x in v) or 1
    return 1


def _compare(a: Any, b: Any, path: tuple[str | int, ...], ids: _Ids, commit: bool, out: list[FieldDiff] | None
             ) -> tuple[int, int]:
    """(leaf fields, differing leaf fields) of two normalized values; differences appended to ``out``."""
    ta, tb = type(a), type(b)
    if ta is dict and tb is dict:
        total = diff = 0
        for k in list(a) + [k for k in b if k not in a]:
            x, y = a.get(k, _ABSENT), b.get(k, _ABSENT)
            if x is _ABSENT or y is _ABSENT:
                n = _leaves(x if y is _ABSENT else y)
                total += n
                diff += n
                if out is not None:
                    out.append(FieldDiff(format_path(path + (k,)), None if x is _ABSENT else unmark(x),
                                         None if y is _ABSENT else unmark(y), x is _ABSENT, y is _ABSENT))
                continue
            t, d = _compare(x, y, path + (k,), ids, commit, out)
            total += t
            diff += d
        return max(total, 1), diff
    if ta is list and tb is list:
        total = diff = 0
        for j in range(max(len(a), len(b))):
            if j >= len(a) or j >= len(b):
                x = a[j] if j < len(a) else _ABSENT
                y = b[j] if j < len(b) else _ABSENT
                n = _leaves(x if y is _ABSENT else y)
                total += n
                diff += n
                if out is not None:
                    out.append(FieldDiff(format_path(path + (j,)), None if x is _ABSENT else unmark(x),
                                         None if y is _ABSENT else unmark(y), x is _ABSENT, y is _ABSENT))
                continue
            t, d = _compare(a[j], b[j], path + (j,), ids, commit, out)
            total += t
            diff += d
        return max(total, 1), diff
    note = ""
    if ta is NumberedId and tb is NumberedId:
        note = ids.check(a, b, commit)
        same = not note
    elif ta is TolerantNumber or tb is TolerantNumber:
        ra = a.value if ta is TolerantNumber else a
        cb = b.value if tb is TolerantNumber else b
        tol = a.tolerance if ta is TolerantNumber else b.tolerance
        if type(ra) in (int, float) and type(cb) in (int, float):
            same = tol.check(ra, cb)
            if not same:
                note = f"outside the tolerance: {tol.describe()}"
        else:
            same = False
    else:
        same = ta is tb and a == b
    if same:
        return 1, 0
    if out is not None:
        ua, ub = unmark(a), unmark(b)
        text_diff = None
        if type(ua) is str and type(ub) is str and (len(ua) > _TEXT_DIFF_MIN or len(ub) > _TEXT_DIFF_MIN
                                                   or "\n" in ua or "\n" in ub):
            text_diff = [ln.rstrip("\n") for ln in difflib.unified_diff(
                ua.splitlines(keepends=True), ub.splitlines(keepends=True), "reference", "candidate", n=2)]
        if ta is NumberedId and tb is NumberedId and not note:
            note = "numbered ids differ"
        out.append(FieldDiff(format_path(path), ua, ub, note=note, text_diff=text_diff))
    return 1, 1


# -- the comparison ------------------------------------------------------------------------------------

def _summary(v: Any, limit: int = 100) -> str:
    if isinstance(v, dict):
        body = {k: x for k, x in v.items() if k not in ("v", "kind", "turn")}
    else:
        body = v
    text = json.dumps(unmark(body), ensure_ascii=False, sort_keys=True, separators=(", ", ": "))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _ref(e: Event, n: Normalized, detail: bool) -> EventRef:
    return EventRef(e.index, e.key, e.kind, e.turn if e.turn is None or isinstance(e.turn, (int, str, float)) else
                    str(e.turn), e.line, _summary(n.value), unmark(n.value) if detail else None)


def _resolve_preset(explicit: str | None, cfg: EventsConfig, ref: EventLog, cand: EventLog, notes: list[str]
                    ) -> str | None:
    if explicit is not None:
        return explicit
    if cfg.preset is not None:
        return cfg.preset
    if ref.preset and cand.preset and ref.preset != cand.preset:
        notes.append(f"the traces were imported with different presets ({ref.preset} and {cand.preset}); "
                     f"using the reference's ({ref.preset}).")
    return ref.preset or cand.preset


def compare_events(
    ref: str | os.PathLike[str] | Trace | EventLog,
    cand: str | os.PathLike[str] | Trace | EventLog,
    config: str | os.PathLike[str] | Mapping[str, Any] | EventsConfig | None = None,
    *,
    preset: str | None = None,
    min_score: float | None = None,
    skip_malformed: bool = False,
    max_detail: int | None = None,
) -> EventDiff:
    """Compare candidate event log ``cand`` against reference ``ref``.

    Args:
        ref, cand: event traces (paths or loaded), JSONL files, or :class:`EventLog` objects.
        config: a TOML path or dict with an ``[events]`` table (rules, tolerances, preset, min_score).
        preset: normalization preset (default: the config's, else the one recorded at import).
        min_score: pass when the score reaches this instead of requiring no divergent event.
        skip_malformed: JSONL inputs only: leave malformed lines out (reported) instead of refusing.
        max_detail: divergent events given a field-level diff (default 100).

    Returns:
        An :class:`EventDiff`; a divergence is a result, never an exception.

    Raises:
        ImportFormatError: a JSONL input has malformed lines (without ``skip_malformed``).
        ConfigError: the config or preset is wrong.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> def log(name, cmd):
    ...     p = os.path.join(d, name)
    ...     with open(p, "w") as f:
    ...         f.write('{"v":1,"kind":"session_start","session_id":"%s","ts":1}\\n' % name)
    ...         f.write('{"v":1,"kind":"assistant_turn","turn":1,"content":[{"type":"tool_use","id":"t%s",'
    ...                 '"name":"Bash","input":{"command":"%s"}}]}\\n' % (name, cmd))
    ...     return p
    >>> diff = compare_events(log("a.jsonl", "ls"), log("b.jsonl", "ls -la"), preset="ccpa")
    >>> diff.passed, diff.first_divergence.ref.index, diff.first_divergence.fields[0].path
    (False, 1, 'content[0].input.command')
    """
    with gc_paused():
        return _compare_events(ref, cand, config, preset, min_score, skip_malformed, max_detail)


def _compare_events(ref, cand, config, preset, min_score, skip_malformed, max_detail) -> EventDiff:
    cfg = load_events_config(config)
    notes: list[str] = []
    a = load_events(ref, skip_malformed=skip_malformed)
    b = load_events(cand, skip_malformed=skip_malformed)
    used_preset = _resolve_preset(preset, cfg, a, b, notes)
    rules: RuleSet = cfg.rules + preset_rules(used_preset)  # the config's rules come first and win
    if min_score is None:
        min_score = cfg.min_score
    if min_score is not None and not 0 <= min_score <= 1:
        raise UsageError(f"min_score must be from 0 to 1, got {min_score!r}.")
    detail_limit = cfg.max_detail if max_detail is None else max_detail
    hits: dict[int, int] = {}
    na = Normalizer(rules, hits)
    nb = Normalizer(rules, hits)
    norm_a = [na.normalize(e.record) for e in a.events]
    norm_b = [nb.normalize(e.record) for e in b.events]
    intern: dict[str, int] = {}
    seq_a = [intern.setdefault(n.identity, len(intern)) for n in norm_a]
    seq_b = [intern.setdefault(n.identity, len(intern)) for n in norm_b]
    del intern
    opcodes = diff_sequences(seq_a, seq_b)

    ids = _Ids()
    ops: list[EventOp] = []
    alignment: list[list[Any]] = []
    kinds: dict[str, KindCounts] = {}
    for e in a.events:
        kinds.setdefault(e.kind, KindCounts()).ref += 1
    for e in b.events:
        kinds.setdefault(e.kind, KindCounts()).cand += 1
    counts = {"equal": 0, "changed": 0, "deleted": 0, "inserted": 0}
    sim_sum = 0.0

    def run(tag: str, i1: int, i2: int, j1: int, j2: int) -> None:
        if alignment and alignment[-1][0] == tag and alignment[-1][2] == i1 and alignment[-1][4] == j1:
            alignment[-1][2], alignment[-1][4] = i2, j2
        else:
            alignment.append([tag, i1, i2, j1, j2])

    def detail() -> bool:
        return len(ops) < detail_limit

    def pair(i: int, j: int, known_equal: bool) -> None:
        nonlocal sim_sum
        x, y = norm_a[i], norm_b[j]
        if known_equal and not (x.marked or y.marked):
            counts["equal"] += 1
            kinds[a.events[i].kind].equal += 1
            sim_sum += 1.0
            run("equal", i, i + 1, j, j + 1)
            return
        fields: list[FieldDiff] = []
        total, differing = _compare(x.value, y.value, (), ids, True, fields)
        if not fields:
            counts["equal"] += 1
            kinds[a.events[i].kind].equal += 1
            sim_sum += 1.0
            run("equal", i, i + 1, j, j + 1)
            return
        sim = max(0.0, (total - differing) / total) if total else 0.0
        sim = min(sim, 1.0 - 1.0 / (total + 1))  # a divergent pair is never fully similar
        counts["changed"] += 1
        kinds[a.events[i].kind].changed += 1
        sim_sum += sim
        d = detail()
        ops.append(EventOp("changed", _ref(a.events[i], x, d), _ref(b.events[j], y, d), round(sim, 6),
                           fields if d else None))
        run("changed", i, i + 1, j, j + 1)

    def single(side: str, i: int) -> None:
        ev, nv = (a.events[i], norm_a[i]) if side == "deleted" else (b.events[i], norm_b[i])
        counts[side] += 1
        setattr(kinds[ev.kind], side, getattr(kinds[ev.kind], side) + 1)
        r = _ref(ev, nv, detail())
        ops.append(EventOp(side, r if side == "deleted" else None, r if side == "inserted" else None))

    marked_a = [n.marked for n in norm_a]
    k = 0
    while k < len(opcodes):
        tag, i1, i2, j1, j2 = opcodes[k]
        if tag == "equal":
            if any(marked_a[i1:i2]) or any(norm_b[j].marked for j in range(j1, j2)):
                for off in range(i2 - i1):
                    pair(i1 + off, j1 + off, True)
            else:
                n = i2 - i1
                counts["equal"] += n
                sim_sum += n
                for i in range(i1, i2):
                    kinds[a.events[i].kind].equal += 1
                run("equal", i1, i2, j1, j2)
            k += 1
            continue
        # a block of deletions and/or insertions: pair edited events by edit distance
        di1, di2, dj1, dj2 = i1, i2, j1, j2
        if tag == "delete" and k + 1 < len(opcodes) and opcodes[k + 1][0] == "insert" and opcodes[k + 1][1] == i2:
            dj1, dj2 = opcodes[k + 1][3], opcodes[k + 1][4]
            k += 2
        else:
            k += 1

        def sim(i: int, j: int, di1=di1, dj1=dj1) -> float:
            t, dd = _compare(norm_a[di1 + i].value, norm_b[dj1 + j].value, (), ids, False, None)
            return (t - dd) / t if t else 0.0

        steps = refine_block(di2 - di1, dj2 - dj1, lambda i, di1=di1: a.events[di1 + i].kind,
                             lambda j, dj1=dj1: b.events[dj1 + j].kind, sim)
        ci, cj = di1, dj1
        for si, sj in steps:
            if si is not None and sj is not None:
                pair(ci, cj, False)
                ci, cj = ci + 1, cj + 1
            elif si is not None:
                single("deleted", ci)
                run("deleted", ci, ci + 1, cj, cj)
                ci += 1
            else:
                single("inserted", cj)
                run("inserted", ci, ci, cj, cj + 1)
                cj += 1

    total = len(a.events) + len(b.events)
    score = (2.0 * sim_sum / total) if total else 1.0
    score = round(min(1.0, max(0.0, score)), 6)
    if total == 0:
        verdict = "nothing_compared"
        notes.append("both logs are empty: nothing was compared, which is never parity.")
    elif min_score is not None:
        verdict = "parity" if score >= min_score else "divergence"
    else:
        verdict = "parity" if not ops else "divergence"
    unused = [r.describe() for i, r in enumerate(rules.rules) if not hits.get(i)]
    malformed = {}
    if a.malformed:
        malformed["ref"] = [{"line": m.line, "reason": m.reason} for m in a.malformed]
    if b.malformed:
        malformed["cand"] = [{"line": m.line, "reason": m.reason} for m in b.malformed]
    for side, lst in malformed.items():
        notes.append(f"{len(lst)} malformed line(s) of the {'reference' if side == 'ref' else 'candidate'} were left "
                     f"out of the comparison (lines {', '.join(str(m['line']) for m in lst[:10])}"
                     f"{', …' if len(lst) > 10 else ''}).")
    return EventDiff(os.fspath(a.source), os.fspath(b.source), used_preset, verdict, score, min_score,
                     len(a.events), len(b.events), counts["equal"], counts["changed"], counts["deleted"],
                     counts["inserted"], ops, alignment, kinds, unused, malformed, notes,
                     [r.describe() for r in rules.rules])


# -- directories of sessions ---------------------------------------------------------------------------

@dataclass
class FixtureResult:
    """One reference session compared with its candidate (matched by name)."""

    name: str
    ref: str | None
    cand: str | None
    score: float
    passed: bool
    verdict: str
    counts: dict[str, int] = field(default_factory=dict)
    first_divergence: str | None = None
    error: str | None = None
    diff: EventDiff | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ref": self.ref, "cand": self.cand, "score": self.score, "passed": self.passed,
                "verdict": self.verdict, "counts": dict(self.counts), "first_divergence": self.first_divergence,
                "error": self.error, "diff": self.diff.to_dict() if self.diff else None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FixtureResult:
        return cls(d["name"], d.get("ref"), d.get("cand"), float(d["score"]), bool(d["passed"]), d["verdict"],
                   dict(d.get("counts", {})), d.get("first_divergence"), d.get("error"),
                   EventDiff.from_dict(d["diff"]) if d.get("diff") else None)


@dataclass
class EventDirDiff:
    """Candidate sessions compared with reference fixtures, matched by name.

    Attributes:
        fixtures: one :class:`FixtureResult` per reference fixture (a missing candidate scores 0).
        extra: candidate sessions without a reference fixture (listed, not scored).
        mean_score: the mean of the fixtures' scores (the aggregate), ``min``: the lowest.
        min_score, min_mean: the gates in force.
    """

    ref_dir: str
    cand_dir: str
    fixtures: list[FixtureResult]
    extra: list[str]
    mean_score: float
    lowest_score: float
    min_score: float | None = None
    min_mean: float | None = None

    @property
    def passed(self) -> bool:
        """Every fixture passed (and the mean reaches ``min_mean`` when given); none is missing or unreadable."""
        if not self.fixtures:
            return False
        if not all(f.passed for f in self.fixtures):
            return False
        return self.min_mean is None or self.mean_score >= self.min_mean

    @property
    def errors(self) -> list[FixtureResult]:
        return [f for f in self.fixtures if f.error]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": EVENTS_DIRS_SCHEMA, "schema_version": 1, "ref": self.ref_dir, "cand": self.cand_dir,
                "passed": self.passed, "aggregate": {"mean_score": self.mean_score, "lowest_score": self.lowest_score,
                                                     "fixtures": len(self.fixtures),
                                                     "passed": sum(f.passed for f in self.fixtures)},
                "min_score": self.min_score, "min_mean": self.min_mean,
                "fixtures": [f.to_dict() for f in self.fixtures], "extra": list(self.extra)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EventDirDiff:
        if d.get("schema") != EVENTS_DIRS_SCHEMA:
            raise UsageError(f"not a {EVENTS_DIRS_SCHEMA} document.")
        agg = d["aggregate"]
        return cls(d["ref"], d["cand"], [FixtureResult.from_dict(f) for f in d["fixtures"]], list(d.get("extra", [])),
                   float(agg["mean_score"]), float(agg["lowest_score"]), d.get("min_score"), d.get("min_mean"))


def session_files(directory: str | os.PathLike[str]) -> dict[str, str]:
    """Sessions in ``directory`` by name: ``NAME.jsonl`` (or ``.jsonl.gz``) files, ``NAME.trace``
    event traces, and ``NAME/`` folders holding one ``.jsonl`` file (e.g. ``NAME/ccpa-trace.jsonl``).

    Raises:
        UsageError: ``directory`` is not a directory.
    """
    d = os.fspath(directory)
    if not os.path.isdir(d):
        raise UsageError("is not a directory of sessions.", path=d)
    out: dict[str, str] = {}
    for entry in sorted(os.listdir(d)):
        full = os.path.join(d, entry)
        if os.path.islink(full) and not os.path.realpath(full).startswith(os.path.realpath(d) + os.sep):
            continue  # never follow a link out of the directory given
        name = None
        if os.path.isfile(full):
            for suffix in (".jsonl.gz", ".jsonl"):
                if entry.endswith(suffix):
                    name = entry[: -len(suffix)]
        elif os.path.isdir(full):
            if entry.endswith(".trace") and os.path.exists(os.path.join(full, "manifest.json")):
                name = entry[: -len(".trace")]
            else:
                inner = sorted(f for f in os.listdir(full) if f.endswith((".jsonl", ".jsonl.gz"))
                               and os.path.isfile(os.path.join(full, f)))
                if len(inner) == 1:
                    name, full = entry, os.path.join(full, inner[0])
                elif "ccpa-trace.jsonl" in inner:
                    name, full = entry, os.path.join(full, "ccpa-trace.jsonl")
        if name and name not in out:
            out[name] = full
    return out


def compare_event_dirs(
    ref_dir: str | os.PathLike[str],
    cand_dir: str | os.PathLike[str],
    config: str | os.PathLike[str] | Mapping[str, Any] | EventsConfig | None = None,
    *,
    preset: str | None = None,
    min_score: float | None = None,
    min_mean: float | None = None,
    skip_malformed: bool = False,
) -> EventDirDiff:
    """Compare every candidate session with the reference fixture of the same name.

    A fixture without a candidate scores 0 and fails; a session that cannot be read is reported
    with its error (and fails); candidates without a fixture are listed in ``extra``. The
    aggregate is the mean score over the fixtures.

    >>> import os, tempfile
    >>> r, c = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> for d in (r, c):
    ...     _ = open(os.path.join(d, "s1.jsonl"), "w").write('{"v":1,"kind":"session_start","ts":%d}\\n' % len(d))
    >>> res = compare_event_dirs(r, c, preset="ccpa")
    >>> [(f.name, f.score) for f in res.fixtures], res.mean_score, res.passed
    ([('s1', 1.0)], 1.0, True)
    """
    cfg = load_events_config(config)
    refs = session_files(ref_dir)
    cands = session_files(cand_dir)
    fixtures: list[FixtureResult] = []
    for name, rpath in refs.items():
        cpath = cands.get(name)
        if cpath is None:
            fixtures.append(FixtureResult(name, rpath, None, 0.0, False, "missing",
                                          first_divergence="no candidate session of this name"))
            continue
        try:
            d = compare_events(rpath, cpath, cfg, preset=preset, min_score=min_score, skip_malformed=skip_malformed)
        except ParityError as e:
            fixtures.append(FixtureResult(name, rpath, cpath, 0.0, False, "error", error=str(e)))
            continue
        first = d.first_divergence
        fixtures.append(FixtureResult(name, rpath, cpath, d.score, d.passed, d.verdict,
                                      {"ref": d.n_ref, "cand": d.n_cand, "equal": d.equal, "changed": d.changed,
                                       "deleted": d.deleted, "inserted": d.inserted},
                                      first.describe() if first else None, None, d))
    extra = sorted(set(cands) - set(refs))
    scores = [f.score for f in fixtures]
    mean = round(sum(scores) / len(scores), 6) if scores else 0.0
    used_min = min_score if min_score is not None else cfg.min_score
    return EventDirDiff(os.fspath(ref_dir), os.fspath(cand_dir), fixtures, extra, mean, min(scores, default=0.0),
                        used_min, min_mean)
