"""A click group whose ``--help`` lists its commands in the order they were added."""

from __future__ import annotations

import click

__all__ = ["OrderedGroup"]


class OrderedGroup(click.Group):
    """``click.Group`` that lists commands in registration order instead of alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)
