"""TraceWriter.add_packed and the staging arenas: data files written from a packed buffer, with
direct I/O where the file system allows it, and ordinary writes otherwise; same bytes either way."""

import os
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as hst
from safetensors.numpy import load_file

from parity.errors import TraceError, UsageError
from parity.trace import TraceWriter, datafiles, load_trace, writer as writer_mod
from parity.trace.checksum import crc32
from parity.trace.staging import Arena, ArenaPool, release_spare
from parity.trace.writer import PackedStage


def pack(arena, key, arr, with_crc=True, **kw):
    arr = np.ascontiguousarray(arr)
    off = arena.claim(arr.nbytes, arr.itemsize)
    assert off is not None
    region = arena.array[off:off + arr.nbytes]
    region[:] = arr.reshape(-1).view(np.uint8)
    code = {"float32": "F32", "float64": "F64", "int64": "I64", "float16": "F16", "uint8": "U8", "bool": "BOOL"}[arr.dtype.name]
    arena.stages.append(PackedStage(key, code, arr.shape, off, arr.nbytes, crc32(region) if with_crc else None, **kw))


def values(rng):
    return [("a", rng.standard_normal((300, 700)).astype(np.float32)),   # 840,000 bytes
            ("b", rng.integers(-5, 5, (3, 7))),                            # int64
            ("c", rng.standard_normal(1001).astype(np.float16)),          # odd size: the file ends mid-page
            ]


@pytest.fixture(params=["c", "python"])
def file_writer(request, monkeypatch):
    """Data files written by the C module's GIL-free write_file, or by the Python fallback."""
    if request.param == "c" and datafiles._stage_write is None:
        pytest.skip("the C module parity.trace._stage is not built")
    if request.param == "python":
        monkeypatch.setattr(datafiles, "_stage_write", None)
    return request.param


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("with_crc", [True, False])
def test_packed_file_is_safetensors_with_zlib_crc32(tmp_path, monkeypatch, file_writer, direct, with_crc):
    if not direct:
        monkeypatch.setattr(datafiles, "_O_DIRECT", 0)
    monkeypatch.setattr(datafiles, "_DIRECT_MIN", 0)
    rng = np.random.default_rng(0)
    arena = Arena(4 << 20)
    arena.array[:] = 0xAB  # stale bytes past the data must never reach the file
    for key, v in values(rng):
        pack(arena, key, v, with_crc, axes=[f"d{i}" for i in range(v.ndim)], indices={"step": 2})
    path = tmp_path / "p.trace"
    with TraceWriter(path, volatile=False) as w:
        w.add("first", np.arange(3.0))
        assert w.add_packed(arena.stages, arena.array, size=arena.used) == ["a[step=2]", "b[step=2]", "c[step=2]"]
        w.add("last", "text")
    t = load_trace(path)
    assert t.keys() == ["first", "a[step=2]", "b[step=2]", "c[step=2]", "last"]
    for key, v in values(np.random.default_rng(0)):
        assert np.array_equal(np.asarray(t[f"{key}[step=2]"]), v)
        assert t.stage(f"{key}[step=2]").axes == tuple(f"d{i}" for i in range(v.ndim))
    assert t.verify() == []
    packed = t.stage("a[step=2]").file
    raw = (path / packed).read_bytes()
    assert t.manifest["files"][packed] == {"bytes": len(raw), "crc32": f"{zlib.crc32(raw):08x}"}
    assert (8 + int.from_bytes(raw[:8], "little")) % 4096 == 0
    loaded = load_file(str(path / packed))
    assert set(loaded) == {"a[step=2]", "b[step=2]", "c[step=2]"}
    assert raw.endswith(values(np.random.default_rng(0))[2][1].tobytes())


def test_direct_and_ordinary_writes_give_identical_traces(tmp_path, monkeypatch, file_writer):
    monkeypatch.setattr(datafiles, "_DIRECT_MIN", 0)
    out = []
    for direct in (True, False):
        if not direct:
            monkeypatch.setattr(datafiles, "_O_DIRECT", 0)
        arena = Arena(2 << 20)
        for key, v in values(np.random.default_rng(1)):
            pack(arena, key, v)
        path = tmp_path / f"{direct}.trace"
        with TraceWriter(path, volatile=False) as w:
            w.add_packed(arena.stages, arena.array, size=arena.used)
        out.append({n: (path / n).read_bytes() for n in ("manifest.json", "data/000000.safetensors")})
    assert out[0] == out[1]


