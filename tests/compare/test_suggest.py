"""Alignment suggestions (`parity align`, the hint in `parity diff`): names, content, scale, transpose."""

import json
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import parity
from parity.cli import main
from parity.compare.suggest import aliases_toml, name_tokens, suggest_alignment

RNG = np.random.default_rng(7)
V = np.array([0.1, -0.0333, 0.2])
M = RNG.normal(size=(3, 5))
E = RNG.normal(size=64)


@pytest.fixture
def pair(make_trace):
    ref = make_trace("ref.trace", {
        "common": np.ones(2),
        "pix0_vector": V,                      # name (unit suffix) + content
        "rot_deg": np.array([30.0, 45.0, 60.0]),  # content: pi/180
        "detector_image": M,                   # transpose, unrelated name
        "flat_buffer": np.arange(12.0) + 0.5,  # reshape
        "Fdet_A_inv": E,                       # name only, values differ (a real divergence)
        "lonely": RNG.normal(size=7),          # no counterpart
    })
    cand = make_trace("cand.trace", {
        "common": np.ones(2),
        "pix0_vector_meters": V + 6e-9,
        "angles": np.radians([30.0, 45.0, 60.0]),
        "img_t": M.T.copy(),
        "buffer2d": (np.arange(12.0) + 0.5).reshape(3, 4),
        "fdet_a_inv": E * 1.5 + 1,
        "other": RNG.normal(size=9),
    })
    return ref, cand


def by_ref(suggestions):
    return {s.ref_key: s for s in suggestions}


def test_each_kind_of_clue(pair):
    got = by_ref(suggest_alignment(*pair))
    pix = got["pix0_vector"]
    assert pix.cand_key == "pix0_vector_meters" and pix.by == ("name", "content") and pix.relation == "same"
    assert "unit suffix _meters" in pix.evidence and "same shape (3,)" in pix.evidence and pix.confidence > 0.9
    assert pix.max_rel == pytest.approx(6e-9 / 0.0333, rel=1e-3)
    rot = got["rot_deg"]
    assert rot.cand_key == "angles" and rot.relation == "scale" and rot.scale_text == "pi/180"
    assert rot.by == ("content",)
    img = got["detector_image"]
    assert img.cand_key == "img_t" and img.relation == "transpose" and img.permute == (1, 0)
    flat = got["flat_buffer"]
    assert flat.cand_key == "buffer2d" and flat.relation == "reshape"
    fdet = got["Fdet_A_inv"]
    assert fdet.cand_key == "fdet_a_inv" and fdet.by == ("name",) and "values differ" in fdet.evidence
    assert "lonely" not in got and "common" not in got  # matched stages are never suggested
    assert all(0 < s.confidence < 1 for s in got.values())


def test_written_config_makes_the_diff_compare_everything(pair, tmp_path):
    ref, cand = pair
    cfg = tmp_path / "aliases.toml"
    cfg.write_text(aliases_toml(suggest_alignment(ref, cand)))
    diff = parity.compare_traces(ref, cand, config=str(cfg))
    status = {s.key: s.status for s in diff.stages}
    for key in ("pix0_vector", "rot_deg", "detector_image", "flat_buffer"):
        assert status[key] == "pass", (key, cfg.read_text())
    assert status["Fdet_A_inv"] == "fail"  # aligned by name, and now its divergence shows
    assert status["lonely"] == "missing" and status["other"] == "extra"


