"""Render event diffs: terminal (rich), JSON, Markdown and a self-contained HTML page.

Every format shows the verdict and score, the first divergent event with its field-level diff
(long or multi-line text fields as a unified diff, never two walls of text), the divergent
events, per-kind counts side by side, the rules that matched nothing, and the notes.

>>> from parity.events import EventDiff
>>> d = EventDiff("a.jsonl", "b.jsonl", "ccpa", "parity", 1.0, None, 3, 3, 3, 0, 0, 0)
>>> render_event_markdown(d).splitlines()[0]
'# Event diff: PARITY HOLDS'
"""

from __future__ import annotations

import html
import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .result import EventDiff, EventDirDiff, EventOp, FieldDiff

__all__ = ["render_event_text", "render_event_json", "render_event_markdown", "render_event_html",
           "render_event_dirs_text", "render_event_dirs_json", "render_event_dirs_markdown", "render_event_dirs_html",
           "verdict_line"]

_VERDICT = {"parity": "PARITY HOLDS", "divergence": "DIVERGENCE FOUND", "nothing_compared": "NOTHING COMPARED"}
_KIND_COLS = ("ref", "cand", "equal", "changed", "deleted", "inserted")


def verdict_line(d: EventDiff) -> str:
    """``DIVERGENCE FOUND · score 0.913 (min 0.950) · 12 vs 11 events: 9 equal, 1 changed, 1 deleted, 0 inserted``.

    >>> from parity.events import compare_events
    >>> for name, cmd in (("a", "ls"), ("b", "ls -la")):
    ...     _ = open(name + ".jsonl", "w").write('{"v":1,"kind":"session_start","session_id":"%s"}\\n'
    ...                                          '{"v":1,"kind":"assistant_turn","turn":1,"text":"%s"}\\n' % (name, cmd))
    >>> verdict_line(compare_events("a.jsonl", "b.jsonl", preset="ccpa"))
    'DIVERGENCE FOUND · score 0.875 · 2 vs 2 events: 1 equal, 1 changed, 0 deleted, 0 inserted'
    """
    gate = f" (min {d.min_score:.3f})" if d.min_score is not None else ""
    extra = ""
    if d.passed and d.ops:
        extra = f" · {len(d.ops)} divergent event(s) within the score gate"
    return (f"{_VERDICT.get(d.verdict, d.verdict.upper())} · score {d.score:.3f}{gate} · {d.n_ref} vs {d.n_cand} "
            f"events: {d.equal} equal, {d.changed} changed, {d.deleted} deleted, {d.inserted} inserted{extra}")


def _field_lines(f: FieldDiff) -> tuple[str, list[str]]:
    if f.text_diff:
        head = f"{f.path}: text differs" + (f"  [{f.note}]" if f.note else "")
        return head, list(f.text_diff)
    return f.describe(), []


def _record_text(v: Any, limit: int = 2000) -> str:
    text = json.dumps(v, ensure_ascii=False, indent=2, sort_keys=True)
    return text if len(text) <= limit else text[:limit] + "\n… (cut)"


# -- terminal ------------------------------------------------------------------------------------------

