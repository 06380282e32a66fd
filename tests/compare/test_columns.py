"""Two indexed traces compared from their index columns (parity.compare.columns) give exactly the
diff of the stage-by-stage engine: same results, same JSON, text and Markdown reports."""

import io
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

import parity
from parity.compare import batch, columns
from parity.compare.columns import RUN_STAGES, ColumnPlan
from parity.compare.config import as_config
from parity.compare.metrics import _KCODE, _kernel, kernel_available
from parity.report.json import render_json
from parity.report.markdown import render_markdown
from parity.report.text import render_text
from parity.results import TraceDiff
from parity.trace.reader import load_trace
from parity.trace.writer import TraceWriter

pytestmark = pytest.mark.skipif(not kernel_available(), reason="the column path needs the C kernel")


def _write(path, stages, index=True, **kw):
    with TraceWriter(path, index=index, **kw) as w:
        for key, value, opts in stages:
            w.add(key, value, **opts)
    return path


def _stage_by_stage(monkeypatch, ref, cand, config=None):
    """The diff with neither the column plan nor runs (every stage judged alone)."""
    with monkeypatch.context() as m:
        m.setattr(columns, "_kernel", None)
        m.setattr(batch, "_kernel", None)
        return parity.compare_traces(ref, cand, config)


def _reports(diff):
    out = io.StringIO()
    render_text(diff, Console(file=out, width=160))
    return render_json(diff), out.getvalue(), render_markdown(diff, traces=None)


def _assert_same_diff(fast, slow):
    assert fast == slow
    assert [type(s) for s in slow.stages if isinstance(s, batch.DeferredStageDiff)] == []
    for a, b in zip(fast.stages, slow.stages):
        assert a == b and json.dumps(a.to_dict()) == json.dumps(b.to_dict()), a.key
    assert _reports(fast) == _reports(slow)


def _mixed(rng, n=600):
    """A reference and candidate mixing runs with every kind of stage a run leaves out."""
    ref, cand = [], []
    for i in range(n):
        r = rng.normal(size=1 + i % 5).astype(np.float32 if i % 97 else np.float16)
        c = r.copy()
        c[::3] = np.nextafter(c[::3], np.inf)
        if i in (123, 301, 480):
            c[0] += 1  # failing stages inside runs: judged alone, with diagnoses
        if i == 200:
            c[-1] = np.nan
        ref.append((f"iter.{i}.residual", r, {}))
        cand.append((f"iter.{i}.residual", c, {}))
        if i % 40 == 0:
            lg = rng.normal(size=(2, 10)).astype(np.float32)
            for side, k in ((ref, 0), (cand, 1)):
                side.append((f"step.{i}.logits", lg + k * 1e-3 * (i % 80 == 0), {}))
                side.append((f"count.{i}", np.arange(4, dtype=np.int32) + k * (i == 120), {}))
                side.append((f"note.{i}", "same", {}))
                side.append((f"units.{i}", np.ones(3, np.float32), {"units": "m" if k == 0 or i % 80 else "cm"}))
                side.append((f"axes.{i}", np.ones((2, 3), np.float32), {"axes": ["seq", "hidden"]}))
                side.append((f"zero.{i}", np.zeros(3), {}))
                side.append((f"big.{i}", np.full(3, 1e200), {}))
                side.append((f"wide.{i}", np.ones(5000, np.float32) + k * 1e-7, {}))
                side.append((f"empty.{i}", np.zeros(0, np.float32), {}))
            img = rng.random((6, 6))
            ref.append((f"img.{i}", img, {"axes": ["height", "width"]}))
            cand.append((f"img.{i}", img + 1e-9, {"axes": ["height", "width"]}))
    ref.append(("only.ref", np.ones(2, np.float32), {}))
    cand.append(("only.cand", np.ones(2, np.float32), {}))
    return ref, cand


