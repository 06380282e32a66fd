"""Trace-line importer: every printed shape, float notations, occurrences, indices, streaming."""

import gzip
import math
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import parity
from parity.cli import main
from parity.errors import ImportFormatError, UsageError
from parity.importers.lines import LineParser, import_log, parse_lines, parse_value


def _fields(text, prefix="TRACE_C", **kw):
    return [(f.name, f.indices, f.value if isinstance(f.value, str) else f.value.tolist(), f.line)
            for f in parse_lines(text.splitlines(), prefix, **kw)]


@pytest.mark.parametrize("line, expected", [
    ("TRACE_C: energy=-1.25", [("energy", None, -1.25)]),
    ("TRACE_C: pos=0.1 0.2 0.3", [("pos", None, [0.1, 0.2, 0.3])]),
    ("TRACE_C: pos 0.1 0.2 0.3", [("pos", None, [0.1, 0.2, 0.3])]),
    ("TRACE_C: pos: [0.1, 0.2, 0.3]", [("pos", None, [0.1, 0.2, 0.3])]),
    ("TRACE_C:pos=[0.1 0.2]", [("pos", None, [0.1, 0.2])]),
    ("TRACE_C: rot=[1 2 3; 4 5 6; 7 8 9]", [("rot", None, [[1, 2, 3], [4, 5, 6], [7, 8, 9]])]),
    ("TRACE_C: rot=[1, 2; 3, 4;]", [("rot", None, [[1, 2], [3, 4]])]),
    ("TRACE_C: rot=[[1, 2], [3, 4]]", [("rot", None, [[1, 2], [3, 4]])]),
    ("TRACE_C: cell=a:3.5 b:4.1 c:9", [("cell.a", None, 3.5), ("cell.b", None, 4.1), ("cell.c", None, 9.0)]),
    ("TRACE_C: e=1.5 n=3 v=1 2", [("e", None, 1.5), ("n", None, 3.0), ("v", None, [1.0, 2.0])]),
    ("TRACE_C: x = 2.5", [("x", None, 2.5)]),
    ("TRACE_C: method=lbfgs", [("method", None, "lbfgs")]),
    ("TRACE_C: t=12:30:01", [("t", None, "12:30:01")]),
    ("TRACE_C: empty=[]", [("empty", None, [])]),
    ("TRACE_C_ITER it=3 e=0.5 g=1e-3 2e-3", [("e", {"it": 3}, 0.5), ("g", {"it": 3}, [0.001, 0.002])]),
    ("TRACE_C idx=7 name1=1 name2=2", [("name1", {"idx": 7}, 1.0), ("name2", {"idx": 7}, 2.0)]),
    ("   TRACE_C: indented=1", [("indented", None, 1.0)]),
    ("TRACE_C: rot[0]=1", [("rot_0", None, 1.0)]),
])
def test_every_printed_shape(line, expected):
    got = [(n, i, v) for n, i, v, _ in _fields(line)]
    assert got == expected


def test_matrix_shape_and_scalar_shape():
    (f,) = list(parse_lines(["TRACE_C: m=[1 2 3; 4 5 6]"], "TRACE_C"))
    assert f.value.shape == (2, 3) and f.value.dtype == np.float64
    (s,) = list(parse_lines(["TRACE_C: s=4"], "TRACE_C"))
    assert s.value.shape == ()
    (v,) = list(parse_lines(["TRACE_C: v: [4]"], "TRACE_C"))
    assert v.value.shape == (1,)


def test_special_values_keep_their_bits():
    (f,) = list(parse_lines(["TRACE_C: x=inf -inf nan -nan -0 0 +3 1.0D+02 0x1.8p+1 1.#INF 1e-320"], "TRACE_C"))
    v = f.value
    assert v[0] == math.inf and v[1] == -math.inf and math.isnan(v[2]) and math.isnan(v[3])
    assert struct.pack("<d", v[4]) == struct.pack("<d", -0.0) and struct.pack("<d", v[5]) == struct.pack("<d", 0.0)
    assert v[6:10].tolist() == [3.0, 100.0, 3.0, math.inf]
    assert v[10] == 1e-320  # subnormal


def test_hex_looking_words_stay_text():
    """float.fromhex("beef") is 48879.0: a bare word must not become a number; 0x... still does."""
    fields = {f.name: f.value for f in parse_lines(["TRACE_C: status=beef", "TRACE_C: op=add",
                                                     "TRACE_C: h=-0x1.8p+1 0X1P-2", "TRACE_C: w=face 1"], "TRACE_C")}
    assert fields["status"] == "beef" and fields["op"] == "add" and fields["w"] == "face 1"
    assert fields["h"].tolist() == [-3.0, 0.25]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False, width=64), min_size=1, max_size=8), st.sampled_from(["%.17g", "%r", "%.17e", "%a"]))
def test_printed_doubles_parse_back_bit_exact(values, fmt):
    def show(x):
        return float.hex(x) if fmt == "%a" else repr(x) if fmt == "%r" else fmt % x
    line = "TRACE_C: v=" + " ".join(show(x) for x in values)
    (f,) = list(parse_lines([line], "TRACE_C"))
    want = np.array(values, dtype=np.float64)
    got = f.value.reshape(-1)
    assert got.view(np.uint64).tolist() == want.view(np.uint64).tolist()


def test_g_format_values_match_c_rounding():
    # %g keeps 6 significant digits: the stored double is the nearest to the printed text.
    (f,) = list(parse_lines(["TRACE_C: v=%g %g" % (math.pi, 1e-7 / 3)], "TRACE_C"))
    assert f.value.tolist() == [3.14159, float("%g" % (1e-7 / 3))]


