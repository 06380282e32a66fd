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
from typing import Any

from ..errors import ParityError, UsageError
from ..trace.reader import Trace
from .align import diff_sequences, refine_block
from .config import EventsConfig, load_events_config
from .jsonl import Event, EventLog, gc_paused, load_events
from .normalize import Normalized, Normalizer, NumberedId, RuleSet, TolerantNumber, format_path, unmark
from .presets import preset_rules
from .result import (  # re-exported: the result types were defined here first
    EVENTS_DIFF_SCHEMA,
    EVENTS_DIFF_SCHEMA_VERSION,
    EventDiff,
    EventDirDiff,
    EventOp,
    EventRef,
    FieldDiff,
    FixtureResult,
    KindCounts,
)

__all__ = ["FieldDiff", "EventRef", "EventOp", "KindCounts", "EventDiff", "compare_events", "FixtureResult",
           "EventDirDiff", "compare_event_dirs", "session_files", "EVENTS_DIFF_SCHEMA", "EVENTS_DIFF_SCHEMA_VERSION"]

_TEXT_DIFF_MIN = 60  # strings longer than this (or multi-line) get a unified diff


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


def _children(a: Any, b: Any):
    """``(key, a's child, b's child)`` of two dicts (a's keys first) or two lists, ``_ABSENT`` where
    one side lacks it."""
    if type(a) is dict:
        for k in list(a) + [k for k in b if k not in a]:
            yield k, a.get(k, _ABSENT), b.get(k, _ABSENT)
    else:
        for j in range(max(len(a), len(b))):
            yield j, a[j] if j < len(a) else _ABSENT, b[j] if j < len(b) else _ABSENT


def _compare(a: Any, b: Any, path: tuple[str | int, ...], ids: _Ids, commit: bool, out: list[FieldDiff] | None
             ) -> tuple[int, int]:
    """(leaf fields, differing leaf fields) of two normalized values; differences appended to ``out``."""
    ta, tb = type(a), type(b)
    if (ta is dict and tb is dict) or (ta is list and tb is list):
        total = diff = 0
        for k, x, y in _children(a, b):
            if x is _ABSENT or y is _ABSENT:  # a field on one side only: all its leaves differ
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
    hits: dict[int, int] = {}
    na = Normalizer(rules, hits)
    nb = Normalizer(rules, hits)
    walk = _Walk(a, b, [na.normalize(e.record) for e in a.events], [nb.normalize(e.record) for e in b.events],
                 cfg.max_detail if max_detail is None else max_detail)
    walk.walk()
    total = len(a.events) + len(b.events)
    score = (2.0 * walk.sim_sum / total) if total else 1.0
    score = round(min(1.0, max(0.0, score)), 6)
    if total == 0:
        verdict = "nothing_compared"
        notes.append("both logs are empty: nothing was compared, which is never parity.")
    elif min_score is not None:
        verdict = "parity" if score >= min_score else "divergence"
    else:
        verdict = "parity" if not walk.ops else "divergence"
    unused = [r.describe() for i, r in enumerate(rules.rules) if not hits.get(i)]
    malformed = _malformed(a, b, notes)
    counts = walk.counts
    return EventDiff(os.fspath(a.source), os.fspath(b.source), used_preset, verdict, score, min_score,
                     len(a.events), len(b.events), counts["equal"], counts["changed"], counts["deleted"],
                     counts["inserted"], walk.ops, walk.alignment, walk.kinds, unused, malformed, notes,
                     [r.describe() for r in rules.rules])


