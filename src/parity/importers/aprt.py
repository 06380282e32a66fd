"""APRT per-stage binary dumps: read and write.

One file holds one stage::

    offset  size  field
    0       4     magic  b"APRT"
    4       4     layer  u32 little-endian; 0xFFFFFFFF = a whole-model stage (not in a layer)
    8       4     count  u32 little-endian, number of values
    12      4*N   values f32 little-endian

A dump is a directory: ``layer-N/STAGE.bin`` for the stages of layer N (their header says N)
and ``STAGE.bin`` for whole-model stages (header 0xFFFFFFFF). They import as stages
``layers.N.STAGE`` and ``STAGE``, shape ``(count,)``. The execution order comes from an
``order.txt`` beside them (one relative path per line; :func:`export_aprt` writes it), else it is
inferred from the names (see :mod:`parity.importers._order`).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import ImportFormatError, UsageError
from ..limits import MAX_INT_DIGITS
from ..safefs import atomic_write, check_inside, refuse_symlink
from ..trace.dtypes import to_float64
from ..trace.keys import validate_key
from ..trace.reader import Trace
from ..trace.writer import TraceWriter
from ._export import export_target, tensor_stages
from ._order import add_keyed, read_order_file, sort_stages

__all__ = ["MAGIC", "WHOLE_MODEL", "AprtStage", "read_aprt", "write_aprt", "encode_aprt", "import_aprt", "export_aprt",
           "refuse_aprt"]

MAGIC = b"APRT"
#: The layer field of a whole-model stage.
WHOLE_MODEL = 0xFFFFFFFF
_HEADER = struct.Struct("<4sII")
_LAYER_DIR = re.compile(r"^layer-([0-9]+)$")
ORDER_FILE = "order.txt"


@dataclass(frozen=True)
class AprtStage:
    """One APRT file.

    Attributes:
        layer: the layer index, or ``None`` for a whole-model stage.
        values: the float32 values (a read-only memory map).

    Example:
        >>> write_aprt("logits.bin", np.float32([0.5, 2]))
        >>> read_aprt("logits.bin")
        AprtStage(layer=None, values=memmap([0.5, 2. ], dtype=float32))
    """

    layer: int | None
    values: np.ndarray


def read_aprt(path: str | os.PathLike[str]) -> AprtStage:
    """Read one APRT file, checking its magic and that its size matches its count.

    Raises:
        ImportFormatError: the file is missing, too short, not APRT, truncated or has trailing bytes.

    Example:
        >>> import os, tempfile, numpy as np
        >>> p = os.path.join(tempfile.mkdtemp(), "x.bin")
        >>> write_aprt(p, np.float32([1.5, -2]), layer=3)
        >>> s = read_aprt(p); s.layer, s.values.tolist()
        (3, [1.5, -2.0])
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
    except FileNotFoundError:
        raise ImportFormatError("no such APRT file.", path=path) from None
    except OSError as e:
        raise ImportFormatError(f"cannot be read ({e.strerror}).", path=path) from e
    if len(head) < _HEADER.size:
        raise ImportFormatError(f"is {size} bytes long; an APRT file starts with a 12-byte header "
                                "(magic APRT, u32 layer, u32 count).", path=path)
    magic, layer, count = _HEADER.unpack(head)
    if magic != MAGIC:
        raise ImportFormatError(f"does not start with the APRT magic (found {magic!r}); it is not an APRT dump.", path=path)
    expected = _HEADER.size + 4 * count
    if size < expected:
        raise ImportFormatError(
            f"is truncated: its header promises {count} float32 values ({4 * count} bytes) but only "
            f"{size - _HEADER.size} bytes of data follow.", path=path)
    if size > expected:
        raise ImportFormatError(
            f"has {size - expected} trailing bytes after the {count} float32 values its header promises; "
            "the count is wrong or the file is not APRT.", path=path)
    values = np.memmap(path, dtype="<f4", mode="r", offset=_HEADER.size, shape=(count,)) if count else np.empty(0, "<f4")
    return AprtStage(None if layer == WHOLE_MODEL else int(layer), values)


