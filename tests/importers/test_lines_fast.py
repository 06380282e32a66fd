"""The fast trace-line import (C number scanner, C line scanner, batched writes) against the
reference: the line-by-line Python parser and one TraceWriter.add() per field.

Every fast path must give the same stages, values (bit for bit), shapes, indices, provenance,
occurrence numbers, text stages and counts (skipped, malformed, fields, printed digits) as the
reference, and the same trace bytes.
"""

import gzip
import io
import math
import os
import re
import struct
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import parity
import parity.importers.lines as L
from parity.importers.lines import LineParser, import_log, parse_lines, write_fields
from parity.trace.writer import TraceWriter

needs_c = pytest.mark.skipif(not L.accelerated(), reason="the C scanner parity.importers._scan is not built")


# -- the C number parser ---------------------------------------------------------------------------
def _bits(x):
    return struct.pack("<d", x)


@needs_c
@settings(max_examples=600, deadline=None)
@given(st.floats(allow_nan=False, width=64), st.sampled_from(["%.17g", "%.16g", "%.15g", "%.6g", "%.3e", "%.20e", "%r", "%.0f"]))
def test_printed_doubles_parse_exactly_as_float_does(x, fmt):
    from parity.importers._scan import parse_float

    text = (repr(x) if fmt == "%r" else fmt % x).encode()
    if len(text) > 400:  # "%.0f" of 1e308
        return
    assert _bits(parse_float(text)) == _bits(float(text))


@needs_c
@settings(max_examples=600, deadline=None)
@given(st.from_regex(r"[+-]?(?:[0-9]{1,25}(?:\.[0-9]{0,25})?|\.[0-9]{1,25})(?:[eE][+-]?[0-9]{1,4})?", fullmatch=True))
@example("9007199254740993")  # half-way between two doubles: ties to even
@example("9007199254740995")
@example("18014398509481989")
@example("1.00000000000000011102230246251565404236316680908203125")  # exactly half an ulp above 1
@example("2.2250738585072011e-308")  # the largest subnormal, by a hair
@example("4.9e-324")
@example("2.4703282292062327e-324")  # half the smallest subnormal: rounds to zero
@example("1.7976931348623157e308")
@example("1.7976931348623159e308")  # rounds to infinity
@example("0e999999")
@example("1e-400")
def test_any_decimal_parses_exactly_as_float_does(text):
    from parity.importers._scan import parse_float

    got = parse_float(text.encode())
    assert got is not None and _bits(got) == _bits(float(text))


@needs_c
def test_special_tokens_give_floats_bits_and_others_are_left_to_python():
    from parity.importers._scan import parse_float

    for tok in ["inf", "-inf", "+INF", "Infinity", "-iNfInItY", "nan", "-nan", "+nan", "NaN", "-0", "+0.0", "5.", ".5"]:
        assert _bits(parse_float(tok.encode())) == _bits(float(tok)), tok
    for tok in ["0x1p3", "1.0D+00", "1.#INF", "nan(1)", "1_0", "1e", "1e+", ".", "-", "+-1", "infinit", "infx", "1,5", " 1", ""]:
        assert parse_float(tok.encode()) is None, tok


def test_the_powers_of_ten_in_the_c_source_are_exact_truncations():
    with open(os.path.join(os.path.dirname(L.__file__), "_scan.c")) as f:
        source = f.read()
    table = source[source.index("POW10[POW10_MAX - POW10_MIN + 1][2] = {"):]
    pairs = re.findall(r"\{0x([0-9a-f]{16})ULL, 0x([0-9a-f]{16})ULL\}", table[:table.index("};")])
    assert len(pairs) == 651
    for e, (hi, lo) in zip(range(-342, 309), pairs):
        t = int(hi + lo, 16)
        assert 1 << 127 <= t < 1 << 128
        if e >= 0:  # t = floor(10**e * 2**s) for the s that puts it in [2**127, 2**128)
            n, s = 10 ** e, 128 - (10 ** e).bit_length()
            assert t == (n << s if s >= 0 else n >> -s)
        else:
            s = 127 + (10 ** -e).bit_length()
            while (1 << s) // 10 ** -e >= 1 << 128:
                s -= 1
            assert t == (1 << s) // 10 ** -e
    for e in range(-342, 309):  # the exponent formula of the C code: floor(e * log2(10))
        k = (217706 * e) >> 16
        assert Fraction(2) ** k <= Fraction(10) ** e < Fraction(2) ** (k + 1)


