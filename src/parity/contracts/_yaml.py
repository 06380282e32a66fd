"""Strict YAML loading that keeps the line and column of every node.

The tree is built straight from PyYAML's parser events (libyaml's parser when present): no tag is
resolved and nothing is ever *constructed*, so no YAML tag can run code. On top of it:

* every mapping key must be a plain or quoted scalar, and a key may appear once per mapping
  (PyYAML silently keeps the last duplicate; here it is an error naming both lines);
* plain scalars are typed by the YAML 1.2 core schema (``true``/``false``, ``null``/``~``,
  integers, floats such as ``1e-4`` and ``.inf``); ``yes``, ``no``, ``on``, ``off`` and dates
  stay strings, and quoted scalars are always strings;
* anchors and aliases, merge keys and non-standard tags are refused (a contract is data to
  read, not a graph to expand).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from .errors import ContractError, MissingDependencyError, Problem

__all__ = ["Node", "load_yaml", "parse_yaml", "require_yaml"]

_STD = "tag:yaml.org,2002:"
_NULL = {"", "~", "null", "Null", "NULL"}
_TRUE, _FALSE = {"true", "True", "TRUE"}, {"false", "False", "FALSE"}
_INT = re.compile(r"^[-+]?[0-9]+$")
_INT_OCT, _INT_HEX = re.compile(r"^0o[0-7]+$"), re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(inf|Inf|INF)$")
_NAN = re.compile(r"^\.(nan|NaN|NAN)$")


def require_yaml() -> Any:
    """Import PyYAML, or explain how to install it (``pip install 'parity[contracts]'``)."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - exercised only where PyYAML is absent
        raise MissingDependencyError("parity contract needs PyYAML; install it with "
                                     "pip install 'parity[contracts]' (or pip install PyYAML).") from None
    return yaml


class Node:
    """A YAML node with its place in the file (1-based line and column).

    ``kind`` is ``"map"`` (``value``: dict of key → (key node, value node), in file order),
    ``"seq"`` (``value``: list of nodes) or ``"scalar"`` (``value``: str, int, float, bool or None).

    Example:
        >>> n = parse_yaml("a: 1\\nb: [x, 2.5e-3]\\n", "c.yaml")
        >>> n["b"].line, n["b"].plain(), n.type_name
        (2, ['x', 0.0025], 'object')
    """

    __slots__ = ("kind", "value", "line", "column", "path")

    def __init__(self, kind: str, value: Any, line: int, column: int, path: str):
        self.kind, self.value, self.line, self.column, self.path = kind, value, line, column, path

    def __repr__(self) -> str:
        return f"Node({self.kind}, {self.path}:{self.line}:{self.column})"

    @property
    def type_name(self) -> str:
        """The JSON Schema type of this node: object, array, string, integer, number, boolean or null."""
        if self.kind == "map":
            return "object"
        if self.kind == "seq":
            return "array"
        v = self.value
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "boolean"
        if isinstance(v, int):
            return "integer"
        if isinstance(v, float):
            return "number"
        return "string"

    def problem(self, message: str) -> Problem:
        return Problem(self.path, self.line, self.column, message)

    def __getitem__(self, key: str) -> Node:
        return self.value[key][1]

    def get(self, key: str) -> Node | None:
        if self.kind != "map":
            return None
        pair = self.value.get(key)
        return pair[1] if pair else None

    def key_node(self, key: str) -> Node:
        return self.value[key][0]

    def items(self) -> Iterator[tuple[str, Node, Node]]:
        """``(key, key node, value node)`` for a mapping, in file order."""
        for k, (kn, vn) in self.value.items():
            yield k, kn, vn

    def plain(self) -> Any:
        """The plain Python value (dicts, lists, scalars)."""
        if self.kind == "map":
            return {k: vn.plain() for k, (_, vn) in self.value.items()}
        if self.kind == "seq":
            return [n.plain() for n in self.value]
        return self.value


_WORDS = _NULL | _TRUE | _FALSE


def _scalar(raw: str, plain: bool) -> Any:
    if not plain:
        return raw
    if raw and (raw[0].isalpha() or raw[0] == "_") and raw not in _WORDS:  # the common case: a word
        return raw
    if raw in _NULL:
        return None
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    if _INT.match(raw):
        return int(raw)
    if _INT_OCT.match(raw):
        return int(raw[2:], 8)
    if _INT_HEX.match(raw):
        return int(raw[2:], 16)
    if _FLOAT.match(raw):
        return float(raw)
    if _INF.match(raw):
        return -math.inf if raw.startswith("-") else math.inf
    if _NAN.match(raw):
        return math.nan
    return raw


