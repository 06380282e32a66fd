"""``parity capture hf`` and ``parity capture onnx`` through the CLI (offline, local directories only)."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import parity  # noqa: E402
from parity.cli import main  # noqa: E402

from .conftest import tiny_model  # noqa: E402

WORDS = ["<unk>", "<pad>", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "far", "away"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A tiny random Llama saved with a word-level tokenizer: a complete local model directory."""
    tokenizers = pytest.importorskip("tokenizers")
    d = tmp_path_factory.mktemp("tiny-llama")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")
    fast.save_pretrained(d)
    model = tiny_model("llama", eager=False, vocab_size=len(WORDS), pad_token_id=1)
    model.generation_config.pad_token_id = 1
    model.save_pretrained(d)
    return str(d)


def test_capture_hf_minilm_and_diff_precisions(minilm_dir, tmp_path, capsys):
    f32, bf16 = str(tmp_path / "f32.trace"), str(tmp_path / "bf16.trace")
    assert main(["capture", "hf", minilm_dir, "--prompt", "hello world", "--prompt", "a longer second prompt",
                 "--out", f32]) == 0
    out = capsys.readouterr()
    assert out.out.startswith(f"{f32}: 80 stages (preset bert, 6 layers, dtype float32)")
    assert "left out logits: the model has no module cls.predictions" in out.err
    t = parity.load_trace(f32)
    assert t.keys()[:3] == ["input_ids", "embedding", "layers.0.q_proj"] and t.keys()[-1] == "layers.5.ffn_residual"
    assert t.stage("input_ids").axes == ("batch", "seq") and t.stage("layers.0.attn_probs").shape[:2] == (2, 12)
    assert t.meta["prompts"] == ["hello world", "a longer second prompt"] and t.manifest["command"][:3] == ["parity", "capture", "hf"]
    assert main(["capture", "hf", minilm_dir, "--prompt", "hello world", "--prompt", "a longer second prompt",
                 "--dtype", "bfloat16", "--layers", "0,-1", "--stages", "attn_*,ffn_residual", "--out", bf16]) == 0
    tb = parity.load_trace(bf16)
    assert tb.keys() == ["input_ids"] + [f"layers.{i}.{s}" for i in (0, 5) for s in
                                         ("attn_scores", "attn_probs", "attn_context", "attn_out", "attn_residual",
                                          "ffn_residual")]
    assert tb.stage("layers.5.attn_probs").dtype == "BF16"
    capsys.readouterr()
    assert main(["diff", f32, bf16]) == 1  # bf16 rounding is outside the default element-wise tolerance
    assert "First divergence: layers.0.attn_scores" in capsys.readouterr().out


def test_capture_hf_refuses_a_stage_the_architecture_lacks(minilm_dir, tmp_path, capsys):
    out = str(tmp_path / "x.trace")
    assert main(["capture", "hf", minilm_dir, "--prompt", "x", "--stages", "q_rope", "--out", out]) == 2
    err = capsys.readouterr().err
    assert 'error: the bert preset has no canonical stage "q_rope" (this architecture does not compute it); it has: ' \
           "embedding, logits, q_proj" in err
    assert not os.path.exists(out)


def test_capture_hf_bad_inputs(tmp_path, capsys, minilm_dir):
    assert main(["capture", "hf", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "o.trace")]) == 2
    assert f"error: {tmp_path}: cannot load a config and tokenizer from it" in capsys.readouterr().err
    assert main(["capture", "hf", str(tmp_path / "nope"), "--prompt", "x", "--out", str(tmp_path / "o.trace")]) == 2
    assert "is not a directory; parity capture hf loads local model directories only" in capsys.readouterr().err
    assert main(["capture", "hf", minilm_dir, "--prompt", "x", "--layers", "9", "--out", str(tmp_path / "o.trace")]) == 2
    assert "layer index 9 is out of range: the model has 6 layers (0..5)" in capsys.readouterr().err
    assert main(["capture", "hf", minilm_dir, "--out", str(tmp_path / "o.trace")]) == 2  # --prompt is required