@needs_c
@pytest.mark.parametrize("value, shape", [
    (b"1.5", ()), (b"1 2 3", (3,)), (b"1, 2,3", (3,)), (b"[1 2 3]", (3,)), (b"[4]", (1,)),
    (b"[1 2; 3 4]", (2, 2)), (b"[1, 2; 3, 4;]", (2, 2)), (b"[1 2;]", (1, 2)), (b"nan -inf", (2,)),
    (b"[]", None), (b"[1 2;;]", None), (b"[;1 2]", None), (b"[1 2; 3]", None), (b"[[1, 2]]", None),
    (b"[1 2", None), (b"1;2", None), (b"1 x", None), (b"0x1p3", None), (b",", None), (b"[1]]", None),
])
def test_values_push_takes_the_common_shapes_and_declines_the_rest(value, shape):
    from parity.importers._scan import Values

    v = Values()
    v.push(b"7")
    assert v.push(value) == shape
    data = np.frombuffer(v.take(), dtype=np.float64)
    if shape is None:
        assert data.tolist() == [7.0]  # declined: nothing added
    else:
        ref = L.parse_value(value)
        assert data[1:].tobytes() == np.asarray(ref, dtype=np.float64).tobytes() and ref.shape == shape


@needs_c
def test_values_truncate_extend_take():
    from parity.importers._scan import Values

    v = Values()
    v.push(b"1 2 3")
    v.extend(np.array([4.0, 5.0]))
    assert len(v) == 5
    v.truncate(2)
    assert np.frombuffer(v.take(), dtype=np.float64).tolist() == [1.0, 2.0] and len(v) == 0
    with pytest.raises(TypeError):
        v.extend(np.array([1, 2], dtype=np.int32))
    with pytest.raises(ValueError):
        v.truncate(3)


# -- the line scanner ------------------------------------------------------------------------------
_NUMBERS = st.one_of(
    st.floats(allow_nan=False, width=64).map(repr),
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(lambda x: "%.6e" % x),
    st.floats(-1e6, 1e6).map(lambda x: "%g" % x),
    st.integers(-10 ** 20, 10 ** 20).map(str),
    st.sampled_from(["inf", "-inf", "nan", "-nan", "+nan", "-0", "1.0D+00", "0x1.8p+1", "1.#INF", "1_0", "1e", ".", "abc",
                     "beef", "fade", "2.5d-3", "nan(1)", "1e999", "4.9e-324", "9007199254740993", "12:30"]),
)
_KEYS = st.sampled_from(["energy", "e", "pos", "rot[0]", "a.b", "x->y", "-bad", "a:b", "é", "1abc", "layers.3.x", "it",
                         "step", "_", "..", "k@v"])


@st.composite
def _value(draw):
    nums = st.lists(_NUMBERS, min_size=1, max_size=6)
    sep = st.sampled_from([" ", ", ", ",", "  ", "\t"])
    kind = draw(st.integers(0, 8))
    if kind <= 2:
        return draw(sep).join(draw(nums))
    if kind == 3:
        return "[" + draw(sep).join(draw(st.lists(_NUMBERS, max_size=5))) + "]"
    if kind == 4:
        rows = draw(st.lists(st.lists(_NUMBERS, min_size=draw(st.integers(0, 3)), max_size=3), min_size=1, max_size=3))
        return "[" + "; ".join(" ".join(r) for r in rows) + draw(st.sampled_from(["", ";", ";;"])) + "]"
    if kind == 5:
        return "[[" + ", ".join(draw(nums)) + "], [" + ", ".join(draw(nums)) + "]]"
    if kind == 6:
        parts = draw(st.lists(st.tuples(st.sampled_from(["a", "b", "x1", "d", "1x", "a.b"]), st.one_of(_NUMBERS, st.sampled_from(["[1 2", "x", ""]))), min_size=1, max_size=3))
        return " ".join(f"{k}:{v}" for k, v in parts)
    return draw(st.sampled_from(["lbfgs", "running", "12:30:01", "1 2 x", "a=b", "[1 2", "[]", "[;]", "", "=", "x:", ":"]))


