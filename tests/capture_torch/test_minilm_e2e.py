"""End to end with the real all-MiniLM-L6-v2 weights (offline): capture, precision diff, fault
localisation, and PyTorch against ONNX Runtime."""

import copy
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import parity  # noqa: E402
import parity.torch  # noqa: E402

from .conftest import load_minilm  # noqa: E402

LAYER = ["q_proj", "k_proj", "v_proj", "attn_scores", "attn_probs", "attn_context", "attn_out", "attn_residual",
         "ffn_norm", "ffn_up", "ffn_act", "ffn_out", "ffn_residual"]


def run(model, inputs, path, **kw):
    kw.setdefault("preset", "auto")
    with parity.torch.capture(model, path, **kw), torch.no_grad():
        return model(**inputs)


@pytest.fixture(scope="module")
def f32_trace(minilm, minilm_inputs, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("minilm") / "f32.trace")
    out = run(minilm, minilm_inputs, path)
    return path, out


def test_bert_stages_shapes_axes_and_values(f32_trace, minilm, minilm_inputs):
    path, out = f32_trace
    t = parity.load_trace(path)
    b, s = minilm_inputs["input_ids"].shape
    assert t.keys() == ["embedding"] + [f"layers.{i}.{n}" for i in range(6) for n in LAYER]
    assert t.meta["omitted_stages"] == {"logits": "the model has no module cls.predictions (BertModel may lack that head)."}
    shapes = {"attn_scores": (b, 12, s, s), "attn_probs": (b, 12, s, s), "ffn_up": (b, s, 1536), "ffn_act": (b, s, 1536)}
    for st in t:
        assert st.shape == shapes.get(st.key.rsplit(".", 1)[-1], (b, s, 384)), st.key
        assert st.axes[0] == "batch" and st.dtype == "F32"
    assert t.stage("layers.0.attn_probs").axes == ("batch", "heads", "seq", "kv_seq")
    # the last layer's output is the model's output
    assert np.array_equal(np.asarray(t["layers.5.ffn_residual"]), out.last_hidden_state.numpy())
    mask = minilm_inputs["attention_mask"].bool()
    for i in range(6):
        probs = np.asarray(t[f"layers.{i}.attn_probs"])
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
        assert (probs[~mask.numpy()[:, None, None, :].repeat(12, 1).repeat(s, 2)] == 0).all()  # padded keys
        scores = np.asarray(t[f"layers.{i}.attn_scores"])
        assert np.isfinite(scores).all() and np.abs(scores).max() < 1e3  # before the mask: no -3.4e38 fill
        # softmax(scores + mask) is what the model used
        masked = np.where(mask.numpy()[:, None, None, :], scores, -np.inf)
        ref = np.exp(masked - masked.max(-1, keepdims=True))
        np.testing.assert_allclose(probs, ref / ref.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)
    layer = minilm.encoder.layer[2]
    with torch.no_grad():
        r = parity.load_trace(path)
        g = lambda n: torch.from_numpy(np.array(r[f"layers.2.{n}"]))  # noqa: E731
        torch.testing.assert_close(g("attn_residual"), g("attn_out") + torch.from_numpy(np.array(r["layers.1.ffn_residual"])))
        torch.testing.assert_close(g("ffn_norm"), layer.attention.output.LayerNorm(g("attn_residual")))
        torch.testing.assert_close(g("ffn_act"), layer.intermediate.intermediate_act_fn(g("ffn_up")))


def test_float32_against_bfloat16_differs_at_rounding_level_everywhere(f32_trace, minilm_dir, minilm_inputs, tmp_path):
    path, _ = f32_trace
    bf16 = load_minilm(minilm_dir, attn_implementation="eager", dtype=torch.bfloat16)
    bpath = str(tmp_path / "bf16.trace")
    run(bf16, minilm_inputs, bpath)
    assert {s.dtype for s in parity.load_trace(bpath)} == {"BF16"}
    diff = parity.compare_traces(path, bpath)
    assert not diff.missing and not diff.extra and len(diff.compared) == 79
    for sd in diff.compared:
        m = sd.metrics
        assert sd.problem in (None, "values"), sd.key  # never a shape or layout problem
        # bf16 keeps 8 significant bits (~48 dB for one rounding); six layers of it stay far above 30 dB
        assert m.sqnr_db > 30 and m.cosine > 0.999, (sd.key, m.sqnr_db, m.cosine)
        assert "dtype differs: F32 vs BF16" in sd.notes
    # a tolerance at bf16 rounding level (SQNR floor, no element-wise bound): parity holds
    loose = parity.compare_traces(path, bpath, rtol=0.0, atol=1e9, stages={"*": {"sqnr_min_db": 30, "cosine_min": 0.999}})
    assert loose.passed, [s.key for s in loose.divergent]


@pytest.mark.parametrize("module, stage", [
    ("attention.self.value", "layers.3.v_proj"),
    ("attention.output.dense", "layers.3.attn_out"),
    ("intermediate.dense", "layers.3.ffn_up"),
    ("output.dense", "layers.3.ffn_out"),
])
def test_one_altered_weight_in_layer_3_is_the_first_divergence(f32_trace, minilm, minilm_inputs, tmp_path, module, stage):
    path, _ = f32_trace
    bad = copy.deepcopy(minilm)
    with torch.no_grad():
        bad.encoder.layer[3].get_submodule(module).weight[5, 7] += 0.5
    cpath = str(tmp_path / "bad.trace")
    run(bad, minilm_inputs, cpath)
    diff = parity.compare_traces(path, cpath)
    assert diff.first_divergence.key == stage
    keys = [s.key for s in diff.stages]
    before = keys[: keys.index(stage)]
    assert all(diff[k].status == "pass" and diff[k].metrics.max_abs_err == 0 for k in before)  # bit-identical before


