"""``parity capture onnx``: run an ONNX model with ONNX Runtime and record every intermediate value.

onnxruntime is imported only when the command runs (in :mod:`parity.capture.onnx`).
"""

from __future__ import annotations

import sys

import click

from .. import exitcodes
from ..bundle import bundle_command, bundle_option, command_argv

__all__ = ["onnx_cmd"]


@click.command("onnx")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--inputs", "inputs", required=True, type=click.Path(),
              help="Model inputs by name: .npz, .npy, .safetensors, .json, or a parity trace directory.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="The trace directory to write.")
@click.option("--preset", default="auto", show_default=True,
              help="Align values with canonical stages: auto, llama, qwen2, gpt2, bert, or none (ONNX names only).")
@click.option("--provider", "providers", multiple=True, help="ONNX Runtime execution provider (repeatable; default CPU).")
@bundle_option
def onnx_cmd(model, inputs, out, preset, providers, bundle_dir):
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

    with bundle_command(bundle_dir, "capture-onnx") as rec:
        r = capture_onnx(model, inputs, out, preset=None if preset == "none" else preset, providers=providers or None,
                         command=command_argv())
        line = (f"{out}: {len(r.keys)} values"
                + (f", {len(r.aligned)} aligned with the {r.preset} preset's canonical stages" if r.preset else
                   " (no preset: ONNX names)"))
        click.echo(line)
        if rec is not None:
            rec.write_traces([out], line + "\n")
    sys.exit(exitcodes.OK)
