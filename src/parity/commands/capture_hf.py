"""``parity capture hf`` (a local Hugging Face model directory) and ``parity capture onnx``.

torch, transformers and onnxruntime are imported only when these commands run.
"""

from __future__ import annotations

import os
import shlex
import sys

import click

from ..errors import UsageError
from .capture import capture

EXIT_OK = 0

_DTYPES = ("float32", "bfloat16", "float16", "float64")


def _command() -> list[str]:
    """The running ``parity`` command line as given (also through ``parity.cli.main(argv)``)."""
    from ..bundle import command_line

    return shlex.split(command_line())


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def _model_class(transformers, config, steps: int | None):
    archs = list(getattr(config, "architectures", None) or [])
    if steps:
        return transformers.AutoModelForCausalLM
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return transformers.AutoModelForCausalLM
    if any(a.endswith("ForMaskedLM") for a in archs):
        return transformers.AutoModelForMaskedLM
    return transformers.AutoModel


def capture_hf(model_dir: str, prompts: list[str], out: str, *, dtype: str = "float32", layers: str | None = None,
               stages: list[str] | None = None, steps: int | None = None, preset: str = "auto",
               attn_implementation: str | None = "eager", device: str = "cpu", command: list[str] | None = None) -> dict:
    """Load a local Hugging Face model directory offline, run it on ``prompts`` and capture it into ``out``.

    Stores ``input_ids`` first (so a tokenizer difference is the first divergence), then the model's
    stages; with ``steps`` it generates that many tokens greedily, one ``[step=N]`` per forward
    call, and stores ``generated_ids`` last.

    Returns:
        A summary: ``stages`` (count), ``layers``, ``preset``, ``generated`` (token ids or ``None``),
        ``omitted`` (stages left out of a default selection, with the reason).

    Raises:
        UsageError: the directory is not a model transformers can load offline, or a bad option.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory: never reach the network
    try:
        import torch
        import transformers
    except ImportError as e:
        raise UsageError("parity capture hf needs torch and transformers: pip install 'parity[hf]'.") from e
    from ..capture.torch import capture as torch_capture

    if dtype not in _DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}.")
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
    model = model.to(device).eval()
    if len(prompts) > 1 and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(list(prompts), return_tensors="pt", padding=len(prompts) > 1)
    enc = {k: v.to(device) for k, v in enc.items()}
    meta = {"model_dir": os.path.basename(os.path.abspath(model_dir)), "prompts": list(prompts), "requested_dtype": dtype}
    generated = None
    with torch_capture(model, out, stages=stages, layers=layers, steps=True if steps else None,
                       preset=None if preset == "none" else preset, meta=meta, command=command) as cap, torch.no_grad():
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
    return {"stages": len(cap.writer.keys), "layers": list(cap.layers), "preset": cap.preset.name if cap.preset else None,
            "generated": generated.tolist() if generated is not None else None, "omitted": cap.omitted,
            "text": tokenizer.batch_decode(generated) if generated is not None else None}


@capture.command("hf")
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("--prompt", "prompts", multiple=True, required=True, help="Input text (repeat for a batch).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="The trace directory to write.")
@click.option("--dtype", type=click.Choice(_DTYPES), default="float32", show_default=True, help="Load the weights in this dtype.")
@click.option("--layers", help='Layers to capture, e.g. "0,3,5-7" or "-1" (default: all).')
@click.option("--stages", help='Comma-separated canonical stages or globs, e.g. "attn_probs,ffn_*" (default: all).')
@click.option("--steps", type=click.IntRange(1), help="Generate this many tokens greedily and capture every decode step.")
@click.option("--preset", default="auto", show_default=True,
              help="Stage preset: auto, llama, qwen2, gpt2, bert, or none (keys are module names).")
@click.option("--attn", "attn", default="eager", show_default=True,
              help="Attention implementation to load (eager exposes attn_scores and attn_probs).")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda.")
def hf_cmd(model_dir, prompts, out, dtype, layers, stages, steps, preset, attn, device):
    """Capture a local Hugging Face model directory (weights + tokenizer) run on --prompt into --out.

    Nothing is downloaded: the directory must hold the config, weights and tokenizer.

    \b
    Example:
      parity capture hf ./all-MiniLM-L6-v2 --prompt "hello world" --out f32.trace
      parity capture hf ./all-MiniLM-L6-v2 --prompt "hello world" --dtype bfloat16 --out bf16.trace
      parity diff f32.trace bf16.trace

    Exit status: 0 captured, 2 usage or input error (or a requested stage the model cannot produce).
    """
    r = capture_hf(model_dir, list(prompts), out, dtype=dtype, layers=layers, stages=_split(stages), steps=steps,
                   preset=preset, attn_implementation=attn or None, device=device, command=_command())
    what = f"preset {r['preset']}" if r["preset"] else "module names"
    click.echo(f"{out}: {r['stages']} stages ({what}, {len(r['layers'])} layers, dtype {dtype})")
    for name, why in r["omitted"].items():
        click.echo(f"  left out {name}: {why}", err=True)
    if r["generated"] is not None:
        for row, text in zip(r["generated"], r["text"]):
            click.echo(f"  generated {row}: {text!r}")
    sys.exit(EXIT_OK)


@capture.command("onnx")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--inputs", "inputs", required=True, type=click.Path(),
              help="Model inputs by name: .npz, .npy, .safetensors, .json, or a parity trace directory.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="The trace directory to write.")
@click.option("--preset", default="auto", show_default=True,
              help="Align values with canonical stages: auto, llama, qwen2, gpt2, bert, or none (ONNX names only).")
@click.option("--provider", "providers", multiple=True, help="ONNX Runtime execution provider (repeatable; default CPU).")
def onnx_cmd(model, inputs, out, preset, providers):
    """Run MODEL with ONNX Runtime and record every intermediate value into --out.

    Values that a preset recognises (from the exporter's module scopes) are stored under the
    canonical stage names, so that the trace diffs directly against a PyTorch capture.

    \b
    Example:
      parity capture onnx model.onnx --inputs inputs.npz --out ort.trace
      parity diff torch.trace ort.trace --rtol 1e-4 --atol 1e-5

    Exit status: 0 captured, 2 usage or input error.
    """
    from ..capture.onnx import capture_onnx

    r = capture_onnx(model, inputs, out, preset=None if preset == "none" else preset, providers=providers or None,
                     command=_command())
    click.echo(f"{out}: {len(r.keys)} values"
               + (f", {len(r.aligned)} aligned with the {r.preset} preset's canonical stages" if r.preset else
                  " (no preset: ONNX names)"))
    sys.exit(EXIT_OK)


def register(group: click.Group) -> None:
    """``hf`` and ``onnx`` are attached to the ``capture`` group when this module is imported."""
