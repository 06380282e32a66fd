"""Noise floors: float32 vs bfloat16 of one model holds parity with calibrated tolerances; a bug still fails."""

import math

import numpy as np
import pytest

import parity
from parity.cli import main
from parity.compare.floor import NoiseFloor, StageFloor, floor_ratio, load_noise_floor
from parity.errors import ConfigError, UsageError
from parity.localize.calibrate import calibrate

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = ml_dtypes.bfloat16

RNG = np.random.default_rng(0)
W = [RNG.normal(0, 0.3, (16, 16)) for _ in range(3)]


def model(x, dtype, eps=1e-5, bug_layer=None):
    """A 3-layer MLP with layer norms; every op rounded to ``dtype`` (bf16 emulated)."""
    def r(a):
        return np.asarray(a, dtype=np.float64).astype(dtype).astype(np.float64)

    h = parity.tap("embed", r(x).astype(np.float32))
    h = r(h)
    for i, w in enumerate(W):
        with parity.scope("layers", i):
            e = 0.1 if i == bug_layer else eps  # the bug: a layer-norm epsilon of 0.1
            z = r(h @ r(w))
            mu = r(z.mean(-1, keepdims=True))
            var = r(((z - mu) ** 2).mean(-1, keepdims=True))
            n = r((z - mu) / np.sqrt(var + e))
            parity.tap("norm", n.astype(np.float32))
            h = r(np.tanh(n))
            parity.tap("out", h.astype(np.float32))
    return h


def capture(path, x, dtype, **kw):
    with parity.record(path):
        model(x, dtype, **kw)
    return str(path)


@pytest.fixture
def floors(tmp_path):
    pairs = []
    for k in range(2):
        x = np.random.default_rng(10 + k).normal(size=(4, 16))
        pairs.append((capture(tmp_path / f"hi{k}.trace", x, np.float64), capture(tmp_path / f"lo{k}.trace", x, BF16)))
    return pairs


def test_bf16_holds_parity_with_calibrated_floors_and_a_bug_still_fails(floors, tmp_path):
    floor = calibrate(floors)
    assert set(floor.stages) == {"embed"} | {f"layers.{i}.{s}" for i in range(3) for s in ("norm", "out")}
    assert all(0 < f.rel_rms < 0.05 for f in floor.stages.values())
    x = np.random.default_rng(99).normal(size=(4, 16))  # another input than the calibration's
    ref = capture(tmp_path / "ref.trace", x, np.float32)
    cand = capture(tmp_path / "cand.trace", x, BF16)
    plain = parity.compare_traces(ref, cand)
    assert not plain.passed  # bf16 fails the float32 default tolerances everywhere
    calibrated = parity.compare_traces(ref, cand, noise_floor=floor)
    assert calibrated.passed, [(s.key, floor_ratio(s)) for s in calibrated.stages]
    assert all(floor_ratio(s) is not None and floor_ratio(s) <= floor.margin for s in calibrated.stages)
    buggy = capture(tmp_path / "bug.trace", x, BF16, bug_layer=1)
    bad = parity.compare_traces(ref, buggy, noise_floor=floor)
    assert not bad.passed and bad.first_divergence.key == "layers.1.norm"
    assert bad.first_divergence.problem == "noise_floor" and "× the noise floor" in bad.first_divergence.message
    assert floor_ratio(bad.first_divergence) > floor.margin


def test_cli_calibrate_then_diff(floors, tmp_path, capsys):
    out = tmp_path / "tolerances.toml"
    args = ["calibrate", *[p for pair in floors for p in pair], "--out", str(out), "--margin", "4"]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    floor = load_noise_floor(out)
    assert floor.margin == 4.0 and floor.pairs == 2 and "layers.2.out" in floor.stages
    assert main(args) == 2  # never overwrites without --force
    x = np.random.default_rng(5).normal(size=(4, 16))
    ref = capture(tmp_path / "ref.trace", x, np.float32)
    cand = capture(tmp_path / "cand.trace", x, BF16)
    capsys.readouterr()
    assert main(["diff", ref, cand, "--tolerances", str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "noise floor: 7 stage(s) judged against it" in text and "PARITY HOLDS" in text
    md = tmp_path / "r.md"
    assert main(["diff", ref, cand, "--tolerances", str(out), "--md", str(md)]) == 0
    assert "× noise floor" in md.read_text()
    assert main(["calibrate", floors[0][0], "--out", str(tmp_path / "x.toml")]) == 2  # an odd number of traces


def test_judge_edge_cases():
    floor = NoiseFloor({"z": StageFloor(None, 0.0, 0.0), "y": StageFloor(1e-3, 1e-3, 1e-3)}, margin=2.0)
    assert floor.judge("z", rel_rms=None, rms=0.0) == (True, 0.0)
    assert floor.judge("z", rel_rms=None, rms=1e-9) == (False, math.inf)
    assert floor.judge("y", rel_rms=None, rms=1.5e-3) == (True, 1.5)  # all-zero reference: absolute RMS
    assert floor.judge("y", rel_rms=math.inf, rms=math.inf)[0] is False


def test_round_trip_and_bad_files(tmp_path):
    floor = NoiseFloor({"a.b[i=1]": StageFloor(1e-3, 2e-4, 5e-4)}, margin=3.0, pairs=1)
    p = tmp_path / "f.toml"
    p.write_text(floor.to_toml("# header"))
    again = load_noise_floor(p)
    assert again.stages == floor.stages and again.margin == 3.0 and again.pairs == 1
    for text, msg in [("x = 1\n", "no \\[noise_floor\\]"), ("[noise_floor]\nmargin = -1\n", "margin"),
                      ('[noise_floor.stages]\n"a" = { rms = "big", max_abs = 1 }\n', "non-negative number"),
                      ('[noise_floor]\nbogus = 1\n', "unknown field"), ("[[[", "not valid TOML")]:
        p.write_text(text)
        with pytest.raises(ConfigError, match=msg) as e:
            load_noise_floor(p)
        assert str(p) in str(e.value)
    p.write_bytes(b"\xff")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_noise_floor(p)
    with pytest.raises(UsageError, match="at least one"):
        calibrate([])
