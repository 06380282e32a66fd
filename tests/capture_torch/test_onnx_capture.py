"""ONNX Runtime capture on small hand-built graphs: naming, alignment by module scope (both
exporter conventions), external data, inputs files."""

import json
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import parity  # noqa: E402
from parity.capture.onnx import align_graph, capture_onnx, load_inputs  # noqa: E402
from parity.capture.presets import PRESETS, Preset, StageSpec, register_preset  # noqa: E402
from parity.errors import UsageError  # noqa: E402

HID = ("batch", "seq", "hidden")
TOY = Preset("toy", ("toy",), "layers", layer_stages=(
    StageSpec("attn_norm", "output", "ln", HID),
    StageSpec("q_proj", "output", "attn.q", HID),
    StageSpec("attn_scores", "attention", "attn", ("batch", "seq", "kv_seq")),
    StageSpec("attn_probs", "attention", "attn", ("batch", "seq", "kv_seq")),
    StageSpec("attn_context", "input", "attn.o", HID),
    StageSpec("attn_out", "output", "attn.o", HID),
    StageSpec("ffn_residual", "output", "", HID),
), model_stages=(StageSpec("embedding", "output", "emb", HID),))

RNG = np.random.default_rng(0)
W = {n: RNG.normal(size=s).astype(np.float32) for n, s in
     (("bias", (4,)), ("g", (4,)), ("b", (4,)), ("wq", (4, 4)), ("wo", (4, 4)))}
X = RNG.normal(size=(1, 3, 4)).astype(np.float32)
MASK = np.array([[[0, -1e9, -1e9], [0, 0, -1e9], [0, 0, 0]]], np.float32)


def toy_graph(style):
    """emb -> layers.0 (LayerNorm, q projection, masked softmax attention, output projection, residual).

    ``style="torchscript"``: scopes in node names (/layers.0/attn/q/MatMul), values named after them;
    ``style="dynamo"``: flat node and value names, scopes in pkg.torch.onnx.name_scopes metadata.
    """
    ops = [  # (scope, op, inputs, output, attrs)
        ("emb", "Add", ["x", "bias"], "emb_out", {}),
        ("layers.0.ln", "LayerNormalization", ["emb_out", "g", "b"], "ln_out", {"axis": -1}),
        ("layers.0.attn.q", "MatMul", ["ln_out", "wq"], "q", {}),
        ("layers.0.attn", "Transpose", ["q"], "qt", {"perm": [0, 2, 1]}),
        ("layers.0.attn", "MatMul", ["q", "qt"], "qk", {}),
        ("layers.0.attn", "Mul", ["qk", "scale"], "scores", {}),
        ("layers.0.attn", "Add", ["scores", "mask"], "masked", {}),
        ("layers.0.attn", "Softmax", ["masked"], "probs", {"axis": -1}),
        ("layers.0.attn", "MatMul", ["probs", "q"], "ctx", {}),
        ("layers.0.attn.o", "MatMul", ["ctx", "wo"], "attn_out", {}),
        ("layers.0", "Add", ["emb_out", "attn_out"], "y", {}),
    ]
    nodes, rename = [], {}
    for i, (scope, op, ins, out, attrs) in enumerate(ops):
        if style == "torchscript":
            name = "/" + scope.replace("layers.0", "layers.0").replace(".", "/").replace("layers/0", "layers.0") + f"/{op}_{i}"
            new_out = out if out == "y" else f"{name}_output_0"
        else:
            name = f"node_{op}_{i}"
            new_out = out
        rename[out] = new_out
        n = helper.make_node(op, [rename.get(x, x) for x in ins], [new_out], name=name, **attrs)
        if style == "dynamo":
            scopes = [""] + [".".join(scope.split(".")[:j]) for j in range(1, len(scope.split(".")) + 1)]
            scopes = [s for s in scopes if s not in ("layers",)] + [out]
            n.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(scopes))
        nodes.append(n)
    inits = [numpy_helper.from_array(v, k) for k, v in W.items()] + [numpy_helper.from_array(np.float32(0.5), "scale")]
    g = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4]),
                                         helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def expected_values():
    emb = X + W["bias"]
    mu, var = emb.mean(-1, keepdims=True), emb.var(-1, keepdims=True)
    ln = (emb - mu) / np.sqrt(var + 1e-5) * W["g"] + W["b"]
    q = ln @ W["wq"]
    scores = q @ q.transpose(0, 2, 1) * 0.5
    e = np.exp(scores + MASK - (scores + MASK).max(-1, keepdims=True))
    probs = e / e.sum(-1, keepdims=True)
    ctx = probs @ q
    out = ctx @ W["wo"]
    return {"embedding": emb, "layers.0.attn_norm": ln, "layers.0.q_proj": q, "layers.0.attn_scores": scores,
            "layers.0.attn_probs": probs, "layers.0.attn_context": ctx, "layers.0.attn_out": out,
            "layers.0.ffn_residual": emb + out}


