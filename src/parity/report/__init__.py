"""Renderers of one :class:`~parity.compare.diff.TraceDiff`: terminal text, JSON."""

from .json import render_json
from .text import render_text

__all__ = ["render_text", "render_json"]