def test_mixed_traces_diff_as_stage_by_stage(tmp_path, monkeypatch):
    ref, cand = _mixed(np.random.default_rng(7))
    r = _write(tmp_path / "r.trace", ref, buffer_bytes=20_000)  # many data files: runs end at their ends
    c = _write(tmp_path / "c.trace", cand, buffer_bytes=33_000)
    rt, ct = load_trace(r), load_trace(c)
    assert rt.index is not None and len(rt.manifest["files"]) > 5
    plan = ColumnPlan.build(rt, ct, as_config(None), None)
    segs = list(plan.segments())
    assert sum(s.end - s.first for s in segs if s.kind == "run") > 400
    assert [s.first for s in segs] == [0] + [s.end for s in segs[:-1]] and segs[-1].end == len(rt)
    fast = parity.compare_traces(r, c)
    assert sum(isinstance(s, batch.DeferredStageDiff) for s in fast.stages) > 400
    slow = _stage_by_stage(monkeypatch, r, c)
    _assert_same_diff(fast, slow)
    assert fast["iter.123.residual"].status == "fail" and fast.first_divergence.key == "step.0.logits"
    assert "first_nonfinite" in [d.kind for d in fast["iter.200.residual"].diagnoses]
    assert [s.key for s in fast.missing] == ["only.ref"] and [s.key for s in fast.extra] == ["only.cand"]
    # the same stages listed in manifests (no index): the engine's other path, the same diff
    plain = parity.compare_traces(_write(tmp_path / "r1.trace", ref, index=False),
                                  _write(tmp_path / "c1.trace", cand, index=False))
    assert plain.stages == fast.stages


CONFIGS = [
    {"tolerance": {"stages": {"iter.3*": {"rtol": 1e-2}, "step.*": {"atol": 1e-2}}}},
    {"expected": {"iter.301.residual": "known"}, "ignore": ["iter.4*", "note.*"]},
    {"transforms": {"iter.7*": {"scale": 1, "side": "candidate"}}},
    {"images": {"stages": ["axes.*"]}},
    {"tolerance": {"stages": {"iter.1*": {"cosine_min": 0.5}}}},
]


@pytest.mark.parametrize("config", CONFIGS, ids=["tolerance", "expected+ignore", "transforms", "images", "cosine"])
def test_configs_diff_as_stage_by_stage(tmp_path, monkeypatch, config):
    ref, cand = _mixed(np.random.default_rng(8), n=500)
    r, c = _write(tmp_path / "r.trace", ref), _write(tmp_path / "c.trace", cand)
    fast = parity.compare_traces(r, c, config)
    _assert_same_diff(fast, _stage_by_stage(monkeypatch, r, c, config))
    if "ignore" in config:
        assert fast.ignored > 0 and "iter.45.residual" not in [s.key for s in fast.stages]
        assert fast["iter.301.residual"].status == "expected"


def test_noise_floor_diff_as_stage_by_stage(tmp_path, monkeypatch):
    from parity.compare.floor import NoiseFloor, StageFloor

    ref, cand = _mixed(np.random.default_rng(9), n=300)
    r, c = _write(tmp_path / "r.trace", ref), _write(tmp_path / "c.trace", cand)
    floor = NoiseFloor({"iter.12.residual": StageFloor(1e-3, 1e-3, 1e-3), "iter.123.residual": StageFloor(1e-9, 1e-9, 1e-9)},
                       margin=3.0)
    fast = parity.compare_traces(r, c, noise_floor=floor)
    with monkeypatch.context() as m:
        m.setattr(columns, "_kernel", None)
        m.setattr(batch, "_kernel", None)
        slow = parity.compare_traces(r, c, noise_floor=floor)
    _assert_same_diff(fast, slow)
    assert not isinstance(fast["iter.12.residual"], batch.DeferredStageDiff)
    assert fast["iter.12.residual"].extra_value("noise_floor") is not None