def _malformed(a: EventLog, b: EventLog, notes: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The malformed lines left out, per side, each side's also said in a note."""
    malformed = {}
    if a.malformed:
        malformed["ref"] = [{"line": m.line, "reason": m.reason} for m in a.malformed]
    if b.malformed:
        malformed["cand"] = [{"line": m.line, "reason": m.reason} for m in b.malformed]
    for side, lst in malformed.items():
        notes.append(f"{len(lst)} malformed line(s) of the {'reference' if side == 'ref' else 'candidate'} were left "
                     f"out of the comparison (lines {', '.join(str(m['line']) for m in lst[:10])}"
                     f"{', …' if len(lst) > 10 else ''}).")
    return malformed


class _Walk:
    """Walks the edit-distance alignment of two normalized logs: pairs edited events, counts per
    kind, records the divergent steps (field-level diffs for the first ``detail_limit``) and the
    sum of the pairs' similarities."""

    def __init__(self, a: EventLog, b: EventLog, norm_a: list[Normalized], norm_b: list[Normalized],
                 detail_limit: int):
        self.a, self.b, self.norm_a, self.norm_b, self.detail_limit = a, b, norm_a, norm_b, detail_limit
        self.ids = _Ids()
        self.ops: list[EventOp] = []
        self.alignment: list[list[Any]] = []
        self.kinds: dict[str, KindCounts] = {}
        for e in a.events:
            self.kinds.setdefault(e.kind, KindCounts()).ref += 1
        for e in b.events:
            self.kinds.setdefault(e.kind, KindCounts()).cand += 1
        self.counts = {"equal": 0, "changed": 0, "deleted": 0, "inserted": 0}
        self.sim_sum = 0.0

    def walk(self) -> None:
        intern: dict[str, int] = {}
        seq_a = [intern.setdefault(n.identity, len(intern)) for n in self.norm_a]
        seq_b = [intern.setdefault(n.identity, len(intern)) for n in self.norm_b]
        del intern
        opcodes = diff_sequences(seq_a, seq_b)
        k = 0
        while k < len(opcodes):
            tag, i1, i2, j1, j2 = opcodes[k]
            if tag == "equal":
                self.equal_block(i1, i2, j1, j2)
                k += 1
                continue
            # a block of deletions and/or insertions: pair edited events by edit distance
            if tag == "delete" and k + 1 < len(opcodes) and opcodes[k + 1][0] == "insert" and opcodes[k + 1][1] == i2:
                j1, j2 = opcodes[k + 1][3], opcodes[k + 1][4]
                k += 2
            else:
                k += 1
            self.edit_block(i1, i2, j1, j2)

    def run(self, tag: str, i1: int, i2: int, j1: int, j2: int) -> None:
        al = self.alignment
        if al and al[-1][0] == tag and al[-1][2] == i1 and al[-1][4] == j1:
            al[-1][2], al[-1][4] = i2, j2
        else:
            al.append([tag, i1, i2, j1, j2])

    def equal_block(self, i1: int, i2: int, j1: int, j2: int) -> None:
        if any(n.marked for n in self.norm_a[i1:i2]) or any(n.marked for n in self.norm_b[j1:j2]):
            for off in range(i2 - i1):  # marked values (ids, tolerances) may still differ
                self.pair(i1 + off, j1 + off, True)
            return
        n = i2 - i1
        self.counts["equal"] += n
        self.sim_sum += n
        for i in range(i1, i2):
            self.kinds[self.a.events[i].kind].equal += 1
        self.run("equal", i1, i2, j1, j2)

    def edit_block(self, i1: int, i2: int, j1: int, j2: int) -> None:
        def sim(i: int, j: int) -> float:
            t, dd = _compare(self.norm_a[i1 + i].value, self.norm_b[j1 + j].value, (), self.ids, False, None)
            return (t - dd) / t if t else 0.0

        steps = refine_block(i2 - i1, j2 - j1, lambda i: self.a.events[i1 + i].kind,
                             lambda j: self.b.events[j1 + j].kind, sim)
        ci, cj = i1, j1
        for si, sj in steps:
            if si is not None and sj is not None:
                self.pair(ci, cj, False)
                ci, cj = ci + 1, cj + 1
            elif si is not None:
                self.single("deleted", ci)
                self.run("deleted", ci, ci + 1, cj, cj)
                ci += 1
            else:
                self.single("inserted", cj)
                self.run("inserted", ci, ci, cj, cj + 1)
                cj += 1

    def pair(self, i: int, j: int, known_equal: bool) -> None:
        x, y = self.norm_a[i], self.norm_b[j]
        kind = self.kinds[self.a.events[i].kind]
        fields: list[FieldDiff] = []
        if not (known_equal and not (x.marked or y.marked)):
            total, differing = _compare(x.value, y.value, (), self.ids, True, fields)
        if not fields:
            self.counts["equal"] += 1
            kind.equal += 1
            self.sim_sum += 1.0
            self.run("equal", i, i + 1, j, j + 1)
            return
        sim = max(0.0, (total - differing) / total) if total else 0.0
        sim = min(sim, 1.0 - 1.0 / (total + 1))  # a divergent pair is never fully similar
        self.counts["changed"] += 1
        kind.changed += 1
        self.sim_sum += sim
        d = len(self.ops) < self.detail_limit
        self.ops.append(EventOp("changed", _ref(self.a.events[i], x, d), _ref(self.b.events[j], y, d), round(sim, 6),
                                fields if d else None))
        self.run("changed", i, i + 1, j, j + 1)

    def single(self, side: str, i: int) -> None:
        ev, nv = (self.a.events[i], self.norm_a[i]) if side == "deleted" else (self.b.events[i], self.norm_b[i])
        self.counts[side] += 1
        setattr(self.kinds[ev.kind], side, getattr(self.kinds[ev.kind], side) + 1)
        r = _ref(ev, nv, len(self.ops) < self.detail_limit)
        self.ops.append(EventOp(side, r if side == "deleted" else None, r if side == "inserted" else None))


# -- directories of sessions ---------------------------------------------------------------------------


def session_files(directory: str | os.PathLike[str]) -> dict[str, str]:
    """Sessions in ``directory`` by name: ``NAME.jsonl`` (or ``.jsonl.gz``) files, ``NAME.trace``
    event traces, and ``NAME/`` folders holding one ``.jsonl`` file (e.g. ``NAME/ccpa-trace.jsonl``).

    Raises:
        UsageError: ``directory`` is not a directory.

    >>> import os
    >>> os.makedirs("sessions/s2")
    >>> for p in ("sessions/s1.jsonl", "sessions/s2/ccpa-trace.jsonl", "sessions/notes.txt"):
    ...     _ = open(p, "w").write('{"v":1,"kind":"session_start"}\\n')
    >>> session_files("sessions")
    {'s1': 'sessions/s1.jsonl', 's2': 'sessions/s2/ccpa-trace.jsonl'}
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