def encode_aprt(values: object, layer: int | None = None) -> bytes:
    """The bytes of one APRT file (values are flattened and must already be float32).

    Raises:
        UsageError: values are not float32, or the layer does not fit in a u32.

    Example:
        >>> encode_aprt(np.float32([1.0]), layer=None).hex()
        '41505254ffffffff010000000000803f'
    """
    arr = np.asarray(values)
    if arr.dtype != np.float32:
        raise UsageError(f"APRT stores float32 values; got {arr.dtype} (cast first).")
    if layer is not None and not (0 <= int(layer) < WHOLE_MODEL):
        raise UsageError(f"APRT layer {layer} does not fit in a u32 below 0xFFFFFFFF.")
    flat = np.ascontiguousarray(arr.reshape(-1), dtype="<f4")
    if flat.size >= 2**32:
        raise UsageError(f"APRT counts values in a u32; {flat.size} values do not fit.")
    return _HEADER.pack(MAGIC, WHOLE_MODEL if layer is None else int(layer), flat.size) + flat.tobytes()


def write_aprt(path: str | os.PathLike[str], values: object, layer: int | None = None) -> None:
    """Write one APRT file atomically (an unguessable temporary name, then a rename).

    Raises:
        UsageError: ``path`` is a symbolic link (parity never writes through one).

    Example:
        >>> write_aprt("q_proj.bin", np.float32([1, 2, 3]), layer=0)
        >>> open("q_proj.bin", "rb").read()[:12] == encode_aprt(np.float32([1, 2, 3]), layer=0)[:12]
        True
    """
    data = encode_aprt(values, layer)
    path = os.fspath(path)
    refuse_symlink(path, error=UsageError, what="file")
    atomic_write(path, data)


def _entries(path: str) -> list[os.DirEntry[str]]:
    """The entries of a directory, sorted by name (``is_symlink()`` then costs no system call)."""
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise ImportFormatError(f"cannot be listed ({e.strerror or e}).", path=path) from e


def _scan(root: str, follow_symlinks: bool = False) -> dict[str, tuple[str, int | None]]:
    """Relative path → (stage key, expected layer) for every ``.bin`` of an APRT dump directory.

    Raises:
        ImportFormatError: a file or ``layer-N/`` directory is a symbolic link out of ``root``
            (unless ``follow_symlinks``), or two files give the same stage key.
    """
    found: dict[str, tuple[str, int | None]] = {}
    owner: dict[str, str] = {}

    def add(rel: str, entry: os.DirEntry[str], key: str, layer: int | None) -> None:
        # only a link can lead out: the folders above it are root itself or checked layer-N/ folders
        if entry.is_symlink():
            check_inside(root, entry.path, follow_symlinks=follow_symlinks, error=ImportFormatError)
        if key in owner:
            raise ImportFormatError(f'{owner[key]} and {rel} both give the stage "{key}"; rename one of them.',
                                    path=root)
        owner[key] = rel
        found[rel] = (key, layer)

    for entry in _entries(root):
        name, full = entry.name, entry.path
        m = _LAYER_DIR.match(name)
        if m and entry.is_dir():
            if entry.is_symlink():
                check_inside(root, full, follow_symlinks=follow_symlinks, error=ImportFormatError, what="directory")
            if len(m.group(1)) > MAX_INT_DIGITS:
                raise ImportFormatError(f"the layer number of {name}/ has more than {MAX_INT_DIGITS} digits; an APRT "
                                        "layer is a u32.", path=full)
            layer = int(m.group(1))
            for sub in _entries(full):
                if sub.name.endswith(".bin") and sub.is_file():
                    add(f"{name}/{sub.name}", sub, f"layers.{layer}.{sub.name[:-4]}", layer)
        elif name.endswith(".bin") and entry.is_file():
            add(name, entry, name[:-4], None)
    return found


