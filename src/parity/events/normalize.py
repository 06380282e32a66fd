"""Normalization rules for event logs: placeholders, numbered ids, regex replacements, ignored
fields, order-insensitive lists and numeric tolerances, selected by field-path patterns.

A **field path** names a place in one event record: ``content[1].input.command`` is the
``command`` field of the ``input`` object of the second element of ``content``. A **pattern**
is an optional ``KIND:`` prefix (a glob on the record's ``kind``) and a dotted path in which

* ``name`` matches that key (``*`` and ``?`` inside a name are globs: ``tokens_*``),
* ``*`` matches any one key, ``[*]`` any one list index, ``[3]`` index 3,
* ``**`` matches any number (zero included) of keys and indices.

>>> p = PathPattern.parse("assistant_turn:content[*].id")
>>> p.matches("assistant_turn", ("content", 0, "id")), p.matches("tool_result", ("content", 0, "id"))
(True, False)
>>> PathPattern.parse("**.ts").matches("session_start", ("ts",))
True

The rules of the ``[events.normalize]`` config table (see docs/events.md)::

    [events.normalize]
    placeholders = { "**.session_id" = "<SESSION>", "**.ts" = "<TS>" }   # value -> fixed text
    numbered = { "**.tool_use_id" = "TOOL", "assistant_turn:content[*].id" = "TOOL" }  # <TOOL-1>, <TOOL-2>...
    replace = [ { path = "**", pattern = "/tmp/[A-Za-z0-9_]+", with = "<TMP>" } ]     # regex on strings
    ignore = ["hook_event:duration_ms"]                                      # dropped before comparing
    unordered = ["skill_invocation:args.files"]                              # lists compared as multisets

    [events.tolerance]
    "session_end:elapsed_ms" = { factor = 3.0 }        # within a factor of 3 either way
    "session_end:tokens_*" = { rtol = 0.1 }            # |c - r| <= atol + rtol * |r|
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, ImportFormatError
from ..trace.keys import IDENT_RE as _IDENT_RE

__all__ = ["PathPattern", "Rule", "Tolerance", "RuleSet", "Normalized", "Normalizer", "NumberedId", "TolerantNumber",
           "unmark", "canonical", "format_path"]

_TOKEN_RE = re.compile(r"\[(\*|[0-9]+)\]|([^.\[\]]+)")
_DROP = object()


def format_path(path: Sequence[str | int]) -> str:
    """The dotted text of a field path: ``("content", 1, "input")`` → ``content[1].input``.

    >>> format_path(("content", 1, "input", "command"))
    'content[1].input.command'
    >>> format_path(())
    '(record)'
    """
    out: list[str] = []
    for part in path:
        if type(part) is int:
            out.append(f"[{part}]")
        else:
            name = str(part)
            if not _IDENT_RE.match(name):
                name = json.dumps(name, ensure_ascii=False)
            out.append(("." if out else "") + name)
    return "".join(out) or "(record)"


@dataclass(frozen=True)
class PathPattern:
    """A compiled field-path pattern (see the module docstring for the grammar).

    >>> p = PathPattern.parse("session_end:tokens_*")
    >>> p.kind_glob, p.tokens, p.matches("session_end", ("tokens_in",)), p.matches("session_end", ("ts",))
    ('session_end', ('tokens_*',), True, False)
    """

    text: str
    kind_glob: str | None
    tokens: tuple[str, ...]
    _regex: re.Pattern[str] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str, where: str = "") -> PathPattern:
        """Compile ``text``; raise :class:`~parity.errors.ConfigError` naming ``where`` when malformed."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{where}a field path must be a non-empty string such as \"content[*].input.command\", "
                              f"got {text!r}.")
        kind_glob = None
        body = text
        head, sep, rest = text.partition(":")
        if sep and "." not in head and "[" not in head:
            kind_glob, body = head, rest
        tokens: list[str] = []
        for part in body.split("."):
            if part == "":
                raise ConfigError(f"{where}field path {text!r} has an empty segment (two dots, or a leading/"
                                  "trailing dot).")
            p = 0
            while p < len(part):
                m = _TOKEN_RE.match(part, p)
                if m is None or m.end() == p:
                    raise ConfigError(f"{where}field path {text!r}: cannot read {part[p:]!r}; expected names, "
                                      "[N] or [*] indices, * and **.")
                if m.group(1) is not None:
                    tokens.append("[" + m.group(1) + "]")
                else:
                    tokens.append(m.group(2))
                p = m.end()
        # each token renders as "\x01name" (keys) or "\x02N" (indices); ** spans any run of them
        rx: list[str] = []
        for t in tokens:
            if t == "**":
                rx.append(r"(?:[\x01\x02][^\x01\x02]*)*")
            elif t == "[*]":
                rx.append(r"\x02[0-9]+")
            elif t.startswith("["):
                rx.append(r"\x02" + t[1:-1])
            else:
                rx.append(r"\x01" + fnmatch.translate(t).removeprefix("(?s:").removesuffix(")\\Z").replace(
                    ".*", r"[^\x01\x02]*").replace(".", r"[^\x01\x02]"))
        return cls(text, kind_glob, tuple(tokens), re.compile("".join(rx) + r"\Z", re.S))

    def matches(self, kind: str, path: Sequence[str | int]) -> bool:
        """Whether the field at ``path`` of a record of ``kind`` matches."""
        if self.kind_glob is not None and not fnmatch.fnmatchcase(kind, self.kind_glob):
            return False
        return self._regex.match(_path_text(path)) is not None


