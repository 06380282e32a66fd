"""The header of an ``.npy`` (a file or an ``.npz`` member), read and checked without ``eval``.

NumPy writes the header as a Python literal, ``{'descr': '<f8', 'fortran_order': False, 'shape':
(3,), }``; :func:`read_npy_header` parses it by hand (strings, True/False, tuples of integers, no
``eval``, ``ast`` or unpickling) and checks the dtype and the data size before anything is
allocated.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ImportFormatError
from ..limits import MAX_INT_DIGITS, check_size

__all__ = ["NPY_MAGIC", "MAX_NPY_HEADER", "NpyHeader", "read_npy_header"]

NPY_MAGIC = b"\x93NUMPY"
#: The longest .npy header read (NumPy itself refuses more than 10000 bytes by default).
MAX_NPY_HEADER = 65536
_MAX_NDIM = 64
#: dtypes an .npy may hold (``descr`` without its byte order): those a trace stores.
_DESCRS = ("b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8")
_DESCR = re.compile(r"([<>|=]?)(b1|u1|i1|u2|i2|u4|i4|u8|i8|f2|f4|f8|\?)")
_TOKEN = re.compile(r"[ \t\n]*(?:(?P<str>'[^'\\\n]*'|\"[^\"\\\n]*\")|(?P<num>[-+]?[0-9.][0-9.eExX+\-]*L?)"
                    r"|(?P<name>True|False|None|inf|nan)"
                    r"|(?P<punct>[{}():,\[\]])|(?P<end>$))")


@dataclass(frozen=True)
class NpyHeader:
    """The checked header of one ``.npy`` (a file or an ``.npz`` member).

    Attributes:
        dtype: the array's dtype (one a trace can store).
        shape: the array's shape.
        fortran_order: whether the data is in column-major order.
        offset: byte offset of the data from the start of the ``.npy``.
        nbytes: bytes of data the header promises.

    Example (see :func:`read_npy_header`):
        >>> np.save("x.npy", np.zeros((2, 3), np.float32))
        >>> with open("x.npy", "rb") as f: h = read_npy_header(f.read, 152, path="x.npy")
        >>> h.dtype, h.shape, h.fortran_order, h.offset, h.nbytes
        (dtype('float32'), (2, 3), False, 128, 24)
    """

    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    offset: int
    nbytes: int


def _header_tokens(text: str, fail: Callable[[str], Exception]) -> list[tuple[str, str]]:
    """The tokens ``(kind, text)`` of an .npy header: str, int, num, name, punct."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while True:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise fail(f"its header holds {text[pos:pos + 20]!r} at character {pos}, where a Python literal "
                       "(string, True/False, tuple of integers) was expected")
        kind = m.lastgroup
        if kind == "end":
            return tokens
        value = m.group(kind)
        if kind == "num":
            digits = value[:-1] if value.endswith("L") else value
            if digits.isdigit() and digits.isascii():
                if len(digits) > MAX_INT_DIGITS:
                    raise fail(f"its header holds an integer of {len(digits)} digits; a dimension has at most "
                               f"{MAX_INT_DIGITS}")
                kind, value = "int", digits
        tokens.append((kind, value))
        pos = m.end()


class _HeaderDict:
    """Reads the tokens of an .npy header dict left to right (no ``eval``, no ``ast``)."""

    def __init__(self, text: str, fail: Callable[[str], Exception]):
        self.tokens = _header_tokens(text, fail)
        self.i = 0
        self.fail = fail

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            raise self.fail("its header ends before its dict is closed")
        tok = self.tokens[self.i]
        if expected is not None and tok[1] != expected:
            raise self.fail(f"its header holds {tok[1]!r} where {expected!r} was expected")
        self.i += 1
        return tok

    def items(self, close: str, what: str, item: Callable[[str, str], None]) -> bool:
        """Items separated by commas up to ``close`` (a trailing comma allowed), each token that
        starts one handed to ``item``; whether the last item was followed by a comma."""
        comma = False
        while True:
            kind, tok = self.take()
            if tok == close:
                return comma
            item(kind, tok)
            kind, tok = self.take()
            comma = tok == ","
            if tok == close:
                return comma
            if not comma:
                raise self.fail(f"its {what} holds {tok!r} where ',' or {close!r} was expected")

    def value(self) -> object:
        """A string, True/False, or a tuple of non-negative integers (a shape)."""
        kind, tok = self.take()
        if kind == "str":
            return tok[1:-1]
        if kind == "name" and tok in ("True", "False"):
            return tok == "True"
        if tok == "[":
            raise self.fail("its header describes a structured dtype (a list of fields), which a trace cannot store")
        if tok != "(":
            raise self.fail(f"its header holds {tok[:40]!r} where a value was expected")
        dims: list[int] = []

        def dim(kind: str, tok: str) -> None:
            if kind != "int":
                raise self.fail(f"its shape holds {tok[:40]!r}; expected non-negative integers")
            dims.append(int(tok))
            if len(dims) > _MAX_NDIM:
                raise self.fail(f"its shape has more than {_MAX_NDIM} dimensions")

        comma = self.items(")", "shape", dim)
        if len(dims) == 1 and not comma:
            raise self.fail("its shape is a parenthesised integer, not a tuple")
        return tuple(dims)

    def read(self) -> dict[str, object]:
        """The whole dict; nothing may follow it."""
        out: dict[str, object] = {}

        def entry(kind: str, tok: str) -> None:
            if kind != "str":
                raise self.fail(f"its header dict has key {tok!r}; expected a string")
            key = tok[1:-1]
            self.take(":")
            if key in out:
                raise self.fail(f"its header gives {key!r} twice")
            out[key] = self.value()

        self.take("{")
        self.items("}", "header", entry)
        if self.i != len(self.tokens):
            raise self.fail("its header holds more after its dict")
        return out