def test_cli_align_lists_and_writes(pair, tmp_path, capsys):
    ref, cand = pair
    out_file = tmp_path / "a.toml"
    assert main(["align", ref, cand, "--write", str(out_file)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "6 stage(s) only in the reference, 6 only in the candidate" in out and "pix0_vector_meters" in out
    text = out_file.read_text()
    assert '"pix0_vector_meters" = "pix0_vector"' in text and '"rot_deg" = { scale = "180/pi" }' in text
    assert main(["align", ref, cand, "--write", str(out_file)]) == 2  # never overwrites without --force
    assert "exists" in capsys.readouterr().err
    assert main(["align", ref, cand, "--write", str(out_file), "--force", "--accept", "0.99"]) == 0
    assert '"pix0_vector_meters"' not in out_file.read_text()
    capsys.readouterr()
    assert main(["align", ref, cand, "--json", "--names-only"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {s["cand"] for s in doc["suggestions"]} == {"pix0_vector_meters", "fdet_a_inv"}
    assert all(s["by"] == ["name"] for s in doc["suggestions"])


def test_diff_prints_a_hint_for_unmatched_stages(pair, capsys):
    ref, cand = pair
    assert main(["diff", ref, cand]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "hint:" in out and "pix0_vector ↔ pix0_vector_meters" in out and "parity align" in out
    assert main(["diff", ref, cand, "--json"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # the hint never pollutes the JSON
    assert "hint:" in captured.err


def test_no_common_names_gets_suggestions(make_trace, capsys):
    ref = make_trace("r.trace", {"pix0_vector": V})
    cand = make_trace("c.trace", {"pix0_vector_meters": V})
    assert main(["diff", ref, cand]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "NOTHING COMPARED" in out and "pix0_vector ↔ pix0_vector_meters" in out


def test_config_aliases_are_applied_first(pair, tmp_path):
    ref, cand = pair
    cfg = tmp_path / "c.toml"
    cfg.write_text('[aliases]\npix0_vector_meters = "pix0_vector"\n')
    got = by_ref(suggest_alignment(ref, cand, str(cfg)))
    assert "pix0_vector" not in got and "rot_deg" in got


def test_ambiguous_content_lowers_confidence(make_trace):
    x = RNG.normal(size=20)
    ref = make_trace("r.trace", {"a": x})
    cand = make_trace("c.trace", {"p": x.copy(), "q": x.copy()})
    (s,) = suggest_alignment(ref, cand)
    assert s.ambiguous and s.confidence < 0.6 and "also fits" in s.evidence


def test_constant_stages_are_no_content_evidence(make_trace):
    ref = make_trace("r.trace", {"zeros_a": np.zeros(10)})
    cand = make_trace("c.trace", {"totally_else": np.zeros(10)})
    assert suggest_alignment(ref, cand) == []


def test_negative_factor_and_power_of_ten(make_trace):
    x = RNG.normal(size=(4, 6))
    ref = make_trace("r.trace", {"len_angstrom": x, "charge": x[0]})
    cand = make_trace("c.trace", {"length": x * 1e-10, "q_neg": -2.5 * x[0]})
    got = by_ref(suggest_alignment(ref, cand))
    assert got["len_angstrom"].scale_text == "1e-10"
    assert got["charge"].scale == pytest.approx(-2.5)


def test_name_tokens():
    assert name_tokens("pix0_vector_meters") == (("pix", "0", "vector"), ("meters",))
    assert name_tokens("layers.3.selfAttn.out") == (("layers", "3", "self", "attn", "out"), ())
    assert name_tokens("energy_meV") == (("energy",), ("meV",))
    assert name_tokens("m") == (("m",), ())  # never drops every token


@settings(max_examples=25, deadline=None)
# n >= 4: two random 2-vectors are proportional to 3 digits often enough to make "the scaled copy"
# ambiguous (seed 717464099: junk3 = 0.7928 x and 0.7925 x), which is not what this test is about
@given(n=st.integers(4, 40), factor=st.sampled_from([1.0, 1e-3, 1e3, -1.0, math.pi / 180, 2.54]),
       seed=st.integers(0, 2**32 - 1))
def test_scaled_copy_is_always_found(tmp_path_factory, n, factor, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    d = tmp_path_factory.mktemp("p")
    r, c = os.path.join(d, "r.trace"), os.path.join(d, "c.trace")
    with parity.record(r):
        parity.tap("alpha", x)
        for i in range(5):
            parity.tap(f"noise{i}", rng.normal(size=n))
    with parity.record(c):
        for i in range(5):
            parity.tap(f"junk{i}", rng.normal(size=n))
        parity.tap("zeta", x * factor)
    got = by_ref(suggest_alignment(r, c))
    assert got["alpha"].cand_key == "zeta"
    assert got["alpha"].scale in (None, pytest.approx(factor))
