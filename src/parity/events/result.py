"""The results of comparing event logs: :class:`EventDiff` (two logs) and :class:`EventDirDiff`
(directories of sessions), with their parts, each serializable (``to_dict`` / ``from_dict``:
the ``parity.events.diff`` and ``parity.events.dirs`` JSON documents, see docs/events.md).

How a diff is computed (normalization, alignment, the score) is :mod:`parity.events.diff`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError

__all__ = ["FieldDiff", "EventRef", "EventOp", "KindCounts", "EventDiff", "FixtureResult", "EventDirDiff",
           "EVENTS_DIFF_SCHEMA", "EVENTS_DIFF_SCHEMA_VERSION", "EVENTS_DIRS_SCHEMA"]

EVENTS_DIFF_SCHEMA = "parity.events.diff"
EVENTS_DIFF_SCHEMA_VERSION = 1
EVENTS_DIRS_SCHEMA = "parity.events.dirs"


@dataclass(frozen=True)
class FieldDiff:
    """One field that differs between two aligned events.

    Attributes:
        path: the field path, e.g. ``content[1].input.command``.
        ref, cand: the normalized values (``None`` with ``ref_absent``/``cand_absent`` when one
            side lacks the field).
        note: why they differ when not plain inequality (a tolerance, a numbered id).
        text_diff: a unified diff of the two strings (long or multi-line text fields).

    >>> from parity.events import compare_events
    >>> for name, cmd in (("a", "ls"), ("b", "ls -la")):
    ...     _ = open(name + ".jsonl", "w").write('{"v":1,"kind":"session_start","session_id":"%s"}\\n'
    ...                                          '{"v":1,"kind":"assistant_turn","turn":1,"text":"%s"}\\n' % (name, cmd))
    >>> op = compare_events("a.jsonl", "b.jsonl", preset="ccpa").first_divergence
    >>> f = op.fields[0]
    >>> f.path, f.ref, f.cand, f.describe()
    ('text', 'ls', 'ls -la', 'text: "ls" -> "ls -la"')
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
    and (for events shown in detail) the normalized record.

    >>> from parity.events import compare_events
    >>> for name, cmd in (("a", "ls"), ("b", "ls -la")):
    ...     _ = open(name + ".jsonl", "w").write('{"v":1,"kind":"session_start","session_id":"%s"}\\n'
    ...                                          '{"v":1,"kind":"assistant_turn","turn":1,"text":"%s"}\\n' % (name, cmd))
    >>> op = compare_events("a.jsonl", "b.jsonl", preset="ccpa").first_divergence
    >>> op.ref.key, op.ref.summary, op.ref.label()
    ('events.0001.assistant_turn[turn=1]', '{"text": "ls"}', '#1 assistant_turn turn=1 (line 2)')
    """

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
    (reference only) or ``inserted`` (candidate only). ``fields`` is ``None`` past ``max_detail``.

    >>> from parity.events import compare_events
    >>> for name, cmd in (("a", "ls"), ("b", "ls -la")):
    ...     _ = open(name + ".jsonl", "w").write('{"v":1,"kind":"session_start","session_id":"%s"}\\n'
    ...                                          '{"v":1,"kind":"assistant_turn","turn":1,"text":"%s"}\\n' % (name, cmd))
    >>> op = compare_events("a.jsonl", "b.jsonl", preset="ccpa").first_divergence
    >>> op.op, op.kind, op.similarity, op.describe()
    ('changed', 'assistant_turn', 0.75, 'changed #1 assistant_turn turn=1 (line 2) ~ cand #1 assistant_turn turn=1 (line 2), similarity 0.75')
    """

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
    """Events of one kind: on each side, and how they aligned.

    >>> from parity.events import compare_events
    >>> for name, cmd in (("a", "ls"), ("b", "ls -la")):
    ...     _ = open(name + ".jsonl", "w").write('{"v":1,"kind":"session_start","session_id":"%s"}\\n'
    ...                                          '{"v":1,"kind":"assistant_turn","turn":1,"text":"%s"}\\n' % (name, cmd))
    >>> diff = compare_events("a.jsonl", "b.jsonl", preset="ccpa")
    >>> diff.kinds["assistant_turn"]
    KindCounts(ref=1, cand=1, equal=0, changed=1, deleted=0, inserted=0)
    """

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

    Example:
        >>> d = EventDiff("a.jsonl", "b.jsonl", "ccpa", "divergence", 0.8, None, 2, 3, 2, 0, 0, 1,
        ...               alignment=[["equal", 0, 2, 0, 2], ["inserted", 2, 2, 2, 3]])
        >>> d.passed, d.hunks, EventDiff.from_dict(d.to_dict()) == d
        (False, [[2, 2, 2, 3]], True)
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


@dataclass
class FixtureResult:
    """One reference session compared with its candidate (matched by name).

    >>> import os; from parity.events import compare_event_dirs
    >>> for d, cmd in (("ref", "ls"), ("cand", "ls -la")):
    ...     os.mkdir(d); _ = open(d + "/s1.jsonl", "w").write('{"v":1,"kind":"user_prompt","turn":1,"text":"%s"}\\n' % cmd)
    >>> _ = open("ref/s2.jsonl", "w").write('{"v":1,"kind":"session_start"}\\n')  # no candidate of this name
    >>> [(f.name, f.score, f.verdict, f.counts.get("changed")) for f in compare_event_dirs("ref", "cand").fixtures]
    [('s1', 0.75, 'divergence', 1), ('s2', 0.0, 'missing', None)]
    """

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

    >>> import os; from parity.events import compare_event_dirs
    >>> for d, cmd in (("ref", "ls"), ("cand", "ls -la")):
    ...     os.mkdir(d); _ = open(d + "/s1.jsonl", "w").write('{"v":1,"kind":"user_prompt","turn":1,"text":"%s"}\\n' % cmd)
    >>> _ = open("ref/s2.jsonl", "w").write('{"v":1,"kind":"session_start"}\\n')  # no candidate of this name
    >>> res = compare_event_dirs("ref", "cand")
    >>> res.passed, res.mean_score, res.lowest_score, res.extra
    (False, 0.375, 0.0, [])
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