def refuse_aprt(path: str, *, follow_symlinks: bool = False) -> str | None:
    """``None`` if ``path`` is an APRT file or dump directory, else why not.

    A directory is a dump when it holds a ``layer-N/`` directory of ``.bin`` files, or when its
    first ``.bin`` file starts with the APRT magic.

    Raises:
        ImportFormatError: a ``.bin`` file or ``layer-N/`` directory of the dump is a symbolic
            link out of it (unless ``follow_symlinks``).

    Example:
        >>> write_aprt("x.bin", np.float32([1]))
        >>> refuse_aprt("x.bin"), refuse_aprt("ref.trace")
        (None, 'holds no .bin files nor layer-N/ directories')
    """
    if os.path.isdir(path):
        found = _scan(path, follow_symlinks)
        if not found:
            return "holds no .bin files nor layer-N/ directories"
        if any(layer is not None for _, layer in found.values()):
            return None
        first = next(iter(found))
        try:
            with open(os.path.join(path, first), "rb") as f:
                magic = f.read(4)
        except OSError as e:
            return f"{first} cannot be read ({e.strerror or e})"
        return None if magic == MAGIC else f"{first} does not start with the APRT magic"
    try:
        with open(path, "rb") as f:
            return None if f.read(4) == MAGIC else "does not start with the APRT magic"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"


