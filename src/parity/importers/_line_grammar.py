"""The grammar of a trace line's parts: values, printed names and indices.

What :class:`~parity.importers.lines.LineParser` (and the C scanner, :mod:`parity.importers._scan`,
which answers only the common cases and leaves the rest here) makes of the text after a key:

* a value: one number, a vector (``1 2 3``, ``1, 2, 3``, ``[1 2 3]``), a matrix (``[1 2; 3 4]``,
  ``[[1, 2], [3, 4]]``) or text; numbers in any printed notation (``%g``, ``%.17g``, ``%a``,
  Fortran ``1.0D+00``, MSVC ``1.#INF``...), stored as float64;
* a printed name → a stage name (``rot[1]`` → ``rot_1``);
* an index value (``it=3`` → ``3``, ``phase=warmup`` → ``"warmup"``);
* the ``key=value`` pairs of a line (``a=1 b=2 3`` → ``a``: ``1``, ``b``: ``2 3``).

A part that breaks the grammar raises :class:`_Malformed` (the line is counted as malformed and
skipped), or :class:`_Fatal` past a hard limit (the import stops).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ImportFormatError
from ..limits import MAX_INT_DIGITS, MAX_NESTING
from ..trace.keys import validate_key

_WS = b" \t\r\f\v"  # blanks a trace line may start with (what bytes.strip() drops, less the newline)
_NAME_BAD = re.compile(r"[^A-Za-z0-9_+\-:@.]+")
_NAME_BAD_TAIL = re.compile(r"[^A-Za-z0-9_+\-:@.]+$")
_INT = re.compile(rb"^[+-]?[0-9]+$")
_INDEX_TEXT = re.compile(r"^[A-Za-z0-9_+\-.:@]+$")
_MSVC = {b"1.#inf": "inf", b"-1.#inf": "-inf", b"1.#qnan": "nan", b"-1.#qnan": "nan", b"1.#ind": "nan", b"-1.#ind": "nan"}


@dataclass(frozen=True)
class ParsedField:
    """One value read from a trace line.

    Attributes:
        name: the (sanitised) dotted stage name, e.g. ``"cell.a"``.
        value: a float64 array (shape ``()`` for a scalar) or a ``str`` for a text value.
        indices: indices from an indexed line, e.g. ``{"it": 3}``.
        line: 1-based line number in the log (or stream).
        original: the name as printed, when sanitising changed it.

    Example:
        >>> from parity.importers.lines import parse_lines
        >>> f, = parse_lines(["TRACE_C: rot[0]=1 2"], "TRACE_C")
        >>> f.name, f.original, f.value.tolist(), f.indices, f.line
        ('rot_0', 'rot[0]', [1.0, 2.0], None, 1)
    """

    name: str
    value: np.ndarray | str
    indices: dict[str, int | str] | None
    line: int
    original: str | None = None


def _numpy_max_ndim() -> int:
    """The most dimensions an array may have: 64 since NumPy 2, 32 before."""
    try:
        np.empty((1,) * 64)
    except ValueError:
        return 32
    return 64


_MAX_NDIM = _numpy_max_ndim()


class _Malformed(ImportFormatError):
    """A trace line that cannot be parsed: counted as malformed and skipped."""


class _Fatal(_Malformed):
    """A trace line past a hard limit (brackets nested too deep): the import stops with an
    ImportFormatError naming the file and line. A _Malformed too, so that the fast paths decline
    the line and leave it to LineParser._parse_body, which raises."""


# -- values ---------------------------------------------------------------------------------------
def _float_slow(tok: bytes) -> float | None:
    """The notations NumPy's parser refuses: Fortran D exponents, C99 hex floats, MSVC inf/nan."""
    try:
        return float(tok)
    except ValueError:
        pass
    low = tok.lower()
    if low in _MSVC:
        return float(_MSVC[low])
    if low.startswith((b"nan(", b"-nan(", b"+nan(")) and low.endswith(b")"):
        return float("nan")
    if b"d" in low and not low.startswith((b"0x", b"-0x", b"+0x")):
        try:
            return float(low.replace(b"d", b"e"))
        except ValueError:
            return None
    if not low.lstrip(b"+-").startswith(b"0x"):
        return None  # float.fromhex takes "beef" or "add" too: only C99 "%a" text (0x...) is a hex float
    try:
        text = tok.decode("ascii")
    except UnicodeDecodeError:
        return None
    try:
        return float.fromhex(text)
    except OverflowError:
        # too large for a double once rounded: +-inf, as float() gives for a decimal (1e999)
        return -math.inf if text.lstrip()[:1] == "-" else math.inf
    except ValueError:
        return None


