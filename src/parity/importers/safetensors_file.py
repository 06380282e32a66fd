"""Plain safetensors files: read and write.

Import: every tensor of the file becomes a stage named after the tensor (``model.layers.0.mlp``
is already a valid key), memory-mapped, in its own dtype. A safetensors header is a JSON object
with no execution order, so the order comes from a ``parity.order`` metadata entry (written by
:func:`export_safetensors`), else it is inferred from the names.

The header is parsed and checked by parity's own codec (:mod:`parity.trace.safetensors_header`), which
also streams the export; the ``safetensors`` package reads what it writes (tests check it).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable

import numpy as np

from ..errors import ImportFormatError, TraceFormatError
from ..safefs import atomic_file
from ..trace.jsonsafe import load_json
from ..trace.safetensors_header import TensorEntry, encode_header, read_header
from ..trace.dtypes import DTYPES, storage_dtype
from ..trace.reader import Trace
from ..trace.writer import TraceWriter, byte_chunks
from ._export import export_target, tensor_stages
from ._order import add_keyed, sort_stages

__all__ = ["import_safetensors", "export_safetensors", "refuse_safetensors", "ORDER_METADATA"]

#: ``__metadata__`` entry holding the execution order (a JSON list of tensor names).
ORDER_METADATA = "parity.order"


def refuse_safetensors(path: str) -> str | None:
    """``None`` if ``path`` looks like a safetensors file, else why not.

    Example:
        >>> _ = export_safetensors("ref.trace", "ref.safetensors")
        >>> refuse_safetensors("ref.safetensors"), refuse_safetensors("ref.trace")
        (None, 'is a directory')
    """
    if os.path.isdir(path):
        return "is a directory"
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if len(head) < 9:
        return "is too short for a safetensors file"
    (n,) = struct.unpack("<Q", head[:8])
    if 8 + n > size or head[8:9] != b"{":
        return "does not start with a safetensors header (u64 length, then a JSON object)"
    return None


def import_safetensors(path: str | os.PathLike[str], writer: TraceWriter) -> list[str]:
    """Add every tensor of a safetensors file to ``writer``.

    Returns:
        The keys written, in order.

    Raises:
        ImportFormatError: the file is truncated or not safetensors, a tensor name is not a valid
            stage key, or a bfloat16/float8 tensor is found without the ``ml_dtypes`` package.

    Example (the stages come back in the order the export recorded, ``parity.order``):
        >>> _ = export_safetensors("ref.trace", "ref.safetensors", stages=["logits", "embedding"])
        >>> with parity.TraceWriter("s.trace") as w:
        ...     import_safetensors("ref.safetensors", w)
        ['embedding', 'logits']
    """
    path = os.fspath(path)
    try:
        entries, meta, start = read_header(path)
    except TraceFormatError as e:
        raise ImportFormatError(e.message, path=path, stage=e.stage) from e
    except OSError as e:
        raise ImportFormatError(f"cannot be read ({e.strerror or e}).", path=path) from e
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise ImportFormatError(f"cannot be read ({e.strerror or e}).", path=path) from e
    names = list(entries)
    order = meta.get(ORDER_METADATA)
    if order is not None:
        doc, _bad = load_json(order.encode("utf-8", "surrogatepass") if isinstance(order, str) else b"",
                              path=path, what=f"{ORDER_METADATA} metadata", error=ImportFormatError)
        if type(doc) is not list or not all(type(n) is str for n in doc):
            raise ImportFormatError(f"its {ORDER_METADATA} metadata is not a JSON list of tensor names.", path=path)
        listed = list(dict.fromkeys(n for n in doc if n in entries))
        names = listed + sort_stages([n for n in names if n not in set(listed)])
    else:
        names = sort_stages(names)
    keys = []
    for name in names:
        e: TensorEntry = entries[name]
        info = DTYPES[e.dtype]
        dt = storage_dtype(info)
        if info.numpy is None and dt.name != info.name:
            raise ImportFormatError(f"holds {e.dtype} values; install ml_dtypes (pip install ml_dtypes) to import them.",
                                    path=path, stage=name)
        count = 1
        for d in e.shape:
            count *= d
        if count * dt.itemsize != e.end - e.begin or start + e.end > size:
            raise ImportFormatError(f"shape {list(e.shape)} of {e.dtype} does not match its bytes [{e.begin}, {e.end}) "
                                    f"in a file of {size} bytes; the file is corrupt.", path=path, stage=name)
        try:
            arr = (np.memmap(path, dtype=dt, mode="r", offset=start + e.begin, shape=e.shape) if count
                   else np.empty(e.shape, dtype=dt))
        except (OSError, ValueError) as err:  # the file changed since its header was read
            raise ImportFormatError(f"cannot be mapped ({err}); the file changed while it was read.",
                                    path=path, stage=name) from err
        try:
            keys.append(add_keyed(writer, name, arr, provenance={"tensor": name}))
        except Exception as err:  # a tensor name that is no valid key
            if isinstance(err, ImportFormatError):
                raise
            raise ImportFormatError(f"tensor name cannot be a stage key ({err}).", path=path, stage=name) from None
    return keys


def export_safetensors(trace: str | os.PathLike[str] | Trace, path: str | os.PathLike[str],
                       stages: Iterable[str] | None = None) -> list[str]:
    """Write the tensor stages of a trace into one safetensors file, streaming, with their order.

    Returns:
        Notes (text stages are skipped).

    Raises:
        UsageError: ``path`` already exists or is a symbolic link.

    Example:
        >>> export_safetensors("ref.trace", "ref.safetensors")
        []
        >>> from safetensors.numpy import load_file
        >>> load_file("ref.safetensors")["logits"].shape
        (8, 64)
    """
    t, path = export_target(trace, path, folder=False)
    notes: list[str] = []
    chosen = list(tensor_stages(t, stages, notes))
    order = sorted(range(len(chosen)), key=lambda i: -chosen[i].dtype_info.itemsize)  # keeps tensors aligned
    layout, offset = [], 0
    for i in order:
        s = chosen[i]
        layout.append(TensorEntry(s.key, s.dtype, s.shape, offset, offset + s.nbytes))
        offset += s.nbytes
    header = encode_header(layout, {"format": "pt", ORDER_METADATA: json.dumps([s.key for s in chosen])})
    with atomic_file(path) as f:
        f.write(header)
        for i in order:
            for chunk in byte_chunks(np.asarray(t.array(chosen[i]))):
                f.write(chunk)
    return notes
