"""``parity capture hf``: capture a local Hugging Face model directory.

torch and transformers are imported only when the command runs (in :mod:`parity.capture.hf`).
"""

from __future__ import annotations

import os
import sys

import click

from .. import exitcodes
from ..bundle import bundle_command, bundle_option, command_argv
from ..capture.hf import HF_DTYPES, capture_loaded, load_hf_model, read_prompts
from ..errors import UsageError



def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    return items or None


def _replay_lines(ref: str, r: dict) -> list[str]:
    """Print (and return) what a replayed capture substituted, and every stage it could not."""
    lines = [f"  replayed from {ref}: {r['substituted']} values substituted, {len(r['not_substituted'])} not"]
    click.echo(lines[0])
    for key, why in r["not_substituted"].items():
        lines.append(f"  not substituted {key}: {why}")
        click.echo(lines[-1], err=True)
    return lines


@click.command("hf")
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("--prompt", "prompts", multiple=True, help="Input text (repeat for a batch).")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False),
              help="Many inputs: a file of prompts, one per line; --out is then a directory of one trace per prompt.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="The trace directory to write.")
@click.option("--dtype", type=click.Choice(HF_DTYPES), default="float32", show_default=True, help="Load the weights in this dtype.")
@click.option("--layers", help='Layers to capture, e.g. "0,3,5-7" or "-1" (default: all).')
@click.option("--stages", help='Comma-separated canonical stages or globs, e.g. "attn_probs,ffn_*" (default: all).')
@click.option("--steps", type=click.IntRange(1), help="Generate this many tokens greedily and capture every decode step.")
@click.option("--preset", default="auto", show_default=True,
              help="Stage preset: auto, llama, qwen2, gpt2, bert, or none (keys are module names).")
@click.option("--attn", "attn", default="eager", show_default=True,
              help="Attention implementation to load (eager exposes attn_scores and attn_probs).")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda.")
@click.option("--replay", "replay", type=click.Path(file_okay=False, exists=True),
              help="Teacher forcing: each stage goes on with this reference trace's value, so its error is local "
                   "(for parity localize). With --prompts, a directory of the reference's prompt-NNN.trace.")
@bundle_option
def hf_cmd(model_dir, prompts, prompts_file, out, dtype, layers, stages, steps, preset, attn, device, replay, bundle_dir):
    """Capture a local Hugging Face model directory (weights + tokenizer) run on --prompt into --out.

    Nothing is downloaded: the directory must hold the config, weights and tokenizer. With
    --prompts FILE, each line is one input, captured into OUT/prompt-NNN.trace (the model is
    loaded once); `parity diff REF_DIR CAND_DIR` then compares every input.

    \b
    Example:
      parity capture hf ./all-MiniLM-L6-v2 --prompt "hello world" --out f32.trace
      parity capture hf ./all-MiniLM-L6-v2 --prompt "hello world" --dtype bfloat16 --out bf16.trace
      parity diff f32.trace bf16.trace
      parity capture hf ./all-MiniLM-L6-v2 --prompts prompts.txt --out f32/
      parity capture hf ./all-MiniLM-L6-v2 --prompt "hello world" --dtype bfloat16 --replay f32.trace --out bf16-local.trace
      parity localize f32.trace bf16.trace bf16-local.trace

    Exit status: 0 captured, 2 usage or input error (or a requested stage the model cannot produce).
    """
    if bool(prompts) == bool(prompts_file):
        raise UsageError("give the input as --prompt TEXT (repeatable: one batch) or --prompts FILE (one trace per line).")
    with bundle_command(bundle_dir, "capture-hf") as rec:
        hf = load_hf_model(model_dir, dtype=dtype, steps=steps, attn_implementation=attn or None, device=device)
        if prompts_file:
            runs = [([p], os.path.join(out, f"prompt-{i:03d}.trace")) for i, p in enumerate(read_prompts(prompts_file))]
            os.makedirs(out, exist_ok=True)
        else:
            runs = [(list(prompts), out)]
        lines = []
        for batch, path in runs:
            ref = os.path.join(replay, os.path.basename(path)) if replay and prompts_file else replay
            r = capture_loaded(hf, batch, path, layers=layers, stages=_split(stages), steps=steps, preset=preset,
                               command=command_argv(), replay=ref)
            what = f"preset {r['preset']}" if r["preset"] else "module names"
            lines.append(f"{path}: {r['stages']} stages ({what}, {len(r['layers'])} layers, dtype {dtype})")
            click.echo(lines[-1])
            for name, why in r["omitted"].items():
                click.echo(f"  left out {name}: {why}", err=True)
            if ref is not None:
                lines.extend(_replay_lines(ref, r))
            if r["generated"] is not None:
                for row, text in zip(r["generated"], r["text"]):
                    lines.append(f"  generated {row}: {text!r}")
                    click.echo(lines[-1])
        if rec is not None:
            rec.write_traces([path for _, path in runs], "\n".join(lines) + "\n")
    sys.exit(exitcodes.OK)
