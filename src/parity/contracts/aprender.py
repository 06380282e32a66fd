"""Read the provable-contract ledgers that aprender-style projects keep, as parity contracts.

Such a file has ``metadata`` (id, version, status, description, references, depends_on),
``equations`` (a mapping of name → formula, domain, codomain, invariants), ``proof_obligations``
(type, property, ``applies_to: path::symbol``) and ``falsification_tests`` (id, rule, prediction,
test, if_fails, status, binds_to, ``algorithm_evidence`` / ``functional_evidence``). Each
falsification test becomes a claim:

=========================  ==========================================================
aprender                   parity
=========================  ==========================================================
``PROPOSED``               ``proposed``
``PARTIAL_ALGORITHM_LEVEL`` ``algorithm``
``FUNCTIONAL``             ``functional``
``DISCHARGED``             ``discharged``
``BLOCKER_FIXTURE_ABSENT`` ``blocked`` (reason: the fixture is absent); any ``BLOCKER*`` likewise
rule / prediction / test / if_fails   ``statement`` (the rule) and ``falsification``
``file_paths`` + ``function_names``   code evidence (each name defined in one of the files)
``path.rs::symbol`` in prose          code evidence (origin: prose)
a ``*.trace`` path or a bundle folder parity evidence
``test`` naming a pytest node id      ``tests.pytest``
``test`` that is a plain test command ``tests.commands`` (cargo/go/pytest/python/make/ctest, no shell syntax)
=========================  ==========================================================

Every field the mapping does not understand is reported as a warning with its line and column
and kept verbatim under ``extra`` — never dropped.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ._yaml import Node
from .errors import Problem

__all__ = ["is_aprender", "from_aprender", "STATUS_MAP"]

STATUS_MAP = {"PROPOSED": "proposed", "PARTIAL_ALGORITHM_LEVEL": "algorithm", "ALGORITHM_LEVEL": "algorithm",
              "FUNCTIONAL": "functional", "DISCHARGED": "discharged", "BLOCKER_FIXTURE_ABSENT": "blocked"}

_PROSE_SYMBOL = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.(?:rs|py|c|cc|cpp|cxx|h|hpp|cu|go))::([A-Za-z_][\w]*(?:::[A-Za-z_][\w]*)*)")
_PROSE_PATH = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)+[\w.-]+\.(?:rs|py|c|cc|cpp|cxx|h|hpp|cu|go))(?![\w:])")
_PYTEST_ID = re.compile(r"^[\w./-]+\.py(::[^\s]+)?$")
_RUNNERS = ("cargo", "pytest", "python", "python3", "go", "make", "ctest", "npm", "uv", "tox", "nox")
_SHELL = re.compile(r"[|;&<>$`\\*?\n]|\.\.\.")
_TRAILING_NOTE = re.compile(r"\s*\([^()]*\)\s*$")

_TOP = {"metadata", "equations", "proof_obligations", "falsification_tests"}
_META = {"id", "version", "status", "description", "references", "depends_on"}
_EQ = {"formula", "description", "domain", "codomain", "invariants"}
_OBL = {"type", "property", "applies_to", "id"}
_TEST = {"id", "rule", "prediction", "test", "if_fails", "status", "binds_to", "algorithm_evidence", "functional_evidence"}
_EV = {"file_paths", "function_names", "invariants_enforced", "notes"}


def is_aprender(node: Node) -> bool:
    """Whether a composed YAML file is an aprender-style ledger (and not a parity contract).

    Example:
        >>> from parity.contracts._yaml import parse_yaml
        >>> is_aprender(parse_yaml("metadata: {version: 1.0.0}\\nfalsification_tests: []\\n"))
        True
    """
    return node.kind == "map" and "parity_contract" not in node.value and (
        "falsification_tests" in node.value or "metadata" in node.value or "proof_obligations" in node.value)


class _Conv:
    def __init__(self, path: str, root: str | None):
        self.path, self.root = path, root
        self.warnings: list[Problem] = []

    # node builders (lines are borrowed from the source node, so errors point into the aprender file)
    def m(self, src: Node, items: dict[str, Node]) -> Node:
        return Node("map", {k: (Node("scalar", k, v.line, v.column, self.path), v) for k, v in items.items()},
                    src.line, src.column, self.path)

    def s(self, src: Node, value: Any) -> Node:
        return Node("scalar", value, src.line, src.column, self.path)

    def seq(self, src: Node, items: list[Node]) -> Node:
        return Node("seq", items, src.line, src.column, self.path)

    def warn(self, node: Node, message: str) -> None:
        self.warnings.append(node.problem(message))

    def unknown(self, parent: Node, known: set[str], where: str, extra: dict[str, Node]) -> None:
        for key, kn, vn in parent.items():
            if key not in known:
                self.warn(kn, f"aprender field {where}{key!r} is not understood by parity; kept under extra, not checked")
                extra[key] = vn

    def text(self, node: Node | None) -> str | None:
        if node is None or node.value is None:
            return None
        if node.kind == "scalar":
            return str(node.value)
        return " ".join(str(x) for x in _flatten(node.plain()))

    def strings(self, node: Node | None, where: str) -> list[Node]:
        if node is None or node.value is None:
            return []
        if node.kind == "scalar":
            return [self.s(node, str(node.value))]
        if node.kind == "seq":
            out = []
            for item in node.value:
                if item.kind == "scalar":
                    out.append(self.s(item, str(item.value)))
                else:
                    self.warn(item, f"{where} item is not a string; kept as text")
                    out.append(self.s(item, str(item.plain())))
            return out
        self.warn(node, f"{where} is a mapping where a list of strings was expected; kept as text")
        return [self.s(node, str(node.plain()))]

    # sections
    def convert(self, node: Node) -> Node:
        out: dict[str, Node] = {"parity_contract": self.s(node, 1)}
        extra: dict[str, Node] = {}
        meta = node.get("metadata")
        cid = None
        if meta is not None and meta.kind == "map":
            cid = meta.get("id")
            for key in ("version", "description"):
                v = meta.get(key)
                if v is not None and v.value is not None:
                    out[key] = self.s(v, self.text(v))
            st = meta.get("status")
            if st is not None and st.kind == "scalar" and st.value is not None:
                mapped = self.status(st)
                if mapped:
                    out["status"] = self.s(st, mapped[0])
            for key in ("references", "depends_on"):
                v = meta.get(key)
                if v is not None:
                    out[key] = self.seq(v, self.strings(v, f"metadata.{key}"))
            mextra: dict[str, Node] = {}
            self.unknown(meta, _META, "metadata.", mextra)
            if mextra:
                extra["metadata"] = self.m(meta, mextra)
        elif meta is not None:
            self.warn(meta, "metadata is not a mapping; kept under extra")
            extra["metadata"] = meta
        stem = os.path.splitext(os.path.basename(self.path))[0]
        out["id"] = self.s(cid, str(cid.value)) if cid is not None and cid.kind == "scalar" else self.s(node, re.sub(r"[^A-Za-z0-9._:-]", "-", stem) or "contract")
        eqs = node.get("equations")
        equation_ids: set[str] = set()
        if eqs is not None:
            out["equations"] = self.equations(eqs, equation_ids)
        obl = node.get("proof_obligations")
        if obl is not None:
            out["obligations"] = self.obligations(obl)
        claims = []
        tests = node.get("falsification_tests")
        if tests is not None and tests.kind == "seq":
            for i, t in enumerate(tests.value):
                c = self.claim(t, i, equation_ids)
                if c is not None:
                    claims.append(c)
        elif tests is not None:
            self.warn(tests, "falsification_tests is not a list; kept under extra")
            extra["falsification_tests"] = tests
        out["claims"] = self.seq(tests or node, claims)
        self.unknown(node, _TOP, "", extra)
        if extra:
            out["extra"] = self.m(node, extra)
        order = ["parity_contract", "id", "version", "status", "description", "references", "depends_on", "equations",
                 "obligations", "claims", "extra"]
        return self.m(node, {k: out[k] for k in order if k in out})

    def status(self, st: Node) -> tuple[str, str | None] | None:
        raw = str(st.value).strip()
        key = raw.upper().replace("-", "_").replace(" ", "_")
        if key in STATUS_MAP:
            mapped = STATUS_MAP[key]
            return mapped, ("the fixture the claim needs is absent (BLOCKER_FIXTURE_ABSENT)" if mapped == "blocked" else None)
        if key.startswith("BLOCKER") or key.startswith("BLOCKED"):
            return "blocked", f"{raw}"
        self.warn(st, f"aprender status {raw!r} is not one parity knows (PROPOSED, PARTIAL_ALGORITHM_LEVEL, FUNCTIONAL, "
                      "DISCHARGED, BLOCKER_*); read as proposed")
        return "proposed", None

    def equations(self, eqs: Node, ids: set[str]) -> Node:
        items = []
        if eqs.kind == "map":
            entries = [(name, kn, vn) for name, kn, vn in eqs.items()]
        elif eqs.kind == "seq":
            entries = [(str(e.get("id").value) if e.kind == "map" and e.get("id") is not None else f"eq{i + 1}", e, e)
                       for i, e in enumerate(eqs.value)]
        else:
            self.warn(eqs, "equations is neither a mapping nor a list; kept as one formula")
            entries = [("eq1", eqs, eqs)]
        for name, kn, vn in entries:
            eid = re.sub(r"[^A-Za-z0-9._:-]", "-", str(name)) or "eq"
            ids.add(eid)
            d: dict[str, Node] = {"id": self.s(kn, eid)}
            if vn.kind == "scalar":
                d["formula"] = self.s(vn, str(vn.value))
            elif vn.kind == "map":
                for key in ("formula", "description", "domain", "codomain"):
                    v = vn.get(key)
                    if v is not None and v.value is not None:
                        d[key] = self.s(v, self.text(v))
                inv = vn.get("invariants")
                if inv is not None:
                    d["invariants"] = self.seq(inv, self.strings(inv, f"equations.{name}.invariants"))
                ex: dict[str, Node] = {}
                self.unknown(vn, _EQ | {"id"}, f"equations.{name}.", ex)
                if ex:
                    d["extra"] = self.m(vn, ex)
            else:
                d["formula"] = self.s(vn, self.text(vn))
            items.append(self.m(vn, d))
        return self.seq(eqs, items)

    def obligations(self, obl: Node) -> Node:
        items = []
        for i, o in enumerate(obl.value if obl.kind == "seq" else [obl]):
            if o.kind != "map":
                items.append(self.m(o, {"property": self.s(o, self.text(o) or "")}))
                continue
            d: dict[str, Node] = {}
            for key in ("id", "type"):
                v = o.get(key)
                if v is not None and v.value is not None:
                    d[key] = self.s(v, re.sub(r"[^A-Za-z0-9._:-]", "-", str(v.value)) if key == "id" else str(v.value))
            prop = o.get("property")
            d["property"] = self.s(prop or o, self.text(prop) or "")
            at = o.get("applies_to")
            if at is not None:
                d["applies_to"] = self.seq(at, [self.code_string(n) for n in self.strings(at, f"proof_obligations[{i}].applies_to")])
            ex: dict[str, Node] = {}
            self.unknown(o, _OBL, f"proof_obligations[{i}].", ex)
            if ex:
                d["extra"] = self.m(o, ex)
            items.append(self.m(o, d))
        return self.seq(obl, items)

    def code_string(self, n: Node) -> Node:
        return self.s(n, n.value.strip().strip("`"))

    def claim(self, t: Node, i: int, equation_ids: set[str]) -> Node | None:
        if t.kind != "map":
            self.warn(t, f"falsification_tests[{i}] is not a mapping; skipped as a claim, kept under extra")
            return self.m(t, {"id": self.s(t, f"test-{i + 1}"), "statement": self.s(t, self.text(t) or "?"),
                              "status": self.s(t, "proposed"), "extra": self.m(t, {"value": t})})
        idn = t.get("id")
        cid = str(idn.value) if idn is not None and idn.value is not None else f"test-{i + 1}"
        d: dict[str, Node] = {"id": self.s(idn or t, re.sub(r"[^A-Za-z0-9._:-]", "-", cid))}
        rule, pred = t.get("rule"), t.get("prediction")
        d["statement"] = self.s(rule or pred or t, self.text(rule) or self.text(pred) or cid)
        st = t.get("status")
        status, reason = ("proposed", None)
        if st is not None and st.value is not None:
            status, reason = self.status(st) or ("proposed", None)
        d["status"] = self.s(st or t, status)
        if reason:
            d["reason"] = self.s(st or t, reason)
        extra: dict[str, Node] = {}
        binds = t.get("binds_to")
        if binds is not None:
            good = []
            for b in self.strings(binds, f"falsification_tests[{i}].binds_to"):
                if b.value in equation_ids:
                    good.append(b)
                else:
                    self.warn(b, f"binds_to {b.value!r} names no equation of this ledger; kept under extra")
                    extra.setdefault("binds_to", binds)
            if good:
                d["binds_to"] = self.seq(binds, good)
        fals: dict[str, Node] = {}
        for key in ("rule", "prediction", "test", "if_fails"):
            v = t.get(key)
            if v is not None and v.value is not None:
                fals[key] = self.s(v, self.text(v))
        if fals:
            d["falsification"] = self.m(t, fals)
        ev = self.evidence(t, i, extra)
        if ev is not None:
            d["evidence"] = ev
        self.unknown(t, _TEST, f"falsification_tests[{i}] ({cid}).", extra)
        if extra:
            d["extra"] = self.m(t, extra)
        return self.m(t, d)

    def evidence(self, t: Node, i: int, extra: dict[str, Node]) -> Node | None:
        code: list[Node] = []
        parity: list[Node] = []
        notes: list[Node] = []
        pytest: list[Node] = []
        commands: list[Node] = []
        test = t.get("test")
        if test is not None and test.kind == "scalar" and isinstance(test.value, str):
            line = _TRAILING_NOTE.sub("", test.value.strip())
            if _PYTEST_ID.match(line):
                pytest.append(self.s(test, line))
            elif line and line.split()[0] in _RUNNERS and not _SHELL.search(line) and "\n" not in line:
                commands.append(self.s(test, line))
        for kind in ("algorithm_evidence", "functional_evidence"):
            ev = t.get(kind)
            if ev is None or ev.value is None:
                continue
            where = f"falsification_tests[{i}].{kind}"
            if ev.kind == "map":
                files = self.strings(ev.get("file_paths"), f"{where}.file_paths")
                names = self.strings(ev.get("function_names"), f"{where}.function_names")
                code_files, live = self.split_live(files, kind)
                parity += live
                if names:
                    if code_files:
                        code.append(self.m(ev, {"files": self.seq(ev, code_files), "symbols": self.seq(ev, names)}))
                    else:
                        for n in names:
                            if "::" in n.value:
                                code.append(self.code_string(n))
                            else:
                                self.warn(n, f"{where}.function_names {n.value!r} cites no file (no file_paths); not checkable")
                                notes.append(self.s(n, f"{kind}: function {n.value} (no file cited)"))
                else:
                    code += code_files
                for inv in self.strings(ev.get("invariants_enforced"), f"{where}.invariants_enforced"):
                    notes.append(self.s(inv, f"invariant enforced: {inv.value}"))
                for note in self.strings(ev.get("notes"), f"{where}.notes"):
                    notes.append(self.s(note, f"{kind}: {note.value}"))
                ex: dict[str, Node] = {}
                self.unknown(ev, _EV, f"{where}.", ex)
                if ex:
                    extra[kind] = self.m(ev, ex)
            else:
                for s in self.strings(ev, where):
                    notes.append(self.s(s, f"{kind}: {s.value}"))
                    found = set()
                    for m in _PROSE_SYMBOL.finditer(s.value):
                        code.append(self.s(s, f"{m.group(1)}::{m.group(2)}"))
                        found.add(m.group(1))
                    for m in _PROSE_PATH.finditer(s.value):
                        if m.group(1) not in found:
                            code.append(self.s(s, m.group(1)))
        d: dict[str, Node] = {}
        if code:
            d["code"] = self.seq(t, code)
        tests: dict[str, Node] = {}
        if pytest:
            tests["pytest"] = self.seq(t, pytest)
        if commands:
            tests["commands"] = self.seq(t, commands)
        if tests:
            d["tests"] = self.m(t, tests)
        if parity:
            d["parity"] = self.seq(t, parity)
        if notes:
            d["notes"] = self.seq(t, notes)
        return self.m(t, d) if d else None

    def split_live(self, files: list[Node], kind: str) -> tuple[list[Node], list[Node]]:
        """Trace folders and bundle folders become parity evidence; everything else stays a code file."""
        code, live = [], []
        for f in files:
            p = f.value.rstrip("/")
            full = os.path.join(self.root, p) if self.root else p
            if p.endswith(".trace"):
                live.append(self.m(f, {"trace": self.s(f, p)}))
            elif os.path.isfile(os.path.join(full, "bundle.json")):
                live.append(self.m(f, {"bundle": self.s(f, p)}))
            else:
                code.append(self.s(f, p))
        return code, live


def _flatten(x: Any) -> list[Any]:
    if isinstance(x, dict):
        return [f"{k}: {v}" for k, v in x.items()]
    if isinstance(x, list):
        return [y for item in x for y in _flatten(item)]
    return [x]


def from_aprender(node: Node, path: str, root: str | None = None) -> tuple[Node, list[Problem]]:
    """Convert an aprender-style ledger tree into a parity contract tree (same lines).

    Returns:
        ``(tree, warnings)``: the tree follows our schema; each warning names a field the
        mapping did not understand (kept under ``extra``) with its line and column.

    Example:
        >>> from parity.contracts._yaml import parse_yaml
        >>> src = "metadata:\\n  version: 1.0.0\\n  author: x\\nfalsification_tests:\\n- id: F-1\\n  rule: r\\n  status: FUNCTIONAL\\n"
        >>> tree, warnings = from_aprender(parse_yaml(src, "l.yaml"), "l.yaml")
        >>> tree["claims"].plain()[0]["status"], [str(w) for w in warnings]
        ('functional', ["l.yaml:3:3: aprender field metadata.'author' is not understood by parity; kept under extra, not checked"])
    """
    conv = _Conv(path, root)
    return conv.convert(node), conv.warnings