def render_event_text(diff: EventDiff, console: Console, *, max_ops: int = 20) -> None:
    """Print ``diff`` on a rich console (every user string as plain text, never as markup).

    >>> import io; from parity.events import compare_events
    >>> for name, cmd in (("a", "ls"), ("b", "ls -la")):
    ...     _ = open(name + ".jsonl", "w").write('{"v":1,"kind":"session_start","session_id":"%s"}\\n'
    ...                                          '{"v":1,"kind":"assistant_turn","turn":1,"text":"%s"}\\n' % (name, cmd))
    >>> console = Console(file=io.StringIO(), width=120, color_system=None)
    >>> render_event_text(compare_events("a.jsonl", "b.jsonl", preset="ccpa"), console)
    >>> console.file.getvalue().splitlines()[3:5]
    ['first divergence: changed #1 assistant_turn turn=1 (line 2) ~ cand #1 assistant_turn turn=1 (line 2), similarity 0.75', '  text: "ls" -> "ls -la"']
    """
    style = "bold green" if diff.passed else "bold red"
    console.print(Text(f"events: {diff.ref_path}  vs  {diff.cand_path}" + (f"  (preset {diff.preset})" if diff.preset
                                                                          else "")))
    console.print(Text(verdict_line(diff), style=style))
    first = diff.first_divergence
    if first is not None:
        console.print()
        console.print(Text("first divergence: " + first.describe(), style="bold"))
        _print_op_detail(first, console)
    if diff.ops:
        console.print()
        shown = diff.ops[:max_ops]
        console.print(Text(f"divergent events ({len(diff.ops)}):", style="bold"))
        for op in shown:
            colour = {"changed": "yellow", "deleted": "magenta", "inserted": "cyan"}[op.op]
            console.print(Text("  " + op.describe(), style=colour))
            if op.op == "changed" and op.fields and op is not first:
                for f in op.fields[:3]:
                    console.print(Text("      " + _field_lines(f)[0]))
                if len(op.fields) > 3:
                    console.print(Text(f"      … {len(op.fields) - 3} more field(s)"))
        if len(diff.ops) > max_ops:
            console.print(Text(f"  … and {len(diff.ops) - max_ops} more (--json lists them all)"))
    if diff.kinds:
        console.print()
        table = Table(title="events per kind", title_justify="left", pad_edge=False)
        table.add_column("kind")
        for c in _KIND_COLS:
            table.add_column(c, justify="right")
        for kind, kc in diff.kinds.items():
            row = kc.to_dict()
            table.add_row(Text(kind), *(Text(str(row[c]), style="red" if c in ("changed", "deleted", "inserted")
                                             and row[c] else "") for c in _KIND_COLS))
        console.print(table)
    for r in diff.unused_rules:
        console.print(Text(f"warning: normalization rule matched nothing: {r}", style="yellow"))
    for n in diff.notes:
        console.print(Text(f"note: {n}", style="yellow"))


def _print_op_detail(op: EventOp, console: Console) -> None:
    if op.op == "changed":
        for f in op.fields or []:
            head, lines = _field_lines(f)
            console.print(Text("  " + head))
            for ln in lines:
                console.print(Text("    " + ln, style="red" if ln.startswith("-") and not ln.startswith("---") else
                                   "green" if ln.startswith("+") and not ln.startswith("+++") else "dim"))
        if op.fields is None:
            console.print(Text("  (field diff left out: more divergent events than max_detail)"))
    else:
        side = op.ref or op.cand
        if side is not None and side.record is not None:
            for ln in _record_text(side.record).splitlines():
                console.print(Text("  " + ln, style="magenta" if op.op == "deleted" else "cyan"))


# -- JSON ---------------------------------------------------------------------------------------------

def render_event_json(diff: EventDiff) -> str:
    """The ``parity.events.diff`` JSON document (see docs/events.md).

    >>> from parity.events import compare_events
    >>> for name, cmd in (("a", "ls"), ("b", "ls -la")):
    ...     _ = open(name + ".jsonl", "w").write('{"v":1,"kind":"session_start","session_id":"%s"}\\n'
    ...                                          '{"v":1,"kind":"assistant_turn","turn":1,"text":"%s"}\\n' % (name, cmd))
    >>> doc = json.loads(render_event_json(compare_events("a.jsonl", "b.jsonl", preset="ccpa")))
    >>> doc["schema"], doc["passed"], doc["score"], doc["counts"]["changed"]
    ('parity.events.diff', False, 0.875, 1)
    """
    return json.dumps(diff.to_dict(), ensure_ascii=False, indent=2)


def render_event_dirs_json(result: EventDirDiff) -> str:
    """The ``parity.events.dirs`` JSON document.

    >>> from parity.events import compare_event_dirs
    >>> import os
    >>> for d, cmd in (("ref", "ls"), ("cand", "ls -la")):
    ...     os.mkdir(d); _ = open(d + "/s1.jsonl", "w").write('{"v":1,"kind":"user_prompt","turn":1,"text":"%s"}\\n' % cmd)
    >>> doc = json.loads(render_event_dirs_json(compare_event_dirs("ref", "cand")))
    >>> doc["schema"], doc["passed"], doc["aggregate"]
    ('parity.events.dirs', False, {'mean_score': 0.75, 'lowest_score': 0.75, 'fixtures': 1, 'passed': 0})
    """
    return json.dumps(result.to_dict(), ensure_ascii=False, indent=2)


