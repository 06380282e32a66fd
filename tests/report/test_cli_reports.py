"""`parity diff --md/--html/--worst` and the progress bar helper."""

import io

from rich.console import Console

from parity.cli import main
from parity.report import progress_bar


def test_md_to_stdout_and_files(fixed_traces, tmp_path, capsys):
    ref, cand = fixed_traces
    assert main(["diff", ref, cand, "--md", "-"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("# parity diff: DIVERGENCE FOUND\n") and "┏" not in out  # the report replaces the table
    md, page = tmp_path / "r.md", tmp_path / "r.html"
    assert main(["diff", ref, cand, "--md", str(md), "--html", str(page), "--worst", "2"]) == 1
    out = capsys.readouterr().out
    assert "DIVERGENCE FOUND" in out and "┏" in out  # the table still prints
    assert md.read_text().startswith("# parity diff") and "Worst 2 elements" in md.read_text()
    assert page.read_text().startswith("<!DOCTYPE html>") and 'id="pipeline-plot"' in page.read_text()


def test_conflicting_stdout_outputs_are_a_usage_error(fixed_traces, capsys):
    assert main(["diff", *fixed_traces, "--json", "--md", "-"]) == 2
    assert "choose one" in capsys.readouterr().err


def test_worst_zero_lists_nothing(fixed_traces, capsys):
    assert main(["diff", *fixed_traces, "--worst", "0"]) == 1
    assert "worst elements of" not in capsys.readouterr().out


def test_progress_bar_draws_only_on_a_terminal():
    term = Console(file=io.StringIO(), force_terminal=True, width=100)
    with progress_bar("comparing", console=term) as progress:
        for i in range(3):
            progress(i + 1, 3, f"stage{i}")
    assert "comparing" in term.file.getvalue()
    pipe = Console(file=io.StringIO(), width=100)
    with progress_bar("comparing", console=pipe) as progress:
        progress(1, 1, "x")
    assert pipe.file.getvalue() == ""
