"""Terminal report: golden text, NO_COLOR and non-terminal output, narrow terminals, worst elements."""

import io
import re

import pytest
from rich.console import Console

from parity.compare import compare_stages as compare_traces  # the per-stage engine: no diagnoses in these reports
from parity.report import render_text, stage_worst

from .conftest import check_golden, normalise

ANSI = re.compile(r"\x1b\[[0-9;]*m")
COLOUR = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7]|38;[25];[0-9;]+|48;[25];[0-9;]+)m")


def plain(width=120):
    return Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False, highlight=False)


def test_golden_synthetic(synth):
    c = plain()
    render_text(synth, c)
    check_golden("synthetic.txt", c.file.getvalue())


def test_golden_recorded_with_worst_elements(fixed_traces, tmp_path):
    ref, cand = fixed_traces
    diff = compare_traces(ref, cand, rtol=1e-5, atol=1e-6)
    c = plain()
    render_text(diff, c, worst=stage_worst(diff, diff.first_divergence, 3))
    out = normalise(c.file.getvalue(), tmp_path)
    check_golden("recorded.txt", out)
    assert "worst elements of layers.0.mlp" in out and "[2, 5]" in out


def test_non_terminal_output_has_no_escape_codes(synth):
    c = Console(file=io.StringIO(), width=120)  # a file, not a terminal: rich writes no styles
    render_text(synth, c)
    assert not c.is_terminal and "\x1b[" not in c.file.getvalue()


def test_terminal_is_coloured_unless_no_color(synth, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = Console(file=io.StringIO(), width=120, force_terminal=True, color_system="truecolor")
    render_text(synth, coloured)
    assert COLOUR.search(coloured.file.getvalue())  # sanity: the check below can fail
    monkeypatch.setenv("NO_COLOR", "1")
    c = Console(file=io.StringIO(), width=120, force_terminal=True, color_system="truecolor")
    render_text(synth, c)
    out = c.file.getvalue()
    assert not COLOUR.search(out)  # bold and reverse may remain; colours may not
    assert ANSI.sub("", out) == ANSI.sub("", coloured.file.getvalue())  # same text either way


def test_narrow_terminal_keeps_stage_names_whole(synth):
    c = plain(width=80)
    render_text(synth, c)
    out = c.file.getvalue()
    assert max(len(line) for line in out.splitlines()) <= 80
    for key in ("layers.0.attn_scores", "layers.0.dropout", "final_norm", "debug.extra"):
        assert key in out
    assert "dtype" not in out.splitlines()[2]  # the least telling columns go first


@pytest.mark.parametrize("argv_extra", [[], ["--all"]])
def test_cli_output_is_plain_when_piped(fixed_traces, capsys, argv_extra):
    from parity.cli import main

    ref, cand = fixed_traces
    assert main(["diff", ref, cand, "--rtol", "1e-5", "--atol", "1e-6", *argv_extra]) == 1
    out, err = capsys.readouterr()
    assert "\x1b[" not in out and err == ""  # no colours, and no progress bar off a terminal
    assert "worst elements of layers.0.mlp: index  reference → candidate  |error|" in out
