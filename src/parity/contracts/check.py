"""Derive the status each claim's evidence supports, and compare it with the status it states.

The lattice is ``proposed < algorithm < functional < discharged``; ``blocked`` (with a reason)
stands apart and never fails. Evidence supports:

* **algorithm** (unit-tested): every cited pytest node id collects (and passes, with ``--run``),
  every cited command exits as expected (run only with ``--run``; without it a command is
  *unverified*, counted but listed as such);
* **functional** (seen in a live run): a closed evidence bundle whose files match their
  ``sha256.txt``, or a complete trace whose data files match their checksums;
* **discharged** (matched an oracle): a reference and a candidate trace whose diff passes at
  the claim's tolerance (``rtol``, ``atol``, ``cosine_min``, ``sqnr_min_db``, ``config``), on
  the claim's ``stages`` when given; or a bundle's ``parity.diff`` JSON output saying parity holds.

The supported status is the highest level some evidence proves, provided nothing cited is
*broken*: a symbol no longer defined in the cited file (the report says where it is now, when it
is found elsewhere in the repository), a cited file that does not exist, a test id that does not
collect, a failing command, a tampered bundle or trace. Any broken evidence supports only
``proposed``. A claim whose stated status ranks above the supported one is **overstated**:
``check`` exits 1.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
from collections.abc import Iterable
from typing import Any

from .load import LoadResult, load_contracts
from .model import LEVELS, Claim, CodeRef, Contract, ParityRef, rank, split_symbol
from .result import (  # re-exported: the result types were defined here first
    ABSENT,
    BROKEN,
    FAILED,
    OK,
    REPORT_SCHEMA_VERSION,
    UNVERIFIED,
    CheckReport,
    ClaimResult,
    Finding,
)
from .runner import CommandResult, WarmPytest, collect_pytest, run_command, run_pytest
from .symbols import SourceIndex, language_of

__all__ = ["Finding", "ClaimResult", "CheckReport", "check_contracts", "check_loaded", "REPORT_SCHEMA_VERSION"]


# -- the checker ---------------------------------------------------------------------------------

_GLOB = set("*?[")


class _Checker:
    def __init__(self, root: str, run: bool, collect: bool, timeout: float, use_tree_sitter: bool):
        self.root = os.path.abspath(root)
        self.run, self.collect, self.timeout = run, collect, timeout
        self.index = SourceIndex(self.root, use_tree_sitter=use_tree_sitter)
        self.pytest_status: dict[str, str] = {}
        self.pytest_invocations = 0
        self.trace_cache: dict[str, Finding] = {}
        self.diff_cache: dict[tuple, Any] = {}
        self.bundle_cache: dict[str, Any] = {}
        self.command_cache: dict[tuple, CommandResult] = {}
        self.symbol_cache: dict[tuple[tuple[str, ...], str], tuple[str, str, str]] = {}
        self.where_cache: dict[tuple[str, str | None], list[tuple[str, str, int]]] = {}

    # paths
    def rel_ok(self, rel: str) -> bool:
        return not os.path.isabs(rel) and self.index.inside(rel)

    # code
    def where(self, name: str, lang: str | None) -> list[tuple[str, str, int]]:
        key = (name, lang)
        if key not in self.where_cache:
            self.where_cache[key] = self.index.where_defined(name, lang)
        return self.where_cache[key]

    def code(self, ref: CodeRef, line: int) -> list[Finding]:
        out: list[Finding] = []
        origin = f" (from {ref.origin})" if ref.origin else ""
        for f in ref.files:
            if not self.rel_ok(f):
                out.append(Finding("file", f, BROKEN, f"{f} is outside --root{origin}", line=line))
            elif not ref.symbols and not self.index.exists(f):
                out.append(Finding("file", f, BROKEN, f"{f} does not exist{self.moved_hint(f)}{origin}", line=line))
            elif not ref.symbols:
                out.append(Finding("file", f, OK, f"{f} exists", line=line))
        for sym in ref.symbols:
            key = (ref.files, sym)
            cached = self.symbol_cache.get(key)
            if cached is None:
                cached = self.symbol_cache[key] = self.symbol(ref.files, sym)
            target, outcome, msg = cached
            out.append(Finding("code", target, outcome, msg + (origin if outcome == BROKEN else ""), line=line))
        return out

    def symbol(self, ref_files: tuple[str, ...], sym: str) -> tuple[str, str, str]:
        """``(target, outcome, message)`` for one cited symbol (cached per run)."""
        path, name, _note = split_symbol(sym)
        files = [path] if path else list(ref_files)
        target = f"{path}::{name}" if path else (f"{files[0]}::{name}" if len(files) == 1 else name)
        found = None
        for f in files:
            if not self.rel_ok(f):
                continue
            d = self.index.get(f)
            q = d.lookup(name) if d is not None else None
            if q is not None:
                found = (f, q, d.names.get(q, 0), d.method)
                break
        if found:
            f, q, ln, method = found
            return target, OK, f"{f}:{ln} defines {q} ({method})"
        where = ", ".join(files) or "(no file cited)"
        msg = f"{name} is not defined in {where}"
        missing = [f for f in files if self.index.get(f) is None]
        if missing:
            msg += f" ({', '.join(missing)} does not exist{self.moved_hint(missing[0])})"
        lang = language_of(files[0]) if files else None
        elsewhere = [w for w in self.where(name.rsplit("::", 1)[-1], lang) if w[0] not in files]
        if elsewhere:
            msg += "; it is now defined in " + ", ".join(f"{f}:{ln} as {q}" for f, q, ln in elsewhere[:3])
            if len(elsewhere) > 3:
                msg += f" and {len(elsewhere) - 3} more places"
        else:
            close = [c for f in files if (d := self.index.get(f)) is not None for c in d.close_matches(name)]
            if close:
                msg += f"; it is found nowhere else in the repository; closest names there: {', '.join(close[:3])} (renamed?)"
            else:
                msg += "; it is found nowhere in the repository"
        return target, BROKEN, msg

    def moved_hint(self, rel: str) -> str:
        same = [p for p in self.index.files_named(os.path.basename(rel)) if p != rel]
        return f"; a file named {os.path.basename(rel)} is at {', '.join(same[:3])}" if same else ""

    # tests
    def static_test(self, node_id: str) -> str | None:
        """None when the id's file and test name are there by ast; else why not."""
        parts = node_id.split("::")
        f = parts[0]
        if not self.rel_ok(f):
            return f"{f} is outside --root"
        if len(parts) == 1:
            return None if self.index.exists(f) else f"test file {f} does not exist"
        d = self.index.get(f)
        if d is None:
            return f"test file {f} does not exist"
        name = "::".join(p.split("[", 1)[0] for p in parts[1:])
        if d.lookup(name) is None:
            elsewhere = [w for w in self.where(name.split("::")[-1], "python") if w[0] != f]
            hint = f"; defined in {', '.join(f'{p}:{ln} as {q}' for p, q, ln in elsewhere[:3])}" if elsewhere else ""
            return f"{name} is not defined in {f}{hint}"
        return None

    def prepare_tests(self, contracts: list[Contract], warm=None) -> None:
        ids = sorted({t for c in contracts for cl in c.claims for t, _ in cl.evidence.pytest})
        good = []
        for i in ids:
            why = self.static_test(i)
            if why is None:
                good.append(i)
            else:
                self.pytest_status[i] = why
        if good and (self.collect or self.run):
            outcome = collect_pytest(self.root, good, timeout=self.timeout, warm=warm)
            self.pytest_invocations += outcome.invocations
            for i, s in outcome.status.items():
                self.pytest_status[i] = s
            if self.run:
                runnable = [i for i in good if self.pytest_status.get(i) == "ok"]
                if runnable:
                    ran = run_pytest(self.root, runnable, timeout=max(self.timeout, 600.0))
                    self.pytest_invocations += ran.invocations
                    self.pytest_status.update(ran.status)
        for i in good:
            self.pytest_status.setdefault(i, "ok")

    def tests(self, claim: Claim) -> list[Finding]:
        out = []
        verb = "passes" if self.run else ("collects" if self.collect else "is defined (not collected: --no-collect)")
        for node_id, line in claim.evidence.pytest:
            s = self.pytest_status.get(node_id, "ok")
            out.append(Finding("pytest", node_id, OK if s == "ok" else BROKEN,
                               f"{node_id} {verb}" if s == "ok" else f"{node_id}: {s}", "algorithm", line))
        for cmd in claim.evidence.commands:
            if not self.run:
                out.append(Finding("command", cmd.run, UNVERIFIED, f"`{cmd.run}` not run (pass --run to run it)",
                                   "algorithm", cmd.line))
                continue
            key = (cmd.run, cmd.cwd, cmd.timeout)
            if key not in self.command_cache:
                if cmd.cwd and not self.rel_ok(cmd.cwd):
                    self.command_cache[key] = CommandResult(cmd.run, None, 0.0, error="cwd is outside --root")
                else:
                    self.command_cache[key] = run_command(self.root, cmd.run, timeout=cmd.timeout, cwd=cmd.cwd)
            r = self.command_cache[key]
            if r.exit == cmd.expect_exit:
                out.append(Finding("command", cmd.run, OK, f"`{cmd.run}` exited {r.exit} in {r.seconds:.1f} s",
                                   "algorithm", cmd.line, r.to_dict()))
            else:
                why = (f"timed out after {cmd.timeout:g} s" if r.timed_out else r.error if r.error else
                       f"exited {r.exit}, expected {cmd.expect_exit}")
                out.append(Finding("command", cmd.run, BROKEN, f"`{cmd.run}` {why}", "algorithm", cmd.line, r.to_dict()))
        return out

    # parity
    def trace(self, rel: str, line: int) -> Finding:
        if rel not in self.trace_cache:
            self.trace_cache[rel] = self._trace(rel)
        f = self.trace_cache[rel]
        return Finding(f.kind, f.target, f.outcome, f.message, f.supports, line)

    def _trace(self, rel: str) -> Finding:
        from ..errors import ParityError
        from ..trace.reader import load_trace

        if not self.rel_ok(rel):
            return Finding("trace", rel, BROKEN, f"trace {rel} is outside --root", "functional")
        full = self.index.full(rel)
        if not os.path.exists(full):
            return Finding("trace", rel, ABSENT, f"trace {rel} not found", "functional")
        try:
            t = load_trace(full)
            problems = t.verify()
        except ParityError as e:
            return Finding("trace", rel, BROKEN, f"trace {rel} cannot be read: {e.message}", "functional")
        if problems:
            return Finding("trace", rel, BROKEN, f"trace {rel} fails its checksums: {'; '.join(problems[:3])}", "functional")
        if not t.complete:
            return Finding("trace", rel, ABSENT, f"trace {rel} is an incomplete capture "
                                                 f"({t.manifest.get('incomplete_reason', 'interrupted')})", "functional")
        return Finding("trace", rel, OK, f"trace {rel} verified ({len(t)} stages, checksums match)", "functional")

    def bundle(self, p: ParityRef) -> list[Finding]:
        from ..bundle import verify_bundle
        from ..errors import ParityError

        rel = p.bundle or ""
        line = p.line
        if not self.rel_ok(rel):
            return [Finding("bundle", rel, BROKEN, f"bundle {rel} is outside --root", "functional", line)]
        full = self.index.full(rel)
        if not os.path.isdir(full):
            return [Finding("bundle", rel, ABSENT, f"bundle {rel} not found", "functional", line)]
        if rel not in self.bundle_cache:
            try:
                self.bundle_cache[rel] = verify_bundle(full)
            except ParityError as e:
                self.bundle_cache[rel] = e
        check = self.bundle_cache[rel]
        if isinstance(check, ParityError):
            missing_marker = not os.path.exists(os.path.join(full, "bundle.json"))
            return [Finding("bundle", rel, ABSENT if not missing_marker else BROKEN,
                            f"bundle {rel}: {check.message}", "functional", line)]
        if not check.ok:
            return [Finding("bundle", rel, BROKEN, f"bundle {rel} does not match its sha256.txt (tampered?): "
                                                   f"{'; '.join(check.problems()[:4])}", "functional", line)]
        out = [Finding("bundle", rel, OK, f"bundle {rel} verified ({check.checked} files match sha256.txt)",
                       "functional", line)]
        if p.diff:
            name = p.diff
            path = os.path.join(full, name)
            if "/" in name or "\\" in name or name.startswith(".") or not os.path.isfile(path):
                out.append(Finding("diff", f"{rel}/{name}", ABSENT, f"{name} is not an output of bundle {rel}",
                                   "discharged", line))
            else:
                try:
                    with open(path, encoding="utf-8") as f:
                        doc = json.load(f)
                except (OSError, ValueError) as e:
                    doc = {"error": str(e)}
                if isinstance(doc, dict) and doc.get("schema") == "parity.diff" and doc.get("passed") is True:
                    s = doc.get("summary", {})
                    out.append(Finding("diff", f"{rel}/{name}", OK, f"{name} in the verified bundle says parity holds "
                                                                    f"({s.get('pass')} stages pass)", "discharged", line))
                else:
                    out.append(Finding("diff", f"{rel}/{name}", FAILED,
                                       f"{name} in bundle {rel} does not say parity holds", "discharged", line))
        return out

    def diff(self, p: ParityRef) -> list[Finding]:
        from ..localize.divergence import compare_traces
        from ..results import Status
        from ..errors import ParityError

        out = [self.trace(p.ref or "", p.line), self.trace(p.cand or "", p.line)]
        if any(f.outcome != OK for f in out):
            return out
        if p.config and not (self.rel_ok(p.config) and os.path.isfile(self.index.full(p.config))):
            return out + [Finding("diff", f"{p.ref} vs {p.cand}", BROKEN, f"config {p.config} not found", "discharged", p.line)]
        tol = {k: v for k, v in (("rtol", p.rtol), ("atol", p.atol), ("cosine_min", p.cosine_min),
                                 ("sqnr_min_db", p.sqnr_min_db)) if v is not None}
        patterns = p.stages
        key = (p.ref, p.cand, p.config, p.strict, tuple(sorted(tol.items())), patterns)
        if key not in self.diff_cache:
            stages = {pat: dict(tol) for pat in patterns} if (patterns and tol) else (
                {"*": {k: v for k, v in tol.items() if k in ("cosine_min", "sqnr_min_db")}} if
                any(k in tol for k in ("cosine_min", "sqnr_min_db")) else None)
            try:
                self.diff_cache[key] = compare_traces(
                    self.index.full(p.ref), self.index.full(p.cand),
                    config=self.index.full(p.config) if p.config else None,
                    rtol=None if patterns else tol.get("rtol"), atol=None if patterns else tol.get("atol"),
                    stages=stages, strict=p.strict, diagnose=False)
            except ParityError as e:
                self.diff_cache[key] = e
        d = self.diff_cache[key]
        target = f"{p.ref} vs {p.cand}" + (f" [{', '.join(patterns)}]" if patterns else "")
        if isinstance(d, ParityError):
            return out + [Finding("diff", target, BROKEN, f"the diff cannot be made: {d.message}", "discharged", p.line)]
        if patterns:
            chosen = [s for s in d.stages if any(fnmatch.fnmatchcase(s.key, pat) for pat in patterns)]
            bad = [s for s in chosen if s.status not in (Status.PASS, Status.EXPECTED)]
            unmatched = [pat for pat in patterns if not any(fnmatch.fnmatchcase(s.key, pat) for s in chosen)]
            if unmatched:
                return out + [Finding("diff", target, BROKEN, f"no stage {', '.join(unmatched)} in the traces",
                                      "discharged", p.line)]
            passed = not bad
            n_pass, n = len(chosen) - len(bad), len(chosen)
        else:
            bad = d.divergent + (d.missing + d.extra if d.strict else [])
            passed, n_pass, n = d.passed, d.summary()["pass"], len(d.compared)
        tol_text = ", ".join(f"{k}={v:g}" for k, v in tol.items()) or "default tolerances"
        if passed:
            return out + [Finding("diff", target, OK, f"diff passes at {tol_text}: {n_pass}/{n} stages within tolerance",
                                  "discharged", p.line)]
        first = bad[0] if bad else None
        why = (f"first divergence {first.key} ({first.status}"
               + (f", max |err| {first.metrics.max_abs_err:.3g}" if first is not None and first.metrics is not None else "")
               + ")") if first is not None else d.verdict.replace("_", " ")
        return out + [Finding("diff", target, FAILED, f"diff does not pass at {tol_text}: {why}", "discharged", p.line)]

    def parity(self, claim: Claim) -> list[Finding]:
        out: list[Finding] = []
        for p in claim.evidence.parity:
            if p.bundle:
                out += self.bundle(p)
            if p.trace:
                out.append(self.trace(p.trace, p.line))
            if p.ref and p.cand:
                out += self.diff(p)
        return out

    # claims
    def code_findings(self, claim: Claim) -> list[Finding]:
        findings: list[Finding] = []
        for ref in claim.evidence.code:
            findings += self.code(ref, ref.line or claim.line)
        return findings

    def claim(self, contract: Contract, claim: Claim, code: list[Finding] | None = None) -> ClaimResult:
        findings = list(self.code_findings(claim) if code is None else code)
        findings += self.tests(claim)
        findings += self.parity(claim)
        supported, why = _derive(findings)
        claimed = claim.status
        if claimed == "blocked":
            verdict = "blocked"
            reason = f"blocked: {claim.reason}" + (f" (evidence now supports {supported})" if rank(supported) > 0 else "")
        elif rank(claimed) > rank(supported):
            verdict = "overstated"
            reason = why or _missing(claimed, supported, findings)
        elif rank(claimed) < rank(supported):
            verdict = "understated"
            reason = f"evidence supports {supported}; the claim could be promoted"
        else:
            verdict = "ok"
            reason = why or _summary(findings)
        unverified = [f for f in findings if f.outcome == UNVERIFIED]
        if unverified and verdict != "overstated":
            reason += f"; {len(unverified)} command(s) not run (pass --run)"
        return ClaimResult(contract.id, claim.id, contract.path, claim.line, claimed, supported, verdict, reason,
                           tuple(findings))

    def obligation(self, contract: Contract, i: int, o) -> ClaimResult | None:
        if not o.applies_to:
            return None
        findings: list[Finding] = []
        for ref in o.applies_to:
            findings += self.code(ref, ref.line or o.line)
        broken = [f for f in findings if f.outcome == BROKEN]
        name = f"obligation {o.id or i + 1}"
        return ClaimResult(contract.id, name, contract.path, o.line, "-", "stale" if broken else "ok",
                           "stale" if broken else "ok",
                           "; ".join(f.message for f in broken[:2]) if broken else f"applies_to: {len(findings)} symbol(s) defined",
                           tuple(findings))


