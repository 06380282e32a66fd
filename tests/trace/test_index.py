"""The stage index (index.safetensors, schema version 2): traces of many stages open fast and read
back exactly what a trace that lists its stages in the manifest reads; a corrupt index is a
TraceFormatError naming the file and the stage; an interrupted capture stays readable."""

import io
import json
import os
import zlib

import numpy as np
import pytest

import parity.trace.writer as writer_mod
from parity.errors import StageNotFoundError, TraceFormatError
from parity.trace import TraceWriter, load_trace
from parity.trace.index import INDEX_THRESHOLD, StageEntries
from parity.trace.index_writer import write_columns
from parity.trace.packed import PackedStage
from parity.trace.safetensors_header import parse_header, read_header


def _write_mixed(path: str, n: int, **kw) -> None:
    """n solver-like stages through every way in: add_batch (two dtypes, int and text indices,
    provenance columns, text stages, repeated keys), add (axes, units, large stages), add_packed."""
    with TraceWriter(path, volatile=False, buffer_bytes=1 << 20, **kw) as w:
        half = n // 2
        keys = [f"iter.{i}.residual" for i in range(half)]
        shapes = [(4,) if i % 7 else (2, 3) for i in range(half)]
        data = np.arange(sum(int(np.prod(s)) for s in shapes), dtype=np.float32)
        w.add_batch(keys, shapes, data, provenance={"line": list(range(half))})
        w.add_batch([f"step[k={i}]" for i in range(1000)], [(1,)] * 1000, np.arange(1000, dtype=np.int8))
        w.add_batch(["e", "e", "note", "e"], [(), (), "converged", ()], np.arange(3.0),
                    indices=[{"it": 1.5}, None, {"mode": "x"}, {"it": True}])
        w.add("big", np.ones(300_000), axes=["x"], units="m")  # a shard of its own
        for i in range(300):  # F64, F32 and I8 in one shard: stored widest first
            w.add("mix", np.full((2,), i % 100, dtype=[np.float64, np.float32, np.int8][i % 3]),
                  indices={"i": i} if i % 2 else None, provenance={"src": f"m.py:{i}"} if i % 5 == 0 else None)
        w.add("status", "done", units="flag")
        arena = np.arange(64, dtype=np.uint8)
        w.add_packed([PackedStage("p", "F32", (2, 2), 0, 16, axes=["a", "b"]),
                      PackedStage("p", "U8", (48,), 16, 48, provenance={"module": "m"}),
                      PackedStage("pt", "", (), 64, 0, text="packed note", indices={"s": "v"})], arena)
        rest = n - len(w.keys)
        w.add_batch([f"tail.{i}" for i in range(rest)], [(1,)] * rest, np.arange(rest, dtype=np.float64))


def _same(a, b) -> None:
    assert len(a) == len(b) and a.keys() == b.keys()
    assert list(a) == list(b)
    assert a.manifest["stages"] == b.manifest["stages"]
    for s in a:
        x, y = a.array(s), b[s.key]
        if isinstance(x, str):
            assert x == y
        else:
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), s.key


def test_indexed_round_trip_is_exact(tmp_path):
    n = 200_000
    plain, indexed = str(tmp_path / "plain.trace"), str(tmp_path / "indexed.trace")
    _write_mixed(plain, n, index=False)
    _write_mixed(indexed, n)  # above INDEX_THRESHOLD: indexed by default
    tp, ti = load_trace(plain), load_trace(indexed)
    assert n > INDEX_THRESHOLD and len(ti) == n
    assert tp.manifest["schema_version"] == 1 and "index" not in tp.manifest
    assert ti.manifest["schema_version"] == 2 and ti.manifest["index"]["stages"] == n
    assert isinstance(ti.manifest["stages"], StageEntries)
    assert not os.path.exists(os.path.join(indexed, "stages.json.tmp"))
    # the data files are byte for byte the same; the manifest lists no stages
    assert tp.manifest["files"] == ti.manifest["files"]
    assert "stages" not in json.loads(open(os.path.join(indexed, "manifest.json")).read())
    _same(tp, ti)
    assert ti.verify() == []
    # every stage's bytes in the index are where its data file's own header puts them
    for rel in ti.manifest["files"]:
        entries, _, _ = read_header(os.path.join(indexed, rel))
        for key, e in entries.items():
            got = ti._headers[rel][0][key]
            assert (got.dtype, got.shape, got.begin, got.end) == (e.dtype, e.shape, e.begin, e.end), key