def import_aprt(path: str | os.PathLike[str], writer: TraceWriter, *, order: str | None = None,
                follow_symlinks: bool = False) -> list[str]:
    """Add the stages of an APRT file or dump directory to ``writer``.

    Args:
        path: one ``.bin`` file (stage named after the file, ``layers.N.`` prefix when its header
            names a layer) or a dump directory.
        writer: the trace being written.
        order: an order file (default: ``order.txt`` in the directory, if present).
        follow_symlinks: read files and ``layer-N/`` directories that are symbolic links out of
            the dump directory (refused by default).

    Returns:
        The keys written, in order.

    Raises:
        ImportFormatError: a file is malformed, or lies in ``layer-N/`` but its header names
            another layer (or a whole-model file names a layer), a file or directory is a
            symbolic link out of the dump, or two files give the same stage.

    Example:
        >>> import os; os.makedirs("dump/layer-0")
        >>> write_aprt("dump/layer-0/q_proj.bin", np.float32([1, 2]), layer=0); write_aprt("dump/logits.bin", np.float32([3]))
        >>> with parity.TraceWriter("a.trace") as w:
        ...     import_aprt("dump", w)
        ['layers.0.q_proj', 'logits']
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        stage = read_aprt(path)
        stem = _stem(os.path.basename(path)[:-4] if path.endswith(".bin") else os.path.basename(path), path)
        key = f"layers.{stage.layer}.{stem}" if stage.layer is not None else stem
        return [add_keyed(writer, key, stage.values, provenance={"file": os.path.basename(path)})]
    found = _scan(path, follow_symlinks)
    if not found:
        raise ImportFormatError("holds no APRT .bin files (expected layer-N/STAGE.bin and STAGE.bin).", path=path)
    order_path = order
    if order_path is None and os.path.lexists(os.path.join(path, ORDER_FILE)):
        order_path = check_inside(path, os.path.join(path, ORDER_FILE), follow_symlinks=follow_symlinks,
                                  error=ImportFormatError)
    if order_path:
        listed = read_order_file(order_path, found)
        rels = listed + _sort_by_key([r for r in found if r not in set(listed)], found)
    else:
        rels = _sort_by_key(list(found), found)
    keys = []
    for rel in rels:
        key, expected = found[rel]
        full = os.path.join(path, rel)
        stage = read_aprt(full)
        if stage.layer != expected:
            said = "whole-model (0xFFFFFFFF)" if stage.layer is None else f"layer {stage.layer}"
            where = f"lies in layer-{expected}/" if expected is not None else "lies at the top level (whole-model stages)"
            raise ImportFormatError(f"is mislabelled: it {where} but its header says {said}.", path=full)
        head, _, leaf = key.rpartition(".")
        key = (head + "." if head else "") + _stem(leaf, full)
        keys.append(add_keyed(writer, key, stage.values, provenance={"file": rel}))
    return keys


def _sort_by_key(rels: list[str], found: dict[str, tuple[str, int | None]]) -> list[str]:
    """The relative paths ``rels`` in the inferred execution order of their stage keys."""
    by_key = {found[r][0]: r for r in rels}
    return [by_key[k] for k in sort_stages(by_key)]


def _stem(name: str, where: str) -> str:
    try:
        return validate_key(name)
    except Exception:
        raise ImportFormatError(f"file name {name!r} is not a valid stage name (letters, digits, _+-:@ and dots).",
                                path=where) from None


def export_aprt(trace: str | os.PathLike[str] | Trace, out_dir: str | os.PathLike[str],
                stages: Iterable[str] | None = None) -> list[str]:
    """Write the tensor stages of a trace as an APRT dump directory (plus ``order.txt``).

    ``layers.N.REST`` goes to ``layer-N/REST.bin`` with layer N; any other key to ``KEY.bin``
    (whole-model). Values are converted to float32 (APRT holds nothing else) and flattened.

    Args:
        trace: the trace (path or loaded).
        out_dir: a new or empty directory.
        stages: keys to export (default: every tensor stage).

    Returns:
        Notes about what could not be kept exactly (text stages skipped, values rounded to float32).

    Raises:
        UsageError: ``out_dir`` exists and is not empty, or is a symbolic link; two stages would
            land in one file (``layers.0.a`` and ``layers.00.a`` both give ``layer-0/a.bin``).

    Example:
        >>> print(*export_aprt("ref.trace", "aprt", stages=["layers.0.attn_scores", "logits"]), sep="\\n")
        stage "layers.0.attn_scores" (F64) was rounded to float32.
        stage "layers.0.attn_scores" had shape (4, 8, 8); APRT stores it flat (256 values).
        stage "logits" (F64) was rounded to float32.
        stage "logits" had shape (8, 64); APRT stores it flat (512 values).
        >>> open("aprt/order.txt").read().splitlines()[1:]
        ['layer-0/attn_scores.bin', 'logits.bin']
    """
    t, out_dir = export_target(trace, out_dir, folder=True, contents="an APRT dump")
    chosen = []
    notes: list[str] = []
    by_rel: dict[str, str] = {}
    for s in tensor_stages(t, stages, notes, text_note="; APRT holds only float32 values"):
        m = re.match(r"^layers\.([0-9]+)\.(.+)$", s.key)
        layer = int(m.group(1)) if m and len(m.group(1)) <= 10 and int(m.group(1)) < WHOLE_MODEL else None
        rel = f"layer-{layer}/{m.group(2)}.bin" if layer is not None else f"{s.key}.bin"
        if rel in by_rel:
            other = by_rel[rel]
            raise UsageError(f'stages "{other}" and "{s.key}" would both be written to {rel}; APRT file names '
                             "hold the layer as a number, so one would overwrite the other. Export them "
                             "separately (--stage) or rename one.", path=out_dir)
        by_rel[rel] = s.key
        chosen.append((s, layer, rel))
    os.makedirs(out_dir, exist_ok=True)
    refuse_symlink(out_dir, error=UsageError, what="output directory")
    order: list[str] = []
    for s, layer, rel in chosen:
        wide = to_float64(np.asarray(t.array(s)).reshape(-1), s.dtype_info)
        f32 = wide.astype(np.float32)
        if not np.array_equal(f32.astype(np.float64), wide, equal_nan=True):
            notes.append(f'stage "{s.key}" ({s.dtype}) was rounded to float32.')
        if layer is not None:
            sub = os.path.join(out_dir, f"layer-{layer}")
            if not os.path.isdir(sub) or os.path.islink(sub):
                os.mkdir(sub)  # fails on anything planted there meanwhile (a link, a file)
        write_aprt(os.path.join(out_dir, rel), f32, layer=layer)
        if len(s.shape) > 1:
            notes.append(f'stage "{s.key}" had shape {s.shape}; APRT stores it flat ({s.size} values).')
        order.append(rel)
    refuse_symlink(os.path.join(out_dir, ORDER_FILE), error=UsageError, what="file")
    atomic_write(os.path.join(out_dir, ORDER_FILE),
                 ("# execution order of the stages of this APRT dump (written by parity)\n"
                  + "".join(r + "\n" for r in order)).encode("utf-8"))
    return notes
