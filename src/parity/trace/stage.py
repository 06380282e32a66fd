"""The :class:`Stage`: one recorded value's metadata (its values are read through the Trace)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dtypes import DTYPES, DType

__all__ = ["Stage"]


@dataclass(frozen=True)
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
        return int(np.prod(self.shape, dtype=np.int64)) if self.kind == "tensor" else 0

    @property
    def nbytes(self) -> int:
        info = self.dtype_info
        return self.size * info.itemsize if info else 0
