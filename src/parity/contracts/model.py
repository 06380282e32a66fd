"""Contracts, claims and evidence as frozen dataclasses built from a validated YAML tree."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import UsageError
from ._yaml import Node
from .errors import Problem

__all__ = ["STATUSES", "LEVELS", "rank", "CodeRef", "Command", "ParityRef", "Evidence", "Claim", "Obligation",
           "Contract", "split_symbol", "looks_like_path", "build_contract"]

#: Every status a claim may state; the first four are ordered (``blocked`` stands apart).
STATUSES = ("proposed", "algorithm", "functional", "discharged", "blocked")
#: The ordered lattice: proposed < algorithm (unit-tested) < functional (seen in a live run) < discharged (matched an oracle).
LEVELS = ("proposed", "algorithm", "functional", "discharged")

SOURCE_EXTENSIONS = (".py", ".pyi", ".rs", ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".hxx", ".cu", ".cuh",
                     ".go", ".toml", ".md", ".json", ".yaml", ".yml", ".txt", ".cfg", ".sh")
_NOTE = re.compile(r"^(?P<name>[^()]*?)\s*(?:\((?P<note>.*)\))?\s*$", re.S)


def rank(status: str) -> int:
    """Position of ``status`` in :data:`LEVELS` (``blocked`` ranks -1).

    Example:
        >>> rank("functional") > rank("algorithm"), rank("blocked")
        (True, -1)
    """
    return LEVELS.index(status) if status in LEVELS else -1


def looks_like_path(segment: str) -> bool:
    """Whether the first ``::`` segment of a reference is a file path (it has a ``/`` or a known extension).

    Example:
        >>> looks_like_path("src/a.rs"), looks_like_path("diff.rs"), looks_like_path("TraceWriter")
        (True, True, False)
    """
    return "/" in segment or segment.lower().endswith(SOURCE_EXTENSIONS)


@functools.lru_cache(maxsize=65536)
def split_symbol(text: str) -> tuple[str | None, str, str | None]:
    """Split a cited symbol into ``(path or None, name, note or None)``.

    ``path::name``, ``path::Type::method``, ``Type::method``, ``Type.method``, a trailing
    ``(note)`` and backticks or a trailing ``()`` are all accepted.

    Example:
        >>> split_symbol("src/x.rs::Parser::parse_stage_list (gains 2 entries)")
        ('src/x.rs', 'Parser::parse_stage_list', 'gains 2 entries')
        >>> split_symbol("`load_trace()`")
        (None, 'load_trace', None)
    """
    m = _NOTE.match(text.strip())
    name, note = (m.group("name"), m.group("note")) if m else (text, None)
    if name.endswith("(") or not name:  # "f()" : the regex took "()" as an empty note
        name = text.strip()
    name = name.strip().strip("`").strip()
    if name.endswith("()"):
        name = name[:-2]
    if note == "":
        note = None
    path = None
    parts = name.split("::")
    if len(parts) > 1 and looks_like_path(parts[0]):
        path, name = parts[0], "::".join(parts[1:])
    return path, name, note


@dataclass(frozen=True)
class CodeRef:
    """Files and the symbols that must be defined in them (each in at least one of the files).

    Attributes:
        files: paths relative to the repository root.
        symbols: ``name``, ``Type::method`` or ``path::name``; a trailing ``(note)`` is ignored.
        note: free text.
        origin: where the reference came from when it was not written as one (e.g. an
            aprender ``function_names`` list or prose), for the report.

    >>> from parity.contracts import load_contract
    >>> _ = open("c.yaml", "w").write("parity_contract: 1\\nid: demo\\nclaims:\\n- id: scale\\n  statement: scale doubles x\\n"
    ...     "  status: algorithm\\n  evidence:\\n    code: [lib.py::scale]\\n    tests: {commands: ['python -m pytest -q']}\\n")
    >>> code = load_contract("c.yaml").claims[0].evidence.code[0]
    >>> code.files, code.symbols, code.line, code.to_dict()
    (('lib.py',), ('scale',), 8, 'lib.py::scale')
    """

    files: tuple[str, ...]
    symbols: tuple[str, ...] = ()
    note: str | None = None
    line: int = 0
    column: int = 0
    origin: str | None = None

    def to_dict(self) -> Any:
        if not self.symbols and len(self.files) == 1 and self.note is None:
            return self.files[0]
        if len(self.symbols) == 1 and len(self.files) == 1 and self.note is None:
            return f"{self.files[0]}::{self.symbols[0]}"
        d: dict[str, Any] = {"files": list(self.files)}
        if self.symbols:
            d["symbols"] = list(self.symbols)
        if self.note is not None:
            d["note"] = self.note
        return d


@dataclass(frozen=True)
class Command:
    """A test command, run only by ``check --run``: split like a shell line, never through a shell.

    >>> from parity.contracts import load_contract
    >>> _ = open("c.yaml", "w").write("parity_contract: 1\\nid: demo\\nclaims:\\n- id: scale\\n  statement: scale doubles x\\n"
    ...     "  status: algorithm\\n  evidence:\\n    code: [lib.py::scale]\\n    tests: {commands: ['python -m pytest -q']}\\n")
    >>> cmd = load_contract("c.yaml").claims[0].evidence.commands[0]
    >>> cmd.run, cmd.timeout, cmd.expect_exit
    ('python -m pytest -q', 120.0, 0)
    """

    run: str
    timeout: float = 120.0
    cwd: str | None = None
    expect_exit: int = 0
    line: int = 0

    def to_dict(self) -> Any:
        d: dict[str, Any] = {"run": self.run}
        if self.timeout != 120.0:
            d["timeout"] = self.timeout
        if self.cwd is not None:
            d["cwd"] = self.cwd
        if self.expect_exit != 0:
            d["expect_exit"] = self.expect_exit
        return d if len(d) > 1 else self.run


@dataclass(frozen=True)
class ParityRef:
    """Traces or a bundle that show the claim in a live run (and, diffed, against an oracle).

    >>> from parity.contracts import load_contract
    >>> _ = open("c.yaml", "w").write("parity_contract: 1\\nid: demo\\nclaims:\\n- id: port\\n  statement: the port matches\\n"
    ...     "  status: discharged\\n  evidence:\\n    parity: [{ref: ref.trace, cand: cand.trace, rtol: 1.0e-4}]\\n")
    >>> load_contract("c.yaml").claims[0].evidence.parity[0].to_dict()
    {'ref': 'ref.trace', 'cand': 'cand.trace', 'rtol': 0.0001}
    """

    ref: str | None = None
    cand: str | None = None
    trace: str | None = None
    bundle: str | None = None
    diff: str | None = None
    config: str | None = None
    rtol: float | None = None
    atol: float | None = None
    cosine_min: float | None = None
    sqnr_min_db: float | None = None
    stages: tuple[str, ...] = ()
    strict: bool | None = None
    line: int = 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for k in ("ref", "cand", "trace", "bundle", "diff", "config", "rtol", "atol", "cosine_min", "sqnr_min_db"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        if self.stages:
            d["stages"] = list(self.stages)
        if self.strict is not None:
            d["strict"] = self.strict
        return d


@dataclass(frozen=True)
class Evidence:
    """What a claim cites: code symbols, pytest ids and commands, traces or bundles, and notes.

    >>> from parity.contracts import load_contract
    >>> _ = open("c.yaml", "w").write("parity_contract: 1\\nid: demo\\nclaims:\\n- id: scale\\n  statement: scale doubles x\\n"
    ...     "  status: algorithm\\n  evidence:\\n    code: [lib.py::scale]\\n    tests: {commands: ['python -m pytest -q']}\\n")
    >>> ev = load_contract("c.yaml").claims[0].evidence
    >>> len(ev.code), ev.pytest, len(ev.commands), ev.empty
    (1, (), 1, False)
    """

    code: tuple[CodeRef, ...] = ()
    pytest: tuple[tuple[str, int], ...] = ()
    commands: tuple[Command, ...] = ()
    parity: tuple[ParityRef, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.code or self.pytest or self.commands or self.parity)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.code:
            d["code"] = [c.to_dict() for c in self.code]
        tests: dict[str, Any] = {}
        if self.pytest:
            tests["pytest"] = [t for t, _ in self.pytest]
        if self.commands:
            tests["commands"] = [c.to_dict() for c in self.commands]
        if tests:
            d["tests"] = tests
        if self.parity:
            d["parity"] = [p.to_dict() for p in self.parity]
        if self.notes:
            d["notes"] = list(self.notes)
        return d


@dataclass(frozen=True)
class Claim:
    """One claim of a contract: a statement, the status it states, and its evidence.

    >>> from parity.contracts import load_contract
    >>> _ = open("c.yaml", "w").write("parity_contract: 1\\nid: demo\\nclaims:\\n- id: scale\\n  statement: scale doubles x\\n"
    ...     "  status: algorithm\\n  evidence:\\n    code: [lib.py::scale]\\n    tests: {commands: ['python -m pytest -q']}\\n")
    >>> claim = load_contract("c.yaml").claim("scale")
    >>> claim.statement, claim.status, claim.line
    ('scale doubles x', 'algorithm', 4)
    """

    id: str
    statement: str
    status: str
    reason: str | None = None
    binds_to: tuple[str, ...] = ()
    falsification: dict[str, str] = field(default_factory=dict)
    evidence: Evidence = field(default_factory=Evidence)
    extra: dict[str, Any] = field(default_factory=dict)
    line: int = 0
    column: int = 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "statement": self.statement, "status": self.status}
        if self.reason is not None:
            d["reason"] = self.reason
        if self.binds_to:
            d["binds_to"] = list(self.binds_to)
        if self.falsification:
            d["falsification"] = dict(self.falsification)
        ev = self.evidence.to_dict()
        if ev:
            d["evidence"] = ev
        if self.extra:
            d["extra"] = self.extra
        return d


@dataclass(frozen=True)
class Obligation:
    """A proof obligation of a contract: a property, and the code it ``applies_to`` (checked to exist).

    >>> from parity.contracts import load_contract
    >>> _ = open("c.yaml", "w").write("parity_contract: 1\\nid: demo\\nobligations:\\n"
    ...     "- {id: finite, property: output is finite, applies_to: [lib.py::scale]}\\nclaims: []\\n")
    >>> o = load_contract("c.yaml").obligations[0]
    >>> o.id, o.property, o.applies_to[0].to_dict()
    ('finite', 'output is finite', 'lib.py::scale')
    """

    property: str
    type: str | None = None
    id: str | None = None
    applies_to: tuple[CodeRef, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    line: int = 0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.id is not None:
            d["id"] = self.id
        if self.type is not None:
            d["type"] = self.type
        d["property"] = self.property
        if self.applies_to:
            d["applies_to"] = [c.to_dict() for c in self.applies_to]
        if self.extra:
            d["extra"] = self.extra
        return d


@dataclass(frozen=True)
class Contract:
    """One contract file. ``source_format`` is ``"parity"`` or ``"aprender"`` (converted on load).

    >>> from parity.contracts import load_contract
    >>> _ = open("c.yaml", "w").write("parity_contract: 1\\nid: demo\\nclaims:\\n- id: scale\\n  statement: scale doubles x\\n"
    ...     "  status: algorithm\\n  evidence:\\n    code: [lib.py::scale]\\n    tests: {commands: ['python -m pytest -q']}\\n")
    >>> c = load_contract("c.yaml")
    >>> c.id, c.path, c.source_format, [claim.id for claim in c.claims]
    ('demo', 'c.yaml', 'parity', ['scale'])
    """

    path: str
    id: str
    claims: tuple[Claim, ...]
    version: str | None = None
    status: str | None = None
    description: str | None = None
    references: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    equations: tuple[dict[str, Any], ...] = ()
    invariants: tuple[str, ...] = ()
    obligations: tuple[Obligation, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    source_format: str = "parity"
    line: int = 1

    def to_dict(self) -> dict[str, Any]:
        """The contract in our schema (what ``parity contract convert`` writes)."""
        d: dict[str, Any] = {"parity_contract": 1, "id": self.id}
        for k in ("version", "status", "description"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.references:
            d["references"] = list(self.references)
        if self.depends_on:
            d["depends_on"] = list(self.depends_on)
        if self.equations:
            d["equations"] = [dict(e) for e in self.equations]
        if self.invariants:
            d["invariants"] = list(self.invariants)
        if self.obligations:
            d["obligations"] = [o.to_dict() for o in self.obligations]
        d["claims"] = [c.to_dict() for c in self.claims]
        if self.extra:
            d["extra"] = self.extra
        return d

    def claim(self, claim_id: str) -> Claim:
        """The claim with id ``claim_id``.

        Raises:
            UsageError: the contract has no such claim (the message lists the ids it has).
        """
        for c in self.claims:
            if c.id == claim_id:
                return c
        ids = ", ".join(c.id for c in self.claims[:20]) or "none"
        raise UsageError(f"contract {self.id!r} has no claim {claim_id!r} (its claims: {ids}).", path=self.path)


# -- building ------------------------------------------------------------------------------------

def _s(node: Node | None) -> Any:
    return None if node is None else node.plain()


def _strs(node: Node | None) -> tuple[str, ...]:
    return () if node is None else tuple(node.plain())


def _code_ref(node: Node, problems: list[Problem], where: str) -> CodeRef:
    if node.kind == "scalar":
        path, name, note = split_symbol(node.value)
        if path is None:
            if looks_like_path(name):
                return CodeRef((name,), (), note, node.line, node.column)
            problems.append(node.problem(f"{where} {node.value!r} must start with a file path "
                                         "(path, or path::symbol); write {files: [...], symbols: [...]} otherwise"))
            return CodeRef((), (), None, node.line, node.column)
        return CodeRef((path,), (name + (f" ({note})" if note else ""),), None, node.line, node.column)
    return CodeRef(_strs(node.get("files")), _strs(node.get("symbols")), _s(node.get("note")), node.line, node.column)


def _command(node: Node) -> Command:
    if node.kind == "scalar":
        return Command(node.value, line=node.line)
    t = node.get("timeout")
    return Command(node["run"].value, float(t.value) if t is not None else 120.0, _s(node.get("cwd")),
                   int(_s(node.get("expect_exit")) or 0), node.line)


def _parity(node: Node) -> ParityRef:
    g = node.get

    def num(k: str) -> float | None:
        v = g(k)
        return None if v is None else float(v.value)

    return ParityRef(_s(g("ref")), _s(g("cand")), _s(g("trace")), _s(g("bundle")), _s(g("diff")), _s(g("config")),
                     num("rtol"), num("atol"), num("cosine_min"), num("sqnr_min_db"), _strs(g("stages")),
                     _s(g("strict")), node.line)


def _evidence(node: Node | None, problems: list[Problem], where: str) -> Evidence:
    if node is None:
        return Evidence()
    code = tuple(_code_ref(n, problems, f"{where}.code[{i}]") for i, n in enumerate((node.get("code") or _EMPTY).value))
    tests = node.get("tests")
    pytest = tuple((n.value, n.line) for n in ((tests.get("pytest") if tests else None) or _EMPTY).value)
    commands = tuple(_command(n) for n in ((tests.get("commands") if tests else None) or _EMPTY).value)
    par = tuple(_parity(n) for n in (node.get("parity") or _EMPTY).value)
    return Evidence(code, pytest, commands, par, _strs(node.get("notes")))


_EMPTY = Node("seq", [], 0, 0, "")


def build_contract(node: Node, path: str, source_format: str = "parity") -> tuple[Contract | None, list[Problem]]:
    """Build a :class:`Contract` from a tree that :func:`~parity.contracts.schema.validate_node`
    accepted, checking what the schema cannot: unique claim ids, ``binds_to`` naming an equation,
    code references that start with a path.

    Returns:
        ``(contract, problems)``; the contract is None when there are problems.

    >>> from parity.contracts._yaml import parse_yaml
    >>> tree = parse_yaml("parity_contract: 1\\nid: x\\nclaims:\\n- {id: a, statement: s, status: proposed, binds_to: [eq1]}\\n", "c.yaml")
    >>> contract, problems = build_contract(tree, "c.yaml")
    >>> contract, [str(p) for p in problems]
    (None, ["c.yaml:4:54: claim 'a' binds_to 'eq1', which is not an equation of this contract (equations: none)"])
    """
    problems: list[Problem] = []
    equations = []
    eq_ids: dict[str, int] = {}
    for e in (node.get("equations") or _EMPTY).value:
        eid = e["id"].value
        if eid in eq_ids:
            problems.append(e["id"].problem(f"duplicate equation id {eid!r} (first at line {eq_ids[eid]})"))
        eq_ids.setdefault(eid, e.line)
        equations.append(e.plain())
    obligations = []
    for i, o in enumerate((node.get("obligations") or _EMPTY).value):
        refs = tuple(_code_ref(n, problems, f"obligations[{i}].applies_to[{j}]")
                     for j, n in enumerate((o.get("applies_to") or _EMPTY).value))
        obligations.append(Obligation(o["property"].value, _s(o.get("type")), _s(o.get("id")), refs,
                                      _s(o.get("extra")) or {}, o.line))
    claims = []
    seen: dict[str, int] = {}
    for i, c in enumerate((node.get("claims") or _EMPTY).value):
        cid = c["id"].value
        if cid in seen:
            problems.append(c["id"].problem(f"duplicate claim id {cid!r} (first at line {seen[cid]})"))
        seen.setdefault(cid, c.line)
        binds = c.get("binds_to")
        for b in (binds.value if binds is not None else []):
            if b.value not in eq_ids:
                problems.append(b.problem(f"claim {cid!r} binds_to {b.value!r}, which is not an equation of this "
                                          f"contract (equations: {', '.join(eq_ids) or 'none'})"))
        claims.append(Claim(cid, c["statement"].value, c["status"].value, _s(c.get("reason")), _strs(binds),
                            _s(c.get("falsification")) or {}, _evidence(c.get("evidence"), problems, f"claims[{i}].evidence"),
                            _s(c.get("extra")) or {}, c.line, c.column))
    version = node.get("version")
    contract = Contract(path, node["id"].value, tuple(claims), None if version is None else str(_raw(version)),
                        _s(node.get("status")), _s(node.get("description")), _strs(node.get("references")),
                        _strs(node.get("depends_on")), tuple(equations), _strs(node.get("invariants")),
                        tuple(obligations), _s(node.get("extra")) or {}, source_format, node.line)
    return (None if problems else contract), problems


def _raw(node: Node) -> Any:
    return node.value
