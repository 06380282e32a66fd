"""Turn what user code taps (NumPy, scalars, sequences, torch and JAX arrays) into storable arrays.

Heavy frameworks are never imported here: a torch tensor is recognised by its type's module.
bf16/f16/f8 values keep their dtype; they are never widened on the way to disk.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .dtypes import DTYPES, DType, UnsupportedDTypeError, dtype_of_array

__all__ = ["as_array"]

_TORCH_BITS = {"bfloat16": ("BF16", "int16", np.uint16), "float8_e4m3fn": ("F8_E4M3", "uint8", np.uint8),
               "float8_e5m2": ("F8_E5M2", "uint8", np.uint8)}


def _torch_to_numpy(t) -> tuple[np.ndarray, DType]:
    import torch  # only reached when the value already is a torch tensor

    t = t.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    t = t.contiguous()
    name = str(t.dtype).removeprefix("torch.")
    if name in _TORCH_BITS:
        code, view_as, np_bits = _TORCH_BITS[name]
        return t.view(getattr(torch, view_as)).numpy().view(np_bits), DTYPES[code]
    arr = t.numpy()
    return arr, dtype_of_array(arr)


def _short_int(v: int) -> str:
    return f"with {v.bit_length()} bits" if v.bit_length() > 200 else repr(v)


def as_array(value: object, *, stage: str | None = None) -> tuple[np.ndarray, DType] | str:
    """Return ``(array, dtype)`` for a tapped value, or the string itself for a text value.

    The array may share memory with ``value``; callers that keep it must copy.

    Raises:
        UsageError: the value has no storable dtype (complex, object arrays, ...).

    >>> arr, dtype = as_array([1.0, 2.0])
    >>> arr.tolist(), dtype.code, as_array("converged")
    ([1.0, 2.0], 'F64', 'converged')
    >>> as_array(1j, stage="z")
    Traceback (most recent call last):
    ...
    parity.errors.UsageError: stage "z": dtype complex128 cannot be stored; supported: ... (cast it first).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray):
        arr = value
    elif type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        return _torch_to_numpy(value)
    elif isinstance(value, bool):
        arr = np.asarray(value, dtype=np.bool_)
    elif isinstance(value, int):
        if not -(1 << 63) <= value < (1 << 64):
            raise UsageError(f"the integer {_short_int(value)} does not fit in 64 bits; store it as a float or a string.",
                             stage=stage)
        arr = np.asarray(value, dtype=np.int64 if value < (1 << 63) else np.uint64)
    elif isinstance(value, float):
        arr = np.asarray(value, dtype=np.float64)
    else:
        try:
            arr = np.asarray(value)  # JAX, CuPy (via __array__), lists, tuples, NumPy scalars
        except Exception as e:  # noqa: BLE001 - any conversion failure is a usage error here
            raise UsageError(f"cannot convert a {type(value).__name__} to an array ({e}).", stage=stage) from e
    if not arr.dtype.isnative:  # big-endian data (e.g. from a foreign dump): stored little-endian, same values
        arr = arr.astype(arr.dtype.newbyteorder("="))
    try:
        d = dtype_of_array(arr)
    except UnsupportedDTypeError as e:
        raise UsageError(f"{e}.", stage=stage) from e
    return arr, d
