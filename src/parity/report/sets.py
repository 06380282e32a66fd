"""Renderers of a diff over many inputs (:class:`~parity.localize.sets.SetDiff`, ``parity diff
REF_DIR CAND_DIR`` / ``--pairs``): terminal text and Markdown. Its JSON form is
``SetDiff.to_dict()`` (schema ``parity.diffset``)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .format import format_float

__all__ = ["render_set_text", "render_set_markdown"]


def _sets_rows(result) -> list[list[str]]:
    rows = []
    first = result.first_divergence
    for s in result.stages:
        rows.append([str(s.position + 1), s.key + ("  ◀ first divergence" if s is first else ""), str(s.inputs),
                     f"{s.failed} ({100 * s.fraction:.0f}%)", s.worst_input or "-", format_float(s.worst_rel),
                     str(s.first_on)])
    return rows


_SET_COLUMNS = ("#", "stage", "inputs", "diverge on", "worst input", "worst max rel", "first on")


def render_set_text(result, console: Console | None = None) -> None:
    """Print a :class:`~parity.localize.sets.SetDiff` (``parity diff REF_DIR CAND_DIR``): per stage,
    on how many inputs it diverges, the worst input and on how many it is the first divergence;
    then each input's result and the verdict.

    Example:
        >>> import io, os, shutil
        >>> from parity.localize.sets import compare_sets
        >>> for d, name in (("R", "ref"), ("C", "cand")):
        ...     _ = shutil.copytree(name + ".trace", os.path.join(d, "p0.trace"))
        >>> out = io.StringIO()
        >>> render_set_text(compare_sets("R", "C", config="parity.toml"), Console(file=out, width=160))
        >>> out.getvalue().splitlines()[-2:]
        ['p0.trace: first divergence layers.0.attn_scores', 'DIVERGENCE FOUND on 1 of 1 inputs']
    """
    console = console or Console(highlight=False, soft_wrap=False)
    table = Table(title=f"parity diff over {len(result.names)} inputs", title_justify="left", pad_edge=False)
    for c in _SET_COLUMNS:
        table.add_column(c, overflow="fold" if c == "stage" else "ellipsis")
    for row in _sets_rows(result):
        failed = not row[3].startswith("0 ")
        table.add_row(*row, style="red" if failed else None)
    console.print(table)
    for name, d in zip(result.names, result.diffs):
        first = d.first_divergence
        console.print(Text(f"{name}: " + ("parity holds" if d.passed else
                                          f"first divergence {first.key}" if first else d.verdict.replace("_", " ")),
                           style="green" if d.passed else "red"))
    bad = result.failing_inputs
    verdict = "PARITY HOLDS on every input" if result.passed else f"DIVERGENCE FOUND on {len(bad)} of {len(result.names)} inputs"
    console.print(Text(verdict, style="bold green" if result.passed else "bold red"))


def render_set_markdown(result) -> str:
    """:func:`render_set_text` as GitHub-flavoured Markdown.

    Example:
        >>> import os, shutil
        >>> from parity.localize.sets import compare_sets
        >>> for d, name in (("R", "ref"), ("C", "cand")):
        ...     _ = shutil.copytree(name + ".trace", os.path.join(d, "p0.trace"))
        >>> render_set_markdown(compare_sets("R", "C", config="parity.toml")).splitlines()[-1]
        '| `p0.trace` | first divergence `layers.0.attn_scores` |'
    """
    bad = result.failing_inputs
    out = [f"# parity diff over {len(result.names)} inputs: "
           + ("PARITY HOLDS" if result.passed else f"DIVERGENCE FOUND on {len(bad)} of {len(result.names)} inputs"), "",
           "| " + " | ".join(_SET_COLUMNS) + " |", "| ---: | --- | ---: | ---: | --- | ---: | ---: |"]
    out += ["| " + " | ".join(r[:1] + [f"`{r[1]}`"] + r[2:]) + " |" for r in _sets_rows(result)]
    out += ["", "| input | result |", "| --- | --- |"]
    for name, d in zip(result.names, result.diffs):
        first = d.first_divergence
        out.append(f"| `{name}` | " + ("parity holds" if d.passed else f"first divergence `{first.key}`" if first
                                         else d.verdict.replace("_", " ")) + " |")
    return "\n".join(out) + "\n"
