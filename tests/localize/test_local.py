"""Replay and parity localize: a layer-norm epsilon bug in layer 1 whose effect crosses the
tolerance only several stages later; plain diff points late, localize at the right stage."""

import json

import numpy as np
import pytest

import parity
from parity.cli import main
from parity.errors import UsageError
from parity.localize.local import localize

RNG = np.random.default_rng(3)
W = [RNG.normal(0, 1.0, (16, 16)) / 4 for _ in range(6)]


def model(x, dtype, eps1=1e-5):
    """6 blocks of matmul + layer norm + gelu-ish; computed in ``dtype``; eps of block 1 configurable."""
    h = parity.tap("embed", x.astype(dtype))
    for i, w in enumerate(W):
        with parity.scope("layers", i):
            z = parity.tap("mm", h @ w.astype(dtype))
            mu = z.mean(-1, keepdims=True)
            var = z.var(-1, keepdims=True)
            eps = eps1 if i == 1 else 1e-5
            n = parity.tap("norm", (z - mu) / np.sqrt(var + dtype(eps)))
            h = parity.tap("out", np.tanh(n * 3) * 2)  # gains: a small error grows layer by layer
    return parity.tap("logits", h.sum(-1))


@pytest.fixture
def traces(tmp_path):
    x = RNG.normal(size=(4, 16))
    ref, cand, local = (str(tmp_path / n) for n in ("ref.trace", "cand.trace", "local.trace"))
    with parity.record(ref):
        model(x, np.float64)
    with parity.record(cand):
        model(x, np.float32, eps1=2e-4)  # the bug
    with parity.replay(ref, local):
        model(x, np.float32, eps1=2e-4)
    return ref, cand, local


TOL = {"rtol": 1e-4, "atol": 1e-5}


def test_plain_diff_points_late_localize_points_at_layer_1(traces):
    ref, cand, local = traces
    plain = parity.compare_traces(ref, cand, **TOL)
    assert plain.first_divergence is not None and plain.first_divergence.key != "layers.1.norm"
    assert plain.first_divergence.ref.position > parity.load_trace(ref).stage("layers.1.norm").position
    loc = localize(ref, cand, local, **TOL)
    assert loc.culprit == "layers.1.norm"
    assert loc.stage(loc.plain_first).label == "propagated"
    assert all(s.label in ("ok", "propagated") for s in loc.stages if s.key != "layers.1.norm")
    assert loc.passes == 2


def test_no_bug_no_culprit(tmp_path):
    x = RNG.normal(size=(4, 16))
    ref, cand, local = (str(tmp_path / n) for n in ("r.trace", "c.trace", "l.trace"))
    with parity.record(ref):
        model(x, np.float64)
    with parity.record(cand):
        model(x, np.float32)
    with parity.replay(ref, local):
        model(x, np.float32)
    loc = localize(ref, cand, local, **TOL)
    assert loc.culprit is None


def test_replay_returns_reference_values_in_the_candidate_type(tmp_path):
    ref, local = str(tmp_path / "r.trace"), str(tmp_path / "l.trace")
    with parity.record(ref):
        parity.tap("a", np.arange(3.0))
        parity.tap("s", 2.5)
        parity.tap("t", "text")
    with parity.replay(ref, local):
        a = parity.tap("a", np.arange(3.0, dtype=np.float32) + 1)
        s = parity.tap("s", 9.0)
        t = parity.tap("t", "other")
    assert a.dtype == np.float32 and a.tolist() == [0.0, 1.0, 2.0] and s == 2.5 and t == "text"
    assert parity.load_trace(local)["a"].tolist() == [1.0, 2.0, 3.0]  # the candidate's own values are recorded
    with pytest.raises(UsageError, match="has no stage 'zzz'"):
        with parity.replay(ref, str(tmp_path / "x.trace")):
            parity.tap("zzz", np.ones(2))
    with pytest.raises(UsageError, match="shape"):
        with parity.replay(ref, str(tmp_path / "y.trace")):
            parity.tap("a", np.ones(5))


def test_replay_torch_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    ref, local = str(tmp_path / "r.trace"), str(tmp_path / "l.trace")
    with parity.record(ref):
        parity.tap("a", torch.arange(4, dtype=torch.float64))
    with parity.replay(ref, local):
        a = parity.tap("a", torch.zeros(4, dtype=torch.bfloat16))
    assert a.dtype == torch.bfloat16 and a.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_cli(traces, capsys):
    ref, cand, local = traces
    assert main(["localize", ref, cand, local, "--rtol", "1e-4", "--atol", "1e-5"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "The divergence starts at layers.1.norm" in out and "2 forward passes" in out
    assert main(["localize", ref, cand, local, "--rtol", "1e-4", "--atol", "1e-5", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["culprit"] == "layers.1.norm" and doc["passes"] == 2


def test_cli_html_draws_both_curves_and_marks_the_culprit(traces, tmp_path, capsys):
    ref, cand, local = traces
    out = tmp_path / "loc.html"
    assert main(["localize", ref, cand, local, "--rtol", "1e-4", "--atol", "1e-5", "--html", str(out)]) == 1
    html = out.read_text(encoding="utf-8")
    n = len(parity.load_trace(ref))
    assert html.count("<polyline") == 2 and "layers.1.norm" in html and "culprit" in html
    points = [p.split('points="', 1)[1].split('"', 1)[0].split() for p in html.split("<polyline")[1:]]
    assert all(len(pts) == n for pts in points)  # one point per stage on each curve


def test_stages_the_replay_could_not_substitute_are_reported(traces, tmp_path, capsys):
    ref, cand, local = traces
    noted = str(tmp_path / "noted.trace")
    t = parity.load_trace(local)
    with parity.record(noted, meta={"replay": {"reference": ref, "substituted": len(t) - 1,
                                               "not_substituted": {"layers.2.mm": "fused inside a kernel"}}}):
        for s in t:
            parity.tap(s.key, np.array(t[s.key]))
    loc = localize(ref, cand, noted, **TOL)
    assert loc.not_substituted == {"layers.2.mm": "fused inside a kernel"}
    assert loc.stage("layers.2.mm").replay_note == "fused inside a kernel"
    assert loc.to_dict()["not_substituted"] == {"layers.2.mm": "fused inside a kernel"}
    assert main(["localize", ref, cand, noted, "--rtol", "1e-4", "--atol", "1e-5"]) == 1
    text = " ".join(capsys.readouterr().out.split())
    assert "1 stage(s) could not be substituted" in text and "layers.2.mm: fused inside a kernel" in text
