"""A small, deterministic YAML writer for contracts (plain dicts, lists and scalars only).

What it writes reads back to the same values with the strict loader
(:func:`parity.contracts._yaml.parse_yaml`): strings that could be read as anything else are
double-quoted (JSON escapes, which YAML shares), floats keep their shortest repr.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..errors import UsageError
from ._yaml import _scalar

__all__ = ["dump_yaml"]

_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./@()+,-]*(?: [A-Za-z0-9_./@()+,=-]+)*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _quote(s: str) -> str:
    text = json.dumps(s, ensure_ascii=False)
    return "".join(c if c.isprintable() else f"\\U{ord(c):08x}" for c in text)


def _str(s: str) -> str:
    if _PLAIN.fullmatch(s) and isinstance(_scalar(s, True), str) and s not in ("yes", "no", "on", "off", "y", "n"):
        return s
    return _quote(s)


def _scalar_text(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return ".nan"
        if math.isinf(v):
            return ".inf" if v > 0 else "-.inf"
        r = repr(v)
        return r if isinstance(_scalar(r, True), float) else f"{r}.0"
    if isinstance(v, str):
        return _str(v)
    raise UsageError(f"cannot write a {type(v).__name__} to a contract; its values are strings, numbers, "
                     "booleans, null, lists and mappings.")


def _flow_text(v: Any) -> str:
    if isinstance(v, str) and any(c in v for c in ",[]{}"):
        return _quote(v)
    return _scalar_text(v)


def _key(k: Any) -> str:
    k = str(k)
    return k if _KEY.fullmatch(k) and isinstance(_scalar(k, True), str) else _quote(k)


def _flow_ok(items: list[Any]) -> bool:
    return all(not isinstance(x, (dict, list)) for x in items)


def _emit(v: Any, indent: int, out: list[str], width: int) -> None:
    pad = " " * indent
    if isinstance(v, dict):
        for k, x in v.items():
            _field(pad + _key(k) + ":", x, indent, out, width)
    elif isinstance(v, list):
        for x in v:
            if isinstance(x, dict) and x:
                first = True
                for k, y in x.items():
                    lead = pad + ("- " if first else "  ") + _key(k) + ":"
                    _field(lead, y, indent + 2, out, width)
                    first = False
            elif isinstance(x, list) and x:
                out.append(pad + "-")
                _emit(x, indent + 2, out, width)
            else:
                out.append(pad + "- " + _inline(x))
    else:
        out.append(pad + _scalar_text(v))


def _inline(x: Any) -> str:
    if isinstance(x, dict):
        return "{}"
    if isinstance(x, list):
        return "[" + ", ".join(_flow_text(y) for y in x) + "]"
    return _scalar_text(x)


def _field(lead: str, x: Any, indent: int, out: list[str], width: int) -> None:
    if isinstance(x, dict) and x:
        out.append(lead)
        _emit(x, indent + 2, out, width)
    elif isinstance(x, list) and x:
        flow = _inline(x) if _flow_ok(x) else None
        if flow is not None and len(lead) + 1 + len(flow) <= width:
            out.append(f"{lead} {flow}")
        else:
            out.append(lead)
            _emit(x, indent + 2, out, width)
    else:
        out.append(f"{lead} {_inline(x)}")


def dump_yaml(data: dict[str, Any], *, width: int = 100, header: str | None = None) -> str:
    """Write ``data`` as block-style YAML, deterministically (same input, same bytes).

    Example:
        >>> print(dump_yaml({"id": "c", "claims": [{"id": "a", "rtol": 1e-05, "note": "x: y"}], "tags": ["a", "b"]}), end="")
        id: c
        claims:
          - id: a
            rtol: 1e-05
            note: "x: y"
        tags: [a, b]
    """
    out: list[str] = []
    if header:
        out += [f"# {line}".rstrip() for line in header.splitlines()]
    if isinstance(data, dict) and not data:
        out.append("{}")
    _emit(data, 0, out, width)
    return "\n".join(out) + "\n"
