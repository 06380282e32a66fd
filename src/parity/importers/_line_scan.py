"""The pure-Python twin of the C scanner :mod:`parity.importers._scan`.

:func:`scan_chunk` does what ``_scan.scan_chunk`` does: it parses a block of lines into a
:class:`~parity.importers.lines.LineParser`'s output columns, taking the commonest trace lines
(``key=numbers``, ``key: [numbers]``, several ``key=number`` pairs, indexed family lines, named
fields, text values seen before) on fast paths and every other line through
``LineParser._parse_body``, with the same results (tests/importers compares them line by line).
:class:`PyValues` stands in for ``_scan.Values`` where no C compiler was found at install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._line_grammar import _WS, _Fatal, _index_value, _Malformed
from ._line_reader import Block, block_lines

if TYPE_CHECKING:
    from .lines import LineParser

__all__ = ["PyValues", "scan_chunk"]


class PyValues:
    """The pure-Python stand-in for :class:`parity.importers._scan.Values` (no C compiler at install):
    ``push`` always declines, so every value takes :func:`~parity.importers._line_grammar._parse_value`.

    Example:
        >>> v = PyValues(); v.push(b"1 2") is None
        True
        >>> v.extend(np.array([1.5, 2.5])); len(v), np.frombuffer(v.take()).tolist()
        (2, [1.5, 2.5])
    """

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._n = 0

    def push(self, value: bytes) -> None:
        return None

    def extend(self, arr: np.ndarray) -> None:
        self._parts.append(np.array(arr, dtype=np.float64).reshape(-1))
        self._n += arr.size

    def truncate(self, n: int) -> None:
        while self._n > n:
            last = self._parts.pop()
            self._n -= last.size
            if self._n < n:
                self._parts.append(last[:n - self._n])
                self._n = n

    def take(self) -> bytes:
        data = np.concatenate(self._parts).tobytes() if self._parts else b""
        self._parts, self._n = [], 0
        return data

    def __len__(self) -> int:
        return self._n


def scan_chunk(p: LineParser, lines: list[bytes] | Block, lineno: int) -> tuple[int, int, int]:
    """Parse ``lines`` (numbered from ``lineno + 1``) into ``p``'s output columns.

    Args:
        p: the parser.
        lines: the lines (without newlines, as :func:`~parity.importers._line_reader.visible_line`
            gives them), or a :data:`~parity.importers._line_reader.Block`.
        lineno: the number of the line before the first.

    Returns:
        ``(last line number, lines skipped, trace lines)``, as ``_scan.scan_chunk`` returns them.

    Example:
        >>> from parity.importers.lines import LineParser
        >>> p = LineParser(["TRACE_C"])
        >>> scan_chunk(p, [b"banner", b"TRACE_C: x=1 2", b"TRACE_C: s=ok"], 10)
        (13, 1, 2)
        >>> p._out_names, p._out_shapes, p._out_lines
        (['x', 's'], [(2,), 'ok'], [12, 13])
    """
    if isinstance(lines, tuple):
        lines = block_lines(*lines)
    prefixes = p._bprefixes
    body_of = p._body
    parse_body = p._parse_body
    fast = not p._bindex  # an --index-field can be any key: every line takes _fields
    skipped = traced = 0
    for line in lines:
        lineno += 1
        if not line.startswith(prefixes):
            c = line[:1]
            if c != b" " and c != b"\t":
                skipped += 1
                continue
            line = line.lstrip(_WS)
        found = body_of(line)
        if found is None:
            skipped += 1
            continue
        traced += 1
        raw, indexed = found
        if fast and (_fast_pairs(p, raw.strip(), lineno, True) if indexed else _fast_plain(p, raw.strip(), lineno)):
            continue
        parse_body(raw, indexed, lineno)
    return lineno, skipped, traced


def _fast_plain(p: LineParser, body: bytes, lineno: int) -> bool:
    """The body of a plain (not indexed) trace line, when a fast path takes it; False: not taken."""
    eq = body.find(b"=", 0, 256)
    if eq < 0:
        return _fast_colon(p, body, lineno)
    if eq == 0:
        return False
    # _fields() reads "key=value" as one pair when the key holds no ":", " " or "\t", the line
    # holds no other "=", and no blank follows the "=" (else it would rewrite " = " first); its
    # value then takes push() as here.
    k = body[:eq]
    hit = p._plain_keys.get(k)
    if hit is None:
        hit = p._plain_key(k)
    if not hit:
        return False
    if body.find(b"=", eq + 1) >= 0:  # several pairs
        return _fast_pairs(p, body, lineno, False)
    if body[eq + 1:eq + 2] in (b" ", b"\t"):
        return False
    v = body[eq + 1:].strip()
    if not v:
        return False
    shape = p._values.push(v)
    if shape is None:
        return _fast_named(p, hit[0], v, lineno) or _fast_text(p, hit, v, lineno)
    st = p.stats
    st.fields += 1
    if st.fields % p._sample_every == 0:
        p._sample_digits(v)
    p._out_names.append(hit[0])
    p._out_shapes.append(shape)
    p._out_indices.append(None)
    p._out_lines.append(lineno)
    p._out_originals.append(hit[1])
    return True


def _fast_field(p: LineParser, name: str, original: str | None, v: bytes, shape: tuple[int, ...],
                indices: dict[str, int | str] | None, lineno: int) -> None:
    """Record a numeric field as _fields() does (count, precision sample, columns)."""
    st = p.stats
    st.fields += 1
    if st.fields % p._sample_every == 0:
        p._sample_digits(v)
    p._record(name, shape, indices, lineno, original)


def _fast_named(p: LineParser, name: str, v: bytes, lineno: int) -> bool:
    """``key=a:1 b:2`` (a value that is not numeric): named fields, as _fields() reads them."""
    if b":" not in v or v[:1] == b"[":
        return False
    mark, vmark = len(p._out_names), len(p._values)
    try:
        return p._named_fields(name, v, lineno, None)
    except _Fatal:  # past a hard limit: _parse_body() raises for it, naming the line
        p._truncate(mark, vmark)
        return False
    except _Malformed as e:  # the line is malformed, exactly as _parse_body() would count it
        p._truncate(mark, vmark)
        p._count_malformed(lineno, e)
        return True


def _fast_colon(p: LineParser, body: bytes, lineno: int) -> bool:
    """``key: value`` or ``key value`` with no "=" in the first 256 bytes; False: not taken."""
    sp = body.find(b" ", 0, 256)
    tab = body.find(b"\t", 0, 256)
    if tab >= 0 and (sp < 0 or tab < sp):
        sp = tab
    colon = body.find(b":", 0, sp if sp >= 0 else 256)
    if colon > 0:  # _fields(): the first ":" before any blank splits key and value
        k, v = body[:colon], body[colon + 1:]
    elif colon < 0 and sp > 0:  # else the first blank
        k, v = body[:sp], body[sp:]
    else:
        return False
    hit = p._plain_keys.get(k)
    if hit is None:
        hit = p._plain_key(k)
    if not hit:
        return False
    v = v.strip()
    if not v:
        return False
    shape = p._values.push(v)
    if shape is None:
        return _fast_named(p, hit[0], v, lineno) or _fast_text(p, hit, v, lineno)
    _fast_field(p, hit[0], hit[1], v, shape, None, lineno)
    return True


def _fast_text(p: LineParser, hit: tuple[str, str | None], v: bytes, lineno: int) -> bool:
    """A value that is neither numbers nor named fields, and that _parse_value() found to be
    text before: the text field _fields() would record."""
    text = p._texts.get(v)
    if text is None:
        return False
    p.stats.fields += 1
    p._record(hit[0], text, None, lineno, hit[1])
    return True


def _fast_pairs(p: LineParser, body: bytes, lineno: int, indexed: bool) -> bool:
    """``[it=3] a=1 b=2`` where every token is ``key=number`` (the first one an index on an
    indexed line): what _fields() makes of it (its first "=" lies within 256 bytes, so it splits
    on every "=", no token continues a value, nothing is bracketed); False: not taken."""
    if b"[" in body or b"]" in body:
        return False
    tokens = body.split()
    if len(tokens) < 2 or len(tokens[0]) > 256:
        return False
    indices = None
    if indexed:
        k0, sep, v0 = tokens[0].partition(b"=")
        if not (sep and k0 and v0) or b":" in k0:
            return False
        try:
            indices = {p._index_name(k0): _index_value(v0, k0)}
        except _Malformed:
            return False
        tokens = tokens[1:]
    push = p._values.push
    vmark = len(p._values)
    got = []
    for t in tokens:
        k, sep, v = t.partition(b"=")
        if not (sep and k and v):
            break
        hit = p._plain_keys.get(k)
        if hit is None:
            hit = p._plain_key(k)
        if not hit:
            break
        shape = push(v)
        if shape is None:
            break
        got.append((hit, v, shape))
    else:
        for (name, original), v, shape in got:
            _fast_field(p, name, original, v, shape, indices, lineno)
        return True
    p._values.truncate(vmark)
    return False
