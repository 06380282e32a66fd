"""TraceWriter.add_batch: the same trace, byte for byte, as one add() per stage; checked before
anything is recorded; crash-safe like add(). With and without the C renderer."""

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import parity.trace._batch as W  # the batch path: its C renderer, its spill threshold
from parity.errors import StageKeyError, TraceError, UsageError
from parity.trace import load_trace
from parity.trace.safetensors_header import TensorEntry, encode_header
from parity.trace.writer import TraceWriter, _emit, _flat_texts

_renderers = [pytest.param(True, id="C renderer"), pytest.param(False, id="Python renderer")]


@pytest.fixture(params=_renderers)
def renderer(request, monkeypatch):
    if request.param:
        if W._render is None:
            pytest.skip("parity.trace._render is not built")
    else:
        monkeypatch.setattr(W, "_render", None)
    return request.param


def _files(path):
    out = {}
    for root, _, names in os.walk(path):
        for name in names:
            if name != "run.json":
                full = os.path.join(root, name)
                with open(full, "rb") as f:
                    out[os.path.relpath(full, path)] = f.read()
    return out


def _write_one_by_one(path, stages, buffer_bytes):
    with TraceWriter(path, buffer_bytes=buffer_bytes, meta={"m": 1}) as w:
        for key, value, indices, prov in stages:
            w.add(key, value, indices=indices, provenance=prov)
        return w.keys


def _write_batched(path, stages, buffer_bytes, cuts, columns=False):
    """Stages in batches of one dtype; provenance as mappings, or as columns where it can be."""
    with TraceWriter(path, buffer_bytes=buffer_bytes, meta={"m": 1}) as w:
        got, start = [], 0
        for end in sorted(set(cuts) | {len(stages)}):
            part = stages[start:end]
            if not part:
                continue
            shapes = [v if isinstance(v, str) else tuple(np.shape(v)) for _, v, _, _ in part]
            arrays = [np.ravel(v) for _, v, _, _ in part if not isinstance(v, str)]
            data = np.concatenate(arrays) if arrays else None
            provs = [p for *_, p in part]
            if columns and all(p is None or isinstance(p, dict) for p in provs):
                names = sorted({k for p in provs if p for k in p})
                provs = {k: [p.get(k) if p else None for p in provs] for k in names}
            got += w.add_batch([k for k, *_ in part], shapes, data, indices=[i for _, _, i, _ in part], provenance=provs)
            start = end
        assert got == w.keys
        return got


_KEYS = st.sampled_from(["x", "layers.3.attn", "e", "k[layer=2]", "t.text", "a-b:c@d"])
_INDEX = st.dictionaries(st.sampled_from(["it", "step", "b"]),
                         st.one_of(st.integers(-3, 10 ** 12), st.sampled_from(["a", "x-1", "q.r"]), st.booleans(), st.just(1.5)),
                         max_size=2)
_PROV = st.one_of(st.none(), st.dictionaries(st.sampled_from(["line", "name", "stream"]),
                                             st.one_of(st.integers(0, 10 ** 6), st.text(max_size=5), st.booleans()), max_size=3))


@st.composite
def _stages(draw, dtype):
    out = []
    for _ in range(draw(st.integers(1, 30))):
        if draw(st.integers(0, 5)) == 0:
            value = draw(st.text(max_size=6))
        else:
            shape = tuple(draw(st.lists(st.integers(0, 4), max_size=2)))
            value = (np.arange(int(np.prod(shape))) - 3).astype(dtype).reshape(shape)
            if draw(st.booleans()):
                value = (value * 1e3 + 0.5).astype(dtype)
        out.append((draw(_KEYS), value, draw(st.one_of(st.none(), _INDEX)), draw(_PROV)))
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_add_batch_writes_the_bytes_of_one_add_per_stage(tmp_path, renderer, data):
    dtype = data.draw(st.sampled_from([np.float64, np.float32, np.int16]))
    stages = data.draw(_stages(dtype))
    buffer_bytes = data.draw(st.sampled_from([1, 40, 300, 64 << 20]))
    cuts = data.draw(st.lists(st.integers(0, len(stages)), max_size=4))
    columns = data.draw(st.booleans())
    run = len(os.listdir(tmp_path))
    a, b = tmp_path / f"a{run}.trace", tmp_path / f"b{run}.trace"
    keys = _write_one_by_one(a, stages, buffer_bytes)
    assert _write_batched(b, stages, buffer_bytes, cuts, columns) == keys
    assert _files(a) == _files(b)


