"""The ``parity capture`` command group.

This module only defines the group and registers it with the CLI. Each capture backend adds its
own subcommand from its own module by importing :data:`capture`::

    from .capture import capture

    @capture.command("run")
    def run_cmd(...): ...

``parity capture run`` lives in :mod:`parity.commands.capture_run`; ``hf`` and ``onnx`` in theirs.
"""

from __future__ import annotations

import click

__all__ = ["capture", "register"]


@click.group("capture")
def capture() -> None:
    """Capture a trace from a running implementation (a program, a model)."""


def register(group: click.Group) -> None:
    group.add_command(capture)