def _compose_events(events: Any, path: str, problems: list[Problem]) -> list[Node | None]:
    """Build :class:`Node` trees straight from the parser's events (no PyYAML node graph)."""
    docs: list[Node | None] = []
    stack: list[tuple[Node, list[Any]]] = []  # (container node, [pending key node or None])
    root: Node | None = None

    def refuse(ev: Any, what: str) -> None:
        m = ev.start_mark
        problems.append(Problem(path, m.line + 1, m.column + 1, what))

    def attach(node: Node) -> None:
        nonlocal root
        if not stack:
            root = node
            return
        parent, pending = stack[-1]
        if parent.kind == "seq":
            parent.value.append(node)
            return
        if pending[0] is None:  # this node is a key
            if node.kind != "scalar":
                problems.append(node.problem("a mapping key must be a scalar (a name), not a list or mapping"))
                pending[0] = False
            else:
                pending[0] = node
            return
        key = pending[0]
        pending[0] = None
        if key is False:
            return
        name = key.value
        if name in parent.value:
            problems.append(key.problem(f"duplicate key {name!r} (first at line {parent.value[name][0].line}); "
                                        "each key may appear once"))
            return
        parent.value[name] = (key, node)

    names: dict[type, str] = {}
    for ev in events:
        cls = type(ev)
        name = names.get(cls)
        if name is None:
            name = names[cls] = cls.__name__
        if name == "ScalarEvent":
            m = ev.start_mark
            if ev.anchor is not None:
                refuse(ev, "anchors and aliases (&name / *name) are not allowed in a contract")
            if ev.tag is not None and ev.tag not in ("!", _STD + "str"):
                refuse(ev, f"YAML tag {ev.tag!r} is not allowed in a contract (plain data only)")
            plain = not ev.style
            is_key = bool(stack) and stack[-1][0].kind == "map" and stack[-1][1][0] is None
            if is_key:
                if plain and ev.value == "<<":
                    refuse(ev, "merge keys (<<) are not allowed in a contract; write the keys out")
                value: Any = ev.value
            else:
                value = _scalar(ev.value, plain and ev.tag is None)
            attach(Node("scalar", value, m.line + 1, m.column + 1, path))
        elif name in ("MappingStartEvent", "SequenceStartEvent"):
            m = ev.start_mark
            if ev.anchor is not None:
                refuse(ev, "anchors and aliases (&name / *name) are not allowed in a contract")
            if ev.tag is not None and ev.tag not in ("!", _STD + ("map" if name[0] == "M" else "seq")):
                refuse(ev, f"YAML tag {ev.tag!r} is not allowed in a contract (plain data only)")
            node = Node("map" if name[0] == "M" else "seq", {} if name[0] == "M" else [], m.line + 1, m.column + 1, path)
            attach(node)
            stack.append((node, [None]))
        elif name in ("MappingEndEvent", "SequenceEndEvent"):
            stack.pop()
        elif name == "AliasEvent":
            refuse(ev, "anchors and aliases (&name / *name) are not allowed in a contract")
            attach(Node("scalar", None, ev.start_mark.line + 1, ev.start_mark.column + 1, path))
        elif name == "DocumentStartEvent":
            root = None
        elif name == "DocumentEndEvent":
            docs.append(root)
    return docs


def parse_yaml(text: str, path: str = "<string>") -> Node:
    """Compose ``text`` into a :class:`Node` tree, strictly (see the module docstring).

    Raises:
        ContractError: the text is not YAML, or breaks a rule above (every problem listed).

    Example:
        >>> parse_yaml("id: a\\nid: b\\n", "c.yaml")
        Traceback (most recent call last):
        ...
        parity.contracts.errors.ContractError: c.yaml:2:1: duplicate key 'id' (first at line 1); each key may appear once
    """
    yaml = require_yaml()
    # The parser's event stream (the C one when libyaml is present): no tag is resolved and
    # nothing is ever constructed; plain scalars are typed here (YAML 1.2 core).
    loader = getattr(yaml, "CBaseLoader", None) or yaml.BaseLoader
    problems: list[Problem] = []
    try:
        docs = _compose_events(yaml.parse(text, Loader=loader), path, problems)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ContractError([Problem(path, line, col, f"not valid YAML: {e.problem or e.context}")]) from None
    except yaml.YAMLError as e:
        raise ContractError([Problem(path, 1, 1, f"not valid YAML: {e}")]) from None
    if len(docs) != 1 or docs[0] is None:
        raise ContractError([Problem(path, 1, 1, f"a contract file holds exactly one YAML document, found {len(docs)}")])
    if problems:
        raise ContractError(problems)
    return docs[0]


def load_yaml(path: str) -> Node:
    """Read and compose a YAML file (UTF-8) with :func:`parse_yaml`.

    Raises:
        ContractError: the file is not UTF-8 or not valid strict YAML.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ContractError([Problem(path, line, 1, f"not UTF-8 text (byte {e.start})")]) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return parse_yaml(text, path)
