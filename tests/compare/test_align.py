"""Alignment config: [rename] regex renames and [transforms] (reshape, permute, slice, scale, cast)."""

import math

import numpy as np
import pytest

import parity
from parity import compare_traces
from parity.compare import CompareConfig, load_config
from parity.compare.align import apply_renames, parse_scale, parse_transforms
from parity.errors import ConfigError


def _rec(path, stages):
    with parity.record(path):
        for key, (value, axes, units) in stages.items():
            parity.tap(key, value, axes=axes, units=units)
    return str(path)


@pytest.fixture
def pair(tmp_path, rng):
    q = rng.normal(size=(4, 2, 3))                      # [seq, heads, head_dim]
    logits = rng.normal(size=(4, 5))                     # [seq, vocab]
    ref = _rec(tmp_path / "ref.trace", {
        "layers.0.q": (q, ("seq", "heads", "head_dim"), None),
        "logits_last": (logits[-1], ("vocab",), None),
        "angle": (np.array([0.5, 1.0]), None, "rad"),
        "flat": (np.arange(6.0).reshape(2, 3), None, None),
        "h": (np.float32([1.5, 2.5]), None, None),
    })
    cand = _rec(tmp_path / "cand.trace", {
        "model.layers.0.query": (np.transpose(q, (1, 0, 2)).copy(), ("heads", "seq", "head_dim"), None),
        "logits_last": (logits, ("seq", "vocab"), None),
        "angle": (np.degrees([0.5, 1.0]), None, "deg"),
        "flat": (np.arange(6.0), None, None),
        "h": (np.float64([1.5, 2.5]) + 1e-12, None, None),
    })
    return ref, cand


def test_without_transforms_every_mismatch_is_reported(pair):
    ref, cand = pair
    diff = compare_traces(ref, cand, aliases={"query": "q"}, rename={r"^model\.": ""})
    q = diff["layers.0.q"]
    assert q.problem == "shape" and "same element count" in q.message
    assert q.diagnoses[0].kind == "transpose" and q.diagnoses[0].evidence["permutation"] == [1, 0, 2]
    assert diff["logits_last"].problem == "shape"
    assert diff["flat"].problem == "shape" and "same element count" in diff["flat"].message
    assert diff["angle"].problem == "values" and "units differ: 'rad' vs 'deg'" in diff["angle"].notes


TOML = r'''
[rename]
"^model\\." = ""

[aliases]
query = "q"

[transforms]
"layers.*.q" = { permute = ["seq", "heads", "head_dim"] }
"logits_last" = { slice = { seq = -1 } }
"angle" = { scale = "pi/180", units = "rad" }
"flat" = { side = "reference", reshape = [-1] }
"h" = { cast = "float32" }
'''


def test_a_toml_config_lines_everything_up(pair, tmp_path):
    ref, cand = pair
    cfg_path = tmp_path / "parity.toml"
    cfg_path.write_text(TOML)
    cfg = load_config(cfg_path)
    assert cfg.renames == ((r"^model\.", ""),) and len(cfg.transforms) == 5
    diff = compare_traces(ref, cand, config=cfg_path)
    assert diff.passed, [(s.key, s.message) for s in diff.divergent]
    assert "candidate transformed: permute(seq,heads,head_dim)" in diff["layers.0.q"].notes
    assert "candidate transformed: slice{seq=-1}" in diff["logits_last"].notes
    assert "reference transformed: reshape(-1,)" in diff["flat"].notes
    assert not any("units differ" in n for n in diff["angle"].notes)
    assert diff["h"].cand.dtype == "F64" and diff["h"].tolerance.rtol == pytest.approx(1.3e-6)  # float32 default


def test_the_same_config_from_python(pair):
    ref, cand = pair
    import tomllib
    diff = compare_traces(ref, cand, config=CompareConfig.from_dict(tomllib.loads(TOML)))
    assert diff.passed


def test_slice_strings_reshape_axes_and_permute_by_position(tmp_path, rng):
    x = rng.normal(size=(2, 3, 4))
    ref = _rec(tmp_path / "r.trace", {"a": (x[:, -1, 1:3], None, None), "b": (x.reshape(6, 4).T.copy(), None, None)})
    cand = _rec(tmp_path / "c.trace", {"a": (x, None, None), "b": (x, None, None)})
    diff = compare_traces(ref, cand, transforms={
        "a": {"slice": "[:, -1, 1:3]"},
        "b": [{"reshape": {"shape": [6, 4], "axes": ["rows", "cols"]}}, {"permute": [1, 0]}],
    })
    assert diff.passed, [(s.key, s.message) for s in diff.divergent]
    cand2 = _rec(tmp_path / "c2.trace", {"a": (x, ("batch", "seq", "hidden"), None), "b": (x, None, None)})
    diff = compare_traces(ref, cand2, transforms={"a": {"slice": {"seq": -1, "hidden": "1:3"}},
                                                  "b": {"reshape": [6, 4], "permute": [1, 0]}})
    assert diff.passed


