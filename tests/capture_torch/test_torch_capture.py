"""parity.torch.capture on tiny random Llama, Qwen2 and GPT-2 models built from configs.

Every canonical stage must be present with the right shape and axes, and hold exactly what the
model computes: the tests recompute each stage from the previous ones with plain torch ops.
"""

import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import parity  # noqa: E402
import parity.torch  # noqa: E402
from parity.errors import CaptureError, UsageError  # noqa: E402

from .conftest import tiny_model  # noqa: E402

B, S = 2, 5
IDS = torch.tensor([[1, 5, 9, 2, 7], [3, 3, 8, 4, 6]])


def arr(trace, key):
    return torch.from_numpy(np.array(trace[key]))


def close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def capture(model, tmp_path, name="t.trace", **kw):
    path = os.path.join(tmp_path, name)
    kw.setdefault("preset", "auto")
    with parity.torch.capture(model, path, **kw) as cap, torch.no_grad():
        out = model(IDS, output_hidden_states=True)
    return parity.load_trace(path), out, cap


def no_hooks(model):
    """No hook of parity's is left (transformers installs its own for output_hidden_states)."""
    return not any(getattr(h, "__module__", "").startswith("parity") for m in model.modules()
                   for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values()))


def repeat_kv(x, n):
    return x.repeat_interleave(n, dim=1)


