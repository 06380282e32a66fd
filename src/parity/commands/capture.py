"""The ``parity capture`` command group: one subcommand per capture backend.

The group only names the backends; each lives in its own module (``run`` in
:mod:`parity.commands.capture_run`, ``hf`` in :mod:`parity.commands.capture_hf`, ``onnx`` in
:mod:`parity.commands.capture_onnx`) and is attached in :mod:`parity.cli`'s command list.
"""

from __future__ import annotations

import click

from .group import OrderedGroup

__all__ = ["capture"]


@click.group("capture", cls=OrderedGroup)
def capture() -> None:
    """Capture a trace from a running implementation (a program, a model)."""
