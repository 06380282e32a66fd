"""The trace store: golden bytes, exact round trips, determinism, crash safety, safe keys."""

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import parity
from parity.errors import StageKeyError, TraceError, TraceFormatError, UsageError
from parity.trace import DTYPES, TraceWriter, load_trace
from parity.trace.dtypes import bits_view, storage_dtype

ml_dtypes = pytest.importorskip("ml_dtypes")


def _files(path):
    out = {}
    for root, _, names in os.walk(path):
        for n in names:
            full = os.path.join(root, n)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = f.read()
    return out


# -- golden bytes ------------------------------------------------------------------------------

def test_golden_bytes_of_data_file_and_manifest(tmp_path):
    path = tmp_path / "g.trace"
    with TraceWriter(path, meta={"impl": "ref"}, command=["prog", "--x"], volatile=False) as w:
        w.add("a", np.array([1.0, -0.0], dtype=np.float32), axes=["n"], units="m")
        w.add("b", np.array(7, dtype=np.int64))
        w.add("a", np.array([2], dtype=np.uint8))
    data = (path / "data" / "000000.safetensors").read_bytes()
    header = (b'{"__metadata__":{"format":"parity-trace"},'
              b'"b":{"dtype":"I64","shape":[],"data_offsets":[0,8]},'
              b'"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},'
              b'"a#1":{"dtype":"U8","shape":[1],"data_offsets":[16,17]}}')
    header += b" " * (-(8 + len(header)) % 8)
    expected = (struct.pack("<Q", len(header)) + header + struct.pack("<q", 7) + struct.pack("<ff", 1.0, -0.0) + b"\x02")
    assert data == expected
    manifest = json.loads((path / "manifest.json").read_text())
    env = manifest.pop("environment")
    assert set(env) == {"python", "numpy", "platform", "machine"}
    assert manifest == {
        "format": "parity-trace", "schema_version": 1, "tool_version": parity.__version__, "producer": "parity.record",
        "complete": True, "meta": {"impl": "ref"}, "command": ["prog", "--x"],
        "files": {"data/000000.safetensors": {"bytes": len(expected), "crc32": f"{zlib.crc32(expected):08x}"}},
        "stages": [
            {"key": "a", "kind": "tensor", "dtype": "F32", "shape": [2], "axes": ["n"], "units": "m", "file": "data/000000.safetensors"},
            {"key": "b", "kind": "tensor", "dtype": "I64", "shape": [], "file": "data/000000.safetensors"},
            {"key": "a#1", "kind": "tensor", "dtype": "U8", "shape": [1], "occurrence": 1, "file": "data/000000.safetensors"},
        ],
    }
    assert sorted(os.listdir(path)) == ["data", "manifest.json"]


def test_safetensors_library_reads_our_files(tmp_path):
    from safetensors import safe_open

    path = tmp_path / "s.trace"
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    with TraceWriter(path) as w:
        w.add("layers.0.x", a)
        w.add("y", np.float64(2.5))
    with safe_open(str(path / "data" / "000000.safetensors"), framework="numpy") as f:
        assert sorted(f.keys()) == ["layers.0.x", "y"]
        np.testing.assert_array_equal(f.get_tensor("layers.0.x"), a)
        assert f.get_tensor("y") == 2.5


# -- exact round trips -------------------------------------------------------------------------

_SPECIAL = {
    "F64": [np.nan, -np.nan, np.inf, -np.inf, -0.0, 5e-324, 2.2250738585072014e-308],
    "F32": [np.nan, np.inf, -np.inf, -0.0, 1e-45, 1.1754942e-38],
    "F16": [np.nan, np.inf, -np.inf, -0.0, 6e-8],
}


def _payload_nan(code):
    # A NaN with a non-default payload and the sign bit set: must survive bit for bit.
    d = DTYPES[code]
    bits = {"F64": 0xFFF0000000000123, "F32": 0xFFC01234, "F16": 0xFE01, "BF16": 0xFFC1}[code]
    return np.array([bits], dtype=np.dtype(d.bits))