def test_a_transform_cannot_hide_a_wrong_value(tmp_path, rng):
    x = rng.normal(size=(3, 4))
    ref = _rec(tmp_path / "r.trace", {"m": (x, None, None)})
    cand = _rec(tmp_path / "c.trace", {"m": (x.T.copy() * 2, None, None)})
    diff = compare_traces(ref, cand, transforms={"m": {"permute": [1, 0]}})
    assert diff["m"].problem == "values"
    assert diff["m"].diagnoses[0].kind == "scale"


@pytest.mark.parametrize("transforms, message", [
    ({"nothing*": {"scale": 2}}, r'\[transforms\] pattern "nothing\*" matches no reference stage'),
    ({"m": {"permute": ["rows", "cols"]}}, 'names axis "rows" but the candidate of "m" has no axis names'),
    ({"m": {"axes": ["a", "b"], "permute": ["a", "c"]}}, 'names axis "c" but the candidate of "m" has axes'),
    ({"m": {"reshape": [5, -1]}}, r"cannot reshape \(3, 4\) \(12 elements\) to \[5, -1\]"),
    ({"m": {"slice": {"0": 7}}}, "slice index 7 is out of range for axis 0 of size 3"),
    ({"m": {"rotate": 1}}, "unknown step"),
    ({"m": {"scale": "import os"}}, "is not a product or quotient of numbers and pi"),
    ({"m": {"side": "left", "scale": 2}}, "side must be one of candidate, reference, both"),
    ({"m": {"cast": "complex128"}}, "cast must name a dtype"),
])
def test_transform_errors_name_the_stage_and_the_rule(tmp_path, transforms, message):
    ref = _rec(tmp_path / "r.trace", {"m": (np.ones((3, 4)), None, None)})
    cand = _rec(tmp_path / "c.trace", {"m": (np.ones((3, 4)), None, None)})
    with pytest.raises(ConfigError, match=message):
        compare_traces(ref, cand, transforms=transforms, strict=True)  # strict: an unused pattern is an error too


def test_renames_apply_in_order_before_aliases_and_are_checked(tmp_path):
    ref = _rec(tmp_path / "r.trace", {"layers.3.ffn_out": (np.ones(2), None, None)})
    cand = _rec(tmp_path / "c.trace", {"model.layers.3.mlp.out": (np.ones(2), None, None)})
    renames = {r"^model\.": "", r"\.mlp\.out$": ".mlp"}
    assert apply_renames("model.layers.3.mlp.out", list(renames.items())) == "layers.3.mlp"
    diff = compare_traces(ref, cand, rename=renames, aliases={"mlp": "ffn_out"})
    assert diff.passed and not diff.missing and diff["layers.3.ffn_out"].cand.key == "model.layers.3.mlp.out"
    assert compare_traces(ref, cand, rename={"^nomatch": "x"}).unused_config == ('[rename] "^nomatch" matches no candidate stage',)
    with pytest.raises(ConfigError, match=r'\[rename\] "\^nomatch" matches no candidate stage'):
        compare_traces(ref, cand, rename={"^nomatch": "x"}, strict=True)
    with pytest.raises(ConfigError, match='turns candidate stage "model.layers.3.mlp.out" into "model/layers'):
        compare_traces(ref, cand, rename={r"\.": "/"})
    with pytest.raises(ConfigError, match="is not a valid regular expression"):
        CompareConfig.from_dict({"rename": {"(": "x"}})


def test_parse_scale_accepts_only_numbers_and_pi():
    assert parse_scale("180/pi") == pytest.approx(180 / math.pi)
    assert parse_scale("2*pi") == pytest.approx(2 * math.pi) and parse_scale("-1e-10") == -1e-10
    for bad in ("", "pi pi", "__import__('os')", "1/0", 0, True, "/2"):
        with pytest.raises(ConfigError):
            parse_scale(bad)
    assert parse_transforms({"x": [{"scale": 2}, {"cast": "bf16"}]})[0].steps[1].arg == "BF16"