def _derive(findings: list[Finding]) -> tuple[str, str]:
    broken = [f for f in findings if f.outcome == BROKEN]
    if broken:
        more = f" (and {len(broken) - 2} more)" if len(broken) > 2 else ""
        return "proposed", "; ".join(f.message for f in broken[:2]) + more
    level = 0
    tests = [f for f in findings if f.kind in ("pytest", "command")]
    if tests and all(f.outcome in (OK, UNVERIFIED) for f in tests):
        level = 1
    for f in findings:
        if f.outcome == OK and f.supports in LEVELS:
            level = max(level, rank(f.supports))
    return LEVELS[level], ""


def _missing(claimed: str, supported: str, findings: list[Finding]) -> str:
    need = {"algorithm": "no test evidence (tests.pytest or tests.commands)",
            "functional": "no verified bundle or trace from a live run",
            "discharged": "no trace diff within tolerance (parity: ref + cand, or a bundle's passing diff)"}
    wanted = claimed
    notes = [f.message for f in findings if f.outcome in (ABSENT, FAILED) and rank(f.supports or "proposed") >= rank(wanted)]
    base = f"{claimed} needs evidence this claim lacks: {need[wanted]}"
    return base + (f" ({'; '.join(notes[:2])})" if notes else "")


def _summary(findings: list[Finding]) -> str:
    if not findings:
        return "no evidence cited"
    best = max((f for f in findings if f.outcome == OK and f.supports in LEVELS), key=lambda f: rank(f.supports),
               default=None)
    if best is not None:
        others = sum(1 for f in findings if f.outcome == OK) - 1
        return best.message + (f" (+{others} more verified)" if others else "")
    kinds: dict[str, int] = {}
    for f in findings:
        if f.outcome == OK:
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in kinds.items()) + " verified" if kinds else "no evidence verified"