@st.composite
def _line(draw):
    lead = draw(st.sampled_from(["", "", "  ", "\t", "\f"]))
    kind = draw(st.integers(0, 9))
    pair = st.builds(lambda k, v: f"{k}={v}", _KEYS, _value())
    if kind == 0:
        return draw(st.sampled_from(["iter 3: E=1.5", "", "progress 50%", "TRACE_CX: a=1", "TRACE_C", "TRACE_C_x=1", "xTRACE_C: a=1"]))
    if kind <= 4:
        form = draw(st.sampled_from(["{k}={v}", "{k}: {v}", "{k} {v}", "{k} = {v}", "{k}={v} {p}", "{p} {p}"]))
        body = form.format(k=draw(_KEYS), v=draw(_value()), p=draw(pair))
        line = f"{lead}TRACE_C: {body}"
    else:
        idx = draw(st.one_of(st.integers(-5, 10 ** 20).map(lambda i: f"it={i}"),
                             st.sampled_from(["step=abc", "it=1.5", "i-t=3", "it=", "=3", "it:3", "it=x/y"])))
        pairs = " ".join(draw(st.lists(pair, max_size=4)))
        family = draw(st.sampled_from(["TRACE_C_ITER", "TRACE_C", "TRACE_C_A"]))
        line = f"{lead}{family} {idx} {pairs}"
    return draw(st.sampled_from(["", "", "", "progress\r"])) + line + draw(st.sampled_from(["", "", "\r"]))


def _columns(parser):
    names, shapes, indices, lines, originals, values = parser._take_columns()
    out, pos = [], 0
    for name, shape, idx, line, original in zip(names, shapes, indices, lines, originals):
        if isinstance(shape, str):
            value = shape
        else:
            n = int(np.prod(shape, dtype=np.int64))
            value = (values[pos:pos + n].tobytes(), tuple(shape))
            pos += n
        out.append((name, value, idx, line, original))
    assert pos == len(values)
    return out


def _stats(parser):
    s = parser.stats
    return s.skipped, s.trace_lines, s.malformed, s.examples, s.fields, s.digits


def _reference(lines, index_fields):
    """Line by line, every value through the Python parser: the semantics the fast paths keep."""
    p = LineParser(["TRACE_C"], index_fields)
    p._values = L._PyValues()
    out = []
    for n, line in enumerate(lines, 1):
        fields = p.parse_line(L._cr(line), n)
        if fields is None:
            p.stats.skipped += 1
            continue
        p.stats.trace_lines += 1
        for f in fields:
            v = f.value if isinstance(f.value, str) else (np.asarray(f.value, dtype=np.float64).tobytes(), f.value.shape)
            out.append((f.name, v, f.indices, f.line, f.original))
    return out, _stats(p)


def _chunked(lines, index_fields, *, blocks, c_scanner, chunk):
    saved = L._scan_chunk
    if not c_scanner:
        L._scan_chunk = None
    try:
        p = LineParser(["TRACE_C"], index_fields)
        out, lineno = [], 0
        if blocks:
            parts = L._blocks(io.BytesIO(b"\n".join(lines) + b"\n"), chunk)
        else:
            parts = ([L._cr(x) for x in lines[i:i + chunk]] for i in range(0, len(lines), chunk))
        for part in parts:
            lineno = p._parse_chunk(part, lineno)
            out.extend(_columns(p))
        return out, _stats(p)
    finally:
        L._scan_chunk = saved


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_line(), min_size=1, max_size=40), st.sampled_from([(), ("step",)]))
def test_chunk_scanners_read_every_line_as_the_reference_does(lines, index_fields):
    raw = [x.encode("utf-8") for x in lines]
    want = _reference(raw, index_fields)
    assert _chunked(raw, index_fields, blocks=False, c_scanner=False, chunk=7) == want
    if L.accelerated():
        assert _chunked(raw, index_fields, blocks=False, c_scanner=True, chunk=5) == want
        assert _chunked(raw, index_fields, blocks=True, c_scanner=True, chunk=17) == want
        assert _chunked(raw, index_fields, blocks=True, c_scanner=True, chunk=1 << 16) == want


