"""parity localize REF_DIR CAND_DIR CAND_LOCAL_DIR: one localization per input, aggregated per stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import parity
from parity.cli import cli, main
from parity.errors import UsageError
from parity.localize.sets import localize_sets

INPUTS = {"in0": np.linspace(-2, -1, 8), "in1": np.linspace(-1.5, 0.5, 8), "in2": np.linspace(1, 2, 8)}
TOL = {"rtol": 1e-7, "atol": 0.0}


def _run(x: np.ndarray, bug: float) -> None:
    h = parity.tap("a", x)
    h = parity.tap("b", np.where(h < 0, h * (1 + bug), h))  # the bug touches negative values only
    parity.tap("c", np.exp(np.abs(h) * 20))  # amplifies any error in b


@pytest.fixture()
def dirs(tmp_path):
    ref, cand, local = (tmp_path / n for n in ("ref", "cand", "local"))
    for name, x in INPUTS.items():
        bug = 1e-8 * (2 if name == "in1" else 1)
        with parity.record(str(ref / name)):
            _run(x, 0.0)
        with parity.record(str(cand / name)):
            _run(x, bug)
        with parity.replay(str(ref / name), str(local / name)):
            _run(x, bug)
    return str(ref), str(cand), str(local)


def test_each_stage_gets_its_culprit_local_and_propagated_fractions(dirs):
    s = localize_sets(*dirs, **TOL)
    assert s.names == ("in0", "in1", "in2")
    assert s.failing_inputs == ["in0", "in1"] and not s  # in2 has no negative value: it passes
    assert [r.culprit for r in s.results] == ["b", "b", None]
    assert [r.plain_first for r in s.results] == ["c", "c", None]  # plain diff blames the later stage
    b, c, a = s.stage("b"), s.stage("c"), s.stage("a")
    assert (b.inputs, b.culprit, b.local, b.propagated) == (3, 2, 2, 0)
    assert b.culprit_fraction == pytest.approx(2 / 3)
    assert (c.culprit, c.propagated, c.propagated_fraction) == (0, 2, pytest.approx(2 / 3))
    assert (a.culprit, a.local, a.propagated) == (0, 0, 0)
    assert b.worst_input == "in1" and b.worst_local_rel > 0  # the input with the larger bug
    assert a.worst_input is None and a.worst_local_rel == 0  # no local error anywhere: no worst input
    assert s.culprit.key == "b"


def test_json_and_text_of_the_cli(dirs):
    r = CliRunner().invoke(cli, ["localize", *dirs, "--rtol", "1e-7", "--atol", "0", "--json"])
    assert r.exit_code == 1, r.output
    doc = json.loads(r.output[r.output.index("{"):])
    assert doc["schema"] == "parity.localize-set" and doc["inputs"] == 3 and doc["culprit"] == "b"
    assert doc["failing_inputs"] == ["in0", "in1"] and doc["passes"] == 6
    b = next(x for x in doc["stages"] if x["key"] == "b")
    assert (b["culprit"], b["worst_input"]) == (2, "in1") and b["culprit_fraction"] == pytest.approx(2 / 3)
    assert [p["culprit"] for p in doc["per_input"]] == ["b", "b", None]
    r = CliRunner().invoke(cli, ["localize", *dirs, "--rtol", "1e-7", "--atol", "0"], env={"COLUMNS": "200"})
    assert r.exit_code == 1
    text = " ".join(r.output.split())
    assert "culprit on" in text and "only propagated on" in text and "b ◀ culprit │ 3 │ 2 (67%)" in text
    assert "in2: parity holds" in text and "DIVERGENCE FOUND on 2 of 3 inputs" in text
    assert "The divergence starts at b on 2 of 3 inputs" in text


def test_all_inputs_pass(dirs, tmp_path):
    ref, _, _ = dirs
    r = CliRunner().invoke(cli, ["localize", ref, ref, ref, "--json"])
    assert r.exit_code == 0 and json.loads(r.output[r.output.index("{"):])["passed"] is True


def test_names_must_match_across_the_three_directories(dirs, tmp_path):
    ref, cand, _ = dirs
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no trace name is in all directories"):
        localize_sets(ref, cand, str(tmp_path / "empty"))
    assert main(["localize", ref, cand, str(tmp_path / "empty")]) == 2


def test_the_single_triple_output_is_unchanged(dirs):
    ref, cand, local = dirs
    r = CliRunner().invoke(cli, ["localize", f"{ref}/in0", f"{cand}/in0", f"{local}/in0", "--rtol", "1e-7", "--atol", "0"])
    assert r.exit_code == 1
    assert "The divergence starts at b" in r.output and "2 forward passes" in r.output and "over" not in r.output.split("\n")[0]