def _path_text(path: Sequence[str | int]) -> str:
    return "".join(("\x02" + str(p)) if type(p) is int else ("\x01" + str(p)) for p in path)


@dataclass(frozen=True)
class Tolerance:
    """How close two numbers must be: every criterion given must hold.

    ``factor``: ``max(|r|, |c|) <= factor * min(|r|, |c|)`` with the same sign (both zero passes);
    ``rtol``/``atol``: ``|c - r| <= atol + rtol * |r|``.

    >>> Tolerance(factor=2.0).check(1000, 1900), Tolerance(factor=2.0).check(1000, 2100)
    (True, False)
    >>> Tolerance(rtol=0.1).check(500, 540)
    True
    """

    factor: float | None = None
    rtol: float | None = None
    atol: float | None = None

    def check(self, r: float, c: float) -> bool:
        """Whether ``c`` is within this tolerance of the reference ``r``."""
        if self.factor is not None:
            if r == c:
                pass
            elif (r > 0) != (c > 0) or r == 0 or c == 0:
                return False
            elif max(abs(r), abs(c)) > self.factor * min(abs(r), abs(c)):
                return False
        if self.rtol is not None or self.atol is not None:
            if abs(c - r) > (self.atol or 0.0) + (self.rtol or 0.0) * abs(r):
                return False
        return True

    def describe(self) -> str:
        parts = []
        if self.factor is not None:
            parts.append(f"within a factor of {self.factor:g}")
        if self.rtol is not None or self.atol is not None:
            parts.append(f"|c - r| <= {self.atol or 0:g} + {self.rtol or 0:g}·|r|")
        return " and ".join(parts) or "exact"

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in (("factor", self.factor), ("rtol", self.rtol), ("atol", self.atol)) if v is not None}


@dataclass(frozen=True)
class Rule:
    """One normalization rule: what it does (``action``), where (``pattern``) and with what.

    ``action`` is one of ``ignore``, ``placeholder`` (``value`` = the text), ``numbered``
    (``value`` = the group name: ``TOOL`` gives ``<TOOL-1>``...), ``replace`` (``regex`` →
    ``value``), ``unordered`` and ``tolerance``. ``origin`` says where it came from
    (``preset:ccpa`` or the config file).

    >>> rule = RuleSet.from_config({"normalize": {"ignore": ["hook_event:duration_ms"]}}).rules[0]
    >>> rule.action, rule.pattern.text, rule.describe()
    ('ignore', 'hook_event:duration_ms', 'ignore hook_event:duration_ms (config)')
    """

    action: str
    pattern: PathPattern
    value: str | None = None
    regex: re.Pattern[str] | None = None
    tolerance: Tolerance | None = None
    origin: str = "config"

    def describe(self) -> str:
        """One line such as ``placeholder **.ts -> <TS> (preset:ccpa)``."""
        what = {"placeholder": f" -> {self.value}", "numbered": f" -> <{self.value}-N>",
                "replace": f" /{self.regex.pattern if self.regex else ''}/ -> {self.value!r}",
                "tolerance": f" ({self.tolerance.describe() if self.tolerance else ''})"}.get(self.action, "")
        return f"{self.action} {self.pattern.text}{what} ({self.origin})"