def test_repeated_text_values_and_named_fields_take_the_fast_path_with_the_same_result():
    lines = [b"TRACE_C: status=running", b"TRACE_C: cell=a:1.5 b:2 c:3", b"TRACE_C: status running",
             b"TRACE_C: cell: a:1 b:x", b"TRACE_C: cell=a:1 1b:2", b"TRACE_C: bad=a:1 b:[1"] * 3
    want = _reference(lines, ())
    fields, stats = want
    assert [(name, v) for name, v, *_ in fields[:3]] == [
        ("status", "running"), ("cell.a", (np.float64(1.5).tobytes(), ())), ("cell.b", (np.float64(2).tobytes(), ()))]
    assert [(name, v) for name, v, *_ in fields[4:8]] == [
        ("status", "running"), ("cell.a", (np.float64(1).tobytes(), ())), ("cell.b", "x"), ("cell", "a:1 1b:2")]
    # "bad=a:1 b:[1" is malformed (b opens a bracket it does not close), yet its field a was counted
    assert stats[2] == 3 and stats[4] == 27
    assert _chunked(lines, (), blocks=False, c_scanner=False, chunk=4) == want
    if L.accelerated():
        assert _chunked(lines, (), blocks=True, c_scanner=True, chunk=30) == want


def test_blocks_hold_every_line_as_a_terminal_shows_it_for_any_read_size():
    """One reader serves both scanners: its blocks, split as the Python scanner splits them
    (block_lines) or as the C scanner does (the test's own split), are the file's lines."""
    from parity.importers._line_reader import block_lines, read_blocks, visible_line

    data = b"a\r\nb\n\nprogress\rTRACE_C: x=1\r\n\nlast"
    want = [b"a", b"b", b"", b"TRACE_C: x=1", b"", b"last"]
    assert [visible_line(x) for x in data.split(b"\n")] == want
    for size in (1, 2, 3, 5, 8, 64):
        blocks = list(read_blocks(io.BytesIO(data), size))
        assert [line for b in blocks for line in block_lines(*b)] == want, size
        got = []
        for head, block, start, stop in blocks:
            got.append(visible_line(head))
            if start <= stop:
                got.extend(visible_line(x) for x in block[start:stop].split(b"\n"))
        assert got == want, size
    assert list(read_blocks(io.BytesIO(b"x\n"), 64)) == [(b"x", b"x\n", 2, 1)]  # no empty line after the last newline


# -- whole imports: the fast path writes the trace the slow path writes -----------------------------
def _files(path):
    out = {}
    for root, _, names in os.walk(path):
        for name in names:
            if name != "run.json":
                full = os.path.join(root, name)
                with open(full, "rb") as f:
                    out[os.path.relpath(full, path)] = f.read()
    return out


def _slow_import(log, out, buffer_bytes, stats):
    """One TraceWriter.add() per field of parse_lines(): the reference writer path."""
    meta = {"source": os.path.basename(log), "format": "lines", "prefixes": ["TRACE_C"]}
    with TraceWriter(out, meta=meta, producer="parity import (lines)", buffer_bytes=buffer_bytes) as w:
        with open(log, "rb") as f:
            write_fields(w, parse_lines([x.rstrip(b"\n") for x in f], "TRACE_C"))
        w.update_meta(**{"import": stats.to_dict()}, printed_digits=stats.digits)


def _solver_log(path, blocks=60):
    rng = np.random.default_rng(3)
    lines = ["banner: solver 1.0"]
    for it in range(blocks):
        n = int(rng.integers(1, 40))
        lines += [f"iter {it}: E=1.0 (12 ms)",
                  f"TRACE_C_ITER it={it} energy={rng.normal()!r} grad_norm={abs(rng.normal()) * 1e-3!r}",
                  "TRACE_C: positions=" + " ".join(repr(float(x)) for x in rng.normal(size=3 * n)),
                  "TRACE_C: forces: [" + ", ".join("%.17g" % x for x in rng.normal(size=3 * n)) + "]",
                  "TRACE_C: charges " + " ".join("%.6e" % x for x in rng.normal(size=n)),
                  f"TRACE_C: stress=[1 2 3; 4 5 6; 7 8 {it}]",
                  f"TRACE_C: cell=a:{3.5 + it!r} b:4.25 c:9.0",
                  f"TRACE_C: e_kin={rng.normal()!r} e_pot={rng.normal()!r}",
                  "TRACE_C: status=" + ("converged" if it % 7 == 0 else "running"),
                  f"TRACE_C: rot[{it % 3}]={it} x->y=1.0D+00",
                  "TRACE_C: bad=[1 2" if it % 11 == 0 else "TRACE_C: hex=0x1p-3 nan 1.#INF"]
    with open(path, "w") as f:
        f.write("\r\n".join(lines) + "\n")


