"""Logits: top-k agreement, KL divergence, greedy tokens, the first differing decode step (no torch needed)."""

import io
import json
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import parity
from parity.compare import logits as L
from parity.compare.diff import TraceDiff
from parity.errors import UsageError
from parity.trace.dtypes import DTYPES


def kl_reference(r, c):
    pr = np.exp(r - r.max(-1, keepdims=True))
    pr /= pr.sum(-1, keepdims=True)
    pc = np.exp(c - c.max(-1, keepdims=True))
    pc /= pc.sum(-1, keepdims=True)
    return (pr * (np.log(pr) - np.log(pc))).sum(-1)


def test_identical_logits_agree_completely():
    r = np.random.default_rng(0).normal(size=(2, 3, 50)).astype(np.float32)
    m = L.logits_metrics(r, r.copy())
    assert (m.k, m.positions, m.topk_agreement, m.top1_agreement, m.kl_mean, m.kl_max) == (5, 6, 1.0, 1.0, 0.0, 0.0)
    assert m.greedy_match and m.first_mismatch is None
    assert m.greedy_ref == tuple(int(x) for x in r[:, -1].argmax(-1))  # last position of each batch row


def test_kl_and_topk_match_a_direct_computation():
    rng = np.random.default_rng(1)
    r = rng.normal(size=(4, 7, 30))
    c = r + rng.normal(scale=0.3, size=r.shape)
    m = L.logits_metrics(r, c, k=3)
    kl = kl_reference(r, c)
    assert math.isclose(m.kl_mean, kl.mean(), rel_tol=1e-12) and math.isclose(m.kl_max, kl.max(), rel_tol=1e-12)
    assert m.kl_max_position == tuple(int(i) for i in np.unravel_index(kl.argmax(), kl.shape))
    top_r, top_c = np.argsort(-r, -1)[..., :3], np.argsort(-c, -1)[..., :3]
    shared = [len(set(a) & set(b)) / 3 for a, b in zip(top_r.reshape(-1, 3), top_c.reshape(-1, 3))]
    assert math.isclose(m.topk_agreement, float(np.mean(shared)), rel_tol=1e-12)
    same = r.argmax(-1) == c.argmax(-1)
    assert m.top1_agreement == same.mean()
    first = np.argwhere(~same)[0] if (~same).any() else None
    assert m.first_mismatch == (tuple(int(i) for i in first) if first is not None else None)


def test_chunking_does_not_change_results(monkeypatch):
    rng = np.random.default_rng(2)
    r = rng.normal(size=(3, 11, 40)).astype(np.float32)
    c = (r + rng.normal(scale=0.5, size=r.shape)).astype(np.float32)
    whole = L.logits_metrics(r, c)
    monkeypatch.setattr(L, "_ROWS_PER_CHUNK_BYTES", 8 * 40 * 2)  # two rows per chunk
    chunked = L.logits_metrics(r, c)
    for f in ("topk_agreement", "top1_agreement", "kl_mean", "kl_max"):
        assert math.isclose(getattr(chunked, f), getattr(whole, f), rel_tol=1e-12), f
    for f in ("kl_max_position", "greedy_ref", "greedy_cand", "first_mismatch", "positions"):
        assert getattr(chunked, f) == getattr(whole, f), f


def test_bf16_bits_are_widened_exactly():
    r = np.array([[0.5, 2.0, -1.0, 3.0]], np.float32)
    bits = (r.view(np.uint32) >> 16).astype(np.uint16)  # exact: these values fit in bf16
    m = L.logits_metrics(bits, bits, ref_dtype=DTYPES["BF16"], cand_dtype=DTYPES["BF16"])
    assert m.greedy_ref == (3,) and m.kl_max == 0.0


def test_masked_vocabulary_and_nan():
    r = np.array([[0.0, -np.inf, 1.0]])
    m = L.logits_metrics(r, r.copy(), k=2)
    assert m.kl_max == 0.0 and m.topk_agreement == 1.0
    c = np.array([[-np.inf, 0.0, 1.0]])  # the candidate gives 0 probability where the reference does not
    assert L.logits_metrics(r, c).kl_max == math.inf
    n = np.array([[0.0, np.nan, 1.0]])
    assert math.isnan(L.logits_metrics(r, n).kl_max)


