"""What ``parity contract check`` reports: a :class:`Finding` per piece of evidence, a
:class:`ClaimResult` per claim, and the :class:`CheckReport` of a run (JSON schema
``parity.contract-check``). How the evidence is checked is :mod:`parity.contracts.check`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .._version import __version__
from ..errors import UsageError
from .errors import Problem

__all__ = ["Finding", "ClaimResult", "CheckReport", "REPORT_SCHEMA_VERSION", "OK", "BROKEN", "ABSENT", "UNVERIFIED",
           "FAILED"]

#: Version of the JSON form of :class:`CheckReport` (``schema: parity.contract-check``).
REPORT_SCHEMA_VERSION = 1

#: The outcomes of a :class:`Finding`.
OK, BROKEN, ABSENT, UNVERIFIED, FAILED = "ok", "broken", "absent", "unverified", "failed"


@dataclass(frozen=True)
class Finding:
    """One piece of evidence, checked.

    Attributes:
        kind: ``code``, ``file``, ``pytest``, ``command``, ``trace``, ``diff`` or ``bundle``.
        target: what was cited (``src/a.py::f``, a node id, a command, a path).
        outcome: ``ok``; ``broken`` (cited but false: caps the claim at proposed); ``absent``
            (cited but not there: supports nothing); ``failed`` (a diff that does not pass);
            ``unverified`` (a command not run without ``--run``).
        supports: the level this evidence proves when ok (None for code, a precondition).
        message: a sentence for the report.
        line: where the evidence is cited in the contract file.

    >>> from parity.contracts import check_loaded, load_contracts
    >>> _ = open("lib.py", "w").write("def scale(x):\\n    return 2 * x\\n")
    >>> _ = open("c.yaml", "w").write("parity_contract: 1\\nid: demo\\nclaims:\\n- {id: a, statement: s, status: algorithm,\\n"
    ...     "   evidence: {code: [lib.py::scale], tests: {commands: ['python -m pytest -q']}}}\\n")
    >>> code, command = check_loaded(load_contracts(["c.yaml"]), collect=False).results[0].findings
    >>> (code.kind, code.outcome, code.message), (command.outcome, command.supports)
    (('code', 'ok', 'lib.py:1 defines scale (ast)'), ('unverified', 'algorithm'))
    """

    kind: str
    target: str
    outcome: str
    message: str
    supports: str | None = None
    line: int = 0
    result: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind, "target": self.target, "outcome": self.outcome, "supports": self.supports,
             "message": self.message, "line": self.line}
        if self.result is not None:
            d["result"] = self.result
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(d["kind"], d["target"], d["outcome"], d["message"], d.get("supports"), int(d.get("line", 0)),
                   d.get("result"))


@dataclass(frozen=True)
class ClaimResult:
    """The check of one claim (or one proof obligation's ``applies_to``).

    ``verdict`` is ``ok``, ``understated`` (the evidence supports more than stated),
    ``overstated`` (fails the check), ``blocked``, or for obligations ``stale`` (fails).

    >>> from parity.contracts import check_loaded, load_contracts
    >>> _ = open("lib.py", "w").write("def scale(x):\\n    return 2 * x\\n")
    >>> _ = open("c.yaml", "w").write("parity_contract: 1\\nid: demo\\nclaims:\\n- {id: a, statement: s, status: algorithm,\\n"
    ...     "   evidence: {code: [lib.py::scale], tests: {commands: ['python -m pytest -q']}}}\\n")
    >>> r = check_loaded(load_contracts(["c.yaml"]), collect=False).results[0]
    >>> r.contract, r.claim, r.claimed, r.supported, r.verdict, r.failed
    ('demo', 'a', 'algorithm', 'algorithm', 'ok', False)
    """

    contract: str
    claim: str
    path: str
    line: int
    claimed: str
    supported: str
    verdict: str
    reason: str
    findings: tuple[Finding, ...] = ()

    @property
    def failed(self) -> bool:
        return self.verdict in ("overstated", "stale")

    def to_dict(self) -> dict[str, Any]:
        return {"contract": self.contract, "claim": self.claim, "path": self.path, "line": self.line,
                "claimed": self.claimed, "supported": self.supported, "verdict": self.verdict, "reason": self.reason,
                "findings": [f.to_dict() for f in self.findings]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClaimResult:
        return cls(d["contract"], d["claim"], d["path"], int(d["line"]), d["claimed"], d["supported"], d["verdict"],
                   d["reason"], tuple(Finding.from_dict(f) for f in d.get("findings", ())))


@dataclass(frozen=True)
class CheckReport:
    """Everything ``parity contract check`` found. Truthy when no claim is overstated.

    Example:
        >>> r = CheckReport(results=(), root=".")
        >>> bool(r), CheckReport.from_dict(r.to_dict()) == r
        (True, True)
    """

    results: tuple[ClaimResult, ...]
    root: str
    warnings: tuple[Problem, ...] = ()
    ran: bool = False
    files: int = 0
    contracts: int = 0
    seconds: float = 0.0
    pytest_invocations: int = 0
    tool_version: str = __version__

    @property
    def failures(self) -> list[ClaimResult]:
        return [r for r in self.results if r.failed]

    @property
    def passed(self) -> bool:
        return not self.failures

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> dict[str, int]:
        counts = {k: 0 for k in ("ok", "understated", "overstated", "blocked", "stale")}
        for r in self.results:
            counts[r.verdict] = counts.get(r.verdict, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "parity.contract-check", "schema_version": REPORT_SCHEMA_VERSION,
                "tool_version": self.tool_version, "passed": self.passed, "root": self.root, "ran": self.ran,
                "files": self.files, "contracts": self.contracts, "seconds": round(self.seconds, 3),
                "pytest_invocations": self.pytest_invocations, "summary": self.summary(),
                "results": [r.to_dict() for r in self.results], "warnings": [w.to_dict() for w in self.warnings]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckReport:
        if not isinstance(d, dict) or d.get("schema") != "parity.contract-check":
            raise UsageError("not a parity contract check report (schema parity.contract-check).")
        if int(d.get("schema_version", 0)) > REPORT_SCHEMA_VERSION:
            raise UsageError(f"contract check report version {d.get('schema_version')} is newer than this parity reads.")
        return cls(tuple(ClaimResult.from_dict(r) for r in d.get("results", ())), d.get("root", "."),
                   tuple(Problem.from_dict(w) for w in d.get("warnings", ())), bool(d.get("ran")), int(d.get("files", 0)),
                   int(d.get("contracts", 0)), float(d.get("seconds", 0.0)), int(d.get("pytest_invocations", 0)),
                   d.get("tool_version", __version__))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