def check_loaded(loaded: LoadResult, *, root: str = ".", run: bool = False, collect: bool = True,
                 timeout: float = 120.0, use_tree_sitter: bool = True, _warm: WarmPytest | None = None,
                 _t0: float | None = None) -> CheckReport:
    """Check contracts already read by :func:`~parity.contracts.load_contracts` (errors raised first).

    >>> from parity.contracts import load_contracts
    >>> _ = open("lib.py", "w").write("def scale(x):\\n    return 2 * x\\n")
    >>> _ = open("c.yaml", "w").write("parity_contract: 1\\nid: demo\\nclaims:\\n- {id: a, statement: s, status: algorithm,\\n"
    ...     "   evidence: {code: [lib.py::scale], tests: {commands: ['python -m pytest -q']}}}\\n")
    >>> r = check_loaded(load_contracts(["c.yaml"]), collect=False)
    >>> r.passed, r.results[0].verdict, r.results[0].reason
    (True, 'ok', '1 code verified; 1 command(s) not run (pass --run)')
    """
    t0 = time.perf_counter() if _t0 is None else _t0
    from concurrent.futures import ThreadPoolExecutor

    try:
        loaded.raise_errors()
        c = _Checker(root, run, collect, timeout, use_tree_sitter)
        # pytest collects (a subprocess) while the code evidence is checked here
        with ThreadPoolExecutor(max_workers=1) as pool:
            tests_done = pool.submit(c.prepare_tests, loaded.contracts, _warm)
            code = {(id(contract), claim.id): c.code_findings(claim)
                    for contract in loaded.contracts for claim in contract.claims}
            tests_done.result()
    finally:
        if _warm is not None:
            _warm.close()
    results: list[ClaimResult] = []
    for contract in loaded.contracts:
        for i, o in enumerate(contract.obligations):
            r = c.obligation(contract, i, o)
            if r is not None:
                results.append(r)
        for claim in contract.claims:
            results.append(c.claim(contract, claim, code[(id(contract), claim.id)]))
    return CheckReport(tuple(results), root, tuple(loaded.warnings), run, len(loaded.files), len(loaded.contracts),
                       round(time.perf_counter() - t0, 3), c.pytest_invocations)