def test_capture_hf_decode_steps(llama_dir, tmp_path, capsys):
    out = str(tmp_path / "gen.trace")
    assert main(["capture", "hf", llama_dir, "--prompt", "the cat sat on", "--steps", "3", "--layers", "-1",
                 "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "(preset llama, 1 layers, dtype float32)" in printed and "generated [" in printed
    t = parity.load_trace(out)
    assert t.keys()[0] == "input_ids" and t.keys()[-1] == "generated_ids"
    assert [k for k in t.keys() if k.startswith("logits")] == ["logits[step=0]", "logits[step=1]", "logits[step=2]"]
    assert "layers.2.attn_probs[step=2]" in t.keys() and "layers.0.attn_probs[step=0]" not in t.keys()
    gen = np.asarray(t["generated_ids"])[0]
    assert [int(np.asarray(t[f"logits[step={k}]"])[0, -1].argmax()) for k in range(3)] == gen.tolist()
    # --preset none: keys are the module names
    raw = str(tmp_path / "raw.trace")
    assert main(["capture", "hf", llama_dir, "--prompt", "the cat", "--preset", "none", "--stages", "model.norm,lm_head",
                 "--out", raw]) == 0
    assert parity.load_trace(raw).keys() == ["input_ids", "model.norm", "lm_head"]


def test_capture_onnx_cli(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from .test_onnx_capture import MASK, TOY, X, toy_graph

    import onnx

    from parity.capture.presets import PRESETS, register_preset

    f = str(tmp_path / "toy.onnx")
    onnx.save(toy_graph("torchscript"), f)
    np.savez(tmp_path / "in.npz", x=X, mask=MASK)
    out = str(tmp_path / "o.trace")
    assert main(["capture", "onnx", f, "--inputs", str(tmp_path / "in.npz"), "--out", out, "--preset", "none"]) == 0
    assert capsys.readouterr().out.strip() == f"{out}: 11 values (no preset: ONNX names)"
    register_preset(TOY)
    try:
        assert main(["capture", "onnx", f, "--inputs", str(tmp_path / "in.npz"), "--out", out]) == 0
    finally:
        del PRESETS["toy"]
    assert capsys.readouterr().out.strip() == f"{out}: 11 values, 8 aligned with the toy preset's canonical stages"
    np.savez(tmp_path / "bad.npz", x=X)
    assert main(["capture", "onnx", f, "--inputs", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "b.trace")]) == 2
    assert "the inputs do not match the model's inputs (missing mask); it takes: x tensor(float) [1, 3, 4], mask" \
        in capsys.readouterr().err
    assert main(["capture", "onnx", f, "--inputs", str(tmp_path / "in.npz"), "--out", out, "--preset", "mamba"]) == 2
    assert 'no preset named "mamba"' in capsys.readouterr().err


def test_capture_hf_many_prompts_then_diff_the_sets(minilm_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello world\n\nthe cat sat on the mat\na third input\n")
    f32, bf16 = tmp_path / "f32", tmp_path / "bf16"
    B = tmp_path / "bundle"
    from parity.bundle import new_bundle

    bundle = new_bundle("hf", str(B), probe_torch=False)
    assert main(["capture", "hf", minilm_dir, "--prompts", str(prompts), "--out", str(f32), "--layers", "0",
                 "--bundle", bundle.path]) == 0
    assert sorted(os.listdir(f32)) == ["prompt-000.trace", "prompt-001.trace", "prompt-002.trace"]
    assert parity.load_trace(f32 / "prompt-001.trace").meta["prompts"] == ["the cat sat on the mat"]
    outputs = bundle.commands()[-1]["outputs"]
    assert any(o.endswith("-capture-hf-manifest0.json") for o in outputs) and any(o.endswith(".txt") for o in outputs)
    assert main(["capture", "hf", minilm_dir, "--prompts", str(prompts), "--out", str(bf16), "--layers", "0",
                 "--dtype", "bfloat16"]) == 0
    capsys.readouterr()
    assert main(["diff", str(f32), str(f32)]) == 0
    capsys.readouterr()
    assert main(["diff", str(f32), str(bf16), "--json"]) == 1
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "parity.diffset" and doc["inputs"] == 3 and len(doc["failing_inputs"]) == 3
    scores = {s["key"]: s for s in doc["stages"]}
    assert scores["layers.0.attn_scores"]["failed"] == 3 and scores["input_ids"]["failed"] == 0
    assert main(["capture", "hf", minilm_dir, "--out", str(tmp_path / "x")]) == 2  # neither --prompt nor --prompts
