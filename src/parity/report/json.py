"""JSON renderer: the versioned ``parity.diff`` document (see docs/json-schema.md).

The document is :meth:`TraceDiff.to_dict`; its JSON Schema ships with parity as package data
(``parity/report/schema/parity-diff.schema.json``) so that consumers can validate what they read.
"""

from __future__ import annotations

import json
import os
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from importlib import resources
from collections.abc import Iterator
from typing import Any

from ..compare.diff import TraceDiff
from ..errors import ParityError, UsageError
from ..limits import MAX_NESTING

try:  # built from _json.c where a C compiler was found; the same text as _pretty
    from . import _json as _accel  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - no compiler at install time
    _accel = None
from ..trace.jsonsafe import nesting_depth

__all__ = ["render_json", "iter_json", "diff_schema", "validate_diff_document", "load_result", "SCHEMA_RESOURCE", "MAX_RESULT_BYTES"]

#: Largest saved result :func:`load_result` reads (a result holds metrics, never arrays).
MAX_RESULT_BYTES = 1 << 30

#: Where the schema lives inside the installed package.
SCHEMA_RESOURCE = "schema/parity-diff.schema.json"


def render_json(diff: TraceDiff, *, indent: int | None = 2) -> str:
    """Serialise ``diff``; :meth:`TraceDiff.from_dict` reads it back.

    Example:
        >>> import json, numpy as np, tempfile, os, parity
        >>> d = tempfile.mkdtemp(); r, c = os.path.join(d, "r.trace"), os.path.join(d, "c.trace")
        >>> for path in (r, c):
        ...     with parity.record(path):
        ...         _ = parity.tap("x", np.ones(2))
        >>> doc = json.loads(render_json(parity.compare_traces(r, c)))
        >>> doc["schema"], doc["schema_version"], doc["passed"]
        ('parity.diff', 1, True)
    """
    return "".join(iter_json(diff, indent=indent))


def iter_json(diff: TraceDiff, *, indent: int | None = 2) -> Iterator[str]:
    """:func:`render_json`'s text in pieces, one stage at a time (the stages' dicts are never all
    held at once: ``parity diff --json`` of a million stages writes as it goes).

    >>> doc = parity.compare_traces("ref.trace", "cand.trace")
    >>> "".join(iter_json(doc)) == json.dumps(doc.to_dict(), indent=2, allow_nan=False, ensure_ascii=False)
    True
    """
    def dumps(obj: Any) -> str:
        return json.dumps(obj, indent=indent, allow_nan=False, ensure_ascii=False)

    text = dumps({**diff.head_dict(), "stages": []})
    if not diff.stages:
        yield text
        return
    cut = text.rindex("[]")  # "stages" is the last key: its list is the last "[]"
    yield text[:cut] + "["
    if indent is None:
        for i, sd in enumerate(diff.stages):
            yield (", " if i else "") + dumps(sd.to_dict())
        yield "]" + text[cut + 2:]
        return
    ind = " " * indent if isinstance(indent, int) else str(indent)
    pad = "\n" + ind * 2  # a stage is an item of a list two levels down
    for i, sd in enumerate(diff.stages):
        d = sd.to_dict()
        body = pretty(d, pad, ind)
        if body is None:  # a value only json itself renders (or refuses)
            body = dumps(d).replace("\n", pad)
        yield ("," if i else "") + pad + body
    yield "\n" + ind + "]" + text[cut + 2:]


def pretty(obj: Any, pad: str, ind: str) -> str | None:
    r"""``json.dumps(obj, indent=ind, allow_nan=False, ensure_ascii=False)`` with ``pad`` after
    each newline, for the plain types a stage's dict holds; ``None`` for anything else (see
    :func:`_pretty`). The C accelerator :mod:`parity.report._json` where it was built, else
    :func:`_pretty`: the same text.

    >>> pretty({"a": [1, 2.5], "b": None}, "\n  ", "  ")
    '{\n    "a": [\n      1,\n      2.5\n    ],\n    "b": null\n  }'
    >>> pretty({"x": float("nan")}, "\n", " ") is None
    True
    """
    if _accel is not None:
        return _accel.pretty(obj, pad, ind)
    try:
        return _pretty(obj, pad, ind, 0)
    except _Unusual:
        return None


class _Unusual(Exception):
    """A value :func:`_pretty` leaves to :func:`json.dumps`."""


_INF = float("inf")