@st.composite
def arrays(draw):
    code = draw(st.sampled_from(["F64", "F32", "F16", "BF16", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL"]))
    d = DTYPES[code]
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=3)))
    n = int(np.prod(shape, dtype=np.int64))
    raw = draw(st.binary(min_size=n * d.itemsize, max_size=n * d.itemsize))
    bits = np.frombuffer(raw, dtype=np.dtype(d.bits)).copy()
    if code == "BOOL":
        bits = bits % 2
    if d.kind == "f" and n:
        specials = [_payload_nan(code)] + ([np.array(_SPECIAL[code], dtype=d.numpy).view(d.bits)] if code in _SPECIAL else [])
        pool = np.concatenate(specials)
        picks = draw(st.lists(st.integers(0, n - 1), max_size=min(n, 4)))
        for i, p in enumerate(picks):
            bits[p] = pool[i % len(pool)]
    return code, bits.view(storage_dtype(d)).reshape(shape)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(arrays(), min_size=1, max_size=5), small_buffer=st.booleans())
def test_round_trip_is_bit_exact(tmp_path, data, small_buffer):
    path = tmp_path / f"rt{np.random.randint(1 << 30)}.trace"
    with TraceWriter(path, buffer_bytes=16 if small_buffer else 1 << 20) as w:
        for i, (_, arr) in enumerate(data):
            w.add(f"s{i}", arr)
    t = load_trace(path)
    assert t.complete and len(t) == len(data)
    for i, (code, arr) in enumerate(data):
        got = t[f"s{i}"]
        st_ = t.stage(f"s{i}")
        assert st_.dtype == code and got.shape == arr.shape and got.dtype == arr.dtype
        d = DTYPES[code]
        assert bits_view(np.ascontiguousarray(got), d).tobytes() == bits_view(np.ascontiguousarray(arr), d).tobytes()


def test_bf16_without_ml_dtypes_reads_bit_patterns(tmp_path, monkeypatch):
    path = tmp_path / "b.trace"
    arr = np.array([1.5, -2.0, np.nan], dtype=ml_dtypes.bfloat16)
    with TraceWriter(path) as w:
        w.add("x", arr)
    import parity.trace.dtypes as dt

    monkeypatch.setattr(dt, "_ml_dtypes", lambda: None)
    got = load_trace(path)["x"]
    assert got.dtype == np.uint16
    assert got.tobytes() == arr.tobytes()
    np.testing.assert_array_equal(dt.to_float64(got, DTYPES["BF16"])[:2], [1.5, -2.0])


def test_large_stage_is_streamed_to_its_own_shard(tmp_path):
    path = tmp_path / "big.trace"
    big = np.arange(100_000, dtype=np.float64)[::2]  # non-contiguous: written in chunks
    with TraceWriter(path, buffer_bytes=1024) as w:
        w.add("small", np.ones(3))
        w.add("big", big)
        w.add("after", np.zeros(2))
    t = load_trace(path)
    assert t.keys() == ["small", "big", "after"]
    np.testing.assert_array_equal(t["big"], big)
    assert len({t.stage(k).file for k in t.keys()}) == 3


def test_tapped_array_is_snapshotted(tmp_path):
    path = tmp_path / "snap.trace"
    a = np.zeros(4)
    with parity.record(path):
        parity.tap("a", a)
        a[:] = 5
    np.testing.assert_array_equal(load_trace(path)["a"], np.zeros(4))


def test_arrays_are_memory_mapped_and_read_only(tmp_path):
    path = tmp_path / "m.trace"
    with TraceWriter(path) as w:
        w.add("x", np.arange(10.0))
    x = load_trace(path)["x"]
    assert not x.flags.writeable
    assert not x.flags.owndata


# -- determinism -------------------------------------------------------------------------------

def _capture(path):
    rng = np.random.default_rng(0)
    with parity.record(path, meta={"run": "x"}, command=["same"]):
        for i in range(5):
            with parity.scope("layers", i):
                parity.tap("h", rng.normal(size=(3, 4)).astype(np.float32), axes=("a", "b"))
                parity.tap("note", f"layer {i}")
        parity.tap("big", rng.normal(size=300_000))


def test_two_captures_are_byte_identical(tmp_path):
    a, b = tmp_path / "a.trace", tmp_path / "b.trace"
    _capture(a)
    time.sleep(0.01)
    _capture(b)
    fa, fb = _files(a), _files(b)
    assert "run.json" in fa  # volatile facts live apart from the manifest
    fa.pop("run.json"), fb.pop("run.json")
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa)


# -- crash safety ------------------------------------------------------------------------------

