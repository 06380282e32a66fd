"""The dtypes a trace stores, keyed by their safetensors codes.

Values keep their own dtype on disk. NumPy has no bfloat16 or float8; those stages are read back
with the ``ml_dtypes`` dtype when it is installed, else as their raw unsigned-integer bit patterns
(the stage's ``dtype`` still says ``BF16``), and :func:`to_float64` widens either form exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError

__all__ = ["DType", "DTYPES", "UnsupportedDTypeError", "dtype_of_array", "storage_dtype", "to_float64", "is_float",
           "bits_view"]


class UnsupportedDTypeError(UsageError, TypeError):
    """A value's dtype cannot be stored in a trace (complex, object, strings), or widened here (a
    float8 stage without the ``ml_dtypes`` package). Also a ``TypeError``, as NumPy raises for a
    dtype it cannot use.

    >>> try:
    ...     dtype_of_array(np.zeros(2, np.complex128))
    ... except UnsupportedDTypeError as e:
    ...     print(isinstance(e, TypeError), str(e).split(";")[0])
    True dtype complex128 cannot be stored
    """


@dataclass(frozen=True)
class DType:
    """One storable dtype.

    Attributes:
        code: the safetensors dtype code, e.g. ``"F32"``.
        name: the familiar name, e.g. ``"float32"``.
        itemsize: bytes per element.
        kind: ``"f"`` float, ``"i"`` signed int, ``"u"`` unsigned int, ``"b"`` bool.
        numpy: the NumPy dtype string, or ``None`` when NumPy has no such dtype.
        bits: the unsigned NumPy dtype of the same size, used for bit-level views.
        mantissa_bits: explicit mantissa bits of a float dtype (for rounding-level checks).

    >>> d = DTYPES["BF16"]
    >>> d.name, d.itemsize, d.kind, d.numpy, d.bits, d.mantissa_bits
    ('bfloat16', 2, 'f', None, '<u2', 7)
    """

    code: str
    name: str
    itemsize: int
    kind: str
    numpy: str | None
    bits: str
    mantissa_bits: int = 0


_TABLE = [
    DType("BOOL", "bool", 1, "b", "|b1", "|u1"),
    DType("U8", "uint8", 1, "u", "|u1", "|u1"),
    DType("I8", "int8", 1, "i", "|i1", "|u1"),
    DType("U16", "uint16", 2, "u", "<u2", "<u2"),
    DType("I16", "int16", 2, "i", "<i2", "<u2"),
    DType("U32", "uint32", 4, "u", "<u4", "<u4"),
    DType("I32", "int32", 4, "i", "<i4", "<u4"),
    DType("U64", "uint64", 8, "u", "<u8", "<u8"),
    DType("I64", "int64", 8, "i", "<i8", "<u8"),
    DType("F16", "float16", 2, "f", "<f2", "<u2", 10),
    DType("BF16", "bfloat16", 2, "f", None, "<u2", 7),
    DType("F32", "float32", 4, "f", "<f4", "<u4", 23),
    DType("F64", "float64", 8, "f", "<f8", "<u8", 52),
    DType("F8_E4M3", "float8_e4m3fn", 1, "f", None, "|u1", 3),
    DType("F8_E5M2", "float8_e5m2", 1, "f", None, "|u1", 2),
]

#: Every storable dtype by safetensors code.
DTYPES: dict[str, DType] = {d.code: d for d in _TABLE}
_BY_NAME: dict[str, DType] = {d.name: d for d in _TABLE}
_BY_NAME["float8_e4m3"] = DTYPES["F8_E4M3"]
_BY_DTYPE: dict[np.dtype, DType] = {}


def _ml_dtypes():
    try:
        import ml_dtypes
    except ImportError:  # optional extra
        return None
    return ml_dtypes


def dtype_of_array(arr: np.ndarray) -> DType:
    """Return the storable dtype of a NumPy array.

    Raises:
        UnsupportedDTypeError: the array's dtype cannot be stored (e.g. complex, object, strings).

    >>> dtype_of_array(np.zeros(3, np.float16)).code
    'F16'
    >>> dtype_of_array(np.zeros(3, np.complex64))
    Traceback (most recent call last):
    ...
    parity.trace.dtypes.UnsupportedDTypeError: dtype complex64 cannot be stored; supported: ... (cast it first)
    """
    dt = arr.dtype
    d = _BY_DTYPE.get(dt)
    if d is not None:
        return d
    d = _BY_NAME.get(dt.name)  # dtype.name is slow (Python code in NumPy): cache by dtype below
    if d is not None and len(_BY_DTYPE) < 64:
        _BY_DTYPE[dt] = d
    if d is None:
        raise UnsupportedDTypeError(
            f"dtype {dt} cannot be stored; supported: " + ", ".join(sorted(_BY_NAME)) + " (cast it first)"
        )
    return d


def storage_dtype(d: DType) -> np.dtype:
    """The NumPy dtype used to view a stored stage of dtype ``d``: its own, else the ``ml_dtypes``
    one (bfloat16, float8) when that package is installed, else its unsigned bit patterns.

    >>> storage_dtype(DTYPES["F32"]), storage_dtype(DTYPES["BOOL"])
    (dtype('float32'), dtype('bool'))
    """
    if d.numpy is not None:
        return np.dtype(d.numpy)
    ml = _ml_dtypes()
    if ml is not None:
        return np.dtype(getattr(ml, d.name))
    return np.dtype(d.bits)


def bits_view(arr: np.ndarray, d: DType) -> np.ndarray:
    """View ``arr`` (stored as ``d``) as unsigned integers of the same size.

    >>> bits_view(np.float32([1.0, -0.0]), DTYPES["F32"]).tolist()
    [1065353216, 2147483648]
    """
    return arr.view(np.dtype(d.bits))


def is_float(d: DType) -> bool:
    """Whether ``d`` is a floating-point dtype.

    >>> is_float(DTYPES["BF16"]), is_float(DTYPES["I64"])
    (True, False)
    """
    return d.kind == "f"


def to_float64(arr: np.ndarray, d: DType, out: np.ndarray | None = None) -> np.ndarray:
    """Widen ``arr`` (stored as ``d``) to float64 exactly, into ``out`` when given.

    Raises:
        UnsupportedDTypeError: ``d`` is a float8 and the ``ml_dtypes`` package is not installed.

    >>> to_float64(np.float32([0.1]), DTYPES["F32"]).tolist()
    [0.10000000149011612]
    >>> to_float64(np.uint16([0x3FC0]), DTYPES["BF16"]).tolist()   # bfloat16 bit patterns
    [1.5]
    """
    if d.numpy is not None:
        if out is None:
            return arr.astype(np.float64)
        np.copyto(out, arr, casting="unsafe")
        return out
    if d.code == "BF16":
        # bf16 is the top half of an f32: shift the bits up and reinterpret.
        f32 = (bits_view(arr, d).astype(np.uint32) << 16).view(np.float32)
        if out is None:
            return f32.astype(np.float64)
        np.copyto(out, f32, casting="unsafe")
        return out
    ml = _ml_dtypes()
    if ml is None:
        raise UnsupportedDTypeError(f"widening {d.name} needs the ml_dtypes package (pip install ml_dtypes)")
    typed = bits_view(arr, d).view(getattr(ml, d.name))
    if out is None:
        return typed.astype(np.float64)
    np.copyto(out, typed.astype(np.float64))
    return out