@pytest.mark.parametrize("spill", [256 << 20, 0], ids=["in memory", "spilled to a file"])
def test_a_log_sized_batch_with_columns_and_large_stages(tmp_path, renderer, monkeypatch, spill):
    monkeypatch.setattr(W, "_SPILL_BYTES", spill)  # rendered entries wait for their shard in a file
    rng = np.random.default_rng(0)
    stages = []
    for i in range(3000):
        n = int(rng.integers(0, 3)) if i % 500 else 5000  # a few stages larger than buffer_bytes / 4
        name = ["energy", "pos", "rot_0", "status"][i % 4]
        value = "running" if name == "status" else rng.normal(size=n)
        stages.append((name, value, {"it": i // 4} if i % 4 == 0 else None,
                       {"line": i + 1, "name": "rot[0]"} if name == "rot_0" else {"line": i + 1}))
    keys = _write_one_by_one(tmp_path / "a.trace", stages, 20000)
    assert _write_batched(tmp_path / "b.trace", stages, 20000, [1000, 2500], columns=True) == keys
    assert _files(tmp_path / "a.trace") == _files(tmp_path / "b.trace")
    t = load_trace(tmp_path / "b.trace")
    assert t.stage("rot_0#5").provenance == {"line": 23, "name": "rot[0]"} and t["status#2"] == "running"
    assert len({s.file for s in t if s.kind == "tensor"}) > 5
    assert sorted(os.listdir(tmp_path / "b.trace")) == ["data", "manifest.json", "run.json"]


def test_add_batch_checks_everything_before_recording_anything(tmp_path):
    with TraceWriter(tmp_path / "t.trace") as w:
        w.add("kept", 1.0)
        bad = [
            (dict(keys=["a", "b"], shapes=[()], data=np.zeros(1)), UsageError, "2 keys but 1 shapes"),
            (dict(keys=["a"], shapes=[(2,)], data=np.zeros(3)), UsageError, "need 2 values but data holds 3"),
            (dict(keys=["a"], shapes=[[2]], data=np.zeros(2)), UsageError, "a shape is a tuple"),
            (dict(keys=["a"], shapes=[(2,)]), UsageError, "need their values in data"),
            (dict(keys=["a", "../x"], shapes=[(), ()], data=np.zeros(2)), StageKeyError, "cannot contain"),
            (dict(keys=["a", "b#1"], shapes=[(), ()], data=np.zeros(2)), StageKeyError, "occurrence"),
            (dict(keys=["a"], shapes=[()], data=np.zeros(1), indices=[{"bad name": 1}]), StageKeyError, "identifier"),
            (dict(keys=["a"], shapes=[()], data=np.zeros(1), indices=[{"i": "a/b"}]), StageKeyError, "may only use"),
            (dict(keys=["a"], shapes=[()], data=np.zeros(1), provenance=[{"x": object()}]), UsageError, "JSON-serialisable"),
            (dict(keys=["a"], shapes=[()], data=np.zeros(1), provenance={"line": [1, 2]}), UsageError, 'provenance column "line"'),
            (dict(keys=["a"], shapes=[()], data=np.zeros(1, dtype=complex)), UsageError, "cannot be stored"),
        ]
        for kwargs, error, message in bad:
            with pytest.raises(error, match=message):
                w.add_batch(**kwargs)
        assert w.keys == ["kept"]
        assert w.add_batch(["a", "a"], [(), "t"], np.zeros(1), provenance={"line": [7, None]}) == ["a", "a#1"]
    t = load_trace(tmp_path / "t.trace")
    assert t.keys() == ["kept", "a", "a#1"] and t.stage("a").provenance == {"line": 7} and t.stage("a#1").provenance == {}
    with pytest.raises(TraceError, match="closed"):
        w.add_batch(["a"], [()], np.zeros(1))


def test_the_batch_keeps_its_own_copy_of_the_values(tmp_path):
    data = np.arange(4.0)
    with TraceWriter(tmp_path / "t.trace") as w:
        w.add_batch(["a", "b"], [(2,), (2,)], data)
        data[:] = -1
        ro = np.frombuffer(np.arange(2.0).tobytes(), dtype=np.float64)  # read-only view of bytes: no copy needed
        w.add_batch(["c"], [(2,)], ro)
    t = load_trace(tmp_path / "t.trace")
    assert t["a"].tolist() == [0, 1] and t["b"].tolist() == [2, 3] and t["c"].tolist() == [0, 1]


def test_a_killed_batch_writer_leaves_a_readable_incomplete_trace(tmp_path):
    w = TraceWriter(tmp_path / "k.trace", buffer_bytes=64)
    w.add_batch(["v"] * 40, [(3,)] * 40, np.arange(120.0), provenance={"line": list(range(40))})
    w._journal.flush()  # what a kill leaves: shards, the journal; no final manifest, no clean-up
    t = load_trace(tmp_path / "k.trace")
    assert not t.complete and 0 < len(t) <= 40
    assert t[t.keys()[-1]].tolist() == list(np.arange(120.0)[3 * (len(t) - 1):3 * len(t)])
    w.close()
    assert "stages.json.tmp" not in os.listdir(tmp_path / "k.trace")
    with TraceWriter(tmp_path / "k.trace") as w2:  # a new writer there removes what an old one left
        w2.add("x", 1.0)
    assert sorted(os.listdir(tmp_path / "k.trace")) == ["data", "manifest.json", "run.json"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=4), st.one_of(st.integers(-2 ** 70, 2 ** 70), st.text(max_size=4), st.booleans(),
                                                       st.floats(allow_nan=False)), min_size=1, max_size=4),
       st.sampled_from(["provenance", "indices"]))
