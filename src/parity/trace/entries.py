"""Checking one stage entry of a manifest (or journal) and making its :class:`~parity.trace.reader.Stage`.

The reader calls :func:`stage_from_entry` once per stage; a trace may hold millions, so the
common, well-formed tensor entry is checked in one pass and anything else field by field, the
error naming the field.
"""

from __future__ import annotations

from typing import Any

from ..errors import StageKeyError, TraceFormatError
from .dtypes import DTYPES
from .keys import validate_key
from .safetensors_header import MAX_INDEX, TensorEntry, is_index
from .stage import Stage

__all__ = ["stage_from_entry", "short_repr"]


def short_repr(v: object, limit: int = 80) -> str:
    """``repr(v)``, cut to ``limit`` characters (a hostile field may be megabytes long).

    >>> short_repr("x" * 200, limit=30)
    "'xxxxxxxxxxxxxxxxx...xxxxxxx'"
    """
    text = repr(v)
    return text if len(text) <= limit else text[:limit - 12] + "..." + text[-8:]


_short = short_repr


def _is_scalar(v: object) -> bool:
    return type(v) in (str, int, float, bool)


_NO_DICT: dict[str, Any] = {}
_NO_SHAPE: list[int] = []
_SCALARS = (str, int, float, bool)


def stage_from_entry(raw: object, pos: int, where: str, path: str, headers: dict[str, tuple[dict[str, TensorEntry], int]],
           seen: set[str]) -> Stage:
    """Check one stage entry of the manifest (or journal), and make its :class:`Stage`.

    A well-formed tensor entry (nearly all of them: a trace may hold millions) is checked here in
    one pass; anything else goes to :func:`_checked_stage`, which checks field by field and
    raises naming the field.

    >>> from parity.trace.safetensors_header import TensorEntry
    >>> headers = {"data/000000.safetensors": ({"x": TensorEntry("x", "F32", (2, 3), 0, 24)}, 4096)}
    >>> raw, seen = {"key": "x", "dtype": "F32", "shape": [2, 3], "file": "data/000000.safetensors"}, set()
    >>> stage_from_entry(raw, 0, "", "a.trace/manifest.json", headers, seen).shape
    (2, 3)
    >>> try:
    ...     stage_from_entry(raw, 1, "", "a.trace/manifest.json", headers, seen)
    ... except parity.TraceFormatError as e:
    ...     print(e)
    a.trace/manifest.json: stage 'x' is listed twice.
    """
    if type(raw) is dict and raw.get("kind", "tensor") == "tensor":
        key = raw.get("key")
        rel = raw.get("file")
        hdr = headers.get(rel) if type(rel) is str else None
        entry = hdr[0].get(key) if hdr is not None and type(key) is str else None
        if entry is not None and key not in seen:
            shape = raw.get("shape", _NO_SHAPE)
            axes = raw.get("axes")
            units = raw.get("units")
            indices = raw.get("indices", _NO_DICT)
            provenance = raw.get("provenance", _NO_DICT)
            occurrence = raw.get("occurrence", 0)
            # entry (the data file's header) is checked: a shape of ints equal to its shape is valid
            if (raw.get("dtype") == entry.dtype and type(shape) is list and len(shape) == len(entry.shape)
                    and all(type(n) is int for n in shape) and tuple(shape) == entry.shape
                    and type(occurrence) is int and 0 <= occurrence <= MAX_INDEX
                    and (axes is None or (type(axes) is list and len(axes) == len(shape)
                                          and all(type(a) is str for a in axes)))
                    and (units is None or type(units) is str)
                    and type(indices) is dict and (not indices or all(type(v) in _SCALARS for v in indices.values()))
                    and type(provenance) is dict):
                try:
                    validate_key(key)
                except (StageKeyError, ValueError):
                    pass  # _checked_stage says so
                else:
                    seen.add(key)
                    return Stage(key=key, kind="tensor", dtype=entry.dtype, shape=entry.shape,
                                 axes=tuple(axes) if axes is not None else None, units=units, indices=dict(indices),
                                 provenance=dict(provenance), occurrence=occurrence, position=pos, file=rel)
    return _checked_stage(raw, pos, where, path, headers, seen)