def test_stage_api_on_an_indexed_trace(tmp_path):
    path = str(tmp_path / "t.trace")
    _write_mixed(path, 5000, index=True)
    t = load_trace(path)
    s = t.stage("e[it=true]")
    assert (s.occurrence, s.indices, s.kind) == (0, {"it": True}, "tensor") and t["e[it=true]"].item() == 2.0
    assert t.stage("e[it=1.5]").indices == {"it": 1.5} and t.stage("mix[i=3]").indices == {"i": 3}
    assert t.stage("step[k=7]").indices == {"k": "7"} and t.stage("mix#1").occurrence == 1
    assert t.stage("p#1").provenance == {"module": "m"} and t.stage("p#1").occurrence == 1
    assert t.stage("pt[s=v]").indices == {"s": "v"} and t["pt[s=v]"] == "packed note"
    assert t["note[mode=x]"] == "converged" and t.stage("note[mode=x]").kind == "text"
    assert t.stage("big").axes == ("x",) and t.stage("big").units == "m" and t["big"].shape == (300_000,)
    assert t.stage("iter.5.residual").provenance == {"line": 5} and t.stage("iter.7.residual").shape == (2, 3)
    assert "e" in t and "nope" not in t and 3 not in t
    with pytest.raises(StageNotFoundError, match="5000 stages"):
        t.stage("nope")
    last = t.keys()[-1]
    assert last.startswith("tail.") and t.manifest["stages"][-1] == {"key": last, "kind": "tensor", "dtype": "F64",
                                                                     "shape": [1], "file": t.stage(last).file}
    assert t.manifest["stages"][:2] == list(t.manifest["stages"])[:2] and len(t.manifest["stages"]) == 5000
    assert [s.position for s in t] == list(range(5000))
    assert repr(t) == f"<Trace {path!r}: 5000 stages, complete>"


def test_threshold_and_small_traces_unchanged(tmp_path, monkeypatch):
    monkeypatch.setattr(writer_mod, "INDEX_THRESHOLD", 3)
    for n, version in ((3, 1), (4, 2)):
        path = str(tmp_path / f"{n}.trace")
        with TraceWriter(path, volatile=False) as w:
            w.add_batch([f"x{i}" for i in range(n)], [()] * n, np.arange(float(n)))
        m = json.load(open(os.path.join(path, "manifest.json")))
        assert m["schema_version"] == version and ("stages" in m) == (version == 1)
        assert os.path.exists(os.path.join(path, "index.safetensors")) == (version == 2)
        assert load_trace(path).keys() == [f"x{i}" for i in range(n)]
    # replacing an indexed trace by a small one leaves no index behind
    with TraceWriter(str(tmp_path / "4.trace"), volatile=False, index=False) as w:
        w.add("y", 1.0)
    assert not os.path.exists(tmp_path / "4.trace" / "index.safetensors")
    assert load_trace(str(tmp_path / "4.trace")).keys() == ["y"]


def test_interrupted_indexed_capture_is_readable(tmp_path):
    path = str(tmp_path / "cut.trace")
    w = TraceWriter(path, index=True, buffer_bytes=1)
    w.add_batch(["a", "b"], [(2,), "hi"], np.arange(2.0))
    w.add("c", np.ones(3, np.float32), axes=["x"])
    w._journal.flush()  # what a killed capture leaves: the first manifest and the journal
    w._journal.close()
    t = load_trace(path)
    assert not t.complete and t.keys() == ["a", "b", "c"] and t["b"] == "hi" and t.stage("c").axes == ("x",)
    assert t.manifest["schema_version"] == 1
    # killed after writing the index but before the final manifest: the journal still rules
    with open(os.path.join(path, "index.safetensors"), "wb") as f:
        f.write(b"half an index")
    assert load_trace(path).keys() == ["a", "b", "c"]
    # closed as failed: an indexed, incomplete trace
    w2 = TraceWriter(str(tmp_path / "failed.trace"), index=True)
    w2.add("a", 1.0)
    w2.close(complete=False, reason="boom")
    t2 = load_trace(str(tmp_path / "failed.trace"))
    assert not t2.complete and t2.manifest["incomplete_reason"] == "boom" and t2.keys() == ["a"]