def test_repeated_keys_become_occurrences_and_other_lines_are_counted(tmp_path):
    log = tmp_path / "run.log"
    lines = ["sim 1.0 starting"]
    for it in range(3):
        lines += [f"progress {it}", f"TRACE_C: energy={it}.5", f"TRACE_C: pos={it} {it + 1}", f"TRACE_C_ITER it={it} e={it}"]
    lines += ["done"]
    log.write_text("\n".join(lines) + "\n")
    stats = import_log(log, tmp_path / "c.trace", prefixes="TRACE_C")
    t = parity.load_trace(tmp_path / "c.trace")
    assert t.keys() == ["energy", "pos", "e[it=0]", "energy#1", "pos#1", "e[it=1]", "energy#2", "pos#2", "e[it=2]"]
    assert t["energy#2"].tolist() == 2.5 and t["pos#1"].tolist() == [1.0, 2.0]
    assert t.stage("e[it=1]").indices == {"it": 1}
    assert [s.provenance["line"] for s in t][:4] == [3, 4, 5, 7]
    assert (stats.lines, stats.trace_lines, stats.skipped, stats.malformed) == (14, 9, 5, 0)
    assert t.meta["import"]["skipped"] == 5 and t.meta["source"] == "run.log"


def test_index_fields_option_and_text_stages(tmp_path):
    got = _fields("TRACE_C: step=2 loss=0.5 note=warmup", index_fields=["step"])
    assert got == [("loss", {"step": 2}, 0.5, 1), ("note", {"step": 2}, "warmup", 1)]


def test_prefixes_are_exact_and_several_can_be_given():
    text = "TRACE_CX: a=1\nTRACE_C: b=2\nTRACE_PY: c=3\n>> d=4\nTRACE_C_IT it=1 e=5"
    assert [n for n, *_ in _fields(text, ["TRACE_C", "TRACE_PY"])] == ["b", "c", "e"]
    assert [n for n, *_ in _fields(text, ">>")] == ["d"]
    assert [n for n, *_ in _fields(text, "TRACE_C:")] == ["b"]
    with pytest.raises(UsageError):
        LineParser([])


def test_malformed_trace_lines_are_counted_with_their_line_numbers():
    p = LineParser(["TRACE_C"])
    for n, line in enumerate([b"TRACE_C: m=[1 2; 3]", b"TRACE_C: bad=[1 2", b"TRACE_C:", b"TRACE_C: ok=1",
                              b"TRACE_C_ITER it=1"], 1):
        p.parse_line(line, n)
    st = p.stats
    assert st.malformed == 4
    assert [n for n, _ in st.examples] == [1, 2, 3, 5]
    assert "rows of different lengths (2, 1)" in st.examples[0][1]
    assert "does not close" in st.examples[1][1]


def test_streaming_chunks_crlf_progress_and_gzip_give_the_same_trace(tmp_path):
    rng = np.random.default_rng(0)
    rows = [" ".join(repr(float(x)) for x in rng.normal(size=17)) for _ in range(50)]
    text = "".join(f"progress {i}%\rTRACE_C: v={r}\r\nnoise\n" for i, r in enumerate(rows))
    plain = tmp_path / "a.log"
    plain.write_bytes(text.encode())
    gz = tmp_path / "a.log.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    import_log(plain, tmp_path / "big.trace", prefixes="TRACE_C")
    import_log(plain, tmp_path / "small.trace", prefixes="TRACE_C", chunk_size=7)  # lines cut across chunks
    import_log(gz, tmp_path / "gz.trace", prefixes="TRACE_C")
    ref = parity.load_trace(tmp_path / "big.trace")
    assert len(ref) == 50 and ref["v#49"].tolist() == [float(x) for x in rows[49].split()]
    for other in ("small.trace", "gz.trace"):
        t = parity.load_trace(tmp_path / other)
        assert t.keys() == ref.keys()
        assert all(np.array_equal(t[k], ref[k]) for k in ref.keys())


def test_a_log_without_trace_lines_is_an_error_naming_the_prefix(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("hello\nworld\n")
    with pytest.raises(ImportFormatError, match=r"x.log: holds no trace line starting with 'TRACE_C' \(2 lines read\)"):
        import_log(log, tmp_path / "x.trace", prefixes="TRACE_C")
    assert not parity.load_trace(tmp_path / "x.trace").complete  # nothing is lost: marked incomplete


def test_parse_value():
    assert parse_value(b"[1 2; 3 4]").tolist() == [[1, 2], [3, 4]]
    assert parse_value("1 2 x") == "1 2 x"
    with pytest.raises(ImportFormatError, match="rows of different lengths"):
        parse_value("[[1, 2], [3]]")


def test_cli_import_log(tmp_path, capsys):
    log = tmp_path / "run.log"
    log.write_text("banner\nTRACE_C: a=1\nTRACE_C: a=2\nTRACE_C: bad=[1\n")
    assert main(["import", str(log), "--prefix", "TRACE_C", "--out", str(tmp_path / "t.trace")]) == 0
    out = capsys.readouterr()
    assert "2 stages from 3 trace lines; 1 other lines skipped, 1 malformed" in out.out
    assert "malformed line 4" in out.err
    assert parity.load_trace(tmp_path / "t.trace").keys() == ["a", "a#1"]
    assert main(["import", str(log), "--out", str(tmp_path / "u.trace")]) == 2  # a log needs --prefix
    assert "needs its trace-line prefix" in capsys.readouterr().err
