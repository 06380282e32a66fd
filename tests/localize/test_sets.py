"""Many inputs: one trace per input, aggregated per stage, so one lucky input cannot hide a bug."""

import json

import numpy as np
import pytest

import parity
from parity.cli import main
from parity.errors import UsageError
from parity.localize.sets import compare_sets


def pipeline(x, bug):
    h = parity.tap("embed", x)
    h = parity.tap("layers.0.out", np.tanh(h))
    # the bug only shows on inputs with a large value: one lucky input passes
    h = parity.tap("layers.1.out", np.where(np.abs(h) > 0.9, h * (1 + bug), h))
    parity.tap("logits", h.sum(keepdims=True))


@pytest.fixture
def sets(tmp_path):
    xs = [np.linspace(-3, 3, 8), np.linspace(-0.5, 0.5, 8), np.linspace(-4, 1, 8), np.linspace(0, 5, 8)]
    for side, bug in (("ref", 0.0), ("cand", 1e-2)):
        for i, x in enumerate(xs):
            with parity.record(tmp_path / side / f"input{i}.trace"):
                pipeline(x, bug)
    return tmp_path / "ref", tmp_path / "cand"


def test_fraction_and_worst_input_per_stage(sets):
    result = compare_sets(*sets)
    assert not result.passed
    assert result.failing_inputs == ["input0.trace", "input2.trace", "input3.trace"]  # input1 is the lucky one
    s = result.stage("layers.1.out")
    assert (s.inputs, s.failed) == (4, 3) and s.fraction == 0.75 and s.first_on == 3
    assert s.worst_input in {"input0.trace", "input2.trace", "input3.trace"}
    assert result.stage("embed").failed == 0 and result.first_divergence.key == "layers.1.out"
    assert [d.passed for d in result.diffs] == [False, True, False, False]


def test_cli_over_directories_and_pairs_file(sets, tmp_path, capsys):
    ref, cand = sets
    assert main(["diff", str(ref), str(cand)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "DIVERGENCE FOUND on 3 of 4 inputs" in out and "input1.trace: parity holds" in out
    assert main(["diff", str(ref), str(ref)]) == 0
    capsys.readouterr()
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("# ref cand\nref/input1.trace cand/input1.trace\n")
    assert main(["diff", "-", "-", "--pairs", str(pairs), "--json"]) == 0  # only the lucky input: parity holds
    doc = json.loads(capsys.readouterr().out)
    assert doc["inputs"] == 1 and doc["passed"] is True
    md = tmp_path / "sets.md"
    assert main(["diff", str(ref), str(cand), "--md", str(md)]) == 1
    assert md.read_text().startswith("# parity diff over 4 inputs: DIVERGENCE FOUND on 3 of 4 inputs")


def test_errors(sets, tmp_path):
    ref, cand = sets
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="no trace name is in both"):
        compare_sets(ref, empty)
    bad = tmp_path / "bad.txt"
    bad.write_text("only-one-path\n")
    with pytest.raises(UsageError, match="line 1: expected two trace paths"):
        compare_sets(ref, cand, pairs_file=str(bad))
