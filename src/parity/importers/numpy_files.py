"""``.npy`` / ``.npz`` files and folders of them: read and write.

Import: a ``.npy`` file is one stage named after the file; a ``.npz`` file gives one stage per
member (in the archive's order); a folder is walked recursively and ``layers/3/attn_out.npy``
becomes ``layers.3.attn_out`` (an ``.npz`` inside a folder prefixes its members with its path).
Arrays keep their dtype (bfloat16 and float8 need the ``ml_dtypes`` package). Execution order:
``order.txt`` in the folder (relative paths, one per line), else inferred from the names.
Nothing is ever unpickled: object arrays are refused.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterable

import numpy as np

from ..errors import ImportFormatError, UsageError
from ..trace.dtypes import dtype_of_array, to_float64
from ..trace.keys import validate_key
from ..trace.reader import Trace, load_trace
from ..trace.writer import TraceWriter
from ._order import add_keyed, read_order_file, sort_stages

__all__ = ["import_numpy", "export_npz", "export_npy_dir", "refuse_numpy"]

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
_BAD = re.compile(r"[^A-Za-z0-9_+\-:@.\[\]=,#]+")


def _is(path: str, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def _walk(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in sorted(filenames):
            if n.endswith((".npy", ".npz")):
                out.append(os.path.relpath(os.path.join(dirpath, n), root).replace(os.sep, "/"))
    return out


def refuse_numpy(path: str) -> str | None:
    """``None`` if ``path`` is an ``.npy``/``.npz`` file or a folder holding some, else why not."""
    if os.path.isdir(path):
        return None if _walk(path) else "holds no .npy or .npz files"
    if _is(path, NPY_MAGIC):
        return None
    if _is(path, ZIP_MAGIC) and path.endswith(".npz"):
        return None
    return "is neither an .npy file (magic \\x93NUMPY) nor an .npz archive"


def _key_of(rel: str, where: str) -> str:
    stem = re.sub(r"\.(npy|npz)$", "", rel)
    key = _BAD.sub("_", stem.replace("/", ".").replace("\\", "."))
    try:
        return validate_key(key)
    except Exception:
        raise ImportFormatError(f"{rel!r} cannot be made into a stage key.", path=where) from None


def _check(arr: np.ndarray, where: str, stage: str) -> np.ndarray:
    try:
        dtype_of_array(arr)
    except TypeError as e:
        raise ImportFormatError(f"holds dtype {arr.dtype}, which a trace cannot store ({e}).", path=where, stage=stage) from None
    return arr


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:  # object arrays, or a header that does not match the data
        raise ImportFormatError(f"cannot be read as .npy without unpickling or is corrupt ({e}).", path=path) from None
    except (OSError, EOFError) as e:
        raise ImportFormatError(f"is truncated or not an .npy file ({e}).", path=path) from None


def _npz_members(path: str) -> list[tuple[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            return [(n, z[n]) for n in names]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ImportFormatError(f"is not a readable .npz archive without unpickling ({e}).", path=path) from None


def import_numpy(path: str | os.PathLike[str], writer: TraceWriter, *, order: str | None = None) -> list[str]:
    """Add the arrays of an ``.npy``/``.npz`` file or folder to ``writer``.

    Returns:
        The keys written, in order.

    Raises:
        ImportFormatError: a file is truncated, holds object arrays, or has an unstorable dtype.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        items = _items_of(path, os.path.basename(path), top=True)
        return [add_keyed(writer, k, _check(a, path, k), provenance={"file": rel}) for k, a, rel in items]
    rels = _walk(path)
    if not rels:
        raise ImportFormatError("holds no .npy or .npz files.", path=path)
    order_path = order or (os.path.join(path, "order.txt") if os.path.exists(os.path.join(path, "order.txt")) else None)
    items: list[tuple[str, np.ndarray, str]] = []
    for rel in rels:
        items.extend(_items_of(os.path.join(path, rel), rel, top=False))
    by_key = {}
    for k, a, rel in items:
        if k in by_key:
            raise ImportFormatError(f'two files give the same stage "{k}" ({by_key[k][1]} and {rel}).', path=path)
        by_key[k] = (a, rel)
    if order_path:
        keys_of_rel: dict[str, list[str]] = {}
        for k, (_, rel) in by_key.items():
            keys_of_rel.setdefault(rel, []).append(k)
        keys = [k for entry in read_order_file(order_path, keys_of_rel) for k in keys_of_rel[entry]]
        listed = set(keys)
        keys += _file_order([k for k in by_key if k not in listed], by_key)
    else:
        keys = _file_order(list(by_key), by_key)
    return [add_keyed(writer, k, _check(by_key[k][0], os.path.join(path, by_key[k][1]), k), provenance={"file": by_key[k][1]})
            for k in keys]


