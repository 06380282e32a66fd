"""JSON renderer: the versioned ``parity.diff`` document (see docs/json-schema.md).

The document is :meth:`TraceDiff.to_dict`; its JSON Schema ships with parity as package data
(``parity/report/schema/parity-diff.schema.json``) so that consumers can validate what they read.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from ..compare.diff import TraceDiff
from ..errors import UsageError

__all__ = ["render_json", "diff_schema", "validate_diff_document", "SCHEMA_RESOURCE"]

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
    return json.dumps(diff.to_dict(), indent=indent, allow_nan=False, ensure_ascii=False)


def diff_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the ``parity.diff`` document, as a dict."""
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