def test_killed_writer_leaves_readable_incomplete_trace(tmp_path):
    path = tmp_path / "crash.trace"
    child = textwrap.dedent(f"""
        import numpy as np, parity, sys, time
        with parity.record({str(path)!r}, buffer_bytes=4096):
            for i in range(100000):
                parity.tap("x", np.full(256, i, dtype=np.float32))
                if i == 40:
                    print("ready", flush=True)
                if i > 40:
                    time.sleep(0.001)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t = load_trace(path)
    assert not t.complete
    assert t.manifest["incomplete_reason"] == "capture was interrupted"
    assert len(t) >= 40
    for i, stage in enumerate(t):
        assert stage.key == ("x" if i == 0 else f"x#{i}")
        np.testing.assert_array_equal(t.array(stage), np.full(256, i, dtype=np.float32))
    assert t.verify() == []


def test_exception_inside_record_marks_trace_incomplete(tmp_path):
    path = tmp_path / "err.trace"
    with pytest.raises(ZeroDivisionError):
        with parity.record(path):
            parity.tap("a", np.ones(2))
            1 / 0
    t = load_trace(path)
    assert not t.complete and t.keys() == ["a"]
    assert "ZeroDivisionError" in t.manifest["incomplete_reason"]


# -- keys --------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["../x", "a/b", "a\\b", "..", ".hidden", "a..b", "a b", "x\x00", "", "/etc/passwd",
                                 "a.", "k[i=../x]", "a#1"[:0] or "#1", "C:\\x"])
def test_unsafe_keys_are_rejected(tmp_path, key):
    with TraceWriter(tmp_path / "k.trace") as w:
        with pytest.raises(StageKeyError):
            w.add(key, np.ones(1))
    assert os.listdir(tmp_path) == ["k.trace"]


def test_key_forms(tmp_path):
    path = tmp_path / "keys.trace"
    with parity.record(path):
        with parity.scope("enc"):
            with parity.scope("layers", 3):
                parity.tap("attn_probs", np.ones(1))
        parity.tap("k_frac", 1.0, phi_tic=4)
        parity.tap("k_frac", 2.0, phi_tic=4)
        parity.tap("rot", 1.0, step=2, layer=0)
    t = load_trace(path)
    assert t.keys() == ["enc.layers.3.attn_probs", "k_frac[phi_tic=4]", "k_frac[phi_tic=4]#1", "rot[layer=0,step=2]"]
    assert t.stage("rot[layer=0,step=2]").indices == {"layer": 0, "step": 2}
    assert t.stage("k_frac[phi_tic=4]#1").occurrence == 1


def test_manifest_pointing_outside_the_trace_is_rejected(tmp_path):
    path = tmp_path / "evil.trace"
    with TraceWriter(path) as w:
        w.add("x", np.ones(2))
    m = json.loads((path / "manifest.json").read_text())
    m["files"] = {"../../outside.safetensors": m["files"]["data/000000.safetensors"]}
    m["stages"][0]["file"] = "../../outside.safetensors"
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(TraceFormatError, match="data/NNNNNN.safetensors"):
        load_trace(path)


# -- recording API -----------------------------------------------------------------------------

def test_tap_outside_recording_is_a_noop_returning_value():
    v = np.ones(3)
    assert parity.tap("x", v) is v
    with parity.scope("layers", 1):
        assert parity.tap("y", 2.0) == 2.0


def test_scalars_sequences_and_text(tmp_path):
    path = tmp_path / "v.trace"
    with parity.record(path):
        parity.tap("i", 3)
        parity.tap("f", 0.1)
        parity.tap("b", True)
        parity.tap("seq", [[1.0, 2.0], [3.0, 4.0]])
        parity.tap("msg", "converged")
    t = load_trace(path)
    assert t["i"].dtype == np.int64 and t["i"] == 3
    assert t["f"].dtype == np.float64 and t["f"] == 0.1
    assert t["b"].dtype == np.bool_
    assert t["seq"].shape == (2, 2)
    assert t["msg"] == "converged" and t.stage("msg").kind == "text"


def test_unstorable_values_and_bad_axes_are_usage_errors(tmp_path):
    with parity.record(tmp_path / "u.trace"):
        with pytest.raises(UsageError, match='stage "c": dtype complex128 cannot be stored'):
            parity.tap("c", np.ones(2, dtype=complex))
        with pytest.raises(UsageError, match="axes"):
            parity.tap("a", np.ones((2, 3)), axes=("x",))


def test_writer_refuses_foreign_directory_and_replaces_old_trace(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(TraceError, match="not a parity trace"):
        TraceWriter(foreign)
    assert (foreign / "precious.txt").read_text() == "keep me"
    path = tmp_path / "t.trace"
    with TraceWriter(path) as w:
        w.add("old", np.ones(1))
    with TraceWriter(path) as w:
        w.add("new", np.ones(1))
    assert load_trace(path).keys() == ["new"]


def test_torch_tensors_keep_their_dtype(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "t.trace"
    x = torch.tensor([1.5, -2.25, 3.0], dtype=torch.bfloat16)
    with parity.record(path):
        parity.tap("bf", x)
        parity.tap("h", x.to(torch.float16).reshape(3, 1).t())  # non-contiguous
        parity.tap("g", torch.ones(2, requires_grad=True) * 2)
    t = load_trace(path)
    assert t.stage("bf").dtype == "BF16" and t.stage("h").dtype == "F16" and t.stage("h").shape == (1, 3)
    assert t["bf"].view(np.uint16).tobytes() == x.view(torch.int16).numpy().tobytes()
    np.testing.assert_array_equal(t["g"], [2.0, 2.0])


# -- corrupt, truncated and foreign files -------------------------------------------------------

@pytest.fixture
def good_trace(tmp_path):
    path = tmp_path / "good.trace"
    with TraceWriter(path) as w:
        w.add("x", np.arange(100.0))
    return path


def test_truncated_data_file(good_trace):
    f = good_trace / "data" / "000000.safetensors"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(TraceFormatError, match=r"000000\.safetensors: .*truncated"):
        load_trace(good_trace)


def test_missing_data_file(good_trace):
    os.remove(good_trace / "data" / "000000.safetensors")
    with pytest.raises(TraceFormatError, match="data file is missing"):
        load_trace(good_trace)


def test_foreign_data_file(good_trace):
    (good_trace / "data" / "000000.safetensors").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(TraceFormatError, match="000000.safetensors"):
        load_trace(good_trace)


def test_corrupt_manifest(good_trace):
    (good_trace / "manifest.json").write_text("{not json")
    with pytest.raises(TraceFormatError, match=r"manifest.json: is not valid JSON"):
        load_trace(good_trace)


def test_foreign_manifest_and_future_version(good_trace):
    (good_trace / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(TraceFormatError, match="not a parity trace manifest"):
        load_trace(good_trace)
    (good_trace / "manifest.json").write_text('{"format": "parity-trace", "schema_version": 99}')
    with pytest.raises(TraceFormatError, match="schema_version 99"):
        load_trace(good_trace)


def test_not_a_trace(tmp_path):
    with pytest.raises(TraceFormatError, match="no such trace directory"):
        load_trace(tmp_path / "nope.trace")
    (tmp_path / "file.trace").write_text("x")
    with pytest.raises(TraceFormatError, match="is not a trace directory"):
        load_trace(tmp_path / "file.trace")
    (tmp_path / "empty.trace").mkdir()
    with pytest.raises(TraceFormatError, match="has no manifest.json"):
        load_trace(tmp_path / "empty.trace")


def test_changed_byte_is_caught_by_verify(good_trace):
    f = good_trace / "data" / "000000.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))
    problems = load_trace(good_trace).verify()
    assert len(problems) == 1 and "crc32" in problems[0] and "000000.safetensors" in problems[0]


def test_verify_checks_the_sha256_of_traces_written_before_crc32(good_trace):
    """Earlier versions gave each file a sha256; such manifests still verify, and a change is caught."""
    f = good_trace / "data" / "000000.safetensors"
    mpath = good_trace / "manifest.json"
    manifest = json.loads(mpath.read_text())
    info = manifest["files"]["data/000000.safetensors"]
    assert info["crc32"] == f"{zlib.crc32(f.read_bytes()):08x}"
    del info["crc32"]
    info["sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()
    mpath.write_text(json.dumps(manifest))
    assert load_trace(good_trace).verify() == []
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0xFF
    f.write_bytes(bytes(raw))
    problems = load_trace(good_trace).verify()
    assert len(problems) == 1 and "sha256" in problems[0]
    del manifest["files"]["data/000000.safetensors"]["sha256"]
    mpath.write_text(json.dumps(manifest))
    assert "gives no checksum" in load_trace(good_trace).verify()[0]


def test_unknown_stage_lookup(good_trace):
    t = load_trace(good_trace)
    with pytest.raises(parity.StageNotFoundError, match='stage "nope": no such stage'):
        t["nope"]


def test_big_endian_arrays_keep_their_values(tmp_path):
    path = tmp_path / "be.trace"
    with parity.record(path):
        parity.tap("a", np.arange(3, dtype=">f4"))
        parity.tap("b", np.array([1, -2, 3], dtype=">i8"))
    t = parity.load_trace(path)
    assert t["a"].tolist() == [0.0, 1.0, 2.0] and t["a"].dtype == np.float32
    assert t["b"].tolist() == [1, -2, 3]
