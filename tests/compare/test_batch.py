"""Runs of small stages judged in one kernel call (parity.compare.batch) give exactly the results
of judging each stage alone (compare_stage): same metrics, worst indices and values, same JSON."""

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import parity
from parity.compare import batch
from parity.compare.config import as_config
from parity.compare.diff import compare_stage, compare_stages
from parity.compare.metrics import kernel_available
from parity.localize.diagnose import DIAGNOSER
from parity.report.json import render_json
from parity.results import StageDiff, TraceDiff
from parity.trace.dtypes import DTYPES, storage_dtype
from parity.trace.stage import Stage
from parity.trace.writer import TraceWriter

pytestmark = pytest.mark.skipif(not kernel_available(), reason="the batched path needs the C kernel")

FLOATS = ("F64", "F32", "F16", "BF16")
SPECIAL = [0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 5e-324, 1e-310, 1e-45, 6e-8, 1e-40, 65504.0, 3e38,
           1e300, 1e-300, 0.5, 1 + 2**-20]


class FakeTrace:
    """What the engine reads of a trace: ``array(stage)``."""

    def __init__(self, arrays):
        self.arrays = arrays

    def array(self, stage):
        return self.arrays[stage.key]


def _stored(values, code):
    """``values`` stored as dtype ``code`` (as a trace hands them out), bf16 by truncating f32 bits."""
    v = np.asarray(values, np.float64)
    if code == "BF16":
        with np.errstate(all="ignore"):
            bits = (v.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        return bits.view(storage_dtype(DTYPES["BF16"]))
    if code.startswith("I"):
        return np.nan_to_num(v, nan=0, posinf=7, neginf=-7).clip(-1000, 1000).astype(np.dtype(DTYPES[code].numpy))
    with np.errstate(all="ignore"):
        return v.astype(np.dtype(DTYPES[code].numpy))


def _nudge(values, how, rng):
    out = np.array(values, np.float64)
    if how == "same":
        return out
    if how == "ulp":
        with np.errstate(all="ignore"):
            return np.nextafter(out, np.inf)
    if how == "noise":
        return out * (1 + rng.normal(scale=1e-7, size=out.size)).reshape(out.shape)
    if how == "special" and out.size:
        out.flat[rng.integers(out.size)] = SPECIAL[rng.integers(len(SPECIAL))]
    return out


stage_spec = st.tuples(
    st.sampled_from(FLOATS + ("I32",)), st.sampled_from(FLOATS + ("I32",)),
    st.sampled_from([(), (0,), (1,), (3,), (8,), (2, 3), (17,), (64,), (5, 1, 3)]),
    st.lists(st.one_of(st.sampled_from(SPECIAL), st.floats(-1e6, 1e6, width=32)), min_size=1, max_size=8),
    st.sampled_from(["same", "ulp", "noise", "special"]),
    st.sampled_from([None, "m"]),
    st.sampled_from(["s", "step", "logits"]),
)


def _pairs(specs, seed):
    rng = np.random.default_rng(seed)
    refs, cands, pairs = {}, {}, []
    for k, (rd, cd, shape, pool, how, units, name) in enumerate(specs):
        n = math.prod(shape)
        base = np.array([pool[int(i)] for i in rng.integers(len(pool), size=n)], np.float64).reshape(shape)
        key = {"s": f"s.{k}", "step": f"step.{k}.logits", "logits": f"logits[step={k}]"}[name]
        refs[key] = _stored(base, rd).reshape(shape)
        cands[key] = _stored(_nudge(base, how, rng), cd).reshape(shape)
        pairs.append((Stage(key, "tensor", rd, shape, units=units, position=k),
                      Stage(key, "tensor", cd, shape, units=units if k % 5 else "other", position=k)))
    return FakeTrace(refs), FakeTrace(cands), pairs


def _assert_same(fast, alone):
    assert type(alone) is StageDiff
    assert fast == alone and alone == fast
    try:
        h = hash(alone)
    except TypeError:  # evidence dicts, as before
        with pytest.raises(TypeError):
            hash(fast)
    else:
        assert hash(fast) == h
    for f in dataclasses.fields(StageDiff):
        a, b = getattr(fast, f.name), getattr(alone, f.name)
        if f.name == "metrics" and a is not None:
            for g in dataclasses.fields(a):  # bit for bit: -0.0 and NaN payloads aside, the same floats
                x, y = getattr(a, g.name), getattr(b, g.name)
                assert type(x) is type(y), g.name
                if isinstance(x, float):
                    assert (math.isnan(x) and math.isnan(y)) or (x == y and math.copysign(1, x) == math.copysign(1, y)), g.name
                else:
                    assert x == y, g.name
        else:
            assert a == b, f.name
    assert json.dumps(fast.to_dict()) == json.dumps(alone.to_dict())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(stage_spec, min_size=1, max_size=12), st.integers(0, 2**32 - 1), st.sampled_from([None, DIAGNOSER]))