@dataclass
class RuleSet:
    """An ordered collection of :class:`Rule` objects, built from a config table or a preset.

    >>> rs = RuleSet.from_config({"normalize": {"placeholders": {"**.ts": "<TS>"}}})
    >>> [r.describe() for r in rs.rules]
    ['placeholder **.ts -> <TS> (config)']
    """

    rules: list[Rule] = field(default_factory=list)

    @classmethod
    def from_config(cls, events: Mapping[str, Any], origin: str = "config", where: str = "") -> RuleSet:
        """Rules from an ``[events]`` table (its ``normalize`` and ``tolerance`` sub-tables).

        Raises:
            ConfigError: an unknown key, a wrong type, a malformed path or regex.
        """
        rules: list[Rule] = []
        if not isinstance(events, Mapping):
            raise ConfigError(f"{where}[events] must be a table.")
        norm = events.get("normalize", {})
        if not isinstance(norm, Mapping):
            raise ConfigError(f"{where}[events.normalize] must be a table.")
        known = {"placeholders", "numbered", "replace", "ignore", "unordered"}
        unknown = set(norm) - known
        if unknown:
            raise ConfigError(f"{where}[events.normalize] has unknown key(s) {sorted(unknown)}; expected some of "
                              f"{sorted(known)}.")
        for key, action in (("placeholders", "placeholder"), ("numbered", "numbered")):
            table = norm.get(key, {})
            if not isinstance(table, Mapping) or not all(isinstance(v, str) for v in table.values()):
                raise ConfigError(f'{where}[events.normalize] {key} maps field paths to text, e.g. '
                                  f'{{ "**.ts" = "<TS>" }}.')
            for path, value in table.items():
                if action == "numbered" and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", value):
                    raise ConfigError(f"{where}[events.normalize] numbered {path!r}: the group {value!r} must be a "
                                      "word such as TOOL (values become <TOOL-1>, <TOOL-2>...).")
                rules.append(Rule(action, PathPattern.parse(path, where), value=value, origin=origin))
        for key in ("ignore", "unordered"):
            paths = norm.get(key, [])
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise ConfigError(f'{where}[events.normalize] {key} must be a list of field paths, e.g. '
                                  f'["session_end:elapsed_ms"].')
            action = key
            rules += [Rule(action, PathPattern.parse(p, where), origin=origin) for p in paths]
        replace = norm.get("replace", [])
        if isinstance(replace, Mapping):
            replace = [replace]
        if not isinstance(replace, list):
            raise ConfigError(f"{where}[events.normalize] replace must be a list of {{ path, pattern, with }} tables.")
        for i, item in enumerate(replace):
            if not isinstance(item, Mapping) or not isinstance(item.get("pattern"), str) \
                    or not isinstance(item.get("with", ""), str) or set(item) - {"path", "pattern", "with"}:
                raise ConfigError(f"{where}[events.normalize] replace #{i + 1} must be {{ path = \"**\", pattern = "
                                  f"\"REGEX\", with = \"TEXT\" }}, got {dict(item) if isinstance(item, Mapping) else item!r}.")
            try:
                rx = re.compile(item["pattern"])
            except re.error as e:
                raise ConfigError(f"{where}[events.normalize] replace #{i + 1}: bad regex {item['pattern']!r} ({e}).") from None
            rules.append(Rule("replace", PathPattern.parse(item.get("path", "**"), where), value=item.get("with", ""),
                              regex=rx, origin=origin))
        tol = events.get("tolerance", {})
        if not isinstance(tol, Mapping):
            raise ConfigError(f"{where}[events.tolerance] must be a table of field path = {{ factor, rtol, atol }}.")
        for path, spec in tol.items():
            if not isinstance(spec, Mapping) or not spec or set(spec) - {"factor", "rtol", "atol"} or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                    for v in spec.values()):
                raise ConfigError(f"{where}[events.tolerance] {path!r} must be {{ factor = F }} and/or "
                                  f"{{ rtol = R, atol = A }} with non-negative numbers, got {spec!r}.")
            if "factor" in spec and spec["factor"] < 1:
                raise ConfigError(f"{where}[events.tolerance] {path!r}: factor must be >= 1, got {spec['factor']!r}.")
            t = Tolerance(*(float(spec[k]) if k in spec else None for k in ("factor", "rtol", "atol")))
            rules.append(Rule("tolerance", PathPattern.parse(path, where), tolerance=t, origin=origin))
        return cls(rules)

    def __add__(self, other: RuleSet) -> RuleSet:
        return RuleSet(self.rules + other.rules)


