"""``parity.torch.capture(..., replay=REF)``: teacher forcing through forward hooks and the
interposed attention functions, and ``parity localize`` on the result."""

import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import parity  # noqa: E402
import parity.torch  # noqa: E402
from parity.errors import UsageError  # noqa: E402
from parity.localize.local import localize  # noqa: E402

from .conftest import tiny_model  # noqa: E402


class Block(torch.nn.Module):
    def __init__(self, width, gain=1.0):
        super().__init__()
        self.lin = torch.nn.Linear(width, width)
        self.act = torch.nn.Tanh()
        self.gain = gain

    def forward(self, x):
        return x + self.act(self.lin(x)) * self.gain


class Net(torch.nn.Module):
    """Four residual blocks and a head that amplifies any error (exp of a large multiple)."""

    def __init__(self, bug=0.0):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = torch.nn.ModuleList(Block(8) for _ in range(4))
        self.blocks[2].gain = 1.0 + bug  # the bug: block 2 scales its update slightly
        self.head = torch.nn.Linear(8, 8)

    def forward(self, x):
        for b in self.blocks:
            x = b(x) * 3.0
        return torch.exp(self.head(x) * 0.05)


X = torch.linspace(-1, 1, 16).reshape(2, 8)
STAGES = "blocks.*.lin|blocks.*.act|blocks.?|head".split("|")


def _capture(model, path, **kw):
    with parity.torch.capture(model, path, stages=STAGES, **kw), torch.no_grad():
        return model(X)


def test_replay_localizes_a_bug_in_block_2_that_plain_diff_finds_later(tmp_path):
    ref, cand, local = (str(tmp_path / n) for n in ("ref.trace", "cand.trace", "local.trace"))
    _capture(Net(), ref)
    _capture(Net(bug=1e-5), cand)
    out = _capture(Net(bug=1e-5), local, replay=ref)
    keys = parity.load_trace(ref).keys()
    assert keys == ["blocks.0.lin", "blocks.0.act", "blocks.0", "blocks.1.lin", "blocks.1.act", "blocks.1",
                    "blocks.2.lin", "blocks.2.act", "blocks.2", "blocks.3.lin", "blocks.3.act", "blocks.3", "head"]
    t = parity.load_trace(local)
    assert t.keys() == keys
    assert all(t.stage(k).provenance["replay"] == "substituted" for k in keys)
    assert t.meta["replay"] == {"reference": ref, "substituted": len(keys), "not_substituted": {}}
    # the model went on with the reference's values: its output is the reference's head, exp'd
    assert torch.equal(out, torch.exp(torch.from_numpy(np.array(parity.load_trace(ref)["head"])) * 0.05))
    # each stage after the bug started from the reference: only blocks.2 differs locally
    r = parity.load_trace(ref)
    differs = [k for k in keys if not np.array_equal(np.asarray(r[k]), np.asarray(t[k]))]
    assert differs == ["blocks.2"]
    loc = localize(ref, cand, local)
    assert loc.plain_first == "blocks.3.lin"  # within tolerance at block 2 itself: the plain diff fails later
    assert loc.culprit == "blocks.2" and loc.stage("blocks.2").plain_status == "pass"
    assert [loc.stage(k).label for k in ("blocks.3.lin", "blocks.3", "head")] == ["propagated"] * 3
    assert [s.label for s in loc.stages[:8]] == ["ok"] * 8


def test_replay_substitutes_every_element_of_a_tuple_output(tmp_path):
    class Pair(torch.nn.Module):
        def forward(self, x):
            return x * 2, x + 1

    class M(torch.nn.Module):
        def __init__(self, off):
            super().__init__()
            self.pair, self.off = Pair(), off

        def forward(self, x):
            a, b = self.pair(x + self.off)
            return a * b

    ref, local = str(tmp_path / "r.trace"), str(tmp_path / "l.trace")
    good, bad = M(0.0), M(0.5)
    with parity.torch.capture(good, ref, stages="pair"):
        expect = good(X)
    with parity.torch.capture(bad, local, stages="pair", replay=ref):
        got = bad(X)
    assert parity.load_trace(local).keys() == ["pair.0", "pair.1"]
    assert not np.array_equal(np.asarray(parity.load_trace(local)["pair.0"]), np.asarray(parity.load_trace(ref)["pair.0"]))
    assert torch.equal(got, expect)  # both tuple elements were the reference's


def test_replay_errors_name_the_stage(tmp_path):
    ref, short = str(tmp_path / "ref.trace"), str(tmp_path / "short.trace")
    m = Net()
    _capture(m, ref)
    with parity.torch.capture(m, short, stages="head"), torch.no_grad():
        m(X)
    # a stage the reference lacks
    with pytest.raises(UsageError, match=r'stage "blocks.0.lin": replay: the reference .*short.trace has no stage'):
        _capture(m, str(tmp_path / "a.trace"), replay=short)
    assert parity.load_trace(str(tmp_path / "a.trace")).complete is False
    # a shape that differs
    with pytest.raises(UsageError, match=r'stage "blocks.0.lin": replay: shape \(3, 8\) here, \(2, 8\) in the reference'):
        with parity.torch.capture(m, str(tmp_path / "b.trace"), stages=STAGES, replay=ref), torch.no_grad():
            m(torch.zeros(3, 8))
    # a missing reference file is refused before anything is hooked
    with pytest.raises(parity.errors.ParityError, match="nope.trace"):
        _capture(m, str(tmp_path / "c.trace"), replay=str(tmp_path / "nope.trace"))
    assert not m._forward_hooks