def test_bfloat16_with_an_altered_weight_is_found_under_a_rounding_level_tolerance(minilm_dir, f32_trace,
                                                                                   minilm_inputs, tmp_path):
    path, _ = f32_trace
    bad = load_minilm(minilm_dir, attn_implementation="eager", dtype=torch.bfloat16)
    with torch.no_grad():
        bad.encoder.layer[3].intermediate.dense.weight[:, :] *= -1  # a sign bug in one projection
    cpath = str(tmp_path / "bad16.trace")
    run(bad, minilm_inputs, cpath)
    diff = parity.compare_traces(path, cpath, rtol=0.0, atol=1e9, stages={"*": {"sqnr_min_db": 30}})
    assert diff.first_divergence.key == "layers.3.ffn_up" and diff.first_divergence.problem == "sqnr"


# -- ONNX Runtime ---------------------------------------------------------------------------------

class _Wrapped(torch.nn.Module):
    """Positional inputs for the TorchScript exporter (transformers 5 merges keyword defaults)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state


@pytest.fixture(scope="module")
def minilm_onnx(minilm, minilm_inputs, tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path = str(tmp_path_factory.mktemp("onnx") / "minilm.onnx")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # .eval(): the exporter restores the wrapper's training flag afterwards, recursively
        torch.onnx.export(_Wrapped(minilm).eval(), tuple(minilm_inputs[n] for n in names), path, dynamo=False,
                          input_names=names, output_names=["last_hidden_state"], opset_version=17,
                          dynamic_axes={n: {0: "batch", 1: "seq"} for n in names})
    assert not minilm.training
    return path


def test_pytorch_against_onnx_runtime_all_aligned_stages_within_float32_tolerance(f32_trace, minilm_onnx,
                                                                                  minilm_inputs, tmp_path):
    from parity.capture.onnx import capture_onnx

    path, out = f32_trace
    opath = str(tmp_path / "ort.trace")
    res = capture_onnx(minilm_onnx, {k: v.numpy() for k, v in minilm_inputs.items()}, opath)
    assert res.preset == "bert"
    torch_keys = parity.load_trace(path).keys()
    assert sorted(res.aligned) == sorted(torch_keys)  # every PyTorch stage has its ONNX counterpart
    assert res.aligned["layers.0.attn_probs"] == "/model/encoder/layer.0/attention/self/Softmax_output_0"
    assert res.aligned["layers.0.attn_scores"] == "/model/encoder/layer.0/attention/self/Mul_output_0"
    t = parity.load_trace(opath)
    assert t.stage("layers.4.attn_probs").axes == ("batch", "heads", "seq", "kv_seq")
    assert t.stage("layers.4.attn_probs").provenance == {
        "onnx_value": "/model/encoder/layer.4/attention/self/Softmax_output_0",
        "node": "/model/encoder/layer.4/attention/self/Softmax", "op": "Softmax"}
    raw = [k for k in t.keys() if k not in res.aligned]
    assert "model.encoder.layer.0.attention.self.query.MatMul_output_0" in raw and len(raw) > 200
    # float32 kernels of two runtimes: accumulation order differs, nothing else
    diff = parity.compare_traces(path, opath, rtol=1e-4, atol=1e-5)
    assert diff.passed and len(diff.compared) == 79 and not diff.missing, [s.key for s in diff.divergent]
    assert min(s.metrics.sqnr_db for s in diff.compared) > 90
    np.testing.assert_allclose(np.asarray(t["layers.5.ffn_residual"]), out.last_hidden_state.numpy(), rtol=1e-4, atol=1e-5)


def test_onnx_without_preset_keeps_onnx_names(minilm_onnx, minilm_inputs, tmp_path):
    from parity.capture.onnx import capture_onnx

    res = capture_onnx(minilm_onnx, {k: v.numpy() for k, v in minilm_inputs.items()}, str(tmp_path / "raw.trace"),
                       preset=None)
    assert res.preset is None and res.aligned == {}
    assert "model.encoder.layer.0.attention.self.Softmax_output_0" in res.keys and res.keys[-1] == "last_hidden_state"


def test_onnx_input_errors_name_what_the_model_takes(minilm_onnx, minilm_inputs, tmp_path):
    from parity.capture.onnx import capture_onnx
    from parity.errors import UsageError

    feeds = {k: v.numpy() for k, v in minilm_inputs.items()}
    with pytest.raises(UsageError) as e:
        capture_onnx(minilm_onnx, {"input_ids": feeds["input_ids"], "mask": feeds["attention_mask"]}, str(tmp_path / "x"))
    assert str(e.value).startswith(f"{minilm_onnx}: the inputs do not match the model's inputs (missing attention_mask, "
                                   "token_type_ids; unknown mask); it takes: input_ids tensor(int64) ['batch', 'seq']")
    assert not os.path.exists(tmp_path / "x")
    # int32 ids convert exactly; floats with fractions do not
    capture_onnx(minilm_onnx, {k: v.astype(np.int32) for k, v in feeds.items()}, str(tmp_path / "i32.trace"))
    with pytest.raises(UsageError, match='input "input_ids" is float64 but the model takes tensor\\(int64\\)'):
        capture_onnx(minilm_onnx, {**feeds, "input_ids": feeds["input_ids"] + 0.5}, str(tmp_path / "y"))
    with pytest.raises(UsageError, match="no such ONNX model file"):
        capture_onnx(str(tmp_path / "none.onnx"), feeds, str(tmp_path / "z"))