class NumberedId:
    """A numbered id in a normalized record: ``<GROUP-n>``, the n-th distinct value of its group in its log.

    >>> n = Normalizer(RuleSet.from_config({"normalize": {"numbered": {"**.tool_use_id": "TOOL"}}}))
    >>> ids = [n.normalize({"v": 1, "kind": "tool_result", "tool_use_id": t}).value["tool_use_id"] for t in "aba"]
    >>> ids, ids[1].group, ids[1].n, ids[1].raw
    ([<TOOL-1>, <TOOL-2>, <TOOL-1>], 'TOOL', 2, 'b')
    """

    __slots__ = ("group", "n", "raw")

    def __init__(self, group: str, n: int, raw: object):
        self.group, self.n, self.raw = group, n, raw

    def __str__(self) -> str:
        return f"<{self.group}-{self.n}>"

    __repr__ = __str__


class TolerantNumber:
    """A number under a tolerance rule in a normalized record (compared after the alignment).

    >>> n = Normalizer(RuleSet.from_config({"tolerance": {"session_end:elapsed_ms": {"factor": 3.0}}}))
    >>> t = n.normalize({"v": 1, "kind": "session_end", "elapsed_ms": 1200}).value["elapsed_ms"]
    >>> t, t.tolerance.check(t.value, 3000)
    (1200, True)
    """

    __slots__ = ("value", "tolerance")

    def __init__(self, value: float, tolerance: Tolerance):
        self.value, self.tolerance = value, tolerance

    def __repr__(self) -> str:
        return repr(self.value)


def _mask(o: object) -> str:
    if type(o) is NumberedId:
        return f"<{o.group}>"
    if type(o) is TolerantNumber:
        return "<NUM>"
    raise ImportFormatError(f"a normalized record holds a {type(o).__name__}; event records hold JSON values only.")


def unmark(v: Any) -> Any:
    """A normalized record with its markers made plain JSON (``<TOOL-2>`` strings, numbers).

    >>> unmark({"id": NumberedId("TOOL", 2, "toolu_x"), "ms": TolerantNumber(12, Tolerance(factor=2.0))})
    {'id': '<TOOL-2>', 'ms': 12}
    """
    t = type(v)
    if t is dict:
        return {k: unmark(x) for k, x in v.items()}
    if t is list:
        return [unmark(x) for x in v]
    if t is NumberedId:
        return str(v)
    if t is TolerantNumber:
        return v.value
    return v


def canonical(v: Any) -> str:
    """Canonical JSON of a normalized record: sorted keys, no spaces, numbered ids as ``<GROUP>``.

    >>> canonical({"kind": "tool_result", "tool_use_id": NumberedId("TOOL", 2, "toolu_b"), "ms": 5})
    '{"kind":"tool_result","ms":5,"tool_use_id":"<TOOL>"}'
    """
    return json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_mask)


@dataclass
class Normalized:
    """One record after normalization.

    Attributes:
        value: the normalized record, possibly holding :class:`NumberedId` and
            :class:`TolerantNumber` markers (``marked`` tells); :func:`unmark` makes it plain.
        identity: what the alignment compares: kind, turn and the canonical JSON of ``value``
            with numbered ids reduced to their group and numbers under a tolerance masked (both
            are checked pair by pair after the alignment).
        marked: whether ``value`` holds markers.

    >>> n = Normalizer(RuleSet.from_config({"normalize": {"placeholders": {"**.ts": "<TS>"}}}))
    >>> rec = n.normalize({"v": 1, "kind": "user_prompt", "turn": 1, "ts": 17})
    >>> rec.value, rec.marked
    ({'v': 1, 'kind': 'user_prompt', 'turn': 1, 'ts': '<TS>'}, False)
    >>> rec.identity.split("\\x00")  # kind, turn, canonical JSON
    ['user_prompt', '1', '{"kind":"user_prompt","ts":"<TS>","turn":1,"v":1}']
    """

    value: Any
    identity: str
    marked: bool = False