@pytest.mark.parametrize("style", ["torchscript", "dynamo"])
def test_alignment_by_module_scope_for_both_exporter_conventions(style, tmp_path):
    f = str(tmp_path / "toy.onnx")
    onnx.save(toy_graph(style), f)
    res = capture_onnx(f, {"x": X, "mask": MASK}, str(tmp_path / "toy.trace"), preset=TOY)
    want = expected_values()
    assert res.preset == "toy" and sorted(res.aligned) == sorted(want)
    t = parity.load_trace(str(tmp_path / "toy.trace"))
    order = ["embedding", "layers.0.attn_norm", "layers.0.q_proj", "layers.0.attn_scores", "layers.0.attn_probs",
             "layers.0.attn_context", "layers.0.attn_out", "layers.0.ffn_residual"]
    assert [k for k in t.keys() if k in want] == order  # node (execution) order
    for k, v in want.items():
        np.testing.assert_allclose(np.asarray(t[k]), v, rtol=1e-5, atol=1e-5, err_msg=k)
    assert t.stage("layers.0.attn_out").axes == HID
    assert t.stage("layers.0.attn_scores").axes == ("batch", "seq", "kv_seq")
    raw = [k for k in t.keys() if k not in want]
    if style == "torchscript":
        assert raw == ["layers.0.attn.Transpose_3_output_0", "layers.0.attn.MatMul_4_output_0",
                       "layers.0.attn.Add_6_output_0"]
    else:  # flat names get their module scope in front
        assert raw == ["layers.0.attn.qt", "layers.0.attn.qk", "layers.0.attn.masked"]
    assert t.meta["preset"] == "toy" and t.meta["capture"] == "parity.capture.onnx"


def test_auto_detection_uses_the_registered_presets(tmp_path):
    f = str(tmp_path / "toy.onnx")
    onnx.save(toy_graph("torchscript"), f)
    res = capture_onnx(f, {"x": X, "mask": MASK}, str(tmp_path / "a.trace"))
    assert res.preset is None and res.aligned == {}  # "layers.0" alone does not make it a Llama...
    register_preset(TOY)
    try:
        res = capture_onnx(f, {"x": X, "mask": MASK}, str(tmp_path / "b.trace"))
        assert res.preset == "toy" and len(res.aligned) == 8  # ...until its preset is registered
    finally:
        del PRESETS["toy"]


def test_external_data_is_read_next_to_the_model(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    onnx.save(toy_graph("torchscript"), str(d / "toy.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert (d / "weights.bin").exists()
    before = sorted(os.listdir(d))
    res = capture_onnx(str(d / "toy.onnx"), {"x": X, "mask": MASK}, str(tmp_path / "e.trace"), preset=TOY)
    np.testing.assert_allclose(np.asarray(parity.load_trace(res.path)["layers.0.ffn_residual"]),
                               expected_values()["layers.0.ffn_residual"], rtol=1e-5, atol=1e-5)
    assert sorted(os.listdir(d)) == before  # the model's folder is never written to


def test_align_graph_returns_value_names():
    model = toy_graph("torchscript")
    from onnx import reference

    outs = reference.ReferenceEvaluator(model).run(None, {"x": X, "mask": MASK})  # only y; alignment needs dtypes
    values = {"y": outs[0]}
    for n in model.graph.node:
        values[n.output[0]] = np.zeros(1, np.float32)
    aligned = align_graph(model.graph, values, TOY)
    assert aligned["layers.0.attn_probs"][0] == "/layers.0/attn/Softmax_7_output_0"
    assert aligned["layers.0.attn_scores"][0] == "/layers.0/attn/Mul_5_output_0"  # before the mask
    assert aligned["layers.0.attn_context"][0] == "/layers.0/attn/MatMul_8_output_0"  # input of attn.o


def test_load_inputs_formats(tmp_path):
    arrays = {"x": X, "mask": MASK}
    np.savez(tmp_path / "i.npz", **arrays)
    np.save(tmp_path / "one.npy", X)
    from safetensors.numpy import save_file

    save_file(arrays, str(tmp_path / "i.safetensors"))
    (tmp_path / "i.json").write_text(json.dumps({k: v.tolist() for k, v in arrays.items()}))
    with parity.record(str(tmp_path / "i.trace")):
        for k, v in arrays.items():
            parity.tap(k, v)
    for name in ("i.npz", "i.safetensors", "i.json", "i.trace"):
        got = load_inputs(tmp_path / name)
        assert sorted(got) == ["mask", "x"]
        np.testing.assert_allclose(got["x"], X, rtol=1e-7)
    assert list(load_inputs(tmp_path / "one.npy")) == ["input"]
    (tmp_path / "bad.txt").write_text("x")
    with pytest.raises(UsageError, match="unknown inputs format"):
        load_inputs(tmp_path / "bad.txt")
    with pytest.raises(UsageError, match="no such inputs file"):
        load_inputs(tmp_path / "missing.npz")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="must map input names to arrays"):
        load_inputs(tmp_path / "list.json")
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="cannot read the inputs"):
        load_inputs(tmp_path / "corrupt.npz")


def test_a_corrupt_model_is_a_usage_error(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(UsageError, match="bad.onnx: cannot"):
        capture_onnx(str(tmp_path / "bad.onnx"), {"x": X}, str(tmp_path / "o.trace"))