def _pretty(obj: Any, pad: str, ind: str, depth: int) -> str:
    """``json.dumps(obj, indent=ind, allow_nan=False, ensure_ascii=False)``, its lines after the
    first indented by ``pad`` (a newline and the indent of where it goes), for the plain types a
    stage's dict holds (exact ``str``, ``int``, ``float``, ``bool``, ``None``, ``dict`` with ``str``
    keys, ``list``); anything else raises :class:`_Unusual`. Several times faster than the
    encoder ``json`` uses when it indents (pure Python, one generator per value)."""
    t = type(obj)
    if t is dict:
        if not obj:
            return "{}"
        if depth > 64:
            raise _Unusual
        inner = pad + ind
        parts = []
        for k, v in obj.items():
            if type(k) is not str:
                raise _Unusual
            parts.append(encode_basestring(k) + ": " + _scalar(v, inner, ind, depth))
        return "{" + inner + ("," + inner).join(parts) + pad + "}"
    if t is list:
        if not obj:
            return "[]"
        if depth > 64:
            raise _Unusual
        inner = pad + ind
        return "[" + inner + ("," + inner).join([_scalar(v, inner, ind, depth) for v in obj]) + pad + "]"
    return _scalar(obj, pad, ind, depth)


def _scalar(v: Any, pad: str, ind: str, depth: int) -> str:
    """One value of a container (:func:`_pretty` for a nested one)."""
    t = type(v)
    if t is str:
        return encode_basestring(v)
    if t is float:
        if v != v or v == _INF or v == -_INF:
            raise _Unusual
        return float.__repr__(v)
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if t is int:
        return int.__repr__(v)
    if t is dict or t is list:
        return _pretty(v, pad, ind, depth + 1)
    raise _Unusual


def diff_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the ``parity.diff`` document, as a dict.

    >>> schema = diff_schema()
    >>> schema["$schema"], schema["properties"]["schema"]["const"]
    ('https://json-schema.org/draft/2020-12/schema', 'parity.diff')
    """
    text = resources.files(__package__).joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)


def validate_diff_document(doc: Any) -> None:
    """Check a parsed ``parity.diff`` document against :func:`diff_schema`.

    Needs the ``jsonschema`` package (in the ``test`` extra; ``pip install jsonschema``).

    Raises:
        UsageError: the document does not match the schema (every violation is listed), or
            jsonschema is not installed.

    Example:
        >>> validate_diff_document({"schema": "parity.diff"})
        Traceback (most recent call last):
        ...
        parity.errors.UsageError: the document does not match the parity.diff schema: ...
    """
    try:
        import jsonschema
    except ImportError as e:  # optional: only consumers that validate need it
        raise UsageError("validating a parity.diff document needs the jsonschema package (pip install jsonschema).") from e
    validator = jsonschema.Draft202012Validator(diff_schema())
    errors = []
    for err in validator.iter_errors(doc):
        # "not valid under any of the given schemas" says little: name the deepest cause instead.
        while err.context:
            err = max(err.context, key=lambda e: (len(e.path), e.validator != "type"))
        errors.append(err)
    errors.sort(key=lambda err: [str(p) for p in err.absolute_path])
    if errors:
        lines = [f"{'/'.join(str(p) for p in err.absolute_path) or '(document)'}: {err.message}" for err in errors[:20]]
        more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
        raise UsageError("the document does not match the parity.diff schema: " + "; ".join(lines) + more + ".")


def load_result(path: str | os.PathLike[str]) -> TraceDiff:
    """Read a saved ``parity diff --json`` result (any schema version this parity knows).

    Older documents lack later, optional fields (``verdict``...): they are derived from the stages.

    Raises:
        UsageError: the file is missing, not JSON, too deep, or not a ``parity.diff`` document;
            the message names the file and the field.

    Example:
        >>> import numpy as np, tempfile, os, parity
        >>> d = tempfile.mkdtemp(); r, c = os.path.join(d, "r.trace"), os.path.join(d, "c.trace")
        >>> for path in (r, c):
        ...     with parity.record(path):
        ...         _ = parity.tap("x", np.ones(2))
        >>> saved = os.path.join(d, "result.json")
        >>> with open(saved, "w") as f:
        ...     _ = f.write(render_json(parity.compare_traces(r, c)))
        >>> load_result(saved).verdict
        'parity'
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_RESULT_BYTES + 1)
    except FileNotFoundError:
        raise UsageError("no such result file.", path=path) from None
    except IsADirectoryError:
        raise UsageError("is a directory, not a saved result (parity diff --json > result.json).", path=path) from None
    if len(raw) > MAX_RESULT_BYTES:
        raise UsageError(f"is larger than {MAX_RESULT_BYTES} bytes; a saved result holds metrics only.", path=path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"is not UTF-8 text (invalid byte at offset {e.start}).", path=path) from None
    if (raw.count(b"[") + raw.count(b"{")) > MAX_NESTING and nesting_depth(raw) > MAX_NESTING:
        raise UsageError(f"nests JSON deeper than {MAX_NESTING} levels; it is not a parity result.", path=path)
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise UsageError(f"is not JSON ({e}); save a result with parity diff --json > FILE.", path=path) from None
    if not isinstance(doc, dict) or doc.get("schema") != "parity.diff":
        raise UsageError('is not a parity diff result (expected "schema": "parity.diff").', path=path)
    try:
        return TraceDiff.from_dict(doc)
    except ParityError as e:
        raise UsageError(e.message, path=path) from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        what = f"missing field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise UsageError(f"is a damaged parity diff result ({what}).", path=path) from None
