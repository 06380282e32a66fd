"""JSON renderer: the versioned ``parity.diff`` document (see docs/json-schema.md)."""

from __future__ import annotations

import json

from ..compare.diff import TraceDiff

__all__ = ["render_json"]


def render_json(diff: TraceDiff, *, indent: int | None = 2) -> str:
    """Serialise ``diff``; :meth:`TraceDiff.from_dict` reads it back."""
    return json.dumps(diff.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)