def check_contracts(paths: Iterable[str | os.PathLike[str]], *, root: str = ".", run: bool = False,
                    collect: bool = True, timeout: float = 120.0, use_tree_sitter: bool = True) -> CheckReport:
    """Check every claim of the contracts under ``paths`` against the repository at ``root``.

    Args:
        paths: contract files or directories (ours, or aprender-style ledgers).
        root: the repository the evidence paths are relative to.
        run: also run the cited pytest ids and commands (each with a timeout).
        collect: check that pytest ids collect (one pytest subprocess for all of them); without it
            an id is only checked statically (its file exists and defines the test).
        timeout: seconds for pytest collection.
        use_tree_sitter: parse Rust/C/C++/Go with tree-sitter when installed (else the text rule).

    Returns:
        A :class:`CheckReport`; an overstated claim is a result (``report.passed`` False), not an exception.

    Raises:
        ContractError: a file breaks the schema (every problem listed with file, line and column).

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> _ = open(os.path.join(root, "lib.py"), "w").write("def scale(x):\\n    return 2 * x\\n")
        >>> _ = open(os.path.join(root, "c.yaml"), "w").write('''parity_contract: 1
        ... id: demo
        ... claims:
        ... - id: scale-exists
        ...   statement: scale doubles its input
        ...   status: algorithm
        ...   evidence:
        ...     code: [lib.py::scale, lib.py::shift]
        ... ''')
        >>> r = check_contracts([os.path.join(root, "c.yaml")], root=root)
        >>> r.passed, r.results[0].supported, r.results[0].reason
        (False, 'proposed', 'shift is not defined in lib.py; it is found nowhere in the repository')
    """
    t0 = time.perf_counter()
    # pytest and its plugins import while the contracts are read (on another core)
    warm = WarmPytest(os.path.abspath(root)) if (collect or run) and os.path.isdir(root) else None
    try:
        loaded = load_contracts(paths, root=root)
    except BaseException:
        if warm is not None:
            warm.close()
        raise
    return check_loaded(loaded, root=root, run=run, collect=collect, timeout=timeout, use_tree_sitter=use_tree_sitter,
                        _warm=warm, _t0=t0)