# -- Markdown -----------------------------------------------------------------------------------------

def _md(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`").replace("<", "&lt;").replace("\n", " ")


def _fence(lines: list[str], lang: str = "") -> list[str]:
    body = "\n".join(lines)
    fence = "```"
    while fence in body:
        fence += "`"
    return [fence + lang, *lines, fence]


def render_event_markdown(diff: EventDiff, *, max_ops: int = 50, heading: int = 1) -> str:
    """A Markdown report of ``diff``.

    >>> from parity.events import compare_events
    >>> for name, cmd in (("a", "ls"), ("b", "ls -la")):
    ...     _ = open(name + ".jsonl", "w").write('{"v":1,"kind":"session_start","session_id":"%s"}\\n'
    ...                                          '{"v":1,"kind":"assistant_turn","turn":1,"text":"%s"}\\n' % (name, cmd))
    >>> md = render_event_markdown(compare_events("a.jsonl", "b.jsonl", preset="ccpa"))
    >>> md.splitlines()[0], md.splitlines()[10]
    ('# Event diff: DIVERGENCE FOUND', '- `text`: "ls" -> "ls -la"')
    """
    h = "#" * heading
    out = [f"{h} Event diff: {_VERDICT.get(diff.verdict, diff.verdict)}", "",
           f"`{_md(diff.ref_path)}` (reference) vs `{_md(diff.cand_path)}` (candidate)"
           + (f", preset `{diff.preset}`" if diff.preset else ""), "", f"**{_md(verdict_line(diff))}**", ""]
    first = diff.first_divergence
    if first is not None:
        out += [f"{h}# First divergence", "", _md(first.describe()), ""]
        out += _md_op_detail(first)
    if diff.ops:
        out += [f"{h}# Divergent events ({len(diff.ops)})", "", "| # | op | reference | candidate | similarity | fields |",
                "|---|---|---|---|---|---|"]
        for n, op in enumerate(diff.ops[:max_ops], 1):
            fields = "; ".join(_md(f.describe()) for f in (op.fields or [])[:3])
            out.append(f"| {n} | {op.op} | {_md(op.ref.label()) if op.ref else '–'} | "
                       f"{_md(op.cand.label()) if op.cand else '–'} | "
                       f"{op.similarity:.2f} | {fields or _md((op.ref or op.cand).summary if (op.ref or op.cand) else '')} |")
        if len(diff.ops) > max_ops:
            out.append(f"\n… and {len(diff.ops) - max_ops} more (see the JSON result).")
        out.append("")
    if diff.kinds:
        out += [f"{h}# Events per kind", "", "| kind | " + " | ".join(_KIND_COLS) + " |",
                "|---|" + "---:|" * len(_KIND_COLS)]
        for kind, kc in diff.kinds.items():
            row = kc.to_dict()
            out.append(f"| {_md(kind)} | " + " | ".join(str(row[c]) for c in _KIND_COLS) + " |")
        out.append("")
    if diff.unused_rules or diff.notes:
        out += [f"{h}# Warnings and notes", ""]
        out += [f"- normalization rule matched nothing: `{_md(r)}`" for r in diff.unused_rules]
        out += [f"- {_md(n)}" for n in diff.notes]
        out.append("")
    out += ["Score: 2·Σ similarity of aligned pairs / (reference events + candidate events); an equal event counts 1, "
            "an edited one the fraction of its fields that agree, an inserted or deleted one 0.", ""]
    return "\n".join(out)


def _md_op_detail(op: EventOp) -> list[str]:
    out: list[str] = []
    if op.op == "changed":
        for f in op.fields or []:
            head, lines = _field_lines(f)
            out.append(f"- `{_md(f.path)}`: " + (_md(head.split(": ", 1)[1]) if ": " in head else _md(head)))
            if lines:
                out += ["", *("  " + ln for ln in _fence(lines, "diff")), ""]
        out.append("")
    else:
        side = op.ref or op.cand
        if side is not None and side.record is not None:
            out += _fence(_record_text(side.record).splitlines(), "json") + [""]
    return out


def render_event_dirs_markdown(result: EventDirDiff, *, details: bool = True) -> str:
    """A Markdown report of a directory comparison: per-fixture scores, the aggregate, and each
    divergent fixture's first divergence.

    >>> from parity.events import compare_event_dirs
    >>> import os
    >>> for d, cmd in (("ref", "ls"), ("cand", "ls -la")):
    ...     os.mkdir(d); _ = open(d + "/s1.jsonl", "w").write('{"v":1,"kind":"user_prompt","turn":1,"text":"%s"}\\n' % cmd)
    >>> print(render_event_dirs_markdown(compare_event_dirs("ref", "cand"), details=False).splitlines()[8])
    | s1 | 0.750 | divergence | 1/1 | changed #0 user_prompt turn=1 (line 1) ~ cand #0 user_prompt turn=1 (line 1), similarity 0.75 |
    """
    verdict = "PARITY HOLDS" if result.passed else "DIVERGENCE FOUND"
    out = [f"# Sessions: {verdict}", "", f"`{_md(result.ref_dir)}` (fixtures) vs `{_md(result.cand_dir)}` (candidates)", "",
           f"**mean score {result.mean_score:.3f}**, lowest {result.lowest_score:.3f}, "
           f"{sum(f.passed for f in result.fixtures)}/{len(result.fixtures)} fixtures pass"
           + (f" (min score {result.min_score:.3f})" if result.min_score is not None else "")
           + (f" (min mean {result.min_mean:.3f})" if result.min_mean is not None else ""), "",
           "| fixture | score | verdict | events (ref/cand) | first divergence |", "|---|---:|---|---|---|"]
    for f in result.fixtures:
        ev = f"{f.counts.get('ref', '–')}/{f.counts.get('cand', '–')}" if f.counts else "–"
        out.append(f"| {_md(f.name)} | {f.score:.3f} | {f.verdict} | {ev} | {_md(f.error or f.first_divergence or '')} |")
    if result.extra:
        out += ["", "Candidates without a fixture: " + ", ".join(f"`{_md(x)}`" for x in result.extra)]
    out.append("")
    if details:
        for f in result.fixtures:
            if f.diff is not None and not f.diff.exact:
                out += [render_event_markdown(f.diff, max_ops=10, heading=2).replace(
                    "## Event diff:", f"## {_md(f.name)}:", 1), ""]
    return "\n".join(out)


# -- HTML ---------------------------------------------------------------------------------------------

_CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}code,pre{font-family:ui-monospace,monospace;font-size:13px}
pre{background:#f6f8fa;padding:.6em .8em;overflow-x:auto;border-radius:4px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
td.n{text-align:right}.pass{color:#1a7f37}.fail{color:#cf222e}.del{background:#ffebe9}.ins{background:#dafbe1}
.hunk{color:#6e7781}.op-changed{background:#fff8c5}.op-deleted{background:#ffebe9}.op-inserted{background:#ddf4ff}
.warn{color:#9a6700}"""


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _html_diff(lines: list[str]) -> str:
    out = []
    for ln in lines:
        cls = "hunk" if ln.startswith(("@@", "---", "+++")) else "del" if ln.startswith("-") else \
            "ins" if ln.startswith("+") else ""
        out.append(f'<span class="{cls}">{_e(ln)}</span>' if cls else _e(ln))
    return "<pre>" + "\n".join(out) + "</pre>"


def _html_body(diff: EventDiff, max_ops: int = 200, level: int = 1) -> list[str]:
    h1, h2 = f"h{level}", f"h{level + 1}"
    cls = "pass" if diff.passed else "fail"
    out = [f"<{h1} class=\"{cls}\">Event diff: {_e(_VERDICT.get(diff.verdict, diff.verdict))}</{h1}>",
           f"<p><code>{_e(diff.ref_path)}</code> (reference) vs <code>{_e(diff.cand_path)}</code> (candidate)"
           + (f", preset <code>{_e(diff.preset)}</code>" if diff.preset else "") + "</p>",
           f"<p class=\"{cls}\"><b>{_e(verdict_line(diff))}</b></p>"]
    first = diff.first_divergence
    if first is not None:
        out += [f"<{h2}>First divergence</{h2}>", f"<p>{_e(first.describe())}</p>"]
        if first.op == "changed":
            out.append("<ul>")
            for f in first.fields or []:
                head, lines = _field_lines(f)
                out.append(f"<li><code>{_e(head)}</code>{_html_diff(lines) if lines else ''}</li>")
            out.append("</ul>")
        else:
            side = first.ref or first.cand
            if side is not None and side.record is not None:
                out.append(f"<pre class=\"op-{first.op}\">{_e(_record_text(side.record))}</pre>")
    if diff.ops:
        out += [f"<{h2}>Divergent events ({len(diff.ops)})</{h2}>",
                "<table><tr><th>#</th><th>op</th><th>reference</th><th>candidate</th><th>similarity</th>"
                "<th>fields</th></tr>"]
        for n, op in enumerate(diff.ops[:max_ops], 1):
            fields = "<br>".join(_e(f.describe()) for f in (op.fields or [])[:5])
            side = op.ref or op.cand
            out.append(f"<tr class=\"op-{op.op}\"><td class=n>{n}</td><td>{op.op}</td>"
                       f"<td>{_e(op.ref.label()) if op.ref else '–'}</td><td>{_e(op.cand.label()) if op.cand else '–'}</td>"
                       f"<td class=n>{op.similarity:.2f}</td><td>{fields or _e(side.summary if side else '')}</td></tr>")
        out.append("</table>")
        if len(diff.ops) > max_ops:
            out.append(f"<p>… and {len(diff.ops) - max_ops} more (see the JSON result).</p>")
    if diff.kinds:
        out += [f"<{h2}>Events per kind</{h2}>", "<table><tr><th>kind</th>" + "".join(f"<th>{c}</th>" for c in _KIND_COLS)
                + "</tr>"]
        for kind, kc in diff.kinds.items():
            row = kc.to_dict()
            out.append(f"<tr><td>{_e(kind)}</td>" + "".join(f"<td class=n>{row[c]}</td>" for c in _KIND_COLS) + "</tr>")
        out.append("</table>")
    if diff.unused_rules or diff.notes:
        out.append("<ul class=warn>" + "".join(f"<li>normalization rule matched nothing: <code>{_e(r)}</code></li>"
                                               for r in diff.unused_rules)
                   + "".join(f"<li>{_e(n)}</li>" for n in diff.notes) + "</ul>")
    return out


def _page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + _e(title) +
            "</title><style>" + _CSS + "</style></head><body>\n" + "\n".join(body) +
            "\n<p><small>Score: 2·Σ similarity of aligned pairs / (reference events + candidate events).</small></p>"
            "\n</body></html>\n")


def render_event_html(diff: EventDiff) -> str:
    """A self-contained HTML page (no scripts, no network) of ``diff``.

    >>> from parity.events import compare_events
    >>> for name, cmd in (("a", "ls"), ("b", "ls -la")):
    ...     _ = open(name + ".jsonl", "w").write('{"v":1,"kind":"session_start","session_id":"%s"}\\n'
    ...                                          '{"v":1,"kind":"assistant_turn","turn":1,"text":"%s"}\\n' % (name, cmd))
    >>> page = render_event_html(compare_events("a.jsonl", "b.jsonl", preset="ccpa"))
    >>> page.startswith("<!DOCTYPE html>"), "<title>parity events: DIVERGENCE FOUND</title>" in page, "<script" in page
    (True, True, False)
    """
    return _page(f"parity events: {_VERDICT.get(diff.verdict, diff.verdict)}", _html_body(diff))


def render_event_dirs_html(result: EventDirDiff) -> str:
    """A self-contained HTML page of a directory comparison.

    >>> from parity.events import compare_event_dirs
    >>> import os
    >>> for d, cmd in (("ref", "ls"), ("cand", "ls -la")):
    ...     os.mkdir(d); _ = open(d + "/s1.jsonl", "w").write('{"v":1,"kind":"user_prompt","turn":1,"text":"%s"}\\n' % cmd)
    >>> page = render_event_dirs_html(compare_event_dirs("ref", "cand"))
    >>> "<title>parity events: sessions</title>" in page, "<td>s1</td><td class=n>0.750</td>" in page
    (True, True)
    """
    cls = "pass" if result.passed else "fail"
    body = [f"<h1 class=\"{cls}\">Sessions: {'PARITY HOLDS' if result.passed else 'DIVERGENCE FOUND'}</h1>",
            f"<p><code>{_e(result.ref_dir)}</code> (fixtures) vs <code>{_e(result.cand_dir)}</code> (candidates)</p>",
            f"<p><b>mean score {result.mean_score:.3f}</b>, lowest {result.lowest_score:.3f}, "
            f"{sum(f.passed for f in result.fixtures)}/{len(result.fixtures)} fixtures pass</p>",
            "<table><tr><th>fixture</th><th>score</th><th>verdict</th><th>events (ref/cand)</th><th>first divergence</th></tr>"]
    for f in result.fixtures:
        ev = f"{f.counts.get('ref', '–')}/{f.counts.get('cand', '–')}" if f.counts else "–"
        body.append(f"<tr class=\"{'pass' if f.passed else 'fail'}\"><td>{_e(f.name)}</td><td class=n>{f.score:.3f}</td>"
                    f"<td>{_e(f.verdict)}</td><td>{_e(ev)}</td><td>{_e(f.error or f.first_divergence or '')}</td></tr>")
    body.append("</table>")
    if result.extra:
        body.append("<p>Candidates without a fixture: " + ", ".join(f"<code>{_e(x)}</code>" for x in result.extra) + "</p>")
    for f in result.fixtures:
        if f.diff is not None and not f.diff.exact:
            body.append(f"<hr><h2>{_e(f.name)}</h2>")
            body += _html_body(f.diff, max_ops=50, level=3)
    return _page("parity events: sessions", body)


def render_event_dirs_text(result: EventDirDiff, console: Console) -> None:
    """Print a directory comparison: one row per fixture, then the aggregate.

    >>> import io; from parity.events import compare_event_dirs
    >>> import os
    >>> for d, cmd in (("ref", "ls"), ("cand", "ls -la")):
    ...     os.mkdir(d); _ = open(d + "/s1.jsonl", "w").write('{"v":1,"kind":"user_prompt","turn":1,"text":"%s"}\\n' % cmd)
    >>> console = Console(file=io.StringIO(), width=100, color_system=None)
    >>> render_event_dirs_text(compare_event_dirs("ref", "cand"), console)
    >>> console.file.getvalue().splitlines()[-1]
    'DIVERGENCE FOUND · mean score 0.750 · lowest 0.750 · 0/1 fixtures pass'
    """
    table = Table(pad_edge=False)
    for c, j in (("fixture", "left"), ("score", "right"), ("verdict", "left"), ("events", "right"),
                 ("first divergence", "left")):
        table.add_column(c, justify=j, overflow="fold")  # type: ignore[arg-type]
    for f in result.fixtures:
        ev = f"{f.counts.get('ref', '–')}/{f.counts.get('cand', '–')}" if f.counts else "–"
        table.add_row(Text(f.name), Text(f"{f.score:.3f}"), Text(f.verdict, style="green" if f.passed else "red"),
                      Text(ev), Text(f.error or f.first_divergence or ""))
    console.print(table)
    style = "bold green" if result.passed else "bold red"
    console.print(Text(f"{'PARITY HOLDS' if result.passed else 'DIVERGENCE FOUND'} · mean score {result.mean_score:.3f} · "
                       f"lowest {result.lowest_score:.3f} · {sum(f.passed for f in result.fixtures)}/"
                       f"{len(result.fixtures)} fixtures pass", style=style))
    if result.extra:
        console.print(Text("candidates without a fixture: " + ", ".join(result.extra), style="yellow"))
