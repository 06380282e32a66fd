"""compare_traces: alignment, first divergence in execution order, config, JSON round trip."""

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import parity
from parity import compare_traces
from parity.compare import CompareConfig, TraceDiff, load_config
from parity.errors import ConfigError, TraceFormatError, UsageError


def _record(path, stages, axes=None):
    with parity.record(path):
        for key, value in stages:
            parity.tap(key, value, axes=(axes or {}).get(key))
    return path


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 12), data=st.data())
def test_first_divergence_is_injected_stage_in_execution_order(tmp_path_factory, n, data):
    k = data.draw(st.integers(0, n - 1))
    d = tmp_path_factory.mktemp("inj")
    # Names deliberately out of alphabetical order: "first" must follow execution order.
    names = [f"s{(7 * i + 3) % 13:02d}_{i}" for i in range(n)]
    rng = np.random.default_rng(n)
    values = [rng.normal(size=(3, 5)) for _ in range(n)]
    ref = _record(d / "ref.trace", list(zip(names, values)))
    cand_values = [v.copy() for v in values]
    for j in range(k, n):  # the bug propagates to every later stage
        cand_values[j] = cand_values[j] * 1.01
    cand = _record(d / "cand.trace", list(zip(names, cand_values)))
    diff = compare_traces(ref, cand)
    assert not diff.passed
    assert diff.first_divergence.key == names[k]
    assert [s.key for s in diff.divergent] == names[k:]
    assert all(s.status == "pass" for s in diff.stages[:k])


def test_identical_traces_pass(make_trace):
    stages = {"a": np.arange(6.0).reshape(2, 3), "b": np.float32([1, 2]), "n": 3, "t": "ok"}
    diff = compare_traces(make_trace("r.trace", stages), make_trace("c.trace", stages))
    assert diff.passed and bool(diff) and diff.first_divergence is None
    assert diff.summary()["pass"] == 4
    m = diff["a"].metrics
    assert m.max_abs_err == 0 and m.cosine == 1.0 and m.sqnr_db == math.inf


def test_missing_and_extra_fail_only_when_strict(make_trace):
    ref = make_trace("r.trace", {"a": np.ones(2), "only_ref": np.ones(2)})
    cand = make_trace("c.trace", {"a": np.ones(2), "only_cand": np.ones(2)})
    diff = compare_traces(ref, cand)
    assert diff.passed
    assert [s.key for s in diff.missing] == ["only_ref"] and [s.key for s in diff.extra] == ["only_cand"]
    assert not compare_traces(ref, cand, strict=True).passed


def test_same_element_count_different_shape_is_a_divergence(make_trace):
    ref = make_trace("r.trace", {"x": np.arange(6.0).reshape(2, 3)})
    cand = make_trace("c.trace", {"x": np.arange(6.0).reshape(3, 2)})
    diff = compare_traces(ref, cand)
    s = diff.first_divergence
    assert s.key == "x" and s.problem == "shape" and s.metrics is None
    assert "never flattens silently" in s.message


def test_layout_mismatch_is_a_divergence(tmp_path):
    v = np.zeros((2, 2))
    ref = _record(tmp_path / "r.trace", [("x", v)], axes={"x": ("seq", "heads")})
    cand = _record(tmp_path / "c.trace", [("x", v)], axes={"x": ("heads", "seq")})
    s = compare_traces(ref, cand).first_divergence
    assert s.problem == "layout" and "['seq', 'heads'] != ['heads', 'seq']" in s.message


def test_dtype_difference_uses_the_looser_tolerance(make_trace):
    x = np.linspace(-3, 3, 100)
    ref = make_trace("r.trace", {"x": x.astype(np.float32)})
    cand = make_trace("c.trace", {"x": (x * (1 + 4e-3)).astype(np.float16)})
    s = compare_traces(ref, cand)["x"]
    assert s.status == "pass" and s.tolerance.rtol == 1e-3 + 0 or s.tolerance.rtol == pytest.approx(1e-3)
    assert any("dtype differs: F32 vs F16" in n for n in s.notes)


def test_nan_rules_end_to_end(make_trace):
    ref = make_trace("r.trace", {"both": np.array([np.nan, 1.0]), "one": np.array([1.0, 2.0])})
    cand = make_trace("c.trace", {"both": np.array([np.nan, 1.0]), "one": np.array([np.nan, 2.0])})
    diff = compare_traces(ref, cand)
    assert diff["both"].status == "pass"
    one = diff["one"]
    assert one.status == "fail" and one.metrics.nan_mismatch == 1 and math.isnan(one.metrics.max_abs_err)


