"""Renderers of a :class:`~parity.localize.local.Localization` (``parity localize``): terminal
text, Markdown and a self-contained HTML page.

Each shows, per stage in pipeline order, the accumulated error (the plain diff: everything
before the stage feeds into it) next to the local error (the replayed diff: the stage fed the
reference's inputs, so the error is its own) and the label that follows: ``culprit`` (the first
stage whose own computation diverges), ``also local`` (a later, second bug), ``propagated``
(fails in the plain diff only), ``ok`` or ``missing``. The HTML page draws both errors through
the pipeline on one log axis, with the noise level above which a local error stands out, and
marks the culprit. Its JSON form is :meth:`Localization.to_dict` (schema ``parity.localize``,
see docs/json-schema.md).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from .format import format_float
from .html import html_page
from .markdown import md_cell, md_code, md_text
from .plots import axes, stage_marker
from .svg import LogScale, coord, esc, marker

if TYPE_CHECKING:  # the result type lives in the layer below; nothing is imported from it at run time
    from ..localize.local import Localization, StageLocality

__all__ = ["render_localize_text", "render_localize_markdown", "render_localize_html", "localize_verdict",
           "render_localize_set_text", "render_localize_set_markdown"]

_STYLE = {"culprit": "bold red", "also local": "red", "propagated": "yellow", "ok": None, "missing": "magenta"}
_COLS = ("#", "stage", "plain", "accumulated rel RMS", "replayed", "local rel RMS", "label")
_PLAIN_COLOUR, _LOCAL_COLOUR = "#9a6700", "#0969da"
_POINT_CLASS = {"culprit": "pt-fail", "also local": "pt-fail", "propagated": "pt-expected", "ok": "pt-pass"}


def _rows(loc: Localization) -> list[list[str]]:
    return [[str(s.position + 1) if s.position >= 0 else "", s.key, s.plain_status or "-", format_float(s.plain_rel),
             s.local_status or "-", format_float(s.local_rel), s.label] for s in loc.stages]


def _floor(loc: Localization) -> float | None:
    """The local relative RMS error above which a stage stands out (``outlier`` × the noise)."""
    if loc.noise is None or loc.outlier <= 0:
        return None
    return loc.outlier * loc.noise


def localize_verdict(loc: Localization) -> list[str]:
    """The conclusion in plain sentences: the passes it took, then the culprit (and where the plain
    diff first diverges), accumulated rounding, or parity.

    Example:
        >>> from parity.localize.local import localize
        >>> localize_verdict(localize("ref.trace", "cand.trace", "cand.trace"))[1]
        'The divergence starts at layers.0.attn_scores: its own computation differs (local error).'
    """
    lines = [f"{loc.passes} forward passes of the candidate (one plain, one replayed)"]
    if loc.culprit:
        lines.append(f"The divergence starts at {loc.culprit}: its own computation differs (local error)."
                     + (f" Plain diff's first divergence is {loc.plain_first}: propagated from there." if loc.plain_first
                        and loc.plain_first != loc.culprit else ""))
    elif not loc.plain.passed:
        lines.append("No stage's own computation diverges; the plain divergence is accumulated rounding.")
    else:
        lines.append("PARITY HOLDS: no stage diverges, plain or local.")
    notes = getattr(loc, "not_substituted", None) or {}
    if notes:
        lines.append(f"{len(notes)} stage(s) could not be substituted in the replayed capture, so the stages after "
                     "them also carry their error:")
        lines += [f"  {key}: {why}" for key, why in notes.items()]
    return lines


def render_localize_text(loc: Localization, console: Console | None = None) -> None:
    """Print the per-stage table (rows styled by label) and the verdict.

    Example:
        >>> import io
        >>> from parity.localize.local import localize
        >>> out = io.StringIO()
        >>> render_localize_text(localize("ref.trace", "cand.trace", "cand.trace"), Console(file=out, width=150))
        >>> text = out.getvalue()
        >>> text.count("culprit"), text.splitlines()[-1]
        (1, 'The divergence starts at layers.0.attn_scores: its own computation differs (local error).')
    """
    console = console or Console(highlight=False, soft_wrap=False)
    table = Table(title="parity localize", title_justify="left", pad_edge=False)
    for c in _COLS:
        table.add_column(c, overflow="fold" if c == "stage" else "ellipsis")
    for row in _rows(loc):
        table.add_row(*row, style=_STYLE.get(row[-1]))
    console.print(table)
    for line in localize_verdict(loc):
        console.print(line, markup=False)


def _key_md(key: str) -> str:
    return md_code(key) if "|" not in key else md_cell(key)


def render_localize_markdown(loc: Localization) -> str:
    """The per-stage table and the verdict as GitHub-flavoured Markdown (stage names escaped).

    Example:
        >>> from parity.localize.local import localize
        >>> md = render_localize_markdown(localize("ref.trace", "cand.trace", "cand.trace"))
        >>> md.splitlines()[0], "| 6 | `layers.0.attn_scores` | fail |" in md
        ('# parity localize', True)
    """
    out = ["# parity localize", "", "| " + " | ".join(_COLS) + " |", "| ---: | --- | --- | ---: | --- | ---: | --- |"]
    for r in _rows(loc):
        label = f"**{r[6]}**" if r[6] == "culprit" else r[6]
        out.append("| " + " | ".join([r[0], _key_md(r[1]), *r[2:6], label]) + " |")
    out += [""] + [md_text(line) for line in localize_verdict(loc)]
    floor = _floor(loc)
    if floor is not None:
        out.append(f"A local error stands out above {format_float(floor)} ({format_float(loc.outlier)} × the median "
                   f"local relative RMS error {format_float(loc.noise)}).")
    return "\n".join(out) + "\n"


# -- HTML ----------------------------------------------------------------------------------------

def _series(values: list[float | None], scale: LogScale, x_of) -> list[list[str]]:
    """Polyline point lists through ``values`` (0 sits on the axis floor), broken where a stage has none."""
    lines: list[list[str]] = []
    cur: list[str] = []
    for i, v in enumerate(values):
        if v is None or math.isnan(v):
            if cur:
                lines.append(cur)
            cur = []
            continue
        y, _ = scale.clip(v)
        cur.append(f"{coord(x_of(i))},{coord(y)}")
    if cur:
        lines.append(cur)
    return lines


def _error_plot(loc: Localization) -> str:
    """Accumulated vs local relative RMS error per stage on one log axis, the noise floor dashed,
    the culprit marked."""
    stages = list(loc.stages)
    n = len(stages)
    width, left, right, top, plot_h, bottom = 960, 78, 16, 40, 300, 60
    plot_w = width - left - right
    height = top + plot_h + bottom
    step = plot_w / max(n, 1)

    def x_of(i: int) -> float:
        return left + (i + 0.5) * step

    plain = [s.plain_rel for s in stages]
    local = [s.local_rel for s in stages]
    floor = _floor(loc)
    # one decade below the smallest error: stages without error (on the axis floor) stay apart from the rest
    pos = [v for v in plain + local if v is not None and math.isfinite(v) and v > 0]
    scale = LogScale(plain + local + [floor] + ([min(pos) / 10] if pos else []), top, top + plot_h)
    out = [f'<svg id="localize-plot" class="plot" viewBox="0 0 {width} {height}" width="100%" role="img" '
           f'aria-label="Accumulated and local error through the pipeline: {n} stages">']
    out += axes(scale, left, width - right, top, top + plot_h)
    out.append(f'<text x="{left + 6}" y="{top - 8}" font-size="12.5" font-weight="600">relative RMS error</text>')
    if floor is not None:
        fy, _ = scale.clip(floor)
        out.append(f'<line class="tol" x1="{left}" x2="{width - right}" y1="{coord(fy)}" y2="{coord(fy)}">'
                   f"<title>{esc(f'a local error above {format_float(floor)} stands out')}</title></line>")
    for name, values, colour in (("plain", plain, _PLAIN_COLOUR), ("local", local, _LOCAL_COLOUR)):
        for pts in _series(values, scale, x_of):
            out.append(f'<polyline class="series series-{name}" data-series="{name}" style="stroke:{colour}" '
                       f'points="{" ".join(pts)}"/>')
    radius = 3.5 if n <= 80 else 2.2
    for i, s in enumerate(stages):
        if s.local_rel is not None and not math.isnan(s.local_rel):
            y, clip = scale.clip(s.local_rel)
            tip = (f"#{s.position + 1} {s.key} ({s.label}): accumulated {format_float(s.plain_rel, 4)}, "
                   f"local {format_float(s.local_rel, 4)}")
            out.append(marker(x_of(i), y, _POINT_CLASS.get(s.label, "pt-pass"), radius, clip, tip))
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" font-size="12" text-anchor="middle" class="muted">'
               "stages in execution order</text>")
    culprit = next((i for i, s in enumerate(stages) if s.label == "culprit"), None)
    if culprit is not None:
        out.append(stage_marker(left, plot_w, x_of(culprit), top, top + plot_h, f"culprit: {stages[culprit].key}",
                                cls="culprit"))
    out.append("</svg>")
    return "".join(out)


_LABEL_CLASS = {"culprit": "st-fail", "also local": "st-fail", "propagated": "st-expected", "ok": "st-pass",
                "missing": "st-missing"}


def _stage_rows(stages: tuple[StageLocality, ...]) -> list[str]:
    out = []
    for s in stages:
        pos = str(s.position + 1) if s.position >= 0 else ""
        cls = ' class="is-first"' if s.label == "culprit" else ""
        out.append(f'<tr{cls} data-key="{esc(s.key)}" data-label="{esc(s.label)}"><td class="num">{pos}</td>'
                   f"<td><code>{esc(s.key)}</code></td><td>{esc(s.plain_status or '-')}</td>"
                   f'<td class="num">{format_float(s.plain_rel)}</td><td>{esc(s.local_status or "-")}</td>'
                   f'<td class="num">{format_float(s.local_rel)}</td>'
                   f'<td class="{_LABEL_CLASS.get(s.label, "")}">{esc(s.label)}</td></tr>')
    return out


def render_localize_html(loc: Localization, *, title: str | None = None) -> str:
    """One self-contained HTML page (no network access): a summary, the two error curves through
    the pipeline (accumulated and local relative RMS error, log scale, culprit marked) and the
    labelled table of every stage.

    Example:
        >>> from parity.localize.local import localize
        >>> page = render_localize_html(localize("ref.trace", "cand.trace", "cand.trace"))
        >>> page.count("<polyline class=\\"series"), "culprit: layers.0.attn_scores" in page, "://" in page
        (2, True, False)
    """
    verdict = (f"divergence starts at {loc.culprit}" if loc.culprit else
               "accumulated rounding only" if not loc.plain.passed else "parity holds")
    facts = [("reference", loc.plain.ref_path), ("candidate (plain)", loc.plain.cand_path),
             ("candidate (replayed)", loc.local.cand_path), ("culprit", loc.culprit or "—"),
             ("plain diff's first divergence", loc.plain_first or "—"),
             ("forward passes", str(loc.passes)),
             ("noise (median local rel RMS)", format_float(loc.noise)),
             ("stands out above", f"{format_float(_floor(loc))} ({format_float(loc.outlier)} × noise)"),
             ("parity", loc.plain.tool_version)]
    body = [f'<h1>parity localize: <span class="{"verdict-pass" if loc.passed else "verdict-fail"}">'
            f"{esc(verdict)}</span></h1>", '<table class="facts">']
    body += [f"<tr><td>{esc(k)}</td><td><code>{esc(v)}</code></td></tr>" for k, v in facts]
    body.append("</table>")
    body += [f'<p class="note">{esc(line)}</p>' for line in localize_verdict(loc)]
    body.append("<h2>Error through the pipeline</h2>")
    body.append(f'<p class="legend"><span><i style="background:{_PLAIN_COLOUR}"></i>accumulated (plain diff)</span>'
                f'<span><i style="background:{_LOCAL_COLOUR}"></i>local (replayed diff)</span>'
                '<span style="color:#cf222e">- - - a local error above this stands out</span>'
                '<span>▼ no error (on the axis floor)</span></p>')
    body.append(f"<figure>{_error_plot(loc)}<figcaption>Each column is a stage of the reference, in execution order. "
                "An error that grows in the plain diff but not locally is propagated; where the local curve "
                "jumps, a stage's own computation diverges.</figcaption></figure>")
    body.append(f"<h2>Stages ({len(loc.stages)})</h2>")
    body.append('<table class="stages sortable" id="stage-table"><thead><tr>'
                + "".join(f"<th>{esc(c)}</th>" for c in _COLS) + "</tr></thead><tbody>")
    body += _stage_rows(loc.stages)
    body.append("</tbody></table>")
    return html_page("\n".join(body), title=title or f"parity localize: {verdict}", version=loc.plain.tool_version)


# -- many inputs ---------------------------------------------------------------------------------

_SET_COLS = ("#", "stage", "inputs", "culprit on", "fails locally on", "only propagated on", "worst input", "worst local rel RMS")


def _share(n: int, inputs: int) -> str:
    return f"{n} ({100 * n / inputs:.0f}%)" if inputs else "0"


def _sets_rows(result) -> list[list[str]]:
    top = result.culprit
    return [[str(s.position + 1), s.key + ("  ◀ culprit" if s is top else ""), str(s.inputs), _share(s.culprit, s.inputs),
             _share(s.local, s.inputs), _share(s.propagated, s.inputs), s.worst_input or "-", format_float(s.worst_local_rel)]
            for s in result.stages]


def _sets_verdict(result) -> list[str]:
    n, bad = len(result.names), result.failing_inputs
    lines = [f"{sum(r.passes for r in result.results)} forward passes of the candidate over {n} inputs (one plain, one "
             "replayed each)"]
    for name, r in zip(result.names, result.results):
        lines.append(f"{name}: " + (f"culprit {r.culprit}" if r.culprit else
                                    "parity holds" if r.passed else "no local divergence; the plain one is accumulated rounding"))
    top = result.culprit
    if top is not None:
        lines.append(f"The divergence starts at {top.key} on {top.culprit} of {top.inputs} inputs (its own computation differs).")
    lines.append("PARITY HOLDS on every input" if result.passed else f"DIVERGENCE FOUND on {len(bad)} of {n} inputs")
    return lines


def render_localize_set_text(result, console: Console | None = None) -> None:
    """Print the per-stage table of a localization over many inputs (``parity localize REF_DIR
    CAND_DIR CAND_LOCAL_DIR``) and its verdict: per stage, on how many inputs it is the culprit,
    fails locally, or only propagates, and its worst input.

    Example:
        >>> import io, os, shutil
        >>> from parity.localize.sets import localize_sets
        >>> for d, name in (("R", "ref"), ("C", "cand"), ("L", "cand")):
        ...     _ = shutil.copytree(name + ".trace", os.path.join(d, "p0.trace"))
        >>> out = io.StringIO()
        >>> render_localize_set_text(localize_sets("R", "C", "L"), Console(file=out, width=160))
        >>> out.getvalue().splitlines()[-1]
        'DIVERGENCE FOUND on 1 of 1 inputs'
    """
    console = console or Console(highlight=False, soft_wrap=False)
    table = Table(title=f"parity localize over {len(result.names)} inputs", title_justify="left", pad_edge=False)
    for c in _SET_COLS:
        table.add_column(c, overflow="fold" if c == "stage" else "ellipsis")
    for s, row in zip(result.stages, _sets_rows(result)):
        table.add_row(*row, style="red" if s.local else "yellow" if s.propagated else None)
    console.print(table)
    for line in _sets_verdict(result):
        console.print(line, markup=False)


def render_localize_set_markdown(result) -> str:
    """:func:`render_localize_set_text` as GitHub-flavoured Markdown.

    Example:
        >>> import os, shutil
        >>> from parity.localize.sets import localize_sets
        >>> for d, name in (("R", "ref"), ("C", "cand"), ("L", "cand")):
        ...     _ = shutil.copytree(name + ".trace", os.path.join(d, "p0.trace"))
        >>> md = render_localize_set_markdown(localize_sets("R", "C", "L")).splitlines()
        >>> md[0], md[9], md[-1]
        ('# parity localize over 1 inputs', '| 6 | `layers.0.attn_scores  ◀ culprit` | 1 | 1 (100%) | 1 (100%) | 0 (0%) | p0.trace | 0.5 |', 'DIVERGENCE FOUND on 1 of 1 inputs')
    """
    out = [f"# parity localize over {len(result.names)} inputs", "", "| " + " | ".join(_SET_COLS) + " |",
           "| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    out += ["| " + " | ".join([r[0], _key_md(r[1]), *r[2:]]) + " |" for r in _sets_rows(result)]
    return "\n".join(out + [""] + [md_text(line) for line in _sets_verdict(result)]) + "\n"
