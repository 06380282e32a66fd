"""The contract schema (shipped as JSON Schema) and a validator that reports line and column.

The JSON Schema file ``contract-v1.schema.json`` next to this module is the single source of
truth: :func:`validate_node` interprets it directly over the :class:`~parity.contracts._yaml.Node`
tree, so every error points at the key or value concerned. The subset of JSON Schema it
understands is the one the file uses: ``type``, ``const``, ``enum``, ``properties``,
``additionalProperties: false``, ``required``, ``items``, ``minItems``, ``minLength``,
``pattern``, ``minimum``, ``exclusiveMinimum``, ``oneOf`` (branches told apart by type),
``anyOf``, ``if``/``then``, ``dependentRequired`` and local ``$ref``.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from typing import Any

from ._yaml import Node
from .errors import Problem

__all__ = ["SCHEMA_VERSION", "schema", "schema_path", "validate_node"]

#: The version written as ``parity_contract: 1`` at the top of every contract file.
SCHEMA_VERSION = 1

_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}
_DEF_WORDS = {"claim": "a claim", "evidence": "evidence", "equation": "an equation", "obligation": "an obligation",
              "code_ref": "a code reference", "command": "a command", "parity": "a parity evidence entry",
              "tests": "tests evidence", "falsification": "a falsification entry"}


def schema_path() -> str:
    """Path of the shipped JSON Schema file.

    Example:
        >>> os.path.basename(schema_path())
        'contract-v1.schema.json'
    """
    return os.path.join(os.path.dirname(__file__), "contract-v1.schema.json")


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The contract JSON Schema (version :data:`SCHEMA_VERSION`) as a dict.

    Example:
        >>> schema()["properties"]["parity_contract"]["const"]
        1
    """
    with open(schema_path(), encoding="utf-8") as f:
        return json.load(f)


@functools.lru_cache(maxsize=256)
def _pattern(p: str) -> re.Pattern[str]:
    return re.compile(p)


def _matches_type(node: Node, t: str | list[str]) -> bool:
    types = [t] if isinstance(t, str) else t
    actual = node.type_name
    return actual in types or (actual == "integer" and "number" in types)


def _type_word(t: str | list[str]) -> str:
    types = [t] if isinstance(t, str) else t
    return " or ".join(_TYPE_WORDS.get(x, x) for x in types)