def _file_order(keys: list[str], by_key: dict[str, tuple[np.ndarray, str]]) -> list[str]:
    """Files in inferred execution order; the members of one .npz keep the archive's order."""
    members: dict[str, list[str]] = {}
    for k in keys:
        members.setdefault(by_key[k][1], []).append(k)
    first = {rel: ks[0] for rel, ks in members.items()}
    return [k for k0 in sort_stages(first.values()) for k in members[by_key[k0][1]]]


def _items_of(full: str, rel: str, top: bool) -> list[tuple[str, np.ndarray, str]]:
    if _is(full, NPY_MAGIC):
        return [(_key_of(os.path.basename(rel) if top else rel, full), _load_npy(full), rel)]
    if _is(full, ZIP_MAGIC):
        prefix = "" if top else _key_of(rel, full) + "."
        return [(_key_of(prefix + n, full), a, rel) for n, a in _npz_members(full)]
    raise ImportFormatError("is neither an .npy file nor an .npz archive.", path=full)


def _exportable(t: Trace, stages: Iterable[str] | None, notes: list[str]) -> Iterable[tuple[str, np.ndarray]]:
    wanted = set(stages) if stages is not None else None
    for s in t:
        if wanted is not None and s.key not in wanted:
            continue
        if s.kind != "tensor":
            notes.append(f'stage "{s.key}" is text, skipped.')
            continue
        arr = t.array(s)
        info = s.dtype_info
        if info is not None and info.numpy is None:
            # bf16/f8 have no portable .npy dtype; float32 holds them exactly.
            notes.append(f'stage "{s.key}" ({s.dtype}) was widened to float32 (exactly).')
            arr = to_float64(np.asarray(arr), info).astype(np.float32)
        yield s.key, np.asarray(arr)


def export_npz(trace: str | os.PathLike[str] | Trace, path: str | os.PathLike[str],
               stages: Iterable[str] | None = None) -> list[str]:
    """Write the tensor stages of a trace into one ``.npz`` archive (members named by key, in order).

    Returns:
        Notes about what could not be kept exactly.

    Raises:
        UsageError: ``path`` already exists.
    """
    t = trace if isinstance(trace, Trace) else load_trace(trace)
    path = os.fspath(path)
    if os.path.exists(path):
        raise UsageError("already exists; refusing to overwrite it.", path=path)
    notes: list[str] = []
    arrays = dict(_exportable(t, stages, notes))
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return notes


def export_npy_dir(trace: str | os.PathLike[str] | Trace, out_dir: str | os.PathLike[str],
                   stages: Iterable[str] | None = None) -> list[str]:
    """Write each tensor stage as ``KEY.npy`` in a new or empty folder, plus ``order.txt``.

    Raises:
        UsageError: ``out_dir`` exists and is not empty.
    """
    t = trace if isinstance(trace, Trace) else load_trace(trace)
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise UsageError("exists and is not an empty directory; refusing to write into it.", path=out_dir)
    os.makedirs(out_dir, exist_ok=True)
    notes: list[str] = []
    order = []
    for key, arr in _exportable(t, stages, notes):
        np.save(os.path.join(out_dir, key + ".npy"), arr, allow_pickle=False)
        order.append(key + ".npy")
    with open(os.path.join(out_dir, "order.txt"), "w", encoding="utf-8") as f:
        f.write("# execution order (written by parity)\n" + "".join(r + "\n" for r in order))
    return notes