def test_remote_indexed_trace(tmp_path):
    pytest.importorskip("fsspec")
    from parity.trace.remote import upload_trace

    path = str(tmp_path / "r.trace")
    _write_mixed(path, 3000, index=True)
    url = upload_trace(path, "memory://h11/r.trace", overwrite=True)
    _same(load_trace(path), load_trace(url))


# -- corrupt indexes ------------------------------------------------------------------------------------------

def _columns(path: str) -> dict[str, np.ndarray]:
    raw = open(os.path.join(path, "index.safetensors"), "rb").read()
    entries, _, start = parse_header(lambda a, b: raw[a:b], len(raw), "index")
    dt = {"I64": "<i8", "I32": "<i4", "U8": "u1"}
    return {k: np.frombuffer(raw, dt[e.dtype], e.shape[0], start + e.begin).copy() for k, e in entries.items()}


def _rewrite(path: str, cols: dict[str, np.ndarray], stages: int | None = None) -> None:
    """Write ``cols`` as the index and make the manifest agree with it (size, CRC, count)."""
    buf = io.BytesIO()
    write_columns(buf, cols)
    with open(os.path.join(path, "index.safetensors"), "wb") as f:
        f.write(buf.getvalue())
    mpath = os.path.join(path, "manifest.json")
    m = json.load(open(mpath))
    m["index"].update(bytes=len(buf.getvalue()), crc32=f"{zlib.crc32(buf.getvalue()):08x}")
    if stages is not None:
        m["index"]["stages"] = stages
    with open(mpath, "w") as f:
        json.dump(m, f)


@pytest.fixture()
def small_indexed(tmp_path):
    path = str(tmp_path / "s.trace")
    with TraceWriter(path, index=True, volatile=False) as w:
        w.add("a", np.arange(3.0), axes=["x"])
        w.add("b", np.arange(2, dtype=np.float32))
        w.add("note", "text")
        w.add("c", np.arange(4, dtype=np.int16).reshape(2, 2))
    return path


def _keys_blob(keys: list[str]) -> np.ndarray:
    return np.frombuffer("\n".join(keys).encode(), np.uint8)


