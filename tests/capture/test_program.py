"""parity capture run: C programs built at test time, their trace lines captured, and "ports" with
one bug each found at the right stage with the right diagnosis."""

import os
import shutil
import subprocess
import sys

import pytest

import parity
from parity.capture.program import capture_program
from parity.cli import main
from parity import compare_traces
from parity.errors import CaptureError

HERE = os.path.dirname(__file__)
SIM = os.path.join(HERE, "programs", "sim.c")
CC = shutil.which("gcc") or shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="needs a C compiler (gcc)")


def _build(d, source, name, *defines):
    exe = os.path.join(d, name)
    subprocess.run([CC, "-O0", "-o", exe, source, *[f"-D{x}" for x in defines], "-lm"], check=True)
    return exe


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    """The reference build and one "port" per bug, each captured once."""
    d = str(tmp_path_factory.mktemp("sim"))
    traces = {}
    for variant in ("REF", "BUG_UNIT", "BUG_TRANSPOSE", "BUG_CONST"):
        exe = _build(d, SIM, f"sim_{variant}", variant)
        out = os.path.join(d, f"{variant}.trace")
        r = capture_program([exe], out, prefixes="TRACE_C")
        assert r.ok, r
        traces[variant] = out
    return traces


def test_capture_reads_every_format_and_skips_progress_lines(sims):
    t = parity.load_trace(sims["REF"])
    assert t.complete and t.manifest["producer"] == "parity capture run"
    assert t.keys()[:13] == ["method", "bond_length", "thermal_energy", "angles", "rot", "rot_row0", "rot_row1", "rot_row2",
                             "cell.a", "cell.b", "cell.c", "pos", "energy[it=0]"]
    assert t["method"] == "verlet" and t["status"] == "converged"
    assert t["rot"].shape == (3, 3) and t["angles"].tolist() == [30.0, 45.0, 60.0]
    assert [k for k in t.keys() if k.startswith("step_pos")] == ["step_pos", "step_pos#1", "step_pos#2", "step_pos#3"]
    assert t.stage("kinetic[it=2]").indices == {"it": 2}
    special = t["special"]
    assert special[0] == float("inf") and special[1] == float("-inf") and special[2] != special[2]
    assert str(special[3]) == "-0.0"
    imp = t.meta["import"]
    assert imp["skipped"] == 7  # banner, 4 progress lines, "done.", and the stderr warning
    assert imp["stderr_lines"] == 1 and imp["malformed"] == 0
    prog = t.meta["program"]
    assert prog["exit_code"] == 0 and len(prog["executable_sha256"]) == 64
    assert t.manifest["command"] == prog["argv"]
    assert t.stage("bond_length").provenance == {"line": 3, "stream": "stdout"}


def test_the_reference_against_itself_holds_parity(sims):
    assert compare_traces(sims["REF"], sims["REF"]).passed


@pytest.mark.parametrize("variant, first, kind, evidence", [
    ("BUG_UNIT", "bond_length", "scale", "candidate = reference × 1e-10 (from 1 value only): a power of ten (10^-10), "
                                         "likely a unit mismatch"),
    ("BUG_TRANSPOSE", "rot", "transpose", "rows and columns swapped"),
    ("BUG_CONST", "thermal_energy", "scale", "candidate = reference × 9.995e-01 (residual 0 %)"),
])
def test_each_port_bug_is_found_at_its_stage_with_its_diagnosis(sims, variant, first, kind, evidence):
    diff = compare_traces(sims["REF"], sims[variant])
    fd = diff.first_divergence
    assert fd is not None and fd.key == first
    assert fd.diagnoses and fd.diagnoses[0].kind == kind
    assert evidence in fd.diagnoses[0].summary
    # every stage before the bug agrees
    before = [s for s in diff.stages if s.ref.position < fd.ref.position]
    assert before and all(s.status == "pass" for s in before)


def test_the_unit_slip_propagates_with_the_same_factor_to_vector_stages(sims):
    diff = compare_traces(sims["REF"], sims["BUG_UNIT"])
    d = diff["pos"].diagnoses[0]
    assert d.summary == ("candidate = reference × 1.000e-10 (residual 0 %): a power of ten (10^-10), "
                         "likely a unit mismatch")
    assert d.evidence["likely"] == "power of ten (10^-10)" and d.evidence["residual"] < 1e-12


def test_a_wrong_constant_is_not_called_a_unit_slip(sims):
    d = compare_traces(sims["REF"], sims["BUG_CONST"]).first_divergence.diagnoses[0]
    assert "likely" not in d.evidence and abs(d.evidence["factor"] - 1.38e-23 / 1.380649e-23) < 1e-12


def test_transposed_rows_printed_as_vectors_are_recognised_as_a_group(sims):
    diff = compare_traces(sims["REF"], sims["BUG_TRANSPOSE"])
    row0 = diff["rot_row0"]
    assert row0.status == "fail"
    (d,) = [x for x in row0.diagnoses if x.kind == "transpose"]
    assert "rot_row0 … rot_row2 form a 3×3 matrix" in d.summary and "rows are the reference's columns" in d.summary
    assert diff["rot_row2"].status == "pass"  # (0, 0, 1) is its own column