def test_a_value_that_cannot_be_put_back_is_recorded_as_not_substituted(tmp_path):
    class Frozen(dict):  # a mapping parity can read but not rebuild (its constructor takes a tensor)
        def __init__(self, t):
            super().__init__(h=t)

    class Odd(torch.nn.Module):
        def forward(self, x):
            return Frozen(x * 2)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.odd, self.lin = Odd(), torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.lin(self.odd(x)["h"])

    ref, local = str(tmp_path / "r.trace"), str(tmp_path / "l.trace")
    torch.manual_seed(0)
    m = M()
    with parity.torch.capture(m, ref, stages=["odd", "lin"]), torch.no_grad():
        m(X)
    with pytest.warns(UserWarning, match=r"replayed, but not substituted: odd.h \(the module returns a Frozen, which "
                                         "parity cannot rebuild with the reference's values\\)"):
        with parity.torch.capture(m, local, stages=["odd", "lin"], replay=ref) as cap, torch.no_grad():
            m(X)
    t = parity.load_trace(local)
    reason = "the module returns a Frozen, which parity cannot rebuild with the reference's values"
    assert t.stage("odd.h").provenance["replay"] == "not substituted: " + reason
    assert t.stage("lin").provenance["replay"] == "substituted"
    assert t.meta["replay"]["not_substituted"] == {"odd.h": reason} and t.meta["replay"]["substituted"] == 1
    assert cap.not_substituted == {"odd.h": reason}


LLAMA_STAGES = ["embedding", "attn_norm", "q_proj", "k_proj", "v_proj", "q_rope", "k_rope", "attn_scores",
                "attn_probs", "attn_context", "attn_out", "attn_residual", "ffn_norm", "ffn_gate", "ffn_up",
                "ffn_act", "ffn_mul", "ffn_out", "ffn_residual", "final_norm", "logits"]


def _llama_bug(model, layer=1):
    """A realistic bug: the layer's attention norm uses a 1e3 times larger epsilon."""
    model.model.layers[layer].input_layernorm.variance_epsilon = 1e-3


def test_llama_replay_covers_attention_internals(tmp_path):
    ids = torch.tensor([[1, 5, 9, 3, 7, 2]])
    ref, cand, local = (str(tmp_path / n) for n in ("ref.trace", "cand.trace", "local.trace"))
    m = tiny_model("llama")
    with parity.torch.capture(m, ref, preset="auto"), torch.no_grad():
        ref_logits = m(ids).logits
    _llama_bug(m)
    with parity.torch.capture(m, cand, preset="auto"), torch.no_grad():
        m(ids)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # everything is substituted: no warning
        with parity.torch.capture(m, local, preset="auto", replay=ref), torch.no_grad():
            logits = m(ids).logits
    assert torch.equal(logits, ref_logits)  # the logits handed on are the reference's
    t, r = parity.load_trace(local), parity.load_trace(ref)
    assert t.keys() == r.keys() and "layers.1.attn_scores" in t.keys() and "layers.0.q_rope" in t.keys()
    assert {t.stage(k).provenance["replay"] for k in t.keys()} == {"substituted"}
    assert t.meta["replay"]["substituted"] == len(t.keys()) and t.meta["replay"]["not_substituted"] == {}
    # only the buggy norm's own output differs; everything after it started from the reference
    differs = [k for k in r.keys() if not np.array_equal(np.asarray(r[k]), np.asarray(t[k]))]
    assert differs == ["layers.1.attn_norm"]
    loc = localize(ref, cand, local)
    assert loc.culprit == "layers.1.attn_norm"
    assert loc.stage("layers.1.attn_scores").label in ("propagated", "ok")
    assert loc.stage("logits").label in ("propagated", "ok")


def test_sdpa_stages_the_reference_has_are_listed_as_not_substituted(tmp_path):
    ids = torch.tensor([[1, 5, 9, 3]])
    ref, local = str(tmp_path / "ref.trace"), str(tmp_path / "local.trace")
    m = tiny_model("llama")
    with parity.torch.capture(m, ref, preset="auto", layers="0"), torch.no_grad():
        m(ids)
    with pytest.warns(UserWarning, match="not substituted: layers.0.attn_scores"):
        with parity.torch.capture(m, local, preset="auto", layers="0", replay=ref,
                                  attn_implementation="sdpa") as cap, torch.no_grad():
            m(ids)
    t = parity.load_trace(local)
    assert "layers.0.attn_scores" not in t.keys() and "layers.0.attn_context" in t.keys()
    ns = t.meta["replay"]["not_substituted"]
    assert sorted(ns) == ["layers.0.attn_probs", "layers.0.attn_scores"] and ns == cap.not_substituted
    assert ns["layers.0.attn_scores"].startswith('this capture left it out: the model uses attn_implementation="sdpa"')


def test_gpt2_fused_qkv_and_decode_steps_replay(tmp_path):
    m = tiny_model("gpt2")
    ids = torch.tensor([[1, 2, 3]])
    ref, local = str(tmp_path / "ref.trace"), str(tmp_path / "local.trace")
    with parity.torch.capture(m, ref, preset="auto", steps=True), torch.no_grad():
        g_ref = m.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    with parity.torch.capture(m, local, preset="auto", steps=True, replay=ref), torch.no_grad():
        g = m.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert torch.equal(g, g_ref)
    t, r = parity.load_trace(local), parity.load_trace(ref)
    assert t.keys() == r.keys() and "layers.0.q_proj[step=2]" in t.keys() and "layers.0.qkv[step=0]" in t.keys()
    for k in r.keys():  # the same model: replay changes nothing it records
        assert np.array_equal(np.asarray(r[k]), np.asarray(t[k])), k
