"""Traces by URL (fsspec): memory:// and s3:// (moto's server mode on loopback) round trips,
ranged reads, the manifest-last completion rule, and errors naming the URL."""

from __future__ import annotations

import os
import socket
import uuid

import numpy as np
import pytest

import parity
from parity.cli import main
from parity.errors import TraceError, TraceFormatError, UsageError
from parity.trace import storage
from parity.trace.remote import RemoteTrace, upload_trace

fsspec = pytest.importorskip("fsspec")


def _values():
    rng = np.random.default_rng(7)
    return {"embedding": rng.normal(size=(4, 8)), "layers.0.q": rng.normal(size=(4, 8)).astype(np.float32),
            "nan_and_zero": np.array([np.nan, -0.0, np.inf, 5e-324]), "steps": np.arange(6, dtype=np.int64),
            "note": "text stage"}


def _record(path, values):
    with parity.record(path, meta={"impl": "ref"}, volatile=False):
        for k, v in values.items():
            parity.tap(k, v)
    return path


@pytest.fixture
def url():
    return f"memory://parity-tests/{uuid.uuid4().hex}/ref.trace"


def test_a_trace_written_to_a_url_reads_back_bit_for_bit(url, tmp_path):
    values = _values()
    _record(url, values)
    local = _record(str(tmp_path / "ref.trace"), values)
    t = parity.load_trace(url)
    assert isinstance(t, RemoteTrace) and t.complete and t.keys() == list(values)
    for k, v in values.items():
        got = t[k]
        if isinstance(v, str):
            assert got == v
        else:
            assert got.dtype == v.dtype and got.tobytes() == np.asarray(v).tobytes()
    assert t.verify() == []
    # the same bytes as a local capture of the same values: the format does not depend on the store
    fs, root = fsspec.core.url_to_fs(url)
    for rel in ("manifest.json", "data/000000.safetensors"):
        with open(os.path.join(local, rel), "rb") as f:
            assert fs.cat_file(f"{root}/{rel}") == f.read()


def count_ranged_reads(monkeypatch):
    """The sizes of the ranged reads remote traces make from now on, in order (a list that grows)."""
    fetched = []
    real = storage.RemoteDir.read_range

    def counting(self, rel, start, end, what="file"):
        fetched.append(end - start)
        return real(self, rel, start, end, what)

    monkeypatch.setattr(storage.RemoteDir, "read_range", counting)
    return fetched


def test_reading_one_stage_fetches_only_its_bytes(url, monkeypatch):
    big = {f"s{i}": np.full(1000, float(i)) for i in range(20)}  # 20 stages of 8 kB in one data file
    _record(url, big)
    t = parity.load_trace(url)
    fetched = count_ranged_reads(monkeypatch)
    cat = t.remote.fs.cat_file

    def ranged_only(path, start=None, end=None, **kw):
        assert start is not None and end is not None, "a whole-file read"
        return cat(path, start=start, end=end, **kw)

    monkeypatch.setattr(t.remote.fs, "cat_file", ranged_only)
    assert float(t["s13"][0]) == 13.0
    assert fetched == [8000]


def test_element_ranges_and_runs_of_stages_are_single_ranged_reads(url, monkeypatch):
    big = {f"s{i}": np.arange(1000, dtype=np.float64) + i for i in range(20)}
    _record(url, big)
    t = parity.load_trace(url)
    fetched = count_ranged_reads(monkeypatch)
    part = t.elements(t.stage("s7"), 100, 350)  # what a Dask worker comparing one range of a stage reads
    assert fetched == [250 * 8] and (part == np.arange(100, 350) + 7).all() and not part.flags.writeable
    assert t.elements(t.stage("s7"), 5, 5).size == 0 and fetched == [2000]
    with pytest.raises(UsageError, match="cannot be read"):
        t.elements(t.stage("s7"), 10, 1001)
    # an indexed trace's run of stages: one read for the lot
    with parity.trace.TraceWriter(url.replace("ref.trace", "many.trace"), index=True) as w:
        w.add_batch([f"step.{i}.x" for i in range(50)], [(4,)] * 50, np.arange(200, dtype=np.float32))
    m = parity.load_trace(url.replace("ref.trace", "many.trace"))
    fetched.clear()
    rows = m.rows(10, 30)
    assert fetched == [20 * 16] and rows.shape == (20, 4) and rows[0, 0] == 40.0