def test_runs_equal_stage_by_stage(specs, seed, diagnoser):
    ref, cand, pairs = _pairs(specs, seed)
    cfg = as_config(None)

    def alone(rs, cs):
        return compare_stage(ref, cand, rs, cs, cfg, diagnoser)

    got = list(batch.judge(ref, cand, ((i, rs, cs) for i, (rs, cs) in enumerate(pairs)), cfg, alone))
    assert [g[0] for g in got] == list(range(len(pairs)))
    for (_, rs, cs, fast), (rs2, cs2) in zip(got, pairs):
        assert rs is rs2 and cs is cs2
        _assert_same(fast, alone(rs, cs))


def test_a_run_of_many_stages_is_deferred_and_exact():
    rng = np.random.default_rng(3)
    specs = ([("F32", "F32", (8,), list(rng.normal(size=8)), "ulp", None, "s")] * 300
             + [("F16", "BF16", (4,), [1.0, 2.5], "noise", None, "s")] * 50
             + [("F32", "F32", (2, 3, 5), list(rng.normal(size=9)), "noise", None, "step")] * 80)
    ref, cand, pairs = _pairs(specs, 5)
    cfg = as_config(None)
    got = [sd for *_, sd in batch.judge(ref, cand, ((None, rs, cs) for rs, cs in pairs), cfg,
                                        lambda rs, cs: compare_stage(ref, cand, rs, cs, cfg, None))]
    assert sum(isinstance(sd, batch.DeferredStageDiff) for sd in got) > 380
    assert all(sd.extra is not None for sd in got[350:])
    for sd, (rs, cs) in zip(got, pairs):
        alone = compare_stage(ref, cand, rs, cs, cfg, None)
        _assert_same(sd, alone)
        for name in ("logits", "image", "noise_floor"):
            assert batch.extra_value(sd, name) == sd.extra_value(name) == (alone.extra or {}).get(name)


def test_deferred_behaves_as_a_plain_stage_diff():
    ref, cand, pairs = _pairs([("F32", "F64", (3,), [1.0, -0.0, 2.5], "noise", "m", "s")] * 3, 1)
    cfg = as_config(None)
    sd = next(iter(batch.judge(ref, cand, [(0, *pairs[0])], cfg, None)))[3]
    plain = compare_stage(ref, cand, *pairs[0], cfg, None)
    assert isinstance(sd, batch.DeferredStageDiff) and isinstance(sd, StageDiff)
    assert repr(sd) == repr(plain) and sd.notes == plain.notes == ("units differ: 'm' vs 'other'", "dtype differs: F32 vs F64")
    changed = dataclasses.replace(sd, status="expected", expected_reason="known")
    assert type(changed) is StageDiff and changed == dataclasses.replace(plain, status="expected", expected_reason="known")
    assert type(copy.deepcopy(sd)) is StageDiff and copy.deepcopy(sd) == plain == copy.copy(sd)
    assert dataclasses.asdict(sd) == dataclasses.asdict(plain)
    assert StageDiff.from_dict(sd.to_dict()) == sd and sd.two_sided and sd.has_metrics
    with pytest.raises(dataclasses.FrozenInstanceError):
        sd.status = "fail"