def _floats(tokens: list[bytes]) -> np.ndarray | None:
    """Parse number tokens into a float64 vector, or ``None`` if any token is not a number."""
    try:
        # NumPy parses a list of byte strings in C (correctly rounded, as float() does).
        return np.array(tokens, dtype=np.float64)
    except ValueError:
        pass
    out = np.empty(len(tokens), dtype=np.float64)
    for i, t in enumerate(tokens):
        v = _float_slow(t)
        if v is None:
            return None
        out[i] = v
    return out


def _sig_digits(tok: bytes) -> int:
    """Significant digits of a printed decimal (0 for inf/nan/hex)."""
    mant = tok.lstrip(b"+-").split(b"e")[0].split(b"E")[0].split(b"D")[0].split(b"d")[0]
    digits = mant.replace(b".", b"").lstrip(b"0")
    return len(digits) if digits.isdigit() else 0


def _split_tokens(text: bytes) -> list[bytes]:
    return text.replace(b",", b" ").split() if b"," in text else text.split()


def _nested(text: bytes, where: str) -> np.ndarray | None:
    """``[[1, 2], [3, 4]]`` → a rectangular array (or ``None`` if an element is not a number).

    Iterative (no recursion), at most :data:`parity.limits.MAX_NESTING` brackets deep.
    """
    tokens = re.findall(rb"\[|\]|[^\s,\[\]]+", text)
    n = len(tokens)
    if not n:
        raise _Malformed(f"unbalanced brackets in {where}")
    tree: Any
    if tokens[0] != b"[":
        tree, pos = tokens[0], 1
    else:
        tree = []
        stack: list[list[Any]] = [tree]  # the open lists, outermost first
        pos = 1
        while stack:
            if pos >= n:
                raise _Malformed(f"unbalanced brackets in {where}")
            tok = tokens[pos]
            pos += 1
            if tok == b"[":
                if len(stack) >= MAX_NESTING:
                    raise _Fatal(f"{where} nests brackets more than {MAX_NESTING} deep")
                child: list[Any] = []
                stack[-1].append(child)
                stack.append(child)
            elif tok == b"]":
                stack.pop()
            else:
                stack[-1].append(tok)
    if pos != n:
        raise _Malformed(f"text after the closing bracket in {where}")

    shape: list[int] = []
    node = tree
    while isinstance(node, list):
        shape.append(len(node))
        if not node:
            break
        node = node[0]
    if len(shape) > _MAX_NDIM:
        raise _Malformed(f"{where} has {len(shape)} dimensions; an array has at most {_MAX_NDIM}")
    flat: list[bytes] = []
    depth_of_leaves = len(shape)
    todo: list[tuple[Any, int]] = [(tree, 0)]  # depth first, in order (the same errors as a recursive walk)
    while todo:
        item, depth = todo.pop()
        if depth == depth_of_leaves:
            if isinstance(item, list):
                raise _Malformed(f"ragged nested list in {where}")
            flat.append(item)
            continue
        if not isinstance(item, list) or len(item) != shape[depth]:
            raise _Malformed(f"ragged nested list in {where} (rows of different lengths)")
        todo.extend((x, depth + 1) for x in reversed(item))
    values = _floats(flat) if flat else np.empty(0)
    if values is None:
        return None
    return values.reshape(shape)


def parse_value(text: bytes | str, *, where: str = "value") -> np.ndarray | str:
    """Parse the value part of a trace line: a number, a vector, a matrix, or text.

    Args:
        text: e.g. ``b"1 2 3"``, ``b"[1, 2, 3]"``, ``b"[1 2; 3 4]"``, ``b"[[1, 2], [3, 4]]"``, ``b"lbfgs"``.
        where: how to name the value in error messages.

    Returns:
        A float64 array (shape ``()`` for one number), or the text itself when it is not numeric.

    Raises:
        ImportFormatError: brackets are unbalanced, nest more than
            :data:`parity.limits.MAX_NESTING` deep, or a matrix is ragged.

    Example:
        >>> parse_value(b"[1 2; 3 4]").tolist()
        [[1.0, 2.0], [3.0, 4.0]]
        >>> parse_value("converged")
        'converged'
    """
    raw = text.encode("utf-8") if isinstance(text, str) else text
    try:
        value = _parse_value(raw.strip(), where)
    except _Malformed as e:
        raise ImportFormatError(str(e) + ".") from None
    return value


