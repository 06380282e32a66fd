"""Render a :class:`~parity.contracts.check.CheckReport`: a terminal table, Markdown, JSON."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .result import CheckReport

__all__ = ["render_check_text", "render_check_markdown"]

_STYLE = {"ok": "green", "understated": "cyan", "overstated": "bold red", "blocked": "yellow", "stale": "bold red"}


def _headline(report: CheckReport) -> str:
    s = report.summary()
    n = len(report.results)
    mode = "with --run" if report.ran else "without --run (commands not run)"
    verdict = "every claim is supported by its evidence" if report.passed else \
        f"{s['overstated'] + s['stale']} claim(s) state more than their evidence proves"
    return (f"{report.contracts} contract(s), {n} claim(s) checked {mode} in {report.seconds:.2f} s: {verdict} "
            f"(ok {s['ok']}, understated {s['understated']}, overstated {s['overstated']}, blocked {s['blocked']}"
            + (f", stale obligations {s['stale']}" if s["stale"] else "") + ")")


def render_check_text(report: CheckReport, console: Console, *, show_all: bool = True) -> None:
    """Print the table of claim, claimed status, supported status and reason, then the warnings.

    >>> import io; from parity.contracts import check_loaded, load_contracts
    >>> _ = open("lib.py", "w").write("def scale(x):\\n    return 2 * x\\n")
    >>> _ = open("c.yaml", "w").write("parity_contract: 1\\nid: demo\\nclaims:\\n- {id: a, statement: s, status: algorithm,\\n"
    ...     "   evidence: {code: [lib.py::scale], tests: {commands: ['python -m pytest -q']}}}\\n")
    >>> console = Console(file=io.StringIO(), width=200, color_system=None)
    >>> render_check_text(check_loaded(load_contracts(["c.yaml"]), collect=False), console)
    >>> console.file.getvalue().splitlines()[-1]
    '1 contract(s), 1 claim(s) checked without --run (commands not run) in ... s: every claim is supported by its evidence (ok 1, understated 0, overstated 0, blocked 0)'
    """
    table = Table(show_lines=False, pad_edge=False)
    for col in ("contract", "claim", "claimed", "supported", "verdict", "reason"):
        table.add_column(col, overflow="fold", min_width=10 if col == "reason" else None)
    for r in report.results:
        if not show_all and r.verdict in ("ok", "understated"):
            continue
        style = _STYLE.get(r.verdict, "")
        table.add_row(Text(r.contract), Text(f"{r.claim}"), Text(r.claimed), Text(r.supported),
                      Text(r.verdict.upper() if r.failed else r.verdict, style=style), Text(r.reason))
    if report.results:
        console.print(table)
    for w in report.warnings:
        console.print(Text(f"warning: {w}", style="yellow"))
    console.print(Text(_headline(report), style="green" if report.passed else "bold red"))


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_check_markdown(report: CheckReport) -> str:
    """The report as Markdown: a headline, the table, each failing claim's findings, the warnings.

    Example:
        >>> render_check_markdown(CheckReport(results=(), root=".")).splitlines()[0]
        '# parity contract check'
    """
    out = ["# parity contract check", "", _headline(report), "",
           "| contract | claim | claimed | supported | verdict | reason |", "|---|---|---|---|---|---|"]
    for r in report.results:
        verdict = f"**{r.verdict.upper()}**" if r.failed else r.verdict
        out.append(f"| {_md(r.contract)} | {_md(r.claim)} | {r.claimed} | {r.supported} | {verdict} | {_md(r.reason)} |")
    failing = [r for r in report.results if r.failed]
    if failing:
        out += ["", "## Claims that state more than their evidence proves", ""]
        for r in failing:
            out.append(f"### {_md(r.contract)} / {_md(r.claim)} ({r.path}:{r.line})")
            out.append("")
            for f in r.findings:
                out.append(f"- {f.outcome}: {_md(f.message)}" + (f" (line {f.line})" if f.line else ""))
            out.append("")
    if report.warnings:
        out += ["", "## Warnings", ""] + [f"- `{w.path}:{w.line}:{w.column}` {_md(w.message)}" for w in report.warnings]
    return "\n".join(out).rstrip() + "\n"