@pytest.mark.parametrize("buffer_bytes", [64 << 20, 5000, 1])
def test_fast_import_writes_the_bytes_of_one_add_per_field(tmp_path, monkeypatch, buffer_bytes):
    log = tmp_path / "run.log"
    _solver_log(log)
    orig = TraceWriter.__init__

    def init(self, *args, **kwargs):
        kwargs["buffer_bytes"] = buffer_bytes
        orig(self, *args, **kwargs)

    monkeypatch.setattr(TraceWriter, "__init__", init)
    stats = import_log(log, tmp_path / "fast.trace", prefixes="TRACE_C", chunk_size=4096)
    monkeypatch.setattr(TraceWriter, "__init__", orig)
    _slow_import(str(log), tmp_path / "slow.trace", buffer_bytes, stats)
    fast, slow = _files(tmp_path / "fast.trace"), _files(tmp_path / "slow.trace")
    assert fast == slow and "manifest.json" in fast
    t = parity.load_trace(tmp_path / "fast.trace")
    assert t.complete and len(t) == stats.fields and stats.malformed == 6
    assert t.stage("rot_1").provenance == {"line": 22, "name": "rot[1]"} and t["status#1"] == "running"
    assert t.stage("energy[it=3]").indices == {"it": 3}


def test_every_build_gives_the_same_trace(tmp_path, monkeypatch):
    """Without the C scanner, or without the C renderer, or with neither: the same bytes."""
    import parity.trace._batch as W  # the writer's batch path, where the C renderer is used

    log = tmp_path / "run.log"
    _solver_log(log, blocks=25)
    with open(log, "rb") as f:
        gz = tmp_path / "run.log.gz"
        gz.write_bytes(gzip.compress(f.read()))
    import_log(log, tmp_path / "c.trace", prefixes="TRACE_C", chunk_size=1000)
    want = _files(tmp_path / "c.trace")
    builds = [("no scanner", L, "_scan_chunk", None), ("no renderer", W, "_render", None),
              ("no C numbers", L, "_Values", L._PyValues)]
    for i in range(len(builds)):
        with monkeypatch.context() as m:
            for _, mod, attr, value in builds[:i + 1]:
                m.setattr(mod, attr, value)
            import_log(gz, tmp_path / f"{i}.trace", prefixes="TRACE_C", chunk_size=777)
        got = _files(tmp_path / f"{i}.trace")
        manifest = re.sub(rb'"source": "run.log(.gz)?"', b"", got.pop("manifest.json"))
        assert manifest == re.sub(rb'"source": "run.log(.gz)?"', b"", want["manifest.json"]), builds[i][0]
        assert got == {k: v for k, v in want.items() if k != "manifest.json"}, builds[i][0]


def test_a_printed_double_survives_the_whole_import_bit_exact(tmp_path):
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(size=500) * 10.0 ** rng.integers(-300, 300, size=500),
                             rng.integers(0, 2 ** 64, size=500, dtype=np.uint64).view(np.float64)])
    values = values[np.isfinite(values)]
    log = tmp_path / "v.log"
    log.write_text("".join(f"TRACE_C: v={'%.17g' % x}\n" for x in values) + "TRACE_C: all=" + " ".join(repr(float(x)) for x in values) + "\n")
    import_log(log, tmp_path / "v.trace", prefixes="TRACE_C")
    t = parity.load_trace(tmp_path / "v.trace")
    got = np.array([t["v" if i == 0 else f"v#{i}"] for i in range(len(values))])
    assert got.view(np.uint64).tolist() == values.view(np.uint64).tolist()
    assert t["all"].view(np.uint64).tolist() == values.view(np.uint64).tolist()
    assert math.isnan(float(L.parse_value(b"-nan"))) and _bits(float(L.parse_value(b"-0"))) == _bits(-0.0)


def test_import_log_reports_progress_per_chunk(tmp_path):
    from parity.importers.lines import import_log

    log = tmp_path / "run.log"
    log.write_text("".join(f"TRACE_C: e={i}.5\nprogress {i}%\n" for i in range(2000)))
    calls = []
    import_log(log, tmp_path / "p.trace", prefixes="TRACE_C", chunk_size=4096,
               progress=lambda done, total, name: calls.append((done, total, name)))
    size = log.stat().st_size
    assert len(calls) > 3
    assert all(total == size and name == "run.log" for _, total, name in calls)
    assert [d for d, _, _ in calls] == sorted(d for d, _, _ in calls) and calls[-1][0] == size