def _parse_header_dict(text: str, fail: Callable[[str], Exception]) -> dict[str, object]:
    """Parse the Python-literal dict of an .npy header by hand: strings, True/False, tuples of ints.

    Example:
        >>> _parse_header_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", ValueError)
        {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}
    """
    return _HeaderDict(text, fail).read()


def read_npy_header(read: Callable[[int], bytes], available: int, *, path: str, member: str | None = None
                    ) -> NpyHeader:
    """Read and check an ``.npy`` header without ``eval``, ``ast`` or unpickling.

    ``read(n)`` returns the next ``n`` bytes; ``available`` is the size of the whole ``.npy``
    (the file, or the member's declared uncompressed size). The magic, version, header length,
    the dict (exactly ``descr``, ``fortran_order`` and ``shape``), the dtype (one a trace stores)
    and the data size (against ``available`` and :func:`parity.limits.max_stage_bytes`) are all
    checked before anything is allocated.

    Raises:
        ImportFormatError: naming ``path`` (and ``member``), on anything malformed.

    Example:
        >>> np.save("x.npy", np.arange(5.0))
        >>> with open("x.npy", "rb") as f: read_npy_header(f.read, 40, path="x.npy")
        Traceback (most recent call last):
        parity.errors.ImportFormatError: x.npy: is not a valid .npy: its header is 118 bytes long, more than the 30 bytes that follow.
    """
    where = f"member {member!r} " if member is not None else ""

    def fail(msg: str) -> ImportFormatError:
        return ImportFormatError(f"{where}is not a valid .npy: {msg}.", path=path)

    head = read(10)
    if head[:6] != NPY_MAGIC:
        raise fail("it does not start with the .npy magic \\x93NUMPY")
    if len(head) < 10:
        raise fail(f"it is {len(head)} bytes long, shorter than an .npy preamble (10 bytes)")
    major, minor = head[6], head[7]
    if major not in (1, 2, 3) or minor != 0:
        raise fail(f"its version {major}.{minor} is unknown (1.0, 2.0 and 3.0 exist)")
    if major == 1:
        (hlen,) = struct.unpack("<H", head[8:10])
        start = 10
    else:
        more = read(2)
        if len(more) < 2:
            raise fail("it is cut short inside its preamble")
        (hlen,) = struct.unpack("<I", head[8:10] + more)
        start = 12
    if hlen > MAX_NPY_HEADER or start + hlen > available:
        raise fail(f"its header is {hlen} bytes long, more than the {max(available - start, 0)} bytes that follow"
                   if start + hlen > available else f"its header is {hlen} bytes long; at most {MAX_NPY_HEADER} are read")
    raw = read(hlen)
    if len(raw) < hlen:
        raise fail(f"its header of {hlen} bytes is cut short at {len(raw)}")
    try:
        text = raw.decode("utf-8" if major == 3 else "latin-1")
    except UnicodeDecodeError as e:
        raise fail(f"its header is not UTF-8 (byte {e.start})") from e
    fields = _parse_header_dict(text, fail)
    if set(fields) != {"descr", "fortran_order", "shape"}:
        raise fail(f"its header has keys {sorted(fields)}; expected exactly descr, fortran_order and shape")
    descr, fortran, shape = fields["descr"], fields["fortran_order"], fields["shape"]
    if not isinstance(descr, str):
        raise fail("its descr is not a dtype string")
    if not isinstance(fortran, bool):
        raise fail("its fortran_order is not True or False")
    if not isinstance(shape, tuple):
        raise fail("its shape is not a tuple")
    m = _DESCR.fullmatch(descr)
    if m is None:
        if descr.lstrip("<>|=") == "O":
            raise ImportFormatError(f"{where}cannot be read without unpickling: it holds Python objects "
                                    "(dtype object); parity never unpickles.", path=path)
        raise ImportFormatError(f"{where}holds dtype {descr!r}, which a trace cannot store; supported: "
                                f"{', '.join(_DESCRS)} (a bfloat16 saved by np.save reads back as V2: save it as "
                                "float32).", path=path)
    dtype = np.dtype(descr)
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dtype.itemsize
    what = f"{where}the array of shape {shape} and dtype {dtype}"
    check_size(nbytes, what, path=path, available=available - start - hlen)
    return NpyHeader(dtype, shape, fortran, start + hlen, nbytes)
