"""CRC-32 checksums of trace data files: the zlib (IEEE 802.3) CRC, fast.

A trace's manifest gives every data file's CRC-32 (``"crc32": "1a2b3c4d"``), the same number as
``zlib.crc32`` of the file's bytes, so any tool can check it. The optional C module
:mod:`parity.trace._stage` computes it with carry-less multiplication at memory speed (and can copy
a buffer and checksum it in one pass); without it, :func:`zlib.crc32` gives the same values more
slowly.

Example:
    >>> import zlib
    >>> from parity.trace.checksum import crc32, crc32_combine
    >>> crc32(b"abc") == zlib.crc32(b"abc")
    True
    >>> crc32_combine(crc32(b"ab"), crc32(b"c"), 1) == crc32(b"abc")
    True
"""

from __future__ import annotations

import ctypes
import zlib

import numpy as np

from ..errors import UsageError

try:  # built from _stage.c where a C compiler was found
    from . import _stage  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised by tests that force the fallback
    _stage = None

__all__ = ["crc32", "copy_crc32", "copy_crc32_at", "crc32_combine", "crc32_hex", "implementation", "ByteRangeError"]

_POLY = 0xEDB88320  # the bit-reflected CRC-32 polynomial


class ByteRangeError(UsageError, ValueError):
    """The bytes asked for do not fit the buffers given (a copy into a buffer of another size, a
    range outside it, a negative length). Also a ``ValueError``, as the C module raises.

    >>> try:
    ...     copy_crc32_at(np.zeros(4, np.uint8), 2, 0, 8)
    ... except ByteRangeError as e:
    ...     print(isinstance(e, ValueError), e)
    True copy_crc32_at: bytes [2, 2 + 8) are outside dst of 4 bytes.
    """


def implementation() -> str:
    """Which code computes checksums: the C module's path (``"pclmul"``, ``"table"``...) or ``"zlib"``.

    >>> isinstance(implementation(), str) and implementation() != ""
    True
    """
    return _stage.implementation() if _stage is not None else "zlib"


def crc32(data: object, value: int = 0) -> int:
    """``zlib.crc32(data, value)``, for any C-contiguous buffer.

    >>> crc32_hex(crc32(b"123456789"))   # the CRC-32 check value
    'cbf43926'
    >>> crc32(np.arange(4, dtype=np.uint8)) == crc32(bytes([0, 1, 2, 3]))
    True
    """
    if _stage is not None:
        return _stage.crc32(data, value)
    return zlib.crc32(data, value)  # type: ignore[arg-type]


def copy_crc32(dst: np.ndarray, src: object, value: int = 0) -> int:
    """Copy the bytes of ``src`` into the writable buffer ``dst`` (same length) and return their CRC-32.

    One pass over ``src`` with the C module; a copy then a checksum without it.

    >>> dst = np.zeros(9, np.uint8)
    >>> crc32_hex(copy_crc32(dst, b"123456789")), bytes(dst)
    ('cbf43926', b'123456789')
    """
    if _stage is not None:
        return _stage.copy_crc32(dst, src, value)
    s = np.frombuffer(src, dtype=np.uint8) if not isinstance(src, np.ndarray) else src.reshape(-1).view(np.uint8)
    d = dst.reshape(-1).view(np.uint8) if isinstance(dst, np.ndarray) else np.frombuffer(dst, dtype=np.uint8)
    if d.nbytes != s.nbytes:
        raise ByteRangeError(f"copy_crc32: dst holds {d.nbytes} bytes but src {s.nbytes}; give buffers of one size.")
    np.copyto(d, s)
    return zlib.crc32(d, value)


def copy_crc32_at(dst: np.ndarray, offset: int, address: int, nbytes: int) -> int:
    """Copy ``nbytes`` from raw memory at ``address`` into ``dst[offset:offset + nbytes]`` (a writable
    ``uint8`` array) and return their CRC-32. For values whose memory the caller holds (a tensor's
    ``data_ptr()``), without making a buffer object for each: cheaper for small values.

    Raises:
        ByteRangeError: ``[offset, offset + nbytes)`` is not inside ``dst``.

    >>> src, dst = np.frombuffer(b"123456789", np.uint8), np.zeros(16, np.uint8)
    >>> crc32_hex(copy_crc32_at(dst, 4, src.ctypes.data, 9)), bytes(dst[4:13])
    ('cbf43926', b'123456789')
    """
    if offset < 0 or nbytes < 0 or offset + nbytes > dst.nbytes:
        raise ByteRangeError(f"copy_crc32_at: bytes [{offset}, {offset} + {nbytes}) are outside dst of {dst.nbytes} bytes.")
    if _stage is not None:
        return _stage.copy_crc32_at(dst, offset, address, nbytes)
    if not nbytes:
        return 0
    src = np.frombuffer((ctypes.c_char * nbytes).from_address(address), np.uint8)
    return copy_crc32(dst[offset:offset + nbytes], src)


def _gf2_mulmod(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial, both in the bit-reflected form (x^0 in the top bit)."""
    p = 0
    m = 1 << 31
    while m:
        if a & m:
            p ^= b
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
        m >>= 1
    return p


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)`` (zlib's ``crc32_combine``).

    >>> crc32_hex(crc32_combine(crc32(b"1234"), crc32(b"56789"), 5))
    'cbf43926'
    """
    if _stage is not None:
        return _stage.crc32_combine(crc1, crc2, len2)
    if len2 < 0:
        raise ByteRangeError(f"crc32_combine: len2 must be >= 0, not {len2}.")
    if len2 == 0:
        return crc1 ^ crc2  # as zlib: crc2 of nothing is 0
    # crc(A+B) = crc1 * x^(8 len2) + crc2 (mod P): square-and-multiply on x^8 (0x00800000 reflected)
    power, acc, n = 0x00800000, 0x80000000, len2  # x^8 and x^0
    while n:
        if n & 1:
            acc = _gf2_mulmod(acc, power)
        power = _gf2_mulmod(power, power)
        n >>= 1
    return _gf2_mulmod(crc1, acc) ^ crc2


def crc32_hex(value: int) -> str:
    """The manifest's text for a CRC: eight lowercase hex digits.

    >>> crc32_hex(0xABC)
    '00000abc'
    """
    return f"{value & 0xFFFFFFFF:08x}"