def test_tolerance_overrides_and_aliases(make_trace):
    ref = make_trace("r.trace", {"layers.0.attn_probs": np.ones(4), "layers.0.out": np.ones(4)})
    cand = make_trace("c.trace", {"layers.0.attn_weights": np.ones(4) * 1.0005, "layers.0.out": np.ones(4)})
    assert not compare_traces(ref, cand, aliases={"attn_weights": "attn_probs"}).passed
    diff = compare_traces(ref, cand, aliases={"attn_weights": "attn_probs"}, stages={"layers.*.attn_probs": {"rtol": 1e-3}})
    assert diff.passed and diff["layers.0.attn_probs"].cand.key == "layers.0.attn_weights"
    assert diff["layers.0.attn_probs"].tolerance.rtol == 1e-3
    with pytest.raises(ConfigError, match='pattern "layers.\\*.nope" matches no stage'):
        compare_traces(ref, cand, stages={"layers.*.nope": {"rtol": 1}}, strict=True)
    with pytest.raises(ConfigError, match='"ghost" matches no candidate stage'):
        compare_traces(ref, cand, aliases={"ghost": "x"}, strict=True)
    warned = compare_traces(ref, cand, aliases={"ghost": "x"})
    assert warned.unused_config == ('[aliases] "ghost" matches no candidate stage',)


def test_expected_divergence_is_reported_not_failed(make_trace):
    ref = make_trace("r.trace", {"a": np.ones(2), "b": np.ones(2)})
    cand = make_trace("c.trace", {"a": np.ones(2), "b": np.ones(2) * 2})
    diff = compare_traces(ref, cand, expected={"b": "known: candidate doubles b"})
    assert diff.passed and diff.first_divergence is None
    assert diff["b"].status == "expected" and diff["b"].expected_reason == "known: candidate doubles b"


def test_cosine_floor(make_trace):
    ref = make_trace("r.trace", {"a": np.array([1.0, 0.0])})
    cand = make_trace("c.trace", {"a": np.array([1.0, 1e-9])})
    assert compare_traces(ref, cand).passed
    s = compare_traces(ref, cand, stages={"a": {"cosine_min": 1.0 + 1e-12}})["a"]
    assert s.status == "fail" and s.problem == "cosine"


def test_toml_config(tmp_path, make_trace):
    cfg = tmp_path / "parity.toml"
    cfg.write_text('[tolerance]\nrtol = 1e-2\natol = 0\n[tolerance.stages]\n"b" = { rtol = 0.5 }\n'
                   '[aliases]\nbee = "b"\n[ignore]\nstages = ["timing*"]\n')
    ref = make_trace("r.trace", {"a": np.ones(2), "b": np.ones(2), "timing_ms": 3.0})
    cand = make_trace("c.trace", {"a": np.ones(2) * 1.005, "bee": np.ones(2) * 1.4, "timing_ms": 9.0})
    diff = compare_traces(ref, cand, config=cfg)
    assert diff.passed and diff.ignored == 1 and diff.config_source == str(cfg)
    assert diff["a"].tolerance.rtol == 1e-2 and diff["b"].tolerance.rtol == 0.5
    assert not compare_traces(ref, cand, config=cfg, rtol=1e-4).passed  # keyword beats file


@pytest.mark.parametrize("text, match", [
    ("[tolerances]\nrtol=1", "unknown section"),
    ("[tolerance]\nrtl=1", "unknown tolerance field"),
    ("[tolerance]\nrtol=-1", "non-negative"),
    ("[tolerance]\nrtol='x'", "must be a number"),
    ("not = [toml", "is not valid TOML"),
])
def test_bad_config_files(tmp_path, text, match):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        load_config(cfg)
    assert str(cfg) in str(e.value)


def test_json_round_trip(tmp_path, make_trace):
    ref = make_trace("r.trace", {"a": np.array([1.0, np.nan, np.inf]), "b": np.ones(3), "gone": 1.0, "t": "x"})
    cand = make_trace("c.trace", {"a": np.array([1.0, 2.0, np.inf]), "b": np.ones(3), "t": "y", "new": 2})
    diff = compare_traces(ref, cand)
    text = json.dumps(diff.to_dict(), allow_nan=False)
    back = TraceDiff.from_dict(json.loads(text))
    assert back == diff
    assert back.first_divergence.key == "a"
    with pytest.raises(UsageError):
        TraceDiff.from_dict({"schema": "parity.diff", "schema_version": 999})


def test_text_and_kind_mismatch(make_trace):
    ref = make_trace("r.trace", {"msg": "converged", "v": np.ones(1)})
    cand = make_trace("c.trace", {"msg": "diverged", "v": "one"})
    diff = compare_traces(ref, cand)
    assert diff["msg"].problem == "text" and diff["v"].problem == "kind"


def test_unreadable_trace_is_an_error_not_a_result(tmp_path, make_trace):
    ref = make_trace("r.trace", {"a": 1.0})
    with pytest.raises(TraceFormatError, match="no such trace directory"):
        compare_traces(ref, tmp_path / "missing.trace")


def test_config_from_dict_matches_toml_shape():
    cfg = CompareConfig.from_dict({"tolerance": {"rtol": 1e-3, "stages": {"x*": {"atol": 1}}}, "aliases": {"a": "b"}})
    assert cfg.tolerance.for_stage("x1", "F32", "F32").atol == 1
    assert cfg.tolerance.for_stage("y", "F32", "F32").rtol == 1e-3
    assert cfg.rename_candidate("layers.2.a[step=1]#1") == "layers.2.b[step=1]#1"
