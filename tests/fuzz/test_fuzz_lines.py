"""The trace-line importer under hostile logs: only ParityErrors, in bounded time and memory.

Seeds are valid logs holding every supported line format (plain and gzip); each case mutates one
(byte flips, truncation, insertions of hostile tokens: 1e999, NaN, 0x1p99999, deep brackets,
5000-digit numbers and indices, invalid UTF-8, NUL bytes, hostile keys) or is fully random, and
is imported through :func:`parity.importers.lines.import_log` and :func:`parity.importers.import_files`
on each build: the C scanner, the C number parser alone, and pure Python.
"""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st

import parity
import parity.importers.lines as L
from parity.errors import ImportFormatError
from parity.importers import import_files
from parity.importers.lines import import_log, parse_lines, parse_value

from .harness import fuzz_settings, only_parity_errors

SEED = b"""starting solver v1.2
TRACE_C: energy=-1.25
TRACE_C: pos=0.1 0.2 0.3
TRACE_C: pos 0.1 0.2 0.3
TRACE_C: pos: [0.1, 0.2, 0.3]
TRACE_C: rot=[1 0 0; 0 1 0; 0 0 1]
TRACE_C: rot=[[1, 0], [0, 1]]
TRACE_C: cell=a:3.5 b:4.1 c:9.0
TRACE_C: e=1.5 n=3
TRACE_C: method=lbfgs
TRACE_C_ITER it=3 e=0.5 g=1e-3 2e-3
TRACE_C it=4 e=0.25
  TRACE_C: indented = 7
TRACE_C: hex=0x1.8p1 -0x1p-3 inf -inf nan -nan -0 1.0D+00 1.#INF
TRACE_C: rot[1]=0.5
TRACE_C: x->y=2
progress 50%\rprogress 100%
TRACE_C: spaced = [1, 2, 3]
done.
"""
SEEDS = [SEED, SEED.replace(b"\n", b"\r\n"), b"\n".join(line for line in SEED.split(b"\n") if b"TRACE" in line)]

HOSTILE = [
    b"1e999", b"-1e999", b"NaN", b"-nan", b"0x1p99999", b"-0x1p99999", b"0x1.fffffffffffff8p1023",
    b"[" * 5000 + b"1" + b"]" * 5000, b"[" * 65 + b"]" * 65, b"[" * 200, b"]" * 200, b"[[1, 2], [3]]",
    b"1" * 5000, b"it=" + b"9" * 5000 + b" ", b"TRACE_C_ITER it=" + b"1" * 5000 + b" e=1\n",
    b"TRACE_C: it=" + b"1" * 21 + b" e=1\n", b"\xff\xfe", b"\xc3", b"\x00", b"\r", b"\n", b"=", b":", b";",
    b",", b" = ", b"../x=", "．．/x=".encode(), b".\\x=", b"TRACE_C: ", b"TRACE_C_", b"1.#INF", b"1D+308",
    b"a:1 b:", b"a=1 " * 300, b"1 " * 3000, b"nan(0x1)", b"\t", b"\x1f\x8b",
]

BUILDS = ["c", "no scanner", "python"]

mutation = st.tuples(st.sampled_from(["flip", "truncate", "insert", "replace", "hostile"]),
                     st.integers(0, 10**6), st.binary(min_size=0, max_size=8), st.sampled_from(HOSTILE))


def _mutate(data: bytes, muts) -> bytes:
    out = bytearray(data)
    for kind, where, payload, token in muts:
        pos = where % (len(out) + 1)
        if kind == "flip" and out:
            out[pos % len(out)] ^= 1 << (where % 8)
        elif kind == "truncate":
            del out[pos:]
        elif kind == "insert":
            out[pos:pos] = payload
        elif kind == "replace":
            out[pos:pos + len(payload)] = payload
        else:
            out[pos:pos] = token
    return bytes(out)


def _use_build(monkeypatch, build: str) -> None:
    if build != "python" and not L.accelerated():
        pytest.skip("the C scanner is not built")
    if build in ("no scanner", "python"):
        monkeypatch.setattr(L, "_scan_chunk", None)
    if build == "python":
        monkeypatch.setattr(L, "_Values", L._PyValues)


def _check(tmp_path_factory, data: bytes, name: str, chunk_size: int) -> None:
    case = tmp_path_factory.mktemp("case")
    log = case / name
    log.write_bytes(data)
    err = only_parity_errors(import_log, log, case / "a.trace", prefixes="TRACE_C", chunk_size=chunk_size)
    if err is None:
        assert parity.load_trace(case / "a.trace").complete
    elif isinstance(err, ImportFormatError):
        assert err.path == str(log), err
    err = only_parity_errors(import_files, [log], case / "b.trace", prefixes=["TRACE_C"], format="lines")
    if isinstance(err, ImportFormatError):
        assert str(log) in str(err), err


@fuzz_settings()
@given(st.sampled_from(SEEDS), st.lists(mutation, min_size=1, max_size=4), st.sampled_from(BUILDS),
       st.sampled_from([7, 64, 1 << 20]), st.booleans())
def test_mutated_logs_raise_only_parity_errors(tmp_path_factory, monkeypatch, seed, muts, build, chunk, gz):
    data = _mutate(seed, muts)
    with monkeypatch.context() as m:
        _use_build(m, build)
        if gz:
            _check(tmp_path_factory, gzip.compress(data, mtime=0), "run.log.gz", chunk)
        else:
            _check(tmp_path_factory, data, "run.log", chunk)


@fuzz_settings()
@given(st.sampled_from(SEEDS), st.lists(mutation, min_size=0, max_size=3), st.sampled_from(BUILDS))
def test_mutated_gzip_streams_raise_only_parity_errors(tmp_path_factory, monkeypatch, seed, muts, build):
    """The mutations hit the compressed bytes: corrupt headers, deflate streams, CRCs, lengths."""
    data = _mutate(gzip.compress(seed, mtime=0), muts)
    with monkeypatch.context() as m:
        _use_build(m, build)
        _check(tmp_path_factory, data, "run.log.gz", 1 << 20)


@fuzz_settings()
@given(st.binary(max_size=2000), st.sampled_from(BUILDS))
def test_random_bytes_raise_only_parity_errors(tmp_path_factory, monkeypatch, data, build):
    with monkeypatch.context() as m:
        _use_build(m, build)
        _check(tmp_path_factory, b"TRACE_C: " + data, "run.log", 64)


@fuzz_settings()
@given(st.lists(st.one_of(st.sampled_from(HOSTILE), st.binary(max_size=40)), min_size=1, max_size=6),
       st.sampled_from(BUILDS))
def test_parse_lines_and_parse_value_raise_only_parity_errors(monkeypatch, parts, build):
    value = b"".join(parts)
    with monkeypatch.context() as m:
        _use_build(m, build)
        only_parity_errors(parse_value, value)
        only_parity_errors(lambda: list(parse_lines([b"TRACE_C: x=" + value, b"TRACE_C_ITER " + value], "TRACE_C")))