def test_reordered_missing_and_extra_candidate_stages(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    ref = [(f"iter.{i}.x", rng.normal(size=4).astype(np.float32), {}) for i in range(300)]
    cand = list(ref[150:]) + [("new.one", np.ones(2, np.float32), {})] + list(ref[:100])  # 100..149 missing
    cand[10] = (cand[10][0], cand[10][1] + 1, {})
    r, c = _write(tmp_path / "r.trace", ref), _write(tmp_path / "c.trace", cand)
    fast = parity.compare_traces(r, c)
    assert [s.key for s in fast.missing] == [f"iter.{i}.x" for i in range(100, 150)]
    assert [s.key for s in fast.extra] == ["new.one"] and fast.first_divergence.key == "iter.160.x"
    assert sum(isinstance(s, batch.DeferredStageDiff) for s in fast.stages) > 200
    _assert_same_diff(fast, _stage_by_stage(monkeypatch, r, c))
    assert fast["iter.0.x"].cand.position == 151 and fast["iter.200.x"].cand.position == 50


def test_runs_are_capped_and_split_where_the_layout_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(columns, "RUN_STAGES", 16)
    monkeypatch.setattr(columns, "_ROW_NUMBERS", list(range(16)))
    monkeypatch.setattr(columns, "_BLOCK", 64)
    values = [np.float32([i, 1]) for i in range(100)] + [np.float64([1, 2])] * 10 + [np.float32([1, 2, 3])] * 10
    ref = [(f"s.{i}", v, {}) for i, v in enumerate(values)]
    r = _write(tmp_path / "r.trace", ref)
    plan = ColumnPlan.build(load_trace(r), load_trace(r), as_config(None), None)
    got = [(s.kind, s.first, s.end) for s in plan.segments()]
    assert got == [("run", a, min(a + 16, e)) for a0, e in ((0, 64), (64, 100)) for a in range(a0, e, 16)] + [
        ("run", 100, 110), ("run", 110, 120)]
    d = parity.compare_traces(r, r)
    assert d.passed and all(isinstance(s, batch.DeferredStageDiff) for s in d.stages)
    assert [s.ref.position for s in d.stages] == list(range(120))


def test_no_plan_without_two_indexes_or_with_renames(tmp_path):
    ref = [(f"s.{i}", np.ones(2, np.float32), {}) for i in range(5)]
    r, v1 = _write(tmp_path / "r.trace", ref), _write(tmp_path / "v1.trace", ref, index=False)
    rt, v1t = load_trace(r), load_trace(v1)
    assert ColumnPlan.build(rt, rt, as_config(None), None) is not None
    assert ColumnPlan.build(rt, v1t, as_config(None), None) is None
    assert ColumnPlan.build(rt, rt, as_config({"rename": {"s\\.(.*)": "t.\\1"}}), None) is None


# -- random pairs ------------------------------------------------------------------------------------------
stage_spec = st.tuples(
    st.sampled_from(["F32", "F16", "BF16", "F64", "I32"]), st.sampled_from(["F32", "F16", "F64"]),
    st.sampled_from([(), (1,), (3,), (2, 3), (1, 2, 2), (1, 1, 1, 1, 2), (4, 5)]),
    st.sampled_from(["same", "ulp", "bump", "nan", "inf", "missing", "text", "units"]),
    st.sampled_from(["iter", "logits", "idx"]),
    st.integers(1, 30),
)


def _dtype(code):
    return {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I32": np.int32}.get(code)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(stage_spec, min_size=1, max_size=8), st.integers(0, 2**32 - 1))
def test_random_pairs_diff_as_stage_by_stage(tmp_path_factory, monkeypatch, specs, seed):
    rng = np.random.default_rng(seed)
    ref, cand = [], []
    k = 0
    for rd, cd, shape, how, name, repeat in specs:
        for _ in range(repeat):
            key = {"iter": f"iter.{k}.r", "logits": f"step.{k}.logits", "idx": f"x[step={k}]"}[name]
            k += 1
            if how == "text":
                ref.append((key, "a", {}))
                cand.append((key, "a" if k % 2 else "b", {}))
                continue
            base = rng.normal(size=shape) * 10
            rv = base.astype(np.float32) if rd == "BF16" else base.astype(_dtype(rd))
            cv = np.array(base, np.float64)
            if how == "ulp":
                cv = np.nextafter(cv, np.inf)
            elif how == "bump" and cv.size:
                cv.flat[0] += 1
            elif how in ("nan", "inf") and cv.size:
                cv.flat[-1] = math.nan if how == "nan" else math.inf
            opts = {"units": "m"} if how == "units" else {}
            ref.append((key, rv, opts))
            if how != "missing":
                cand.append((key, cv.astype(_dtype(cd)), {"units": "km"} if how == "units" and k % 2 else opts))
    d = tmp_path_factory.mktemp("pair")
    r, c = _write(d / "r.trace", ref), _write(d / "c.trace", cand)
    fast = parity.compare_traces(r, c)
    _assert_same_diff(fast, _stage_by_stage(monkeypatch, r, c))
    assert TraceDiff.from_dict(json.loads(render_json(fast))) == fast


# -- the kernel's rows entry ---------------------------------------------------------------------------------
@pytest.mark.parametrize("rd,cd", [("F32", "F32"), ("F64", "F32"), ("F16", "F64"), ("BF16", "F32")])
def test_kernel_rows_equals_stages(rd, cd):
    from parity.compare.metrics import _ulp_plan
    from parity.trace.dtypes import DTYPES, storage_dtype

    rng = np.random.default_rng(1)
    n, size = 37, 6
    vals = rng.normal(size=(n, size))
    vals[3, 2], vals[5, 0], vals[7, 1] = np.nan, np.inf, 1e30

    def stored(v, code):
        if code == "BF16":
            return (v.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        with np.errstate(over="ignore"):
            return v.astype(np.dtype(storage_dtype(DTYPES[code])))

    ref, cand = stored(vals, rd), stored(vals * (1 + 1e-3 * rng.normal(size=vals.shape)), cd)
    ulp = _ulp_plan(DTYPES[rd], DTYPES[cd])
    kulp = ulp if len(ulp) == 3 else (ulp[0], 0, 0)
    args = (_KCODE[rd], _KCODE[cd], 1e-4, 1e-6, *kulp)
    i1, f1 = np.empty((n, 14), np.int64), np.empty((n, 12))
    i2, f2 = np.empty((n, 14), np.int64), np.empty((n, 12))
    _kernel.rows(ref, cand, n, *args, i1, f1)
    _kernel.stages(list(ref), list(cand), *args, i2, f2)
    assert (i1 == i2).all() and np.array_equal(f1, f2, equal_nan=True)
    with pytest.raises(ValueError, match="count stages"):
        _kernel.rows(ref, cand[:-1], n, *args, i1, f1)
    with pytest.raises(ValueError, match="too small"):
        _kernel.rows(ref, cand, n, *args, i1[:-1], f1)
    with pytest.raises(ValueError, match="count must be positive"):
        _kernel.rows(ref, cand, 0, *args, i1, f1)


def test_million_stage_shapes_use_rows_in_place(tmp_path):
    """A run's values are read in place: one array per side, a view of the mapped data file."""
    keys = [f"step.{i}.logits" for i in range(1000)]
    path = tmp_path / "t.trace"
    with TraceWriter(path, index=True) as w:
        w.add_batch(keys, [(4,)] * 1000, np.arange(4000, dtype=np.float32))
    t = load_trace(path)
    block = t.rows(10, 20)
    assert block.shape == (10, 4) and not block.flags.writeable and block.base is not None
    assert all((block[j] == t[keys[10 + j]]).all() for j in range(10))


def test_logits_runs_report_as_stage_by_stage(tmp_path, monkeypatch):
    """Passing logits stages of runs whose greedy tokens differ: the logits summary (worst top-k,
    worst KL, first differing step) read from the run's columns equals the stage-by-stage one."""
    rng = np.random.default_rng(12)
    ref, cand = [], []
    for i in range(300):
        r = rng.normal(size=(2, 16)).astype(np.float32)
        top = int(np.argmax(r[-1]))
        if i in (77, 78, 190):
            r[-1, (top + 1) % 16] = r[-1, top] - 1e-3  # a near tie in the reference
        c = r + rng.normal(scale=1e-5, size=r.shape).astype(np.float32)
        if i in (77, 78, 190):
            c[-1, (top + 1) % 16] += 3e-3  # still within atol 1e-2, but another greedy token
        ref.append((f"logits[step={i}]", r, {}))
        cand.append((f"logits[step={i}]", c, {}))
    r, c = _write(tmp_path / "r.trace", ref), _write(tmp_path / "c.trace", cand)
    config = {"tolerance": {"atol": 1e-2}}
    fast = parity.compare_traces(r, c, config)
    assert fast.passed and all(isinstance(s, batch.DeferredStageDiff) for s in fast.stages)
    _assert_same_diff(fast, _stage_by_stage(monkeypatch, r, c, config))
    from parity.compare.logits import describe_logits, first_token_divergence

    lines = describe_logits(fast)
    assert lines[0].startswith("Logits (300 stage(s))") and "step 77 (logits[step=77])" in " ".join(lines)
    assert first_token_divergence(fast).step == 77


def test_max_rel_errors_read_from_runs_equal_the_metrics(tmp_path):
    ref, cand = _mixed(np.random.default_rng(5), n=400)
    d = parity.compare_traces(_write(tmp_path / "r.trace", ref), _write(tmp_path / "c.trace", cand))
    want = [math.nan if s.metrics is None else s.metrics.max_rel_err for s in d.stages]
    assert np.array_equal(batch.max_rel_errors(d.stages), np.array(want, np.float64), equal_nan=True)
