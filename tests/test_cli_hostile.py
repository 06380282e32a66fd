"""Every verb, fed a corrupt or hostile input, exits 2 and names the file; never 1, never a traceback.

Exit codes are parity's contract with CI: 1 means "divergence found" and nothing else, 2 means
"could not compare", 3 means parity itself failed.
"""

import gzip
import json
import os
import struct
import sys
import zipfile

import numpy as np
import pytest

import parity
from parity.cli import EXIT_ERROR, EXIT_INTERNAL, main


@pytest.fixture
def good(make_trace):
    return make_trace("good.trace", {"a": np.arange(4.0), "b": np.ones((2, 3), np.float32)})


def _corrupt_manifest(trace, payload: bytes) -> str:
    with open(os.path.join(trace, "manifest.json"), "wb") as f:
        f.write(payload)
    return os.path.join(trace, "manifest.json")


def _run(capsys, argv):
    code = main(argv)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text, text
    return code, text


def _assert_input_error(capsys, argv, named):
    code, text = _run(capsys, argv)
    assert code == EXIT_ERROR, f"{argv} exited {code}: {text}"
    assert named in text, f"{named!r} not named in: {text}"
    return text


MANIFEST_PAYLOADS = {
    "garbage": b"\x00\xff\xfe binary",
    "deep": b"[" * 100_000 + b"]" * 100_000,
    "truncated": b'{"schema": "parity.trace", "stages": [',
    "wrong-types": None,  # filled in from the real manifest below
}


@pytest.mark.parametrize("kind", sorted(MANIFEST_PAYLOADS))
@pytest.mark.parametrize("side", ["ref", "cand"])
def test_diff_corrupt_trace(good, make_trace, tmp_path, capsys, kind, side):
    bad = make_trace("bad.trace", {"a": np.arange(4.0), "b": np.ones((2, 3), np.float32)})
    payload = MANIFEST_PAYLOADS[kind]
    if payload is None:
        doc = json.load(open(os.path.join(bad, "manifest.json")))
        doc["stages"][0]["shape"] = [1e999] if "shape" in doc["stages"][0] else "x"
        payload = json.dumps(doc).replace("Infinity", "1e999").encode()
    _corrupt_manifest(bad, payload)
    argv = ["diff", good, bad] if side == "cand" else ["diff", bad, good]
    _assert_input_error(capsys, argv, "bad.trace")


def test_show_corrupt_trace(make_trace, capsys):
    bad = make_trace("bad.trace", {"a": np.arange(4.0)})
    _corrupt_manifest(bad, b"{" * 50_000)
    _assert_input_error(capsys, ["show", bad], "bad.trace")


def test_show_verify_truncated_data(make_trace, capsys):
    bad = make_trace("bad.trace", {"a": np.arange(4000.0)})
    data = [os.path.join(dp, f) for dp, _, fs in os.walk(bad) for f in fs if f.endswith(".safetensors")]
    with open(data[0], "r+b") as f:
        f.truncate(100)
    code, text = _run(capsys, ["show", bad, "--verify"])
    assert code == EXIT_ERROR and "safetensors" in text


def test_show_data_header_hostile(make_trace, capsys):
    bad = make_trace("bad.trace", {"a": np.arange(4.0)})
    data = [os.path.join(dp, f) for dp, _, fs in os.walk(bad) for f in fs if f.endswith(".safetensors")][0]
    header = b'{"a":{"dtype":"F64","shape":[1e999],"data_offsets":[0,1e999]}}'
    with open(data, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + b"\0" * 32)
    _assert_input_error(capsys, ["show", bad, "--stats"] if False else ["show", bad], "bad.trace")


@pytest.mark.parametrize("config_bytes, named", [
    (b"\xff\xfe[tolerance]\n", "c.toml"),
    (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "c.toml"),
    (b'[rename]\n"a(.*)" = "\\\\2"\n', "c.toml"),
    (b"[tolerance]\nrtol = \"abc\"\n", "c.toml"),
])
def test_diff_corrupt_config(good, tmp_path, capsys, config_bytes, named):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(config_bytes)
    _assert_input_error(capsys, ["diff", good, good, "--config", str(cfg)], named)


def _import_inputs(tmp_path):
    cases = {}
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 8)
    cases["binary garbage"] = ([str(garbage)], "garbage.bin")
    gz = tmp_path / "run.log.gz"
    gz.write_bytes(gzip.compress(b"TRACE: x=1\n" * 100)[:40] + b"\x00garbage")
    cases["corrupt gz"] = ([str(gz), "--prefix", "TRACE"], "run.log.gz")
    npz = tmp_path / "bad.npz"
    with zipfile.ZipFile(npz, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", 40) + b"{'descr': '<f8', 'shape': (1e999,), " + b"}")
    cases["npz bad header"] = ([str(npz)], "bad.npz")
    npy = tmp_path / "bad.npy"
    npy.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + b"{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999999,), }" + b" " * 43 + b"\n")
    cases["npy huge shape"] = ([str(npy)], "bad.npy")
    dump = tmp_path / "dump"
    (dump / "layer-0").mkdir(parents=True)
    np.arange(3, dtype=np.float32).tofile(dump / "layer-0" / "x.bin")
    (dump / "order.txt").write_bytes(b"layer-0/x.bin\n\xff\xfe\n")
    cases["order.txt invalid utf-8"] = ([str(dump)], "order.txt")
    log = tmp_path / "deep.log"
    log.write_text("TRACE: x=" + "[" * 5000 + "1" + "]" * 5000 + "\nTRACE: y=0x1p99999\n")
    cases["hostile log"] = ([str(log), "--prefix", "TRACE"], None)  # imports what it can (exit 0)
    return cases