class Normalizer:
    """Apply a :class:`RuleSet` to the records of one log, in order (numbering is per log).

    >>> rs = RuleSet.from_config({"normalize": {"placeholders": {"**.ts": "<TS>"},
    ...                                         "numbered": {"**.tool_use_id": "TOOL"}}})
    >>> n = Normalizer(rs)
    >>> unmark(n.normalize({"v": 1, "kind": "tool_result", "ts": 17, "tool_use_id": "toolu_9"}).value)
    {'v': 1, 'kind': 'tool_result', 'ts': '<TS>', 'tool_use_id': '<TOOL-1>'}
    """

    def __init__(self, rules: RuleSet, hits: dict[int, int] | None = None):
        self.rules = rules.rules
        self.hits = hits if hits is not None else {}
        self._numbers: dict[str, dict[str, int]] = {}
        self._cache: dict[tuple[str, tuple[str | int, ...]], tuple[int, ...]] = {}
        self._has_replace = any(r.action == "replace" for r in self.rules)
        self._marked = False
        self._kind = ""

    def _matching(self, path: tuple[str | int, ...]) -> tuple[int, ...]:
        key = (self._kind, path)
        got = self._cache.get(key)
        if got is None:
            text = _path_text(path)
            got = tuple(i for i, r in enumerate(self.rules)
                        if (r.pattern.kind_glob is None or fnmatch.fnmatchcase(self._kind, r.pattern.kind_glob))
                        and r.pattern._regex.match(text) is not None)
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[key] = got
        return got

    def _hit(self, idx: tuple[int, ...], action: str) -> None:
        """Count a use of every matching rule of ``action`` (a rule shadowed by an earlier one counts too)."""
        for i in idx:
            if self.rules[i].action == action:
                self.hits[i] = self.hits.get(i, 0) + 1

    def normalize(self, record: Mapping[str, Any]) -> Normalized:
        """Normalize one record (a parsed JSON object with ``kind``)."""
        self._kind = str(record.get("kind", ""))
        self._marked = False
        value = self._walk(record, ()) if self.rules else record
        turn = record.get("turn")
        tt = type(turn)
        turn_text = "" if turn is None else str(turn) if tt is int else repr(turn) if tt is str else json.dumps(turn)
        identity = self._kind + "\x00" + turn_text + "\x00" + canonical(value)
        return Normalized(value, identity, self._marked)

    def _children(self, v: dict | list, path: tuple[str | int, ...], unordered: bool = False) -> dict | list:
        """A container with its children normalized; a child no rule matches (the usual case) is
        copied without a call, or walked as a container."""
        cache, kind = self._cache, self._kind
        items = v.items() if type(v) is dict else enumerate(v)
        out: list[tuple[Any, Any]] = []
        for k, x in items:
            p = path + (k,)
            idx = cache.get((kind, p))
            if idx is None:
                idx = self._matching(p)
            if idx:
                x = self._walk(x, p, idx)
                if x is _DROP:
                    continue
            else:
                tx = type(x)
                if tx is dict or tx is list:
                    x = self._children(x, p)
            out.append((k, x))
        if type(v) is dict:
            return dict(out)
        values = [x for _, x in out]
        if unordered:
            values.sort(key=canonical)
        return values

    def _walk(self, v: Any, path: tuple[str | int, ...], idx: tuple[int, ...] | None = None) -> Any:
        if idx is None:
            idx = self._matching(path) if path else ()
        unordered = False
        hits = self.hits
        for i in idx:
            r = self.rules[i]
            a = r.action
            if a == "ignore":
                self._hit(idx, a)
                return _DROP
            if a == "placeholder":
                self._hit(idx, a)
                return r.value
            if a == "numbered" and type(v) in (str, int):
                self._hit(idx, a)
                table = self._numbers.setdefault(r.value, {})  # type: ignore[arg-type]
                n = table.setdefault(str(v), len(table) + 1)
                self._marked = True
                return NumberedId(r.value, n, v)  # type: ignore[arg-type]
            if a == "tolerance" and type(v) in (int, float):
                self._hit(idx, a)
                self._marked = True
                return TolerantNumber(v, r.tolerance)  # type: ignore[arg-type]
            if a == "unordered" and type(v) is list:
                hits[i] = hits.get(i, 0) + 1
                unordered = True
        t = type(v)
        if t is dict or t is list:
            return self._children(v, path, unordered)
        if t is str and self._has_replace:
            for i in idx:
                r = self.rules[i]
                if r.action == "replace" and r.regex is not None:
                    new, count = r.regex.subn(r.value or "", v)
                    if count:
                        hits[i] = hits.get(i, 0) + 1
                        v = new
        return v