def test_shapes_must_match():
    with pytest.raises(UsageError, match="logits shapes differ"):
        L.logits_metrics(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(UsageError, match="vocabulary axis"):
        L.logits_metrics(np.float32(1), np.float32(1))


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(2, 9)),
              elements=st.floats(-30, 30)),
       st.integers(1, 9))
def test_properties(r, k):
    m = L.logits_metrics(r, r[..., ::-1].copy(), k=k)
    assert 0.0 <= m.topk_agreement <= 1.0 and 0.0 <= m.top1_agreement <= 1.0
    assert m.kl_mean >= 0 and m.kl_max >= m.kl_mean - 1e-12
    same = L.logits_metrics(r, r, k=k)
    assert same.kl_max == 0.0 and same.topk_agreement == 1.0 and same.greedy_match
    assert L.LogitsMetrics.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_is_logits_key():
    assert L.is_logits_key("logits") and L.is_logits_key("logits[step=3]") and L.is_logits_key("lm.logits#1")
    assert not L.is_logits_key("layers.0.logits_scale") and not L.is_logits_key("not a key")


def steps_trace(path, tokens, vocab=8):
    """A trace with logits[step=k] whose greedy token is tokens[k]."""
    with parity.record(path):
        for k, tok in enumerate(tokens):
            x = -0.1 * np.arange(vocab, dtype=np.float32)[None, None]  # no ties: top-k is well defined
            x[0, 0, tok] = 2.0
            parity.tap("logits", x, axes=("batch", "seq", "vocab"), step=k)
    return path


def test_first_token_divergence_from_traces_and_from_a_diff(tmp_path):
    r = steps_trace(os.path.join(tmp_path, "r.trace"), [3, 1, 4, 1, 5])
    c = steps_trace(os.path.join(tmp_path, "c.trace"), [3, 1, 4, 2, 6])
    d = L.first_token_divergence(r, c)
    assert d == L.TokenDivergence(step=3, key="logits[step=3]", ref_tokens=(1,), cand_tokens=(2,))
    diff = parity.compare_traces(r, c)
    assert L.first_token_divergence(diff) == d
    assert diff["logits[step=2]"].extra["logits"]["greedy_match"] is True
    # top 5: {5, 0, 1, 2, 3} vs {6, 0, 1, 2, 3}
    assert diff["logits[step=4]"].extra["logits"]["topk_agreement"] == pytest.approx(0.8)
    # survives the JSON round trip
    again = TraceDiff.from_dict(json.loads(json.dumps(diff.to_dict())))
    assert L.first_token_divergence(again) == d
    assert L.first_token_divergence(r, r) is None


def test_non_logits_stages_get_no_extra(tmp_path, make_trace):
    r = make_trace("a.trace", {"x": np.ones(3, np.float32), "logits": np.ones((1, 4), np.float32),
                               "ids": np.arange(3)})
    diff = parity.compare_traces(r, r)
    assert diff["x"].extra is None and diff["ids"].extra is None
    assert diff["logits"].extra["logits"]["greedy_match"] is True


def test_text_report_names_the_first_differing_greedy_token(tmp_path):
    from rich.console import Console

    from parity.report.text import render_text

    r = steps_trace(os.path.join(tmp_path, "r.trace"), [3, 1, 4])
    c = steps_trace(os.path.join(tmp_path, "c.trace"), [3, 2, 4])
    buf = io.StringIO()
    render_text(parity.compare_traces(r, c), Console(file=buf, width=200, color_system=None))
    out = buf.getvalue()
    assert "Logits (3 stage(s)): top-5 agreement min 1 (logits[step=0]) · KL max" in out
    assert "first differing greedy token: step 1 (logits[step=1]): reference [1], candidate [2]" in out
    buf = io.StringIO()
    render_text(parity.compare_traces(r, r), Console(file=buf, width=200, color_system=None))
    assert "greedy tokens agree at every compared step." in buf.getvalue()