def test_a_file_system_refusing_direct_io_falls_back(tmp_path, monkeypatch):
    """open(O_DIRECT) succeeds on some file systems but the write fails with EINVAL."""
    monkeypatch.setattr(datafiles, "_DIRECT_MIN", 0)
    monkeypatch.setattr(datafiles, "_stage_write", None)  # the Python path's fallback (the C one mirrors it)
    real = os.pwrite
    calls = []

    def pwrite(fd, data, offset):
        import fcntl

        if fcntl.fcntl(fd, fcntl.F_GETFL) & datafiles._O_DIRECT:
            calls.append(offset)
            raise OSError(22, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    arena = Arena(2 << 20)
    for key, v in values(np.random.default_rng(2)):
        pack(arena, key, v)
    path = tmp_path / "f.trace"
    with TraceWriter(path) as w:
        w.add_packed(arena.stages, arena.array, size=arena.used)
    if datafiles._O_DIRECT:
        assert calls == [0]
    t = load_trace(path)
    assert t.verify() == [] and np.array_equal(np.asarray(t["a"]), values(np.random.default_rng(2))[0][1])


def test_prepared_files_are_written_apart_and_committed_in_order(tmp_path):
    """pack() on the capturing thread, write_packed_file() anywhere, commit_packed() in order."""
    w = TraceWriter(tmp_path / "o.trace", volatile=False)
    shards = []
    for i in range(3):
        arena = Arena(1 << 20)
        pack(arena, "x", np.full(4, i, np.float32))
        arena.stages.append(PackedStage("note", "", (), arena.used, 0, 0, text=f"after {i}"))
        shards.append(w.pack(arena.stages, arena.array, size=arena.used))
    written = [w.write_packed_file(s) for s in reversed(shards)][::-1]  # files in any order
    with pytest.raises(TraceError, match="committed in the order they were prepared: got #1, expected #0"):
        w.commit_packed(written[1])
    with pytest.raises(TraceError, match=r"takes the shard write_packed_file\(\) returned"):
        w.commit_packed(shards[0])
    for s in written:
        w.commit_packed(s)
    w.close()
    t = load_trace(tmp_path / "o.trace")
    assert t.keys() == ["x", "note", "x#1", "note#1", "x#2", "note#2"]
    assert t.stage("note#2").text == "after 2" and np.array_equal(np.asarray(t["x#2"]), np.full(4, 2, np.float32))
    assert t.verify() == []


def test_bad_packing_is_refused_and_writes_nothing(tmp_path):
    arena = Arena(1 << 20)
    pack(arena, "a", np.ones(4, np.float32))
    w = TraceWriter(tmp_path / "x.trace")
    gap = [arena.stages[0]._replace(offset=4)]
    with pytest.raises(TraceError, match='stage "a": packed stage at bytes \\[4, 20\\) does not follow the previous one at 0'):
        w.add_packed(gap, arena.array)
    with pytest.raises(UsageError, match="unknown dtype code 'F33'"):
        w.add_packed([arena.stages[0]._replace(dtype="F33")], arena.array)
    with pytest.raises(UsageError, match="axes \\['x', 'y'\\] name 2 dimensions but the value has shape \\(4,\\)"):
        w.add_packed([arena.stages[0]._replace(axes=["x", "y"])], arena.array)
    with pytest.raises(TraceError, match="the packed stages hold 16 bytes but the buffer offers 8"):
        w.add_packed(arena.stages, arena.array, size=8)
    w.close()
    t = load_trace(tmp_path / "x.trace")
    assert len(t) == 0 and t.manifest["files"] == {}


def test_pool_bounds_memory_and_reuses_arenas():
    spare = ArenaPool(arena_bytes=16 << 20, max_bytes=32 << 20)  # a finished capture leaves a big spare
    spare.put(spare.get(10))
    spare.close()
    pool = ArenaPool(arena_bytes=64 * 1024, max_bytes=128 * 1024)
    a = pool.get(10)
    b = pool.get(10)
    assert a.limit == b.limit == 64 * 1024 and a.array.ctypes.data % 4096 == 0
    import threading

    got = []
    t = threading.Thread(target=lambda: got.append(pool.get(10)))
    t.start()
    t.join(0.2)
    assert t.is_alive() and not got  # both arenas in use: the third waits
    pool.put(a)
    t.join(5)
    assert got == [a] and a.used == 0
    big = None
    pool.put(b)
    pool.put(got[0])
    big = pool.get(1 << 20)  # larger than the bound: allowed, it is the only one in use
    assert big.limit == 1 << 20 and big.capacity >= 1 << 20
    pool.put(big)
    pool.abort(RuntimeError("writer died"))
    with pytest.raises(RuntimeError, match="writer died"):
        pool.get(10)
    pool.close()
    assert release_spare() >= 16 << 20


def test_c_write_file_errors_name_the_file_and_leave_nothing(tmp_path):
    stage = pytest.importorskip("parity.trace._stage")
    if not hasattr(stage, "write_file"):
        pytest.skip("no POSIX I/O in this build")
    arena = Arena(1 << 20)
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(FileNotFoundError) as e:
        stage.write_file(str(missing / "a.tmp"), str(missing / "a"), b" " * 4096, arena.array, 10, True)
    assert e.value.filename == str(missing / "a.tmp")
    with pytest.raises(ValueError, match="size 2000000 is outside the buffer's 1048576 bytes"):
        stage.write_file(str(tmp_path / "b.tmp"), str(tmp_path / "b"), b"", arena.array, 2_000_000, True)
    with pytest.raises(TypeError):  # read-only data: the zero padding of direct I/O needs a writable buffer
        stage.write_file(str(tmp_path / "c.tmp"), str(tmp_path / "c"), b"", b"abc", 3, False)
    # rename onto a directory fails: the temporary file is removed
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("keep")
    with pytest.raises(OSError):
        stage.write_file(str(tmp_path / "d.tmp"), str(tmp_path / "d"), b"h", arena.array, 10, False)
    assert not (tmp_path / "d.tmp").exists() and (tmp_path / "d" / "x").read_text() == "keep"
    assert stage.write_file(str(tmp_path / "e.tmp"), str(tmp_path / "e"), b"h", arena.array, 10, False) is False
    assert (tmp_path / "e").read_bytes() == b"h" + bytes(10)


_leaf = hst.one_of(hst.text(max_size=5), hst.integers(-3, 3), hst.booleans(), hst.floats(allow_nan=False, allow_infinity=False), hst.none())
_value = hst.one_of(_leaf, hst.lists(hst.one_of(hst.text(max_size=3), hst.integers(-2, 2), hst.booleans()), max_size=3),
                    hst.dictionaries(hst.text(max_size=3), _leaf, max_size=3))


@settings(max_examples=300, deadline=None)
@given(hst.lists(hst.dictionaries(hst.sampled_from(["axes", "dtype", "key", "indices", "provenance", "shape", "units"]),
                                  _value, max_size=6), min_size=1, max_size=4))
def test_remembered_entry_texts_equal_the_manifest_emitter(entries):
    """_entry_text caches field texts by value (and type: True is not 1); always _emit's text."""
    for e in entries + entries:  # the second pass reads the cache
        out = []
        writer_mod._emit(e, 2, out)
        assert writer_mod._entry_text(e) == "".join(out)


_AXES = [None, ("batch", "seq"), ["b", "s"]]
_PROV = [None, {"module": "model.layers.0.mlp"}, {"module": "m", "line": 3, "ok": True}, {"nested": {"a": [1, 2]}}]


@settings(max_examples=60, deadline=None)
@given(hst.lists(hst.tuples(hst.sampled_from(["x", "layers.0.y", "z[k=1]"]),
                            hst.sampled_from([(2, 3), (1, 6), (6,)]),
                            hst.integers(0, len(_AXES) - 1), hst.integers(0, len(_PROV) - 1),
                            hst.one_of(hst.none(), hst.dictionaries(hst.sampled_from(["step", "layer", "tag"]),
                                                                    hst.one_of(hst.integers(-2, 40), hst.booleans(),
                                                                               hst.sampled_from(["a", "b_1"]),
                                                                               hst.sampled_from([0.5, -2.0])),
                                                                    max_size=2)),
                            hst.sampled_from([None, "m/s"]), hst.booleans()),
                 min_size=1, max_size=12))
def test_packed_entries_equal_those_of_add(tmp_path_factory, stages):
    """pack() renders shared fields once per call: its manifest entries and journal lines are
    still exactly those add() gives for the same stages, in the emitter's layout."""
    import json

    root = tmp_path_factory.mktemp("eq")
    arena = Arena(1 << 20)
    plain = TraceWriter(root / "add.trace", volatile=False)
    packed = TraceWriter(root / "packed.trace", volatile=False)
    for i, (key, shape, a, p, idx, units, text) in enumerate(stages):
        axes = None if _AXES[a] is None or len(_AXES[a]) != len(shape) else _AXES[a]
        if text:
            plain.add(key, f"note {i}", units=units, indices=idx, provenance=_PROV[p])
            arena.stages.append(PackedStage(key, "", (), arena.used, 0, 0, None, idx, _PROV[p], units, text=f"note {i}"))
            continue
        v = np.full(shape, i, np.float32)
        plain.add(key, v, axes=axes, units=units, indices=idx, provenance=_PROV[p])
        pack(arena, key, v, axes=axes, indices=idx, provenance=_PROV[p], units=units)
    packed.add_packed(arena.stages, arena.array, size=arena.used)
    journal = [json.loads(line)["stage"] for line in (root / "packed.trace" / "journal.jsonl").read_text().splitlines()
               if '"stage"' in line[:12]]
    plain.close()
    packed.close()
    got = {}
    for name in ("add", "packed"):
        raw = (root / f"{name}.trace" / "manifest.json").read_bytes()
        manifest = json.loads(raw)
        assert writer_mod._dump_fast(manifest) == raw  # the emitter's layout, byte for byte
        got[name] = [{k: v for k, v in e.items() if k != "file"} for e in manifest["stages"]]
    assert got["packed"] == got["add"]
    assert [{k: v for k, v in e.items() if k != "file"} for e in journal] == got["add"]
    t = load_trace(root / "packed.trace")
    assert t.verify() == [] and t.keys() == load_trace(root / "add.trace").keys()
