"""The sharded-trace reader: one logical trace from the per-rank traces of a sharded capture, its
reassembly on read, and the errors (naming the rank and the stage) for shards that do not fit."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import parity
from parity.cli import main
from parity.errors import TraceError, TraceFormatError
from parity.trace.sharded import (SHARDS, ShardedTrace, prepare_sharded, rank_trace_name, replicated_placement,
                                  shard_placement)
from parity.trace.writer import TraceWriter

REP = object()  # a replicated value's placement marker in the specs below


def write_sharded(path, per_rank, *, complete=(True,) * 8, capture=None):
    """Write a sharded trace: ``per_rank[r]`` maps keys to ``(value, placement)``, the placement
    being ``(dim, offset, full_shape)``, ``REP`` (recorded as replicated) or ``None`` (none recorded)."""
    world = len(per_rank)
    for r, stages in enumerate(per_rank):
        shard = {"rank": r, "world_size": world, **({"capture": capture} if capture else {})}
        w = TraceWriter(prepare_sharded(path, r, world, capture), meta={"shard": shard}, volatile=False)
        for key, (value, place) in stages.items():
            prov = None
            if place is REP:
                prov = {"shard": replicated_placement(r, world)}
            elif place is not None:
                prov = {"shard": shard_placement(*place, rank=r, world_size=world), "module": key}
            w.add(key, value, provenance=prov)
        w.close(complete=complete[r], reason=None if complete[r] else "the rank was killed")
    return str(path)


def _tp(path, n=3):
    """``n`` ranks: ``h`` sliced along dim 1 (columns), ``rows`` along dim 0, ``y`` and ``note`` replicated."""
    full_h = np.arange(2 * 4 * n, dtype=np.float32).reshape(2, 4 * n)
    full_rows = np.arange(2 * n * 3, dtype=np.int64).reshape(2 * n, 3)
    y = np.linspace(0, 1, 5)
    ranks = [{"h": (full_h[:, 4 * r:4 * r + 4], (1, 4 * r, full_h.shape)),
              "rows": (full_rows[2 * r:2 * r + 2], (0, 2 * r, full_rows.shape)),
              "y": (y, REP), "note": ("same text", None)} for r in range(n)]
    return write_sharded(path, ranks), full_h, full_rows, y


def test_the_logical_trace_has_full_shapes_and_reassembles_on_read(tmp_path):
    path, full_h, full_rows, y = _tp(tmp_path / "tp.trace")
    t = parity.load_trace(path)
    assert isinstance(t, ShardedTrace) and t.complete and t.world_size == 3
    assert repr(t) == f"<ShardedTrace {path!r}: 4 stages over 3 ranks, complete>"
    assert t.keys() == ["h", "rows", "y", "note"] and [s.position for s in t] == [0, 1, 2, 3]
    assert t.stage("h").shape == (2, 12) and t.stage("h").dtype == "F32" and t.stage("rows").shape == (6, 3)
    assert t.stage("h").provenance == {"module": "h", "shard": {"dim": 1, "world_size": 3}}
    assert t.stage("y").provenance["shard"] == {"replicated": True, "world_size": 3}
    h = t["h"]
    assert h.dtype == np.float32 and np.array_equal(h, full_h) and not h.flags.writeable
    assert np.array_equal(t["rows"], full_rows) and np.array_equal(t["y"], y) and t["note"] == "same text"
    assert t.rank(2)["h"].shape == (2, 4)
    assert t.meta["shard"] == {"world_size": 3} and len(t.manifest["files"]) == 3
    assert t.verify() == []
    with open(os.path.join(path, SHARDS)) as f:
        assert json.load(f) == {"format": "parity-sharded-trace", "schema_version": 1, "world_size": 3,
                                "ranks": [rank_trace_name(r) for r in range(3)]}


def test_a_sharded_trace_diffs_against_an_unsharded_one_with_no_extra_step(tmp_path):
    path, full_h, full_rows, y = _tp(tmp_path / "tp.trace")
    ref = str(tmp_path / "ref.trace")
    with parity.record(ref):
        for k, v in (("h", full_h), ("rows", full_rows), ("y", y), ("note", "same text")):
            parity.tap(k, v)
    assert parity.compare_traces(ref, path).passed
    assert main(["diff", ref, path]) == 0
    bad = [{k: ((v * 1.5 if k == "h" and r == 1 else v), p) for k, (v, p) in stages.items()}
           for r, stages in enumerate([{"h": (full_h[:, 4 * r:4 * r + 4], (1, 4 * r, full_h.shape)),
                                        "rows": (full_rows[2 * r:2 * r + 2], (0, 2 * r, full_rows.shape)),
                                        "y": (y, REP), "note": ("same text", None)} for r in range(3)])]
    buggy = write_sharded(tmp_path / "bug.trace", bad)
    d = parity.compare_traces(ref, buggy)
    assert d.first_divergence.key == "h" and [s.key for s in d.stages if not s.passed] == ["h"]


@pytest.mark.parametrize("offsets, message", [
    ((0, 2, 4), r"rank 1's slice \[2, 6\) along dim 1 overlaps the slices before it \(which end at 4\)"),
    ((0, 5, 9), r"rank 1's slice \[5, 9\) along dim 1 leaves \[4, 5\) uncovered"),
    ((0, 4, 4), r"rank 2's slice \[4, 8\) along dim 1 overlaps"),
])
def test_slices_that_do_not_tile_the_stage_are_errors_naming_the_rank_and_stage(tmp_path, offsets, message):
    full = np.zeros((2, 12), np.float32)
    path = write_sharded(tmp_path / "t.trace", [{"h": (full[:, :4], (1, o, full.shape))} for o in offsets])
    with pytest.raises(TraceFormatError, match=message) as e:
        parity.load_trace(path)
    assert e.value.stage == "h" and e.value.path == path


def test_slices_short_of_the_full_size_are_an_error(tmp_path):
    full = np.zeros((2, 12), np.float32)
    path = write_sharded(tmp_path / "t.trace", [{"h": (full[:, :4], (1, 4 * r, (2, 16)))} for r in range(3)])
    with pytest.raises(TraceFormatError, match=r'stage "h": the ranks\' slices along dim 1 end at 12, short of the '
                                               r"full size 16 \(rank 2 holds the last slice\)"):
        parity.load_trace(path)


def test_a_missing_rank_is_an_error_naming_it(tmp_path):
    path, *_ = _tp(tmp_path / "tp.trace")
    shutil.rmtree(os.path.join(path, rank_trace_name(2)))
    with pytest.raises(TraceFormatError, match=r"rank 2's trace rank-00002.trace is missing \(world size 3\)"):
        parity.load_trace(path)


@pytest.mark.parametrize("change, message", [
    (lambda r1: r1.pop("rows"), r'rank-00001.trace: stage "rows": rank 1\'s trace has no such stage; rank 0 has it'),
    (lambda r1: r1.update(extra=(np.zeros(1), None)), r'stage "extra": rank 1\'s trace has this stage, but rank 0\'s'),
    (lambda r1: r1.update(y=(np.zeros(5, np.float32), REP)), r'stage "y": rank 1 stores F32, rank 0 F64'),
    (lambda r1: r1.update(y=(np.zeros(6), REP)), r'stage "y": is replicated, but rank 1 holds shape \(6,\)'),
    (lambda r1: r1.update(h=(np.zeros((2, 12), np.float32), REP)),
     r'stage "h": rank 0 stores a slice, rank 1 the whole value \(replicated\)'),
    (lambda r1: r1.update(h=(np.zeros((3, 4), np.float32), (1, 4, (2, 12)))),
     r'stage "h": rank 1 holds shape \(3, 4\), which is not a slice along dim 1 of \(2, 12\)'),
    (lambda r1: r1.update(h=(np.zeros((2, 4), np.float32), (1, 4, (2, 16)))),
     r'stage "h": rank 1 places its slice along dim 1 of \(2, 16\), rank 0 along dim 1 of \(2, 12\)'),
    (lambda r1: r1.update(h=(np.zeros((2, 4), np.float32), (5, 4, (2, 12)))),
     r'stage "h": rank 1: a slice along dim 5 of a 2-d stage does not fit'),
])
def test_ranks_that_disagree_on_a_stage_are_errors_naming_the_rank_and_stage(tmp_path, change, message):
    full_h = np.zeros((2, 12), np.float32)
    ranks = [{"h": (full_h[:, 4 * r:4 * r + 4], (1, 4 * r, full_h.shape)), "rows": (np.zeros(2), REP),
              "y": (np.zeros(5), REP)} for r in range(3)]
    change(ranks[1])
    path = write_sharded(tmp_path / "t.trace", ranks)
    with pytest.raises(TraceFormatError, match=message):
        parity.load_trace(path)


def test_a_replicated_stage_whose_ranks_disagree_cannot_be_read(tmp_path):
    ranks = [{"y": (np.array([1.0, 2.0, 3.0 + r]), REP), "note": ("text" if r < 2 else "other", None)}
             for r in range(3)]
    path = write_sharded(tmp_path / "t.trace", ranks)
    t = parity.load_trace(path)  # opening reads no values
    with pytest.raises(TraceFormatError, match=r'stage "y": is recorded as replicated, but rank 1\'s copy differs '
                                               r"from rank 0's in 1 of 3 values \(first at index \(2,\)\)") as e:
        t["y"]
    assert e.value.stage == "y"
    with pytest.raises(TraceFormatError, match=r"rank 2's text differs from rank 0's"):
        t["note"]
    t.check_replicas = False
    assert t["y"].tolist() == [1.0, 2.0, 3.0] and t["note"] == "text"
    ref = str(tmp_path / "ref.trace")
    with parity.record(ref):
        parity.tap("y", np.array([1.0, 2.0, 3.0]))
    assert main(["diff", ref, path]) == 2  # could not compare: the candidate's value is undefined


def test_replicas_are_checked_bit_for_bit_once(tmp_path):
    nan = np.array([np.nan, -0.0])
    path = write_sharded(tmp_path / "t.trace", [{"v": (nan, None)} for _ in range(2)])
    t = parity.load_trace(path)
    assert np.array_equal(t["v"], nan, equal_nan=True) and "v" in t._replicas_ok
    other = np.array([np.nan, 0.0])  # -0.0 vs 0.0: equal as numbers, not as recorded values
    path2 = write_sharded(tmp_path / "t2.trace", [{"v": (nan, None)}, {"v": (other, None)}])
    with pytest.raises(TraceFormatError, match="in 1 of 2 values"):
        parity.load_trace(path2)["v"]


def test_an_incomplete_rank_makes_the_logical_trace_incomplete(tmp_path):
    full = np.arange(8.0).reshape(2, 4)
    ranks = [{"a": (full[:, :2] if r == 0 else full[:, 2:], (1, 2 * r, (2, 4))), "b": (np.ones(2), REP)}
             for r in range(2)]
    del ranks[1]["b"]
    path = write_sharded(tmp_path / "t.trace", ranks, complete=(True, False))
    t = parity.load_trace(path)
    assert not t.complete and t.keys() == ["a"] and np.array_equal(t["a"], full)
    assert t.manifest["incomplete_reason"] == "rank 1: the rank was killed"


@pytest.mark.parametrize("doc, message", [
    ({"format": "x"}, 'is not a sharded-trace index'),
    ({"format": "parity-sharded-trace", "schema_version": 9, "world_size": 2}, "has schema_version 9"),
    ({"format": "parity-sharded-trace", "schema_version": 1, "world_size": 0}, "world_size must be a positive"),
    ({"format": "parity-sharded-trace", "schema_version": 1, "world_size": 2, "ranks": ["../x", "y"]},
     r'"ranks" must list rank-00000.trace ... rank-00001.trace in order'),
])
def test_a_malformed_shard_index_is_an_error_naming_it(tmp_path, doc, message):
    path, *_ = _tp(tmp_path / "tp.trace", n=2)
    with open(os.path.join(path, SHARDS), "w") as f:
        json.dump(doc, f)
    with pytest.raises(TraceFormatError, match=message) as e:
        parity.load_trace(path)
    assert e.value.path == os.path.join(path, SHARDS)


def test_a_rank_trace_from_another_capture_is_refused(tmp_path):
    path, *_ = _tp(tmp_path / "tp.trace", n=2)
    other, *_ = _tp(tmp_path / "other.trace", n=3)
    shutil.rmtree(os.path.join(path, rank_trace_name(1)))
    shutil.copytree(os.path.join(other, rank_trace_name(1)), os.path.join(path, rank_trace_name(1)))
    with pytest.raises(TraceFormatError, match=r"rank-00001.trace: rank 1's trace says it is rank 1 of 3; it belongs "
                                               "to another capture"):
        parity.load_trace(path)


def test_a_rank_trace_left_by_an_earlier_capture_is_refused(tmp_path):
    ranks = [{"y": (np.zeros(2), REP)} for _ in range(2)]
    path = write_sharded(tmp_path / "t.trace", ranks, capture="aaaa")
    assert parity.load_trace(path).keys() == ["y"]
    # a new capture into the same directory, whose rank 1 died before it started writing
    prepare_sharded(path, 0, 2, "bbbb")
    with TraceWriter(os.path.join(path, rank_trace_name(0)), meta={"shard": {"rank": 0, "world_size": 2,
                                                                             "capture": "bbbb"}}) as w:
        w.add("y", np.zeros(2))
    with pytest.raises(TraceFormatError, match=r"rank-00001.trace: rank 1's trace was written by capture 'aaaa', not "
                                               r"by capture 'bbbb' \(the index's\): it was left by an earlier capture"):
        parity.load_trace(path)


def test_a_rank_trace_linked_from_outside_is_refused(tmp_path):
    path, *_ = _tp(tmp_path / "tp.trace", n=2)
    outside = tmp_path / "elsewhere"
    shutil.move(os.path.join(path, rank_trace_name(1)), outside)
    os.symlink(outside, os.path.join(path, rank_trace_name(1)))
    with pytest.raises(TraceError, match="the trace of rank 1 is a symbolic link"):
        parity.load_trace(path)
    assert parity.load_trace(path, follow_symlinks=True).world_size == 2


def test_verify_names_the_rank_of_a_damaged_file(tmp_path):
    path, *_ = _tp(tmp_path / "tp.trace", n=2)
    data = os.path.join(path, rank_trace_name(1), "data", "000000.safetensors")
    with open(data, "r+b") as f:
        f.seek(-1, 2)
        b = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([b[0] ^ 1]))
    problems = parity.load_trace(path).verify()
    assert len(problems) == 1 and problems[0].startswith(data + ": crc32")


def test_prepare_sharded_refuses_what_is_not_a_sharded_trace_and_drops_stale_ranks(tmp_path):
    with parity.record(str(tmp_path / "plain.trace")):
        parity.tap("x", 1.0)
    with pytest.raises(TraceError, match="holds an unsharded trace"):
        prepare_sharded(tmp_path / "plain.trace", 0, 2)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(TraceError, match="not a sharded trace \\(it holds 'notes.txt'\\)"):
        prepare_sharded(tmp_path / "mine", 0, 2)
    path, *_ = _tp(tmp_path / "tp.trace", n=3)
    assert prepare_sharded(path, 1, 2) == os.path.join(path, rank_trace_name(1))
    assert os.path.isdir(os.path.join(path, rank_trace_name(2)))  # only rank 0 removes stale ranks
    prepare_sharded(path, 0, 2)
    assert sorted(os.listdir(path)) == [rank_trace_name(0), rank_trace_name(1), SHARDS]
    with pytest.raises(TraceFormatError, match="rank 0's trace says it is rank 0 of 3"):  # not rewritten yet
        parity.load_trace(path)


def fsspec_names(url):
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    return sorted(n.rsplit("/", 1)[-1] for n in fs.ls(root, detail=False))


def test_a_sharded_trace_at_a_url_reads_and_diffs_as_a_local_one(tmp_path):
    """Each rank writes its trace to the URL (staged locally, manifest last) after shards.json is
    put there; the logical trace reads with ranged requests and diffs like the local one."""
    pytest.importorskip("fsspec")
    import uuid

    from parity.trace.remote import upload_trace

    url = f"memory://shard-tests/{uuid.uuid4().hex}/tp.trace"
    local, full_h, full_rows, y = _tp(tmp_path / "tp.trace")
    remote, *_ = _tp(url)
    t = parity.load_trace(remote)
    assert isinstance(t, ShardedTrace) and t.world_size == 3 and t.path == url and t.complete
    assert np.array_equal(t["h"], full_h) and np.array_equal(t["rows"], full_rows) and t["note"] == "same text"
    assert t.verify() == [] and t.rank(1).path == f"{url}/{rank_trace_name(1)}"
    with parity.record(tmp_path / "ref.trace"):
        parity.tap("h", full_h), parity.tap("rows", full_rows), parity.tap("y", y), parity.tap("note", "same text")
    ref = upload_trace(tmp_path / "ref.trace", url.replace("tp.trace", "ref.trace"))
    assert parity.compare_traces(local, remote).stages == parity.compare_traces(local, local).stages
    assert parity.compare_traces(ref, remote).passed
    copied = upload_trace(local, url.replace("tp.trace", "copied.trace"))  # a local sharded trace, uploaded
    assert parity.compare_traces(local, copied).stages == parity.compare_traces(local, local).stages
    assert fsspec_names(copied) == [rank_trace_name(r) for r in range(3)] + [SHARDS]
    # the same refusals as a local directory: a missing rank, an unsharded trace in the way
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    fs.rm(f"{root}/{rank_trace_name(2)}", recursive=True)
    with pytest.raises(TraceFormatError, match="rank 2's trace rank-00002.trace is missing"):
        parity.load_trace(url)
    with pytest.raises(TraceError, match="holds an unsharded trace"):
        prepare_sharded(ref, 0, 2)
    # rank 0 of a narrower capture drops the wider one's extra rank traces
    prepare_sharded(url, 0, 1)
    assert fsspec_names(url) == [rank_trace_name(0), SHARDS]