class _Validator:
    def __init__(self) -> None:
        self.root = schema()
        self.simple: set[int] = set()

        def scan(x: Any) -> None:
            if isinstance(x, dict):
                if "type" in x and set(x) <= {"type", "description"}:
                    self.simple.add(id(x))
                for v in x.values():
                    scan(v)
            elif isinstance(x, list):
                for v in x:
                    scan(v)

        scan(self.root)

    def resolve(self, s: dict[str, Any], context: str) -> tuple[dict[str, Any], str]:
        if "$ref" not in s:
            return s, context
        while "$ref" in s:
            name = s["$ref"].rsplit("/", 1)[-1]
            context = _DEF_WORDS.get(name, context)
            s = self.root["$defs"][name]
        return s, context

    def check(self, node: Node, s: dict[str, Any], where: str, context: str, out: list[Problem]) -> None:
        s, context = self.resolve(s, context)
        if node.kind == "scalar" and id(s) in self.simple:  # {"type": ...} only: the common case
            if not _matches_type(node, s["type"]):
                out.append(node.problem(f"{where} must be {_type_word(s['type'])}, not {_TYPE_WORDS[node.type_name]}"))
            return
        if "oneOf" in s:
            branches = [b for b in (self.resolve(b, context)[0] for b in s["oneOf"])
                        if "type" not in b or _matches_type(node, b["type"])]
            if not branches:
                words = " or ".join(_type_word(self.resolve(b, context)[0].get("type", "?")) for b in s["oneOf"])
                out.append(node.problem(f"{where} must be {words}, not {_TYPE_WORDS[node.type_name]}"))
                return
            self.check(node, branches[0], where, context, out)
        if "type" in s and not _matches_type(node, s["type"]):
            out.append(node.problem(f"{where} must be {_type_word(s['type'])}, not {_TYPE_WORDS[node.type_name]}"))
            return
        if "const" in s and node.plain() != s["const"]:
            out.append(node.problem(f"{where} must be {json.dumps(s['const'])}, not {json.dumps(node.plain())}"))
        if "enum" in s and node.plain() not in s["enum"]:
            value = node.plain()
            hint = difflib.get_close_matches(str(value), [str(e) for e in s["enum"]], n=1)
            out.append(node.problem(f"{where} is {json.dumps(value)}, expected one of "
                                    f"{', '.join(map(str, s['enum']))}" + (f" (did you mean {hint[0]!r}?)" if hint else "")))
        if node.kind == "scalar" and isinstance(node.value, str):
            if len(node.value) < s.get("minLength", 0):
                out.append(node.problem(f"{where} must not be empty"))
            if "pattern" in s and not _pattern(s["pattern"]).search(node.value):
                out.append(node.problem(f"{where} {node.value!r} does not match {s['pattern']}"))
        if node.type_name in ("integer", "number"):
            if "minimum" in s and node.value < s["minimum"]:
                out.append(node.problem(f"{where} must be at least {s['minimum']}, not {node.value}"))
            if "exclusiveMinimum" in s and node.value <= s["exclusiveMinimum"]:
                out.append(node.problem(f"{where} must be greater than {s['exclusiveMinimum']}, not {node.value}"))
        if node.kind == "seq":
            if len(node.value) < s.get("minItems", 0):
                out.append(node.problem(f"{where} needs at least {s['minItems']} item(s)"))
            if "items" in s:
                for i, child in enumerate(node.value):
                    self.check(child, s["items"], f"{where}[{i}]", context, out)
        if node.kind == "map":
            self.check_map(node, s, where, context, out)

    def check_map(self, node: Node, s: dict[str, Any], where: str, context: str, out: list[Problem]) -> None:
        props = s.get("properties", {})
        for key, kn, vn in node.items():
            if key in props:
                sub_context = _DEF_WORDS.get(key, context)
                self.check(vn, props[key], f"{where}.{key}" if where else key, sub_context, out)
            elif s.get("additionalProperties", True) is False:
                hint = difflib.get_close_matches(key, list(props), n=1, cutoff=0.6)
                out.append(kn.problem(f"unknown key {key!r} in {context}" +
                                      (f"; did you mean {hint[0]!r}?" if hint else f"; allowed: {', '.join(props)}")))
        for key in s.get("required", []):
            if node.get(key) is None and key not in node.value:
                out.append(node.problem(f"{context} ({where or 'top level'}) needs the key {key!r}"))
        for key, needs in s.get("dependentRequired", {}).items():
            if key in node.value:
                for other in needs:
                    if other not in node.value:
                        out.append(node.key_node(key).problem(f"{key!r} in {context} needs {other!r} as well"))
        if "anyOf" in s and not any(self.ok(node, b, context) for b in s["anyOf"]):
            alts = " or ".join(" and ".join(b.get("required", [])) for b in s["anyOf"])
            out.append(node.problem(f"{context} ({where}) needs {alts}"))
        if "if" in s and self.ok(node, s["if"], context):
            self.check(node, s["then"], where, context, out)

    def ok(self, node: Node, s: dict[str, Any], context: str) -> bool:
        scratch: list[Problem] = []
        self.check(node, s, "", context, scratch)
        return not scratch


_VALIDATOR: _Validator | None = None


def validate_node(node: Node) -> list[Problem]:
    """Every way ``node`` (a composed contract file) breaks the schema, in file order.

    Example:
        >>> from parity.contracts._yaml import parse_yaml
        >>> n = parse_yaml("parity_contract: 1\\nid: x\\nclaims:\\n- id: a\\n  statment: s\\n  status: proposed\\n", "c.yaml")
        >>> [str(p) for p in validate_node(n)]
        ["c.yaml:5:3: unknown key 'statment' in a claim; did you mean 'statement'?", "c.yaml:4:3: a claim (claims[0]) needs the key 'statement'"]
    """
    global _VALIDATOR
    if _VALIDATOR is None:
        _VALIDATOR = _Validator()
    out: list[Problem] = []
    _VALIDATOR.check(node, schema(), "", "the contract", out)
    return out