LLAMA_STAGES = ["attn_norm", "q_proj", "k_proj", "v_proj", "q_rope", "k_rope", "attn_scores", "attn_probs",
                "attn_context", "attn_out", "attn_residual", "ffn_norm", "ffn_gate", "ffn_up", "ffn_act", "ffn_mul",
                "ffn_out", "ffn_residual"]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_llama_like_every_canonical_stage_in_execution_order(arch, tmp_path):
    model = tiny_model(arch)
    t, out, cap = capture(model, tmp_path)
    # gate -> act -> up: the trace keeps the order the model computes in
    order = ["attn_norm", "q_proj", "k_proj", "v_proj", "q_rope", "k_rope", "attn_scores", "attn_probs", "attn_context",
             "attn_out", "attn_residual", "ffn_norm", "ffn_gate", "ffn_act", "ffn_up", "ffn_mul", "ffn_out",
             "ffn_residual"]
    assert t.keys() == ["embedding"] + [f"layers.{i}.{s}" for i in range(3) for s in order] + ["final_norm", "logits"]
    assert t.complete and cap.omitted == {} and set(cap.stages) == set(LLAMA_STAGES) | {"embedding", "final_norm", "logits"}
    H, nh, nkv, hd, F, V = 32, 4, 2, 8, 48, 96
    expect = {
        "attn_norm": ((B, S, H), ("batch", "seq", "hidden")),
        "q_proj": ((B, S, nh * hd), ("batch", "seq", "heads*head_dim")),
        "k_proj": ((B, S, nkv * hd), ("batch", "seq", "kv_heads*head_dim")),
        "v_proj": ((B, S, nkv * hd), ("batch", "seq", "kv_heads*head_dim")),
        "q_rope": ((B, nh, S, hd), ("batch", "heads", "seq", "head_dim")),
        "k_rope": ((B, nkv, S, hd), ("batch", "kv_heads", "seq", "head_dim")),
        "attn_scores": ((B, nh, S, S), ("batch", "heads", "seq", "kv_seq")),
        "attn_probs": ((B, nh, S, S), ("batch", "heads", "seq", "kv_seq")),
        "attn_context": ((B, S, nh * hd), ("batch", "seq", "heads*head_dim")),
        "attn_out": ((B, S, H), ("batch", "seq", "hidden")),
        "attn_residual": ((B, S, H), ("batch", "seq", "hidden")),
        "ffn_norm": ((B, S, H), ("batch", "seq", "hidden")),
        "ffn_gate": ((B, S, F), ("batch", "seq", "ffn")), "ffn_up": ((B, S, F), ("batch", "seq", "ffn")),
        "ffn_act": ((B, S, F), ("batch", "seq", "ffn")), "ffn_mul": ((B, S, F), ("batch", "seq", "ffn")),
        "ffn_out": ((B, S, H), ("batch", "seq", "hidden")), "ffn_residual": ((B, S, H), ("batch", "seq", "hidden")),
    }
    for i in range(3):
        for name, (shape, axes) in expect.items():
            st = t.stage(f"layers.{i}.{name}")
            assert (st.shape, st.axes, st.dtype) == (shape, axes, "F32"), st.key
    assert t.stage("logits").shape == (B, S, V) and t.stage("logits").axes == ("batch", "seq", "vocab")
    assert t.stage("layers.1.q_rope").provenance == {
        "module": "model.layers.1.self_attn", "taken": "return[0]",
        "function": f"transformers.models.{arch}.modeling_{arch}.apply_rotary_pos_emb"}
    assert t.stage("layers.2.attn_context").provenance == {"module": "model.layers.2.self_attn.o_proj", "taken": "input[0]"}
    assert t.meta["preset"] == arch and t.meta["attn_implementation"] == "eager" and t.meta["layers"] == [0, 1, 2]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_llama_like_captured_values_are_what_the_model_computes(arch, tmp_path):
    model = tiny_model(arch)
    t, out, _ = capture(model, tmp_path)
    nh, nkv, hd = 4, 2, 8
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    hidden = arr(t, "embedding")
    close(hidden, model.model.embed_tokens(IDS))
    for i, layer in enumerate(model.model.layers):
        g = lambda s: arr(t, f"layers.{i}.{s}")  # noqa: E731
        attn = layer.self_attn
        with torch.no_grad():
            close(g("attn_norm"), layer.input_layernorm(hidden))
            close(g("q_proj"), attn.q_proj(g("attn_norm")))
            close(g("k_proj"), attn.k_proj(g("attn_norm")))
            q = g("q_proj").view(B, S, nh, hd).transpose(1, 2)
            k = g("k_proj").view(B, S, nkv, hd).transpose(1, 2)
            v = g("v_proj").view(B, S, nkv, hd).transpose(1, 2)
            cos, sin = model.model.rotary_emb(hidden, torch.arange(S)[None])
            rot = lambda x: torch.cat((-x[..., hd // 2:], x[..., : hd // 2]), dim=-1)  # noqa: E731
            close(g("q_rope"), q * cos[:, None] + rot(q) * sin[:, None])
            close(g("k_rope"), k * cos[:, None] + rot(k) * sin[:, None])
            scores = g("q_rope") @ repeat_kv(g("k_rope"), nh // nkv).transpose(-1, -2) * hd ** -0.5
            close(g("attn_scores"), scores)  # scaled, before the mask: the future is not -inf yet
            assert torch.isfinite(g("attn_scores")).all()
            probs = g("attn_probs")
            close(probs.sum(-1), torch.ones(B, nh, S))
            assert (probs[..., ~causal] == 0).all()
            close(probs, torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1))
            ctx = (probs @ repeat_kv(v, nh // nkv)).transpose(1, 2).reshape(B, S, nh * hd)
            close(g("attn_context"), ctx)
            close(g("attn_out"), attn.o_proj(ctx))
            close(g("attn_residual"), hidden + g("attn_out"))
            close(g("ffn_norm"), layer.post_attention_layernorm(g("attn_residual")))
            close(g("ffn_gate"), layer.mlp.gate_proj(g("ffn_norm")))
            close(g("ffn_up"), layer.mlp.up_proj(g("ffn_norm")))
            close(g("ffn_act"), torch.nn.functional.silu(g("ffn_gate")))
            close(g("ffn_mul"), g("ffn_act") * g("ffn_up"))
            close(g("ffn_out"), layer.mlp.down_proj(g("ffn_mul")))
            close(g("ffn_residual"), g("attn_residual") + g("ffn_out"))
        hidden = g("ffn_residual")
    close(arr(t, "final_norm"), out.hidden_states[-1], tol=0)
    close(arr(t, "logits"), out.logits, tol=0)


def test_gpt2_fused_projection_and_values(tmp_path):
    model = tiny_model("gpt2")
    t, out, cap = capture(model, tmp_path)
    order = ["attn_norm", "qkv", "q_proj", "k_proj", "v_proj", "attn_scores", "attn_probs", "attn_context", "attn_out",
             "attn_residual", "ffn_norm", "ffn_up", "ffn_act", "ffn_out", "ffn_residual"]
    assert t.keys() == ["embedding"] + [f"layers.{i}.{s}" for i in range(3) for s in order] + ["final_norm", "logits"]
    assert t.stage("layers.0.qkv").axes == ("batch", "seq", "3*heads*head_dim") and t.stage("layers.0.qkv").shape == (B, S, 96)
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    hidden = arr(t, "embedding")
    for i, block in enumerate(model.transformer.h):
        g = lambda s: arr(t, f"layers.{i}.{s}")  # noqa: E731
        with torch.no_grad():
            close(torch.cat([g("q_proj"), g("k_proj"), g("v_proj")], dim=-1), g("qkv"), tol=0)
            close(g("qkv"), block.attn.c_attn(block.ln_1(hidden)))
            q, k = (g(n).view(B, S, 4, 8).transpose(1, 2) for n in ("q_proj", "k_proj"))
            scores = q @ k.transpose(-1, -2) * 8 ** -0.5
            close(g("attn_scores"), scores)
            close(g("attn_probs"), torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1))
            close(g("attn_residual"), hidden + g("attn_out"))
            close(g("ffn_act"), block.mlp.act(g("ffn_up")))
            close(g("ffn_residual"), g("attn_residual") + g("ffn_out"))
        hidden = g("ffn_residual")
    close(arr(t, "final_norm"), out.hidden_states[-1], tol=0)
    close(arr(t, "logits"), out.logits, tol=0)


def test_bf16_is_stored_as_bf16(tmp_path):
    model = tiny_model("llama").to(torch.bfloat16)
    t, out, _ = capture(model, tmp_path)
    assert {s.dtype for s in t} == {"BF16"}
    assert t.meta["dtype"] == "bfloat16"
    # exact: the stored bits are the model's bits
    assert np.array_equal(np.asarray(t["logits"]).view(np.uint16), out.logits.view(torch.int16).numpy().view(np.uint16))


def test_layer_and_stage_selection(tmp_path):
    model = tiny_model("llama")
    t, _, cap = capture(model, tmp_path, layers=[-1], stages=["attn_probs", "logits", "ffn_*"])
    assert cap.layers == (2,)
    assert t.keys() == ["layers.2.attn_probs", "layers.2.ffn_norm", "layers.2.ffn_gate", "layers.2.ffn_act",
                        "layers.2.ffn_up", "layers.2.ffn_mul", "layers.2.ffn_out", "layers.2.ffn_residual", "logits"]


def test_requesting_a_stage_the_architecture_lacks_is_an_error_listing_what_it_has(tmp_path):
    model = tiny_model("gpt2")
    path = os.path.join(tmp_path, "x.trace")
    with pytest.raises(UsageError) as e:
        with parity.torch.capture(model, path, preset="gpt2", stages=["q_rope"]):
            pass
    assert 'the gpt2 preset has no canonical stage "q_rope"' in str(e.value)
    assert "it has: embedding, final_norm, logits, attn_norm, qkv, q_proj" in str(e.value)
    assert not os.path.exists(path)  # nothing written for a refused capture
    assert no_hooks(model)


def test_fused_attention_default_omits_internals_but_explicit_request_fails(tmp_path):
    model = tiny_model("llama", eager=False)
    assert model.config._attn_implementation == "sdpa"
    with pytest.warns(UserWarning, match='left out attn_scores: the model uses attn_implementation="sdpa"'):
        t, _, cap = capture(model, tmp_path)
    assert set(cap.omitted) == {"attn_scores", "attn_probs"}
    assert t.meta["omitted_stages"]["attn_probs"].startswith('the model uses attn_implementation="sdpa"')
    assert "layers.0.q_rope" in t.keys() and "layers.0.attn_probs" not in t.keys()
    with pytest.raises(CaptureError, match='stage "attn_probs": cannot be captured from LlamaForCausalLM: the model uses '
                                           'attn_implementation="sdpa"'):
        capture(model, tmp_path, "y.trace", stages=["attn_probs"])
    assert no_hooks(model)
    # a predicate filters what the model can produce: no error, the rest is listed as omitted
    with pytest.warns(UserWarning, match="left out attn_probs"):
        t, _, cap = capture(model, tmp_path, "p.trace", stages=lambda n: n in ("attn_probs", "logits"))
    assert t.keys() == ["logits"] and set(cap.omitted) == {"attn_probs"}
    # switched to eager for the capture only
    t, _, cap = capture(model, tmp_path, "z.trace", stages=["attn_probs"], attn_implementation="eager")
    assert t.keys() == [f"layers.{i}.attn_probs" for i in range(3)] and t.meta["attn_implementation"] == "eager"
    assert model.config._attn_implementation == "sdpa"


def test_a_stage_the_model_does_not_produce_fails_loudly_naming_it(tmp_path):
    # GPT-2's reorder_and_upcast_attn path computes attention without the eager function.
    model = tiny_model("gpt2", reorder_and_upcast_attn=True)
    path = os.path.join(tmp_path, "g.trace")
    with pytest.raises(CaptureError) as e:
        with parity.torch.capture(model, path, preset="auto", stages=["attn_probs", "logits"]), torch.no_grad():
            model(IDS)
    assert str(e.value) == (f'{path}: stage "layers.0.attn_probs": requested, but the model did not produce it: '
                            "eager_attention_forward() was not called for transformer.h.0.attn (the attention code "
                            "path bypasses it, e.g. another implementation or a kernel). (2 more stage(s) missing)")
    t = parity.load_trace(path)
    assert not t.complete and t.keys() == ["logits"]  # what was produced is kept, in an incomplete trace
    assert "layers.0.attn_probs" not in t.keys()  # never an empty or zero-filled stage
    assert no_hooks(model)


def test_hooks_and_interpositions_are_removed_after_an_exception(tmp_path):
    import transformers.models.llama.modeling_llama as ml

    eager, rope = ml.eager_attention_forward, ml.apply_rotary_pos_emb
    model = tiny_model("llama", eager=False)
    path = os.path.join(tmp_path, "e.trace")
    with pytest.raises(IndexError):
        with parity.torch.capture(model, path, preset="auto", attn_implementation="eager"), torch.no_grad():
            assert ml.eager_attention_forward is not eager and ml.apply_rotary_pos_emb is not rope
            model(torch.tensor([[1, 2, 500]]))  # token id outside the vocabulary
    assert no_hooks(model)
    assert ml.eager_attention_forward is eager and ml.apply_rotary_pos_emb is rope
    assert model.config._attn_implementation == "sdpa"
    t = parity.load_trace(path)
    assert not t.complete and t.manifest["incomplete_reason"] == "IndexError raised during capture"
    # the model still works, uncaptured
    with torch.no_grad():
        model(IDS)


def test_other_models_of_the_same_architecture_are_not_captured(tmp_path):
    model, other = tiny_model("llama"), tiny_model("llama", seed=1)
    path = os.path.join(tmp_path, "o.trace")
    with parity.torch.capture(model, path, preset="auto"), torch.no_grad():
        other(IDS)  # shares the patched module functions, but is not the captured model
        model(IDS)
    t = parity.load_trace(path)
    assert len(t.keys()) == len(set(t.keys())) and not any("#" in k for k in t.keys())


def test_decode_steps_across_generate(tmp_path):
    model = tiny_model("llama")
    path = os.path.join(tmp_path, "gen.trace")
    prompt = torch.tensor([[1, 5, 9, 2]])
    with parity.torch.capture(model, path, preset="auto", steps=True, layers=[0],
                              stages=["attn_scores", "k_rope", "logits"]) as cap, torch.no_grad():
        gen = model.generate(prompt, max_new_tokens=4, do_sample=False)
    t = parity.load_trace(path)
    assert cap.step == 3
    assert t.keys() == [f"{s}[step={k}]" for k in range(4) for s in ("layers.0.k_rope", "layers.0.attn_scores", "logits")]
    for k in range(4):
        q = 4 if k == 0 else 1  # prefill, then one new token per step against a growing cache
        assert t.stage(f"layers.0.attn_scores[step={k}]").shape == (1, 4, q, 4 + k)
        assert t.stage(f"layers.0.k_rope[step={k}]").shape == (1, 2, q, 8)
        assert t.stage(f"logits[step={k}]").indices == {"step": k}
        assert int(np.asarray(t[f"logits[step={k}]"])[0, -1].argmax()) == int(gen[0, 4 + k])  # greedy token


def test_only_selected_steps_are_captured(tmp_path):
    model = tiny_model("gpt2")
    path = os.path.join(tmp_path, "s.trace")
    with parity.torch.capture(model, path, preset="auto", steps=[1, 3], stages="logits"), torch.no_grad():
        model.generate(torch.tensor([[1, 2]]), max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert parity.load_trace(path).keys() == ["logits[step=1]", "logits[step=3]"]


def test_module_tree_mode_keys_are_module_names(tmp_path):
    model = tiny_model("gpt2")
    path = os.path.join(tmp_path, "m.trace")
    with parity.torch.capture(model, path, stages=["transformer.h.*.mlp.c_fc", "lm_head", "transformer.h.*.attn"],
                              layers=[1]) as cap, torch.no_grad():
        out = model(IDS)
    t = parity.load_trace(path)
    # attention modules return (output, weights): tuple elements get .0, .1
    assert t.keys() == ["transformer.h.1.attn.0", "transformer.h.1.attn.1", "transformer.h.1.mlp.c_fc", "lm_head"]
    assert cap.preset is None and t.stage("lm_head").axes is None
    assert t.stage("transformer.h.1.mlp.c_fc").provenance == {"module": "transformer.h.1.mlp.c_fc"}
    close(arr(t, "lm_head"), out.logits, tol=0)
    with pytest.raises(UsageError, match='the module pattern "encoder.\\*" matches no module of GPT2LMHeadModel'):
        with parity.torch.capture(model, os.path.join(tmp_path, "n.trace"), stages="encoder.*"):
            pass


def test_module_tree_default_and_predicate(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(3, 3) for _ in range(3)])
            self.head = torch.nn.Linear(3, 1)

        def forward(self, x):
            for b in self.blocks:
                x = torch.relu(b(x))
            return self.head(x)

    net = Net()
    x = torch.randn(4, 3)
    path = os.path.join(tmp_path, "net.trace")
    with parity.torch.capture(net, path), torch.no_grad():
        net(x)
    assert parity.load_trace(path).keys() == ["blocks.0", "blocks.1", "blocks.2", "head"]
    with parity.torch.capture(net, path, layers="-1", stages=lambda name, mod: isinstance(mod, torch.nn.Linear)), \
            torch.no_grad():
        net(x)
    assert parity.load_trace(path).keys() == ["blocks.2", "head"]


def test_in_place_changes_after_the_hook_never_reach_the_trace(tmp_path, monkeypatch):
    class InPlace(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(4, 4)

        def forward(self, x):
            y = self.a(x)
            y.mul_(2)  # after the hook on self.a has run
            return y

    m = InPlace()
    x = torch.ones(2, 4)
    with torch.no_grad():
        expected = m.a(x).numpy()
    # default copy=True: the value at hook time is what is stored, whatever the writer's timing
    for background in (True, False):
        path = os.path.join(tmp_path, f"c{background}.trace")
        with parity.torch.capture(m, path, background=background), torch.no_grad():
            m(x)
        assert np.array_equal(np.asarray(parity.load_trace(path)["a"]), expected)


def test_background_and_synchronous_writers_write_identical_traces(tmp_path):
    model = tiny_model("qwen2")
    ta, _, _ = capture(model, tmp_path, "a.trace", background=True)
    tb, _, _ = capture(model, tmp_path, "b.trace", background=False)
    # one staging buffer at a time (queue_bytes=1): the forward waits for the writer, same files
    tc, _, _ = capture(model, tmp_path, "c.trace", background=True, queue_bytes=1, buffer_bytes=8192)
    td, _, _ = capture(model, tmp_path, "d.trace", background=False, buffer_bytes=8192)
    for t in (tb,):
        assert t.manifest["files"] == ta.manifest["files"] and t.manifest["stages"] == ta.manifest["stages"]
    assert tc.manifest["files"] == td.manifest["files"] and tc.manifest["stages"] == td.manifest["stages"]
    assert len(tc.manifest["files"]) > len(ta.manifest["files"])  # smaller buffers, more data files
    for t in (ta, tb, tc, td):
        assert t.verify() == []
    for key in ta.keys():
        assert np.array_equal(np.asarray(ta[key]), np.asarray(tc[key]))


def test_capture_add_records_extra_stages_in_order(tmp_path):
    model = tiny_model("llama")
    path = os.path.join(tmp_path, "x.trace")
    with parity.torch.capture(model, path, preset="auto", stages="logits") as cap, torch.no_grad():
        assert cap.add("input_ids", IDS, axes=("batch", "seq")) == "input_ids"
        model(IDS)
        assert cap.add("note", "greedy", step=0) == "note[step=0]"
        cap.add("temperature", 0.7)
        cap.add("positions", np.arange(5, dtype=np.int32), axes=("seq",))
    t = parity.load_trace(path)
    assert t.keys() == ["input_ids", "logits", "note[step=0]", "temperature", "positions"]
    assert t.stage("temperature").dtype == "F64" and float(np.asarray(t["temperature"])) == 0.7
    assert np.array_equal(np.asarray(t["positions"]), np.arange(5)) and t.stage("positions").axes == ("seq",)
    assert np.array_equal(np.asarray(t["input_ids"]), IDS.numpy()) and t.stage("note[step=0]").text == "greedy"


def test_bad_arguments(tmp_path):
    model = tiny_model("llama")
    with pytest.raises(UsageError, match="needs a torch.nn.Module"):
        with parity.torch.capture(object(), os.path.join(tmp_path, "a.trace")):
            pass
    class Net(torch.nn.Module):
        config = transformers.T5Config()

    with pytest.raises(UsageError, match='no preset for model_type "t5" \\(Net\\); known: bert, gpt2, llama, qwen2'):
        with parity.torch.capture(Net(), os.path.join(tmp_path, "a.trace"), preset="auto"):
            pass
    with pytest.raises(CaptureError, match='the bert preset expects the layers in a ModuleList named "encoder.layer", '
                                           "but Net has none; pass preset=None"):
        with parity.torch.capture(Net(), os.path.join(tmp_path, "a.trace"), preset="bert"):
            pass
    with pytest.raises(UsageError, match="layer index 3 is out of range: the model has 3 layers"):
        with parity.torch.capture(model, os.path.join(tmp_path, "a.trace"), preset="auto", layers=3):
            pass
    assert no_hooks(model)


def test_no_warning_when_everything_requested_is_available(tmp_path):
    model = tiny_model("gpt2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t, _, _ = capture(model, tmp_path)
    assert t.meta["training"] is False
    model.train()
    with pytest.warns(UserWarning, match="GPT2LMHeadModel is in training mode, so its dropout or batch norm makes the captured values"):
        t, _, _ = capture(model, tmp_path, "train.trace")
    assert t.meta["training"] is True


@pytest.mark.gpu
def test_cuda_tensors_are_copied_through_pinned_memory(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = tiny_model("llama").to("cuda", torch.bfloat16)
    path = os.path.join(tmp_path, "cuda.trace")
    with parity.torch.capture(model, path, preset="auto") as cap, torch.no_grad():
        out = model(IDS.cuda())
    t = parity.load_trace(path)
    assert t.meta["device"] == "cuda" and {s.dtype for s in t} == {"BF16"} and cap.omitted == {}
    assert np.array_equal(np.asarray(t["logits"]).view(np.uint16),
                          out.logits.cpu().view(torch.int16).numpy().view(np.uint16))


def test_a_failing_writer_is_reported_and_never_leaves_the_forward_waiting(tmp_path, monkeypatch):
    """The disk fails while the forward waits for a staging buffer (queue_bytes=1): a CaptureError, no hang."""
    from parity.trace.writer import TraceWriter

    def broken(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TraceWriter, "write_packed_file", broken)
    model = tiny_model("llama")
    path = os.path.join(tmp_path, "full.trace")
    for background in (True, False):
        with pytest.raises(CaptureError, match="the trace writer failed: .*No space left on device"):
            capture(model, tmp_path, "full.trace", background=background, queue_bytes=1, buffer_bytes=4096)
        t = parity.load_trace(path)
        assert not t.complete and no_hooks(model)


def test_packed_data_files_are_page_aligned_safetensors_with_crc32(tmp_path):
    """Captured data files: the data starts on a 4096-byte boundary (direct I/O), any safetensors
    reader loads them, and the manifest's CRC-32 is zlib's."""
    import zlib

    from safetensors.numpy import load_file

    t, _, _ = capture(tiny_model("llama"), tmp_path, buffer_bytes=8192)
    for rel, info in t.manifest["files"].items():
        raw = open(os.path.join(t.path, rel), "rb").read()
        assert len(raw) == info["bytes"] and info["crc32"] == f"{zlib.crc32(raw):08x}"
        assert (8 + int.from_bytes(raw[:8], "little")) % 4096 == 0
        loaded = load_file(os.path.join(t.path, rel))
        for key, value in loaded.items():
            assert np.array_equal(value, np.asarray(t[key])), key


@pytest.mark.parametrize("background", [True, False])
def test_device_copies_are_finished_by_the_writer_in_order(tmp_path, background):
    """The CUDA path without a GPU: a stage whose bytes arrive later (pinned copy + event) is
    completed by the writer, and the data files and stages keep the capture's order."""
    from parity.capture.torch import _PackedSink
    from parity.trace import TraceWriter
    from parity.trace.writer import PackedStage

    class Event:
        waited = 0

        def synchronize(self):
            Event.waited += 1

    path = tmp_path / "d.trace"
    w = TraceWriter(path)
    sink = _PackedSink(w, background=background, arena_bytes=4096, queue_bytes=1 << 20)
    values = [torch.full((256,), float(i)) for i in range(10)]  # 1 KiB each: 4 per staging buffer
    for i, v in enumerate(values):
        if i in (1, 6):  # as a CUDA tensor: the hook leaves a pinned copy and an event
            arena, offset = sink._claim("x", 1024, 4)
            arena.pending.append((len(arena.stages), v.clone(), Event()))
            arena.stages.append(PackedStage("x", "F32", (256,), offset, 1024, None))
        else:
            sink.put("x", v, ("n",), None)
    sink.close()
    w.close()
    t = parity.load_trace(path)
    assert t.keys() == ["x"] + [f"x#{i}" for i in range(1, 10)] and Event.waited == 2
    for i, key in enumerate(t.keys()):
        assert np.array_equal(np.asarray(t[key]), values[i].numpy()), key
    assert t.verify() == [] and len(t.manifest["files"]) == 3