def _field_error(name: str, raw: dict[str, Any], field: str, expected: str, path: str) -> TraceFormatError:
    return TraceFormatError(f"{name}: {field} must be {expected}, got {_short(raw[field])}.", path=path)


def _checked_stage(raw: object, pos: int, where: str, path: str,
                   headers: dict[str, tuple[dict[str, TensorEntry], int]], seen: set[str]) -> Stage:
    """Check one stage entry field by field, raising naming the field; make its :class:`Stage`."""
    if type(raw) is not dict:
        raise TraceFormatError(f"{where}stage #{pos}: expected a stage entry (an object), got {_short(raw)}.", path=path)
    key = raw.get("key")
    if type(key) is not str:
        raise TraceFormatError(f"{where}stage #{pos}: key must be a string, got {_short(key)}.", path=path)
    try:
        validate_key(key)
    except (StageKeyError, ValueError) as e:
        raise TraceFormatError(f"{where}stage #{pos}: {e}", path=path) from e
    name = f"{where}stage {key!r}"

    def bad(field: str, expected: str) -> TraceFormatError:
        return _field_error(name, raw, field, expected, path)  # type: ignore[arg-type]

    if key in seen:
        raise TraceFormatError(f"{name} is listed twice.", path=path)
    seen.add(key)
    kind = raw.get("kind", "tensor")
    if kind not in ("tensor", "text"):
        raise TraceFormatError(f"{name} has unknown kind {_short(kind)}; expected tensor or text.", path=path)
    axes = raw.get("axes")
    if axes is not None and (type(axes) is not list or not all(type(a) is str for a in axes)):
        raise bad("axes", "a list of strings")
    units = raw.get("units")
    if units is not None and type(units) is not str:
        raise bad("units", "a string")
    indices = raw.get("indices", {})
    if type(indices) is not dict or not all(_is_scalar(v) for v in indices.values()):
        raise bad("indices", "an object of strings, numbers and booleans")
    provenance = raw.get("provenance", {})
    if type(provenance) is not dict:
        raise bad("provenance", "an object")
    occurrence = raw.get("occurrence", 0)
    if not is_index(occurrence):
        raise bad("occurrence", "a non-negative integer")
    common = dict(key=key, kind=kind, axes=tuple(axes) if axes is not None else None, units=units,
                  indices=dict(indices), provenance=dict(provenance), occurrence=occurrence, position=pos)
    if kind == "text":
        if type(raw.get("text")) is not str:
            raise TraceFormatError(f"{name} is a text stage without text (a string).", path=path)
        return Stage(dtype=None, shape=(), text=raw["text"], **common)
    shape = raw.get("shape", [])
    if type(shape) is not list or not all(is_index(n) for n in shape):
        raise bad("shape", "a list of non-negative integers")
    dtype = raw.get("dtype")
    if type(dtype) is not str or dtype not in DTYPES:
        raise TraceFormatError(f"{name}: dtype must be one of {', '.join(DTYPES)}, got {_short(dtype)}.", path=path)
    rel = raw.get("file")
    if type(rel) is not str:
        raise TraceFormatError(f"{name}: file must be the name of a data file, got {_short(rel)}.", path=path)
    if rel not in headers:
        raise TraceFormatError(f"{name} points at data file {_short(rel)}, which the manifest does not list.", path=path)
    entry = headers[rel][0].get(key)
    if entry is None:
        raise TraceFormatError(f"{name} is not in data file {rel}.", path=path)
    if dtype != entry.dtype or tuple(shape) != entry.shape:
        raise TraceFormatError(f"{name}: the entry says {dtype} {tuple(shape)} but {rel} holds {entry.dtype} "
                               f"{entry.shape}.", path=path)
    if axes is not None and len(axes) != len(shape):
        raise TraceFormatError(f"{name}: axes {axes} do not match shape {tuple(shape)}.", path=path)
    return Stage(dtype=entry.dtype, shape=entry.shape, file=rel, **common)


