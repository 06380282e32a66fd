"""The :class:`Stage`: one recorded value's metadata (its values are read through the Trace).

A trace of a million stages makes a million of these as it is iterated: the class has slots, and
the reader makes them with :func:`new_stage`, which skips the dataclass ``__init__`` (whose frozen
checks cost twice as much as the object).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Any

from .dtypes import DTYPES, DType

__all__ = ["Stage", "new_stage"]


@dataclass(frozen=True, slots=True)
class Stage:
    """One recorded stage: its metadata, and (via :attr:`Trace.__getitem__`) its values.

    Attributes:
        key: the stage key, e.g. ``"layers.3.attn_probs"``.
        kind: ``"tensor"`` or ``"text"``.
        dtype: safetensors dtype code of the stored values (``"F32"``, ``"BF16"``...); ``None`` for text.
        shape: the stored shape; ``()`` for scalars and text.
        axes: optional names of the axes, e.g. ``("seq", "heads", "head_dim")``.
        units: optional physical units, e.g. ``"angstrom"``.
        indices: indices such as ``{"layer": 3, "step": 0}``.
        provenance: where the value came from (source line, module path, log line).
        occurrence: 0 for the first time a key was recorded, 1 for the second (``key#1``)...
        position: index in the trace's execution order.
        file: the data file, relative to the trace directory; ``None`` for text.
        text: the value of a text stage.

    Example:
        >>> s = parity.load_trace("ref.trace").stage("layers.0.attn_scores")
        >>> s.kind, s.dtype, s.shape, s.axes
        ('tensor', 'F64', (4, 8, 8), ('heads', 'seq', 'seq_k'))
        >>> s.size, s.nbytes, s.dtype_info.name
        (256, 2048, 'float64')
    """

    key: str
    kind: str
    dtype: str | None
    shape: tuple[int, ...]
    axes: tuple[str, ...] | None = None
    units: str | None = None
    indices: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    occurrence: int = 0
    position: int = 0
    file: str | None = None
    text: str | None = None

    @property
    def dtype_info(self) -> DType | None:
        """The :class:`~parity.trace.dtypes.DType` of the stored values (``None`` for text)."""
        return DTYPES[self.dtype] if self.dtype else None

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape) if self.kind == "tensor" else 0

    @property
    def nbytes(self) -> int:
        info = self.dtype_info
        return self.size * info.itemsize if info else 0


_FIELDS = ("key", "kind", "dtype", "shape", "axes", "units", "indices", "provenance", "occurrence", "position", "file",
           "text")
(_set_key, _set_kind, _set_dtype, _set_shape, _set_axes, _set_units, _set_indices, _set_provenance, _set_occurrence,
 _set_position, _set_file, _set_text) = (Stage.__dict__[f].__set__ for f in _FIELDS)  # the slots' own setters
_new = object.__new__


def new_stage(key: str, kind: str, dtype: str | None, shape: tuple[int, ...], axes: tuple[str, ...] | None,
              units: str | None, indices: dict[str, Any], provenance: dict[str, Any], occurrence: int, position: int,
              file: str | None, text: str | None) -> Stage:
    """``Stage(key, kind, ...)`` with every field given, made without the dataclass ``__init__``
    (the caller has checked the fields).

    >>> new_stage("x", "tensor", "F32", (2,), None, None, {}, {}, 0, 5, "data/000000.safetensors", None) \\
    ...     == Stage("x", "tensor", "F32", (2,), position=5, file="data/000000.safetensors")
    True
    """
    s = _new(Stage)
    _set_key(s, key)
    _set_kind(s, kind)
    _set_dtype(s, dtype)
    _set_shape(s, shape)
    _set_axes(s, axes)
    _set_units(s, units)
    _set_indices(s, indices)
    _set_provenance(s, provenance)
    _set_occurrence(s, occurrence)
    _set_position(s, position)
    _set_file(s, file)
    _set_text(s, text)
    return s
