"""Capture stages from running code: :func:`record`, :func:`tap`, :func:`scope`."""

from .record import active_writer, record, scope, tap

__all__ = ["record", "tap", "scope", "active_writer"]