def test_flat_texts_are_what_the_general_encoders_write(d, label):
    texts = _flat_texts(label, d)
    if any(type(v) not in (int, str) for v in d.values()):
        assert texts is None
        return
    out = []
    _emit({label: d, "zz": "k"}, 2, out)
    manifest = "".join(out)
    journal = json.dumps({label: d, "zz": "k"}, sort_keys=True, ensure_ascii=False)
    assert manifest == "{\n" + texts[0] + '   "zz": "k"\n  }'
    assert journal == "{" + texts[1] + '"zz": "k"}'


@pytest.mark.skipif(W._render is None, reason="parity.trace._render is not built")
def test_c_header_entries_are_the_safetensors_json():
    keys = ["a", "b#1", "t", "c[it=3]"]
    infos = [(3, "", "", "[3]"), (0, "", "", "[0,2]"), (-1, "", "", ""), (1, "", "", "[]")]
    text, end = W._render.render_header(keys, infos, 0, 4, 16, 8, "F64")
    entries = [TensorEntry("a", "F64", (3,), 16, 40), TensorEntry("b#1", "F64", (0, 2), 40, 40),
               TensorEntry("c[it=3]", "F64", (), 40, 48)]
    want = encode_header(entries)[8:].decode().rstrip()
    assert "{" + text + "}" == want and end == 48


def test_many_scalars_are_split_into_readable_shards(tmp_path):
    """A shard holds at most buffer_bytes / 1024 stages, so headers stay small and readable."""
    import numpy as np

    from parity.trace import TraceWriter, load_trace
    from parity.trace.safetensors_header import read_header

    n = 5000
    path = tmp_path / "scalars.trace"
    with TraceWriter(path, buffer_bytes=1 << 20) as w:  # at most 1024 stages per shard
        for i in range(n // 2):
            w.add("x", np.float64(i))
        w.add_batch(["y"] * (n // 2), [()] * (n // 2), np.arange(n // 2, dtype=np.float64))
    t = load_trace(path)
    assert len(t) == n and t["x#7"] == 7.0 and t["y#9"] == 9.0
    for rel in t.manifest["files"]:
        entries, _, _ = read_header(path / rel)
        assert len(entries) <= 1024