def test_diff_of_a_remote_and_a_local_trace(url, tmp_path, capsys):
    values = _values()
    _record(url, values)
    values["layers.0.q"] = values["layers.0.q"] * np.float32(2)
    local = _record(str(tmp_path / "cand.trace"), values)
    d = parity.compare_traces(url, local)
    assert not d.passed and d.first_divergence.key == "layers.0.q"
    assert main(["diff", url, url]) == 0
    assert main(["diff", url, local, "--json"]) == 1
    assert '"first_divergence"' in capsys.readouterr().out


def test_an_unfinished_upload_is_not_a_trace(url, tmp_path):
    local = _record(str(tmp_path / "ref.trace"), _values())
    remote = storage.open_remote(url)
    remote.upload(os.path.join(local, "data", "000000.safetensors"), "data/000000.safetensors")  # killed here
    with pytest.raises(TraceFormatError, match="upload that did not finish") as e:
        parity.load_trace(url)
    assert url in str(e.value)
    with pytest.raises(TraceFormatError, match="no such trace"):
        parity.load_trace(url + "-missing")


def test_a_truncated_remote_data_file_is_named(url, tmp_path):
    _record(url, _values())
    fs, root = fsspec.core.url_to_fs(url)
    data = fs.cat_file(f"{root}/data/000000.safetensors")
    fs.pipe_file(f"{root}/data/000000.safetensors", data[:-16])
    with pytest.raises(TraceFormatError, match=r"data/000000\.safetensors") as e:
        parity.load_trace(url)
    assert url in str(e.value)


def test_upload_refuses_to_replace_a_trace_unless_asked(url, tmp_path):
    local = _record(str(tmp_path / "ref.trace"), _values())
    upload_trace(local, url)
    with pytest.raises(UsageError, match="already there"):
        upload_trace(local, url)
    assert upload_trace(local, url, overwrite=True) == url
    fs, root = fsspec.core.url_to_fs(url)
    assert not [p for p in fs.find(root) if "/.tmp-" in p]  # no temporary names left behind


def test_the_writer_refuses_a_url_holding_something_else(url):
    fs, root = fsspec.core.url_to_fs(url)
    fs.pipe_file(f"{root}/precious.txt", b"not ours")
    with pytest.raises(TraceError, match="not a parity trace"):
        parity.record(url).__enter__()
    assert fs.cat_file(f"{root}/precious.txt") == b"not ours"


def test_file_urls_are_local_paths(tmp_path):
    local = _record(str(tmp_path / "ref.trace"), _values())
    t = parity.load_trace("file://" + local)
    assert not isinstance(t, RemoteTrace) and t.keys() == list(_values())


def test_an_unknown_scheme_is_a_usage_error():
    with pytest.raises(UsageError, match="nosuchfs://x"):
        parity.load_trace("nosuchfs://x/ref.trace")


# -- s3:// against moto's server mode on loopback ----------------------------------------------

@pytest.fixture(scope="module")
def s3_endpoint():
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    fs = fsspec.filesystem("s3", **options, skip_instance_cache=True)
    fs.mkdir("parity-bucket")
    yield options
    server.stop()


def test_s3_round_trip_against_a_local_stand_in(s3_endpoint, tmp_path):
    values = _values()
    local = _record(str(tmp_path / "ref.trace"), values)
    url = f"s3://parity-bucket/{uuid.uuid4().hex}/ref.trace"
    upload_trace(local, url, s3_endpoint)
    t = parity.load_trace(url, storage_options=s3_endpoint)
    assert t.keys() == list(values) and t.verify() == []
    assert t["embedding"].tobytes() == values["embedding"].tobytes()
    d = parity.compare_traces(t, parity.load_trace(local))
    assert d.passed and len(d.stages) == len(values)


def test_an_indexed_trace_opens_remotely_without_parsing_data_file_headers(url, tmp_path, monkeypatch):
    local = str(tmp_path / "big.trace")
    with parity.trace.writer.TraceWriter(local, index=True, volatile=False) as w:
        for i in range(300):
            w.add(f"iter.{i}.residual", np.full(4, float(i), dtype=np.float32))
    upload_trace(local, url)
    from parity.trace import remote as R

    monkeypatch.setattr(R, "parse_header", None)  # an indexed trace never needs the JSON headers
    t = parity.load_trace(url)
    assert t.manifest["schema_version"] == 2 and len(t) == 300 and t.verify() == []
    assert t["iter.123.residual"].tolist() == [123.0] * 4
    assert parity.compare_traces(t, local).passed