CORRUPTIONS = {
    "duplicate key": (lambda c: c.update(keys=_keys_blob(["a", "b", "note", "a"])), "'a' (#3): is listed twice"),
    "empty segment": (lambda c: c.update(keys=_keys_blob(["a", "b..x", "note", "c"])), "'b..x' (#1): is not a valid"),
    "path in key": (lambda c: c.update(keys=_keys_blob(["a", "../etc", "note", "c"])), "byte 47"),
    "leading dash": (lambda c: c.update(keys=_keys_blob(["a", "-b", "note", "c"])), "'-b' (#1): is not a valid"),
    "too few keys": (lambda c: c.update(keys=_keys_blob(["a", "b", "note"])), "holds 3 keys for 4 stages"),
    "bytes past the buffer": (lambda c: c["end"].__setitem__(0, c["end"][0] + 8), "'a' (#0): claims bytes"),
    "overlap": (lambda c: (c["begin"].__setitem__(1, 0), c["end"].__setitem__(1, 8)), "overlap another stage"),
    "unknown dtype": (lambda c: c["dtype"].__setitem__(1, 77), "'b' (#1): dtype number"),
    "text without text": (lambda c: c["meta"].__setitem__(2, -1), "'note' (#2): a text stage needs its text"),
    "meta out of range": (lambda c: c["meta"].__setitem__(1, 9), "'b' (#1): meta row 9"),
    "axes mismatch": (lambda c: c["meta"].__setitem__(3, 0), "'c' (#3): its axes"),
    "unlisted file": (lambda c: c["file"].__setitem__(0, 5), "'a' (#0): points at a data file"),
    "negative dim": (lambda c: c["dims"].__setitem__(0, -3), "'a' (#0): a dimension"),
    "bad meta json": (lambda c: c.update(meta_json=np.frombuffer(b'[{"axes":["x"]},{"text":3}]', np.uint8)),
                      "meta_json entry #1: text must be a string"),
    "missing column": (lambda c: c.pop("ndim"), 'column "ndim"'),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corrupt_index_names_file_and_stage(small_indexed, name):
    change, expected = CORRUPTIONS[name]
    cols = _columns(small_indexed)
    assert load_trace(small_indexed).keys() == ["a", "b", "note", "c"]
    change(cols)
    if name == "missing column":
        with pytest.raises(KeyError):
            _rewrite(small_indexed, cols)
        cols["ndim"] = np.zeros(0, np.uint8)
        expected = 'column "ndim" has 0 rows'
    _rewrite(small_indexed, cols)
    with pytest.raises(TraceFormatError) as e:
        load_trace(small_indexed)
    assert "index.safetensors" in str(e.value) and expected in str(e.value)


def test_index_checksum_size_and_manifest_rules(small_indexed):
    ipath = os.path.join(small_indexed, "index.safetensors")
    data = bytearray(open(ipath, "rb").read())
    data[-1] ^= 1
    open(ipath, "wb").write(bytes(data))
    with pytest.raises(TraceFormatError, match="index.safetensors: crc32 .* the stage index is corrupt"):
        load_trace(small_indexed)
    open(ipath, "wb").write(bytes(data[:-1]))
    with pytest.raises(TraceFormatError, match="truncated"):
        load_trace(small_indexed)
    os.remove(ipath)
    with pytest.raises(TraceFormatError, match="stage index the manifest names is missing"):
        load_trace(small_indexed)
    mpath = os.path.join(small_indexed, "manifest.json")
    m = json.load(open(mpath))
    for change, message in ((lambda m: m.update(schema_version=3), "reads versions 1 to 2"),
                            (lambda m: m.update(schema_version=1), "needs schema_version 2"),
                            (lambda m: m.pop("index"), 'no "index"'),
                            (lambda m: m.update(stages=[]), "one or the other"),
                            (lambda m: m["index"].update(file="../x"), '"index" must name the stage index'),
                            (lambda m: m["index"].update(crc32="XYZ"), "crc32 must be 8 lowercase hex")):
        bad = json.loads(json.dumps(m))
        change(bad)
        json.dump(bad, open(mpath, "w"))
        with pytest.raises(TraceFormatError, match=message):
            load_trace(small_indexed)


def test_wrong_stage_count_in_manifest(small_indexed):
    _rewrite(small_indexed, _columns(small_indexed), stages=5)
    with pytest.raises(TraceFormatError, match="has 4 rows but the manifest says the index holds 5"):
        load_trace(small_indexed)


def test_truncated_data_file_of_an_indexed_trace(small_indexed):
    rel = "data/000000.safetensors"
    full = os.path.join(small_indexed, rel)
    data = open(full, "rb").read()
    open(full, "wb").write(data[:-2])
    with pytest.raises(TraceFormatError, match="000000.safetensors: is .* bytes long but the manifest says"):
        load_trace(small_indexed)
    open(full, "wb").write(data[:-2])
    m = json.load(open(os.path.join(small_indexed, "manifest.json")))
    m["files"][rel]["bytes"] = len(data) - 2
    json.dump(m, open(os.path.join(small_indexed, "manifest.json"), "w"))
    with pytest.raises(TraceFormatError, match="index.safetensors: stage index: stage 'c' .* claims bytes"):
        load_trace(small_indexed)


def test_show_streams_a_large_trace(tmp_path, monkeypatch, capsys):
    import parity.commands.show as show
    from parity.cli import main

    path = str(tmp_path / "show.trace")
    with TraceWriter(path, index=True) as w:
        w.add_batch([f"step.{i}.logits" for i in range(50)] + ["done"], [(2,)] * 50 + ["ok"], np.arange(100.0))
    assert main(["show", path]) == 0
    table = capsys.readouterr().out
    monkeypatch.setattr(show, "TABLE_STAGES", 10)
    monkeypatch.chdir(tmp_path)
    assert main(["bundle", "new", "inv"]) == 0
    bundle = capsys.readouterr().out.strip()
    assert main(["show", path, "--verify", "--bundle", bundle]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["#", "stage"])
    rows = lines[header + 2:header + 53]
    assert rows[0].split() == ["1", "step.0.logits", "F64", "2", "0", "1", "0.5", "0.5", "0/0"]
    assert rows[-1].split() == ["51", "done", "text", "'ok'"] and "data files match" in lines[-1]
    assert "step.49.logits" in table and "step.49.logits" in lines[header + 51]
    saved = "".join(open(os.path.join(root, n)).read() for root, _, names in os.walk(bundle) for n in names
                    if n.endswith(".txt"))
    assert saved.index("step.0.logits") < saved.index("data files match")
