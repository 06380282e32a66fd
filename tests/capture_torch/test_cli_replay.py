"""``parity capture hf --replay REF``: teacher forcing on a saved model directory, then localize."""

import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import parity  # noqa: E402
from parity.cli import main  # noqa: E402
from parity.localize.local import localize  # noqa: E402

from .test_cli_capture_hf import llama_dir  # noqa: E402,F401  (the fixture)


@pytest.fixture(scope="module")
def buggy_dir(llama_dir, tmp_path_factory):  # noqa: F811
    """The same model with one realistic bug: layer 1's attention norm weights are off by 0.1 %."""
    d = tmp_path_factory.mktemp("tiny-llama-bug")
    for f in os.listdir(llama_dir):
        if "token" in f:
            shutil.copy(os.path.join(llama_dir, f), d)
    model = transformers.AutoModelForCausalLM.from_pretrained(llama_dir, local_files_only=True)
    with torch.no_grad():
        model.model.layers[1].input_layernorm.weight.mul_(1.001)
    model.save_pretrained(d)
    return str(d)


PROMPT = ["--prompt", "the cat sat on the mat", "--prompt", "a dog ran far away"]


def test_capture_hf_replay_then_localize(llama_dir, buggy_dir, tmp_path, capsys):  # noqa: F811
    ref, cand, local = (str(tmp_path / n) for n in ("ref.trace", "cand.trace", "local.trace"))
    assert main(["capture", "hf", llama_dir, *PROMPT, "--out", ref]) == 0
    assert main(["capture", "hf", buggy_dir, *PROMPT, "--out", cand]) == 0
    capsys.readouterr()
    assert main(["capture", "hf", buggy_dir, *PROMPT, "--replay", ref, "--out", local]) == 0
    out = capsys.readouterr()
    t = parity.load_trace(local)
    n = len(t.keys()) - 1  # every stage but input_ids
    assert f"  replayed from {ref}: {n} values substituted, 0 not" in out.out
    assert "not substituted" not in out.err
    assert t.meta["replay"] == {"reference": ref, "substituted": n, "not_substituted": {}}
    for k in ("layers.1.attn_scores", "layers.1.attn_probs", "layers.1.q_rope", "layers.1.attn_context"):
        assert t.stage(k).provenance["replay"] == "substituted", k
    r = parity.load_trace(ref)
    differs = [k for k in r.keys() if not np.array_equal(np.asarray(r[k]), np.asarray(t[k]))]
    assert differs == ["layers.1.attn_norm"]  # the attention internals after it started from the reference
    loc = localize(ref, cand, local)
    assert loc.culprit == "layers.1.attn_norm"
    assert [loc.stage(k).label for k in ("layers.1.q_proj", "layers.1.attn_scores", "layers.1.attn_probs",
                                         "layers.2.ffn_residual", "logits")] == ["propagated"] * 5
    assert all(s.label in ("ok", "propagated") for s in loc.stages if s.key != "layers.1.attn_norm")
    capsys.readouterr()
    assert main(["localize", ref, cand, local]) == 1
    assert "layers.1.attn_norm" in capsys.readouterr().out


def test_capture_hf_replay_reports_what_was_not_substituted(llama_dir, tmp_path, capsys):  # noqa: F811
    ref, local = str(tmp_path / "ref.trace"), str(tmp_path / "local.trace")
    assert main(["capture", "hf", llama_dir, *PROMPT, "--layers", "0", "--out", ref]) == 0
    capsys.readouterr()
    assert main(["capture", "hf", llama_dir, *PROMPT, "--layers", "0", "--attn", "sdpa", "--replay", ref,
                 "--out", local]) == 0
    out = capsys.readouterr()
    assert "values substituted, 2 not" in out.out
    assert "  not substituted layers.0.attn_scores: this capture left it out: the model uses " \
           'attn_implementation="sdpa"' in out.err
    assert "  not substituted layers.0.attn_probs: " in out.err


def test_capture_hf_replay_errors(llama_dir, tmp_path, capsys):  # noqa: F811
    ref = str(tmp_path / "ref.trace")
    assert main(["capture", "hf", llama_dir, "--prompt", "the cat", "--layers", "0", "--out", ref]) == 0
    capsys.readouterr()
    # another prompt length: the shapes differ, and the error names the first stage
    assert main(["capture", "hf", llama_dir, "--prompt", "the cat sat", "--layers", "0", "--replay", ref,
                 "--out", str(tmp_path / "x.trace")]) == 2
    assert 'stage "embedding": replay: shape (1, 3, 32) here, (1, 2, 32) in the reference' in capsys.readouterr().err
    # a stage the reference lacks
    assert main(["capture", "hf", llama_dir, "--prompt", "the cat", "--layers", "1", "--replay", ref,
                 "--out", str(tmp_path / "y.trace")]) == 2
    assert 'stage "layers.1.attn_norm": replay: the reference' in capsys.readouterr().err