def test_expected_divergences_are_reported_but_do_not_fail(sims, tmp_path, capsys):
    cfg = tmp_path / "parity.toml"
    cfg.write_text('[expected]\n"bond_length" = "the port stores metres (ticket 7)"\n'
                   '"cell.*" = "follows bond_length"\n"pos" = "follows bond_length"\n'
                   '"energy*" = "follows bond_length"\n"step_pos*" = "follows bond_length"\n'
                   '"final_energy" = "follows bond_length"\n')
    code = main(["diff", sims["REF"], sims["BUG_UNIT"], "--config", str(cfg)])
    out = capsys.readouterr().out
    assert code == 0
    assert "the port stores metres (ticket 7)" in out
    diff = compare_traces(sims["REF"], sims["BUG_UNIT"], config=str(cfg))
    assert diff.passed and diff["bond_length"].status == "expected" and diff["bond_length"].diagnoses
    assert main(["diff", sims["REF"], sims["BUG_UNIT"]]) == 1


def test_a_python_port_printing_repr_holds_parity_with_the_c_program(sims, tmp_path):
    port = tmp_path / "port.py"
    port.write_text(PY_PORT)
    out = tmp_path / "py.trace"
    r = capture_program([sys.executable, str(port)], out, prefixes="TRACE_PY")
    assert r.ok
    diff = compare_traces(sims["REF"], out, rtol=1e-12, atol=1e-300)
    assert diff.passed, [(s.key, s.message) for s in diff.divergent]
    assert not diff.missing and not diff.extra


PY_PORT = r'''
import math
print("port starting")
print("TRACE_PY: method=verlet")
bond = 1.54
print(f"TRACE_PY: bond_length={bond!r}")
kb, q = 1.380649e-23, 1.602176634e-19
print("TRACE_PY: thermal_energy=" + " ".join(repr(kb * t / q) for t in (100.0, 200.0, 300.0)))
print("TRACE_PY: angles: [30.0, 45.0, 60.0]")
t = 30.0 * math.pi / 180.0
c, s = math.cos(t), math.sin(t)
rot = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
print("TRACE_PY: rot=[[" + "], [".join(", ".join(repr(x) for x in row) for row in rot) + "]]")
for i, row in enumerate(rot):
    print(f"TRACE_PY: rot_row{i}: [" + ", ".join(repr(x) for x in row) + "]")
print(f"TRACE_PY: cell=a:{3.5 * bond!r} b:{4.0 * bond!r} c:{9.0 * bond!r}")
pos = [bond, 0.5 * bond, 0.0]
rpos = [row[0] * pos[0] + row[1] * pos[1] + row[2] * pos[2] for row in rot]
print("TRACE_PY: pos " + " ".join(repr(x) for x in rpos))
v = 0.1
for it in range(4):
    x = rpos[0] + v * it
    e = 0.5 * (x - bond) * (x - bond) + kb * 300.0 / q
    print(f"TRACE_PY_STEP it={it} energy={e!r} kinetic={0.5 * v * v * it!r}")
    print(f"TRACE_PY: step_pos={x!r} {x * x!r}")
print("TRACE_PY: special=[inf, -inf, nan, -0.0]")
print(f"TRACE_PY: final_energy={e!r}")
print("TRACE_PY: status=converged")
'''


def test_a_failing_program_leaves_an_incomplete_trace_and_exit_code_2(tmp_path, capsys):
    src = tmp_path / "crash.c"
    src.write_text('#include <stdio.h>\nint main(void){printf("TRACE_C: a=1\\n"); fflush(stdout);'
                   'fprintf(stderr, "segfault-ish failure\\n"); return 3;}\n')
    exe = _build(str(tmp_path), str(src), "crash")
    out = tmp_path / "crash.trace"
    code = main(["capture", "run", "--prefix", "TRACE_C", "--out", str(out), "--", exe])
    err = capsys.readouterr().err
    assert code == 2 and "exited with status 3" in err and "stderr: segfault-ish failure" in err
    t = parity.load_trace(out)
    assert not t.complete and t.manifest["incomplete_reason"] == "the program exited with status 3"
    assert t.keys() == ["a"] and t.meta["program"]["exit_code"] == 3


def test_timeout_kills_the_program_and_keeps_what_it_printed(tmp_path):
    code = "import time, sys; print('TRACE_PY: a=1', flush=True); time.sleep(30)"
    r = capture_program([sys.executable, "-c", code], tmp_path / "t.trace", prefixes="TRACE_PY", timeout=1.0)
    assert r.timed_out and r.returncode is None and not r.complete
    assert parity.load_trace(tmp_path / "t.trace").keys() == ["a"]


def test_cli_capture_run_with_cwd_and_log(tmp_path, capsys):
    (tmp_path / "work").mkdir()
    code = "import os; print('TRACE_PY: cwd_len', len(os.getcwd())); print('hello')"
    out = tmp_path / "t.trace"
    rc = main(["capture", "run", "--prefix", "TRACE_PY", "--cwd", str(tmp_path / "work"), "--out", str(out),
               "--log", str(tmp_path / "raw.log"), "--", sys.executable, "-c", code])
    assert rc == 0, capsys.readouterr()
    assert parity.load_trace(out)["cwd_len"].tolist() == len(str(tmp_path / "work"))
    assert (tmp_path / "raw.log").read_text().endswith("hello\n")
    assert "1 stages from 1 trace lines (1 other lines skipped, 0 malformed)" in capsys.readouterr().out


def test_no_trace_lines_and_missing_programs_are_errors(tmp_path, capsys):
    rc = main(["capture", "run", "--prefix", "TRACE_X", "--out", str(tmp_path / "a.trace"), "--", sys.executable, "-c", "print(1)"])
    assert rc == 2 and "printed no line starting with TRACE_X" in capsys.readouterr().err
    with pytest.raises(CaptureError, match="cannot run '/no/such/program'"):
        capture_program(["/no/such/program"], tmp_path / "b.trace", prefixes="TRACE_C")