def _parse_value(raw: bytes, where: str) -> np.ndarray | str:
    if raw[:1] == b"[":
        if raw[-1:] != b"]":
            raise _Malformed(f"{where} opens a bracket it does not close")
        inner = raw[1:-1]
        if b"[" in inner:
            arr = _nested(raw, where)
        elif b";" in inner:
            rows = [_split_tokens(r) for r in inner.split(b";")]
            if rows and not rows[-1]:
                rows.pop()  # a trailing ";"
            width = len(rows[0]) if rows else 0
            if any(len(r) != width for r in rows):
                raise _Malformed(f"{where} is a matrix with rows of different lengths "
                                 f"({', '.join(str(len(r)) for r in rows)})")
            flat = [t for r in rows for t in r]
            arr = _floats(flat) if flat else np.empty(0)
            if arr is not None:
                arr = arr.reshape(len(rows), width)
        else:
            tokens = _split_tokens(inner)
            arr = _floats(tokens) if tokens else np.empty(0)
        return arr if arr is not None else raw.decode("utf-8", "replace")
    tokens = _split_tokens(raw)
    if not tokens:
        return ""
    arr = _floats(tokens)
    if arr is None:
        return raw.decode("utf-8", "replace")
    return arr.reshape(()) if len(tokens) == 1 else arr


# -- names ----------------------------------------------------------------------------------------
class _Names:
    """Sanitise printed names into stage names (cached: a log repeats its names)."""

    def __init__(self) -> None:
        self._cache: dict[bytes, tuple[str, str | None]] = {}

    def __call__(self, raw: bytes) -> tuple[str, str | None]:
        hit = self._cache.get(raw)
        if hit is not None:
            return hit
        text = raw.decode("utf-8", "replace")
        # rot[0] -> rot_0, x->y -> x_y: trailing punctuation is dropped, inner runs become "_".
        name = _NAME_BAD.sub("_", _NAME_BAD_TAIL.sub("", text))
        # Segments may not start with - + : @ and may not be empty ("a..b", ".x").
        segs = [s.lstrip("-+:@") for s in name.split(".")]
        segs = [s for s in segs if s]
        name = ".".join(segs)
        if not name:
            raise _Malformed(f"the name {text!r} has no letters or digits")
        try:
            validate_key(name)
        except Exception:
            raise _Malformed(f"the name {text!r} cannot be made into a stage key") from None
        result = (name, None if name == text else text)
        if len(self._cache) < 100_000:
            self._cache[raw] = result
        return result


# -- pairs and indices ---------------------------------------------------------------------------
def _first_space(b: bytes) -> int:
    """The position of the first blank (space or tab) in ``b``, -1 if none."""
    s = b.find(b" ")
    t = b.find(b"\t")
    if s < 0:
        return t
    if t < 0:
        return s
    return min(s, t)


def _pairs(body: bytes) -> list[tuple[bytes, bytes]]:
    """``a=1 b=2 3 c=[1, 2]`` → [(a, 1), (b, 2 3), (c, [1, 2])]: a token without ``=`` extends the value."""
    pairs: list[tuple[bytes, list[bytes]]] = []  # key, the tokens of its value (joined once: linear time)
    depth = 0
    for tok in body.split():
        eq = tok.find(b"=")
        if depth == 0 and eq > 0 and tok[:1] != b"[":
            pairs.append((tok[:eq], [tok[eq + 1:]]))
        elif pairs:
            pairs[-1][1].append(tok)
        else:
            raise _Malformed("a value comes before its key")
        depth += tok.count(b"[") - tok.count(b"]")
    return [(k, b" ".join(v)) for k, v in pairs]


def _index_value(v: bytes, k: bytes) -> int | str:
    """The value ``v`` of index ``k``: an integer (of at most MAX_INT_DIGITS digits) or a short name."""
    if _INT.match(v):
        digits = len(v) - (v[:1] in (b"+", b"-"))
        if digits > MAX_INT_DIGITS:  # checked before int(): no 5000-digit conversions; a bad index, as "it=x/y" is
            raise _Malformed(f"the index {k.decode('utf-8', 'replace')!r} has {digits} digits; expected an "
                             f"integer of at most {MAX_INT_DIGITS} digits")
        return int(v)
    text = v.decode("utf-8", "replace")
    if not _INDEX_TEXT.match(text):
        raise _Malformed(f"index {k.decode('utf-8', 'replace')}={text!r} may only use letters, digits and _+-.:@")
    return text