def test_logits_taken_in_several_chunks_are_judged_alone(monkeypatch):
    from parity.compare import logits

    monkeypatch.setattr(logits, "_ROWS_PER_CHUNK_BYTES", 8 * 5 * 2)  # two rows of 5 per chunk
    ref, cand, pairs = _pairs([("F32", "F32", (3, 5), [1.0, 3.0, -2.0], "noise", None, "step")] * 4, 2)
    cfg = as_config(None)
    got = [sd for *_, sd in batch.judge(ref, cand, ((None, rs, cs) for rs, cs in pairs), cfg,
                                        lambda rs, cs: compare_stage(ref, cand, rs, cs, cfg, None))]
    assert not any(isinstance(sd, batch.DeferredStageDiff) for sd in got)
    for sd, (rs, cs) in zip(got, pairs):
        _assert_same(sd, compare_stage(ref, cand, rs, cs, cfg, None))


def _write(path, stages):
    with TraceWriter(path) as w:
        for key, value, kw in stages:
            w.add(key, value, **kw)


def test_traces_diff_identically_with_and_without_runs(tmp_path, monkeypatch):
    """A pair of traces mixing plain runs with every kind of stage the runs leave alone."""
    rng = np.random.default_rng(11)
    ref, cand = [], []
    for i in range(400):
        r = rng.normal(size=1 + i % 9).astype(np.float32 if i % 7 else np.float16)
        c = r.copy()
        if i in (123, 301):
            c[0] += 1  # failing stages inside runs: judged alone, with diagnoses
        if i == 200:
            c[-1] = np.nan
        ref.append((f"iter.{i}.residual", r, {}))
        cand.append((f"iter.{i}.residual", c, {}))
        if i % 50 == 0:
            lg = rng.normal(size=(2, 10)).astype(np.float32)
            img = rng.random((6, 6))
            for side, k in ((ref, 0), (cand, 1)):
                side.append((f"step.{i}.logits", lg + k * 1e-3, {}))
                side.append((f"img.{i}", img, {"axes": ["height", "width"]}))
                side.append((f"count.{i}", np.arange(4, dtype=np.int32) + k * (i == 100), {}))
                side.append((f"note.{i}", "same", {}))
                side.append((f"zero.{i}", np.zeros(3), {}))
                side.append((f"tiny.{i}", np.full(2, 1e-200), {}))
                side.append((f"big.{i}", np.full(3, 1e200), {}))
    ref.append(("only.ref", np.ones(2), {}))
    cand.append(("only.cand", np.ones(2), {}))
    _write(tmp_path / "r.trace", ref)
    _write(tmp_path / "c.trace", cand)
    config = {"tolerance": {"stages": {"iter.3*": {"rtol": 1e-2}}}, "expected": {"iter.301.residual": "known"},
              "transforms": {"iter.7.residual": {"scale": 1, "side": "candidate"}}}
    fast = parity.compare_traces(tmp_path / "r.trace", tmp_path / "c.trace", config)
    assert sum(isinstance(s, batch.DeferredStageDiff) for s in fast.stages) > 350
    monkeypatch.setattr(batch, "_kernel", None)
    slow = parity.compare_traces(tmp_path / "r.trace", tmp_path / "c.trace", config)
    assert not any(isinstance(s, batch.DeferredStageDiff) for s in slow.stages)
    assert fast == slow and render_json(fast) == render_json(slow)
    assert TraceDiff.from_dict(json.loads(render_json(fast))) == fast
    assert fast["iter.123.residual"].status == "fail" and fast["iter.301.residual"].status == "expected"
    assert "first_nonfinite" in [d.kind for d in fast["iter.200.residual"].diagnoses]
    assert compare_stages(tmp_path / "r.trace", tmp_path / "c.trace", config) == compare_stages(
        tmp_path / "r.trace", tmp_path / "c.trace", config)
