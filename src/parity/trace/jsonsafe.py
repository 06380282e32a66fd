"""Strict JSON for files parity did not write itself (manifests, journals, headers, bundles).

:func:`load_json` parses a document without trusting it: it must be UTF-8, nest no deeper than
:data:`parity.limits.MAX_NESTING`, and hold no integer literal longer than 4300 digits, all
checked before anything recursive or quadratic runs; non-finite numbers come back as
:class:`BadNumber` placeholders so that the caller can refuse them naming the field.
:func:`nesting_depth` measures the nesting of any text without recursion.

>>> doc, bad = load_json(b'{"a": [1, NaN]}', path="m.json")
>>> doc, bad
({'a': [1, NaN]}, [NaN])
>>> holds_bad_number(doc), nesting_depth(b'[{"a": "[["}]')
(True, 2)
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from typing import Any

import numpy as np

from ..errors import ParityError, TraceFormatError
from ..limits import MAX_NESTING

__all__ = ["BadNumber", "load_json", "nesting_depth", "holds_bad_number"]


class BadNumber:
    """A JSON number a trace file may not hold (``NaN``, ``Infinity``, ``1e999``): kept as its text,
    so the check of the field it sits in can name it (``repr`` is the literal).

    >>> load_json(b"[1e999]", path="f.json")[0]
    [1e999]
    """

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text if len(self.text) <= 40 else self.text[:20] + "..." + self.text[-8:]


_found = threading.local()  # the BadNumbers made by the current load_json call of this thread


def _bad_constant(text: str) -> BadNumber:  # NaN, Infinity, -Infinity
    b = BadNumber(text)
    _found.bad.append(b)
    return b


def _checked_float(text: str) -> float | BadNumber:
    value = float(text)
    if value - value == 0.0:  # finite
        return value
    return _bad_constant(text)


# one decoder for every call (json.loads with hooks would build a new one each time: a journal has
# a line per stage)
_DECODER = json.JSONDecoder(parse_constant=_bad_constant, parse_float=_checked_float)


_STRUCTURE = b"[]{}\""
_DELETE_ALL_BUT_STRUCTURE = bytes(b for b in range(256) if b not in _STRUCTURE)
_DELETE_ALL_BUT_STRUCTURE_ESC = bytes(b for b in range(256) if b not in _STRUCTURE + b"\\")
_CHUNK = 1 << 20
# int() refuses literals longer than this (sys.set_int_max_str_digits); parity holds the line there
_INT_DIGITS = 4300
_LONG_INT = re.compile(r"-?[0-9]{%d}" % (_INT_DIGITS + 1))


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in the JSON text ``raw``, brackets inside strings not
    counted; computed without recursion (vectorised), so any input is safe to measure.

    Exact for every prefix of ``raw`` that is valid JSON, which is all a parser reaches before it
    fails.

    >>> nesting_depth(b'[{"a": "[["}]'), nesting_depth(b"[" * 100_000)
    (2, 100000)
    """
    reduced = raw.translate(None, _DELETE_ALL_BUT_STRUCTURE_ESC)
    if b"\\" in reduced:  # escapes: drop \\ pairs, then escaped quotes, from the text itself
        reduced = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _DELETE_ALL_BUT_STRUCTURE)
    deepest = depth = 0
    in_string = 0
    for start in range(0, len(reduced), _CHUNK):
        a = np.frombuffer(reduced, np.uint8, count=min(_CHUNK, len(reduced) - start), offset=start)
        quote = a == ord('"')
        parity = (np.cumsum(quote, dtype=np.int64) + in_string) & 1  # 1: inside a string (a quote itself too)
        outside = (parity == 0) & ~quote
        step = np.zeros(len(a), np.int64)
        step[outside & ((a == ord("[")) | (a == ord("{")))] = 1
        step[outside & ((a == ord("]")) | (a == ord("}")))] = -1
        levels = np.cumsum(step) + depth
        if len(levels):
            deepest = max(deepest, int(levels.max()))
            depth = int(levels[-1])
            in_string = int(parity[-1])
    return deepest


def load_json(raw: bytes, *, path: str | os.PathLike[str], what: str = "file",
              error: type[ParityError] = TraceFormatError) -> tuple[Any, list[BadNumber]]:
    """Parse the JSON document ``raw`` (UTF-8) of file ``path`` without trusting it.

    Refuses (``error``, naming the file) text that is not UTF-8 or not JSON, nesting deeper than
    :data:`parity.limits.MAX_NESTING`, and integer literals of more than 4300 digits, all before
    anything recursive or quadratic runs. Non-finite numbers (``NaN``, ``Infinity``, ``1e999``)
    come back as :class:`BadNumber` objects, also listed in the second item: the caller refuses
    them, naming the field they sit in.

    >>> load_json(b'{"a": [1, 2.5]}', path="m.json")
    ({'a': [1, 2.5]}, [])
    >>> load_json(b"[" * 10_000, path="m.json", what="manifest")
    Traceback (most recent call last):
    ...
    parity.errors.TraceFormatError: m.json: the manifest nests JSON arrays or objects 10000 deep; ...
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"is not UTF-8 text (invalid byte at offset {e.start}); the {what} is corrupt.",
                    path=path) from e
    # the count of opening brackets bounds the depth: most files need no closer look
    depth = raw.count(b"[") + raw.count(b"{")
    if depth > MAX_NESTING:
        depth = nesting_depth(raw)
    if depth > MAX_NESTING:
        raise error(f"the {what} nests JSON arrays or objects {depth} deep; parity reads at most "
                    f"{MAX_NESTING} levels (limits.MAX_NESTING); it is corrupt or hostile.", path=path)
    too_long = (f"the {what} holds an integer literal of more than {_INT_DIGITS} digits; it is corrupt "
                "or hostile.")
    # int() itself refuses long literals (ValueError below), unless the limit was lifted in this
    # process: then look for them first
    if sys.get_int_max_str_digits() not in range(1, _INT_DIGITS + 1) and _LONG_INT.search(text):
        raise error(too_long, path=path)
    bad: list[BadNumber] = []
    outer = getattr(_found, "bad", None)
    _found.bad = bad
    try:
        doc = _DECODER.decode(text)
    except json.JSONDecodeError as e:
        raise error(f"is not valid JSON ({e}); the {what} is corrupt or truncated.", path=path) from e
    except ValueError as e:  # not a JSONDecodeError: only int() refusing a long literal raises this
        raise error(too_long, path=path) from e
    finally:
        _found.bad = outer
    return doc, bad


def holds_bad_number(value: object) -> bool:
    """Whether a parsed JSON value holds a :class:`BadNumber` anywhere (walked without recursion).

    >>> holds_bad_number(load_json(b'{"a": [{"b": NaN}]}', path="m.json")[0]), holds_bad_number([1.5])
    (True, False)
    """
    todo = [value]
    while todo:
        v = todo.pop()
        t = type(v)
        if t is BadNumber:
            return True
        if t is dict:
            todo.extend(v.values())  # type: ignore[attr-defined]
        elif t is list:
            todo.extend(v)  # type: ignore[arg-type]
    return False
