"""The distributed diff (parity.compare.executor): a Dask cluster gives the single-process result, bit for bit.

One local cluster of two worker processes serves the module. The traces hold 500 tiny stages and
a few stages of millions of elements, which the executor splits into element ranges; the
comparison is checked byte for byte (``render_json``) against the single-process diff, also with
a worker killed while the ranges run.
"""

import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import parity
import parity.demo
import parity.trace.remote
from parity.cli import cli, main
from parity.compare.config import as_config
from parity.compare.executor import DaskExecutor, _plan, dask_executor, parse_scheduler
from parity.compare.metrics import register_metric, unregister_metric
from parity.errors import UsageError
from parity.report.json import render_json
from parity.trace.writer import TraceWriter

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

BIG_BUG = 2_345_678  # the element of "big.f32" the candidate gets wrong
CONFIG = {"tolerance": {"stages": {"tiny.3*": {"rtol": 1e-2, "atol": 1e-3}}}, "ignore": {"stages": ["skipped"]},
          "expected": {"tiny.400": "known"}, "transforms": {"scaled": {"scale": 2, "side": "candidate"}}}


def _tiny(rng, i):
    n = 1 + (i * 37) % 64
    return rng.normal(size=n).astype(np.float32 if i % 3 else np.float64)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A reference and a candidate: 500 tiny stages, special stages, and big stages to split."""
    d = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(7)
    tiny = [_tiny(rng, i) for i in range(500)]
    f32 = rng.normal(size=3_000_000).astype(np.float32)
    mixed = rng.normal(size=(1100, 2000))
    ints = rng.integers(-1000, 1000, size=1_500_000, dtype=np.int32)
    halfs = rng.normal(size=1_200_000).astype(np.float16)
    huge = rng.normal(size=1_100_000) * 1e200  # sums overflow: rescaled on a second pass
    image = rng.random((32, 32))
    logits = rng.normal(size=(4, 50)).astype(np.float32)
    with TraceWriter(d / "ref.trace") as r, TraceWriter(d / "cand.trace") as c:
        for i, v in enumerate(tiny):
            if i == 200:  # the first divergence, inside a split stage
                bad = f32.copy()
                bad[BIG_BUG] += 3.0
                r.add("big.f32", f32), c.add("big.f32", bad)
                r.add("big.mixed", mixed), c.add("big.mixed", mixed.astype(np.float32))
                r.add("note", "converged"), c.add("note", "diverged")
                r.add("scaled", v), c.add("scaled", v / 2)
                r.add("image", image, axes=("slow", "fast")), c.add("image", image + 1e-3, axes=("slow", "fast"))
                r.add("logits", logits), c.add("logits", logits + 1e-3)
                r.add("reshaped", np.zeros((2, 6))), c.add("reshaped", np.zeros((3, 4)))
                r.add("skipped", v), c.add("skipped", -v)
                r.add("only.ref", v), c.add("only.cand", v)
            cv = v * (1.5 if i in (250, 333, 400) else 1.0)
            r.add(f"tiny.{i}", v), c.add(f"tiny.{i}", cv.astype(np.float32))
        wrong_ints = ints.copy()
        wrong_ints[[5, 1_200_000, 1_499_999]] += 1
        r.add("big.int", ints), c.add("big.int", wrong_ints)
        nan_halfs = halfs.copy()
        nan_halfs[[1_100_000, 1_150_000]] = np.nan
        r.add("big.f16", halfs), c.add("big.f16", nan_halfs)
        r.add("big.huge", huge), c.add("big.huge", huge * (1 + 1e-12))
    return str(d / "ref.trace"), str(d / "cand.trace")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def single(pair):
    """The single-process result, and the progress calls it made."""
    calls = []
    result = parity.compare_traces(*pair, CONFIG, progress=lambda *a: calls.append(a))
    return result, calls


def _executor(client, **kw):
    return DaskExecutor(client, task_elements=1 << 20, batch_stages=64, **kw)


def test_the_plan_splits_huge_stages_into_whole_chunks_and_batches_tiny_ones(pair):
    ref, cand = parity.load_trace(pair[0]), parity.load_trace(pair[1])
    cfg = as_config(CONFIG)
    pairs = [(s, cand.stage(s.key)) for s in ref if s.key in cand]
    tasks = _plan(pairs, cfg, True, 1 << 20, 64)
    split = {pairs[t.pairs[0]][0].key: t for t in tasks if t.layout is not None}
    assert sorted(split) == ["big.f16", "big.f32", "big.huge", "big.int", "big.mixed"]
    assert split["big.f32"].ranges == [(0, 1 << 20), (1 << 20, 2 << 20), (2 << 20, 3_000_000)]
    assert split["big.int"].layout[1] == 1 << 15 and split["big.int"].ranges[-1] == (1 << 20, 1_500_000)
    batches = [t for t in tasks if t.layout is None]
    assert sum(len(t.pairs) for t in batches) == len(pairs) - 5
    assert max(len(t.pairs) for t in batches) == 64 and len(batches) < 20
    # text, transforms, images, logits and shape mismatches are never split, however large the task size allows
    assert not {pairs[t.pairs[0]][0].key for t in _plan(pairs, cfg, True, 1, 64) if t.layout is not None} & {
        "note", "scaled", "image", "logits", "reshaped"}
    assert all(t.layout is None for t in _plan(pairs, cfg, False, 1 << 20, 64))  # sharded traces: whole stages


def test_a_cluster_gives_the_single_process_json_byte_for_byte(pair, client, single):
    expected, expected_calls = single
    calls = []
    got = parity.compare_traces(*pair, CONFIG, scheduler=_executor(client), progress=lambda *a: calls.append(a))
    assert render_json(got) == render_json(expected)
    assert calls == expected_calls  # progress after each reference stage, in order
    first = got.first_divergence
    assert first.key == "big.f32" and first.metrics.max_abs_index == (BIG_BUG,)
    assert first.metrics.max_abs_cand == expected.first_divergence.metrics.max_abs_cand
    assert first.diagnoses == expected.first_divergence.diagnoses  # diagnosed on the client
    by_key = {s.key: s for s in got.stages}
    assert by_key["big.int"].metrics.mismatched == 3 and by_key["big.f16"].metrics.nan_mismatch == 2
    assert by_key["big.f16"].metrics.max_abs_index == (1_100_000,)
    assert by_key["tiny.400"].status == "expected" and by_key["note"].problem == "text"


def test_the_default_task_sizes_and_a_client_give_the_same_result(pair, client, single):
    got = parity.compare_traces(*pair, CONFIG, scheduler=client)
    assert render_json(got) == render_json(single[0])


class KillOnce(distributed.WorkerPlugin):
    """Kills its worker process when the first range task starts (once: a marker file remembers)."""

    def __init__(self, marker):
        self.marker = marker

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith("parity-range-") and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)


def test_a_worker_killed_mid_run_is_retried_and_the_result_is_unchanged(pair, client, single, tmp_path):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    marker = str(tmp_path / "killed")
    client.register_plugin(KillOnce(marker), name="parity-kill-once")
    try:
        got = parity.compare_traces(*pair, CONFIG, scheduler=_executor(client))
    finally:
        client.unregister_worker_plugin("parity-kill-once")
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert os.path.exists(marker)  # a worker did die
    assert render_json(got) == render_json(single[0])


def test_parity_diff_dask_local_prints_the_same_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parity.demo.write_demo_traces(tmp_path)
    plain = CliRunner().invoke(cli, ["diff", "ref.trace", "cand.trace", "--config", "parity.toml", "--json"])
    dask = CliRunner().invoke(cli, ["diff", "ref.trace", "cand.trace", "--config", "parity.toml", "--json",
                                     "--dask", "local:1"])
    assert (plain.exit_code, dask.exit_code) == (1, 1)
    assert dask.output == plain.output


def test_scheduler_specs():
    assert parse_scheduler("local:2") == ("local", 2)
    assert parse_scheduler(" local ") == ("local", None)
    assert parse_scheduler("10.0.0.5:8786") == ("address", "10.0.0.5:8786")
    assert parse_scheduler("tcp://[::1]:8786") == ("address", "tcp://[::1]:8786")
    assert parse_scheduler("tls://scheduler.internal:8786") == ("address", "tls://scheduler.internal:8786")
    for bad in ("local:0", "local:two", "local:", "", "http://host:8786", "scheduler", "tcp://"):
        with pytest.raises(UsageError, match="--dask"):
            parse_scheduler(bad)


@pytest.mark.parametrize("spec, message", [
    ("local:0", "at least one worker"),
    ("local:x", "local or local:N"),
    ("http://127.0.0.1:8786", "not a Dask scheduler address"),
    ("tcp://127.0.0.1:9", "cannot reach the Dask scheduler"),
])
def test_a_bad_scheduler_exits_2(tmp_path, monkeypatch, capsys, spec, message):
    import dask

    monkeypatch.chdir(tmp_path)
    parity.demo.write_demo_traces(tmp_path)
    with dask.config.set({"distributed.comm.timeouts.connect": "0.5s"}):
        assert main(["diff", "ref.trace", "cand.trace", "--dask", spec]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --dask {spec}: ") and message in err


def test_what_a_distributed_diff_refuses(pair, client, tmp_path):
    ex = _executor(client)
    parity.demo.write_demo_traces(tmp_path)
    with pytest.raises(UsageError, match="local="):
        parity.compare_traces(*pair, local=pair[1], scheduler=ex)
    parity.trace.remote.upload_trace(tmp_path / "ref.trace", "memory://dist/ref.trace")
    with pytest.raises(UsageError, match="memory:// trace lives in this process only"):
        parity.compare_traces("memory://dist/ref.trace", tmp_path / "cand.trace", scheduler=ex)
    register_metric("mean_err", lambda: None)
    try:
        with pytest.raises(UsageError, match=r"extra metrics \['mean_err'\]"):
            parity.compare_traces(tmp_path / "ref.trace", tmp_path / "cand.trace", scheduler=ex)
    finally:
        unregister_metric("mean_err")
    with pytest.raises(UsageError, match="distributed.Client"), dask_executor(42):
        pass


class _RecordingClient:
    """A stand-in for distributed.Client that runs tasks here and records what they carry."""

    def __init__(self):
        self.args = []

    def run(self, fn):
        return {"local://0": fn()}

    def submit(self, fn, *args, **kwargs):
        self.args.append(args)
        value = fn(*args)
        return type("Done", (), {"result": staticmethod(lambda: value)})()

    def cancel(self, futures):
        pass


def test_tasks_carry_paths_keys_and_ranges_never_arrays(pair, single):
    fake = _RecordingClient()
    got = parity.compare_traces(*pair, CONFIG, scheduler=DaskExecutor(fake, task_elements=1 << 20, batch_stages=64))
    assert render_json(got) == render_json(single[0])

    def leaves(x):
        if isinstance(x, (list, tuple)):
            return [y for v in x for y in leaves(v)]
        if isinstance(x, dict):
            return [y for v in x.values() for y in leaves(v)]
        return [x]

    carried = {type(x).__name__ for args in fake.args for x in leaves(args)}
    assert carried <= {"str", "int", "float", "CompareConfig", "NoneType"}, carried
    assert os.path.abspath(pair[0]) in [x for args in fake.args for x in leaves(args) if isinstance(x, str)]


def test_a_range_task_on_a_trace_at_a_url_fetches_only_its_range(pair, monkeypatch):
    """What a worker does with one range of a split stage of a remote trace: one ranged read per
    side of just those elements, and the partials of the same chunks as from the local files."""
    import uuid

    from parity.compare import executor
    from parity.compare.metrics import chunk_layout
    from parity.trace import storage
    from parity.trace.remote import upload_trace

    base = f"memory://dist-tests/{uuid.uuid4().hex}"
    urls = [upload_trace(p, f"{base}/{os.path.basename(p)}") for p in pair]
    rs = parity.load_trace(pair[0]).stage("big.f32")
    layout = chunk_layout(rs.dtype_info, rs.dtype_info)
    start, end = 1 << 20, 2 << 20
    local = executor._range_task("local", (os.path.abspath(pair[0]), {}), (os.path.abspath(pair[1]), {}), "big.f32",
                                 "big.f32", start, end, 1e-5, 1e-8, layout)
    fetched = []
    real = storage.RemoteDir.read_range

    def counting(self, rel, a, b, what="file"):
        fetched.append(b - a)
        return real(self, rel, a, b, what)

    parity.load_trace(urls[0]), parity.load_trace(urls[1])  # (opening reads the manifests and headers)
    monkeypatch.setattr(storage.RemoteDir, "read_range", counting)
    executor._OPENED.clear()
    monkeypatch.setattr(executor, "load_trace", lambda path, storage_options=None: parity.load_trace(path))
    remote = executor._range_task("remote", (urls[0], {}), (urls[1], {}), "big.f32", "big.f32", start, end, 1e-5,
                                  1e-8, layout)
    assert remote == local and local[0][0] == start
    # (besides the manifests and headers the worker reads when it opens the traces) one ranged read
    # of the range per side, never the whole stage
    assert sorted(fetched)[-3:-2] < [1 << 20] and sorted(fetched)[-2:] == [(end - start) * 4] * 2
    assert any(BIG_BUG in at for _, _, at in local) is (start <= BIG_BUG < end)