def test_import_corrupt_inputs(tmp_path, capsys):
    for name, (args, named) in _import_inputs(tmp_path).items():
        out = str(tmp_path / f"out-{len(name)}-{abs(hash(name)) % 1000}.trace")
        code, text = _run(capsys, ["import", *args, "--out", out])
        if named is None:
            assert code in (0, EXIT_ERROR), (name, code, text)
        else:
            assert code == EXIT_ERROR, (name, code, text)
            assert named in text, (name, text)


def test_import_symlink_out_of_dump(tmp_path, capsys):
    outside = tmp_path / "secret"
    outside.mkdir()
    np.arange(3, dtype=np.float32).tofile(outside / "x.bin")
    dump = tmp_path / "dump"
    (dump / "layer-0").mkdir(parents=True)
    os.symlink(outside / "x.bin", dump / "layer-0" / "x.bin")
    code, text = _run(capsys, ["import", str(dump), "--out", str(tmp_path / "o.trace")])
    assert code == EXIT_ERROR and "x.bin" in text and "symbolic link" in text


def test_export_corrupt_trace_and_planted_link(good, make_trace, tmp_path, capsys):
    bad = make_trace("bad.trace", {"a": np.arange(4.0)})
    _corrupt_manifest(bad, b"\x00" * 10)
    _assert_input_error(capsys, ["export", bad, "--format", "npz", "--out", str(tmp_path / "x.npz")], "bad.trace")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for planted in ("out.npz.tmp", "out.npz.tmp.npz"):
        os.symlink(victim, tmp_path / planted)
    code, text = _run(capsys, ["export", good, "--format", "npz", "--out", str(tmp_path / "out.npz")])
    assert code in (0, EXIT_ERROR), text
    assert victim.read_text() == "keep me"


def test_capture_run_missing_program(tmp_path, capsys):
    _assert_input_error(capsys, ["capture", "run", "--prefix", "T", "--out", str(tmp_path / "o.trace"), "--",
                                 str(tmp_path / "no-such-program")], "no-such-program")


def test_capture_run_binary_output(tmp_path, capsys):
    code, text = _run(capsys, ["capture", "run", "--prefix", "T", "--out", str(tmp_path / "o.trace"), "--",
                               sys.executable, "-c", "import sys; sys.stdout.buffer.write(bytes(range(256))*64)"])
    assert code == EXIT_ERROR, text  # printed no trace line


def test_capture_hf_corrupt_model(tmp_path, capsys):
    pytest.importorskip("transformers")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_bytes(b"{\xff not json")
    _assert_input_error(capsys, ["capture", "hf", str(model), "--prompt", "hi", "--out", str(tmp_path / "o.trace")], "model")


def test_capture_onnx_corrupt_model(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x07garbage" * 20)
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.ones(3, np.float32))
    _assert_input_error(capsys, ["capture", "onnx", str(model), "--inputs", str(inputs), "--out", str(tmp_path / "o.trace")], "m.onnx")


def test_bundle_verify_corrupt(tmp_path, capsys):
    code, text = _run(capsys, ["bundle", "new", "x", "--root", str(tmp_path)])
    assert code == 0, text
    path = text.strip().splitlines()[-1].strip()
    with open(os.path.join(path, "bundle.json"), "wb") as f:
        f.write(b"\xff\xfe\x00 not json" + b"[" * 50_000)
    _assert_input_error(capsys, ["bundle", "verify", path], "bundle.json")
    _assert_input_error(capsys, ["bundle", "close", path], "bundle.json")


def test_internal_error_exits_3(monkeypatch, good, capsys):
    import parity.commands.diff as core

    def boom(*a, **k):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(core, "compare_traces", boom)
    code, text = _run(capsys, ["diff", good, good])
    assert code == EXIT_INTERNAL
    assert "internal error: ZeroDivisionError: a bug" in text and "report" in text


def test_os_error_exits_2(monkeypatch, good, capsys):
    import parity.commands.diff as core

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", "/x/manifest.json")
    monkeypatch.setattr(core, "compare_traces", denied)
    code, text = _run(capsys, ["diff", good, good])
    assert code == EXIT_ERROR and "/x/manifest.json: Permission denied" in text


def test_leftover_boundaries(tmp_path, capsys):
    """Smaller holes found while hardening: each is a ParityError (exit 2), never a raw exception."""
    import numpy as np
    import pytest

    import parity
    from parity.compare.tolerance import ToleranceRules
    from parity.errors import ConfigError, StageKeyError, UsageError

    path = tmp_path / "t.trace"
    with parity.record(path, command=["prog", "--token", "s3cret"]):
        with pytest.raises(UsageError, match="does not fit in 64 bits"):
            parity.tap("big", 10**400)
        parity.tap("ok", np.ones(2))
    t = parity.load_trace(path)
    assert t.complete and t.keys() == ["ok"] and "s3cret" not in json.dumps(t.manifest)
    with pytest.raises(ConfigError, match="finite"):
        ToleranceRules.build({"cosine_min": float("nan")})
    w = parity.TraceWriter(tmp_path / "b.trace")
    with pytest.raises(StageKeyError):
        w.add_batch(["x"], [(1,)], np.ones(1), indices=[{"i": 10**30}])
    w.close()
