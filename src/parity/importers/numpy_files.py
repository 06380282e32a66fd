"""``.npy`` / ``.npz`` files and folders of them: read and write.

Import: a ``.npy`` file is one stage named after the file; a ``.npz`` file gives one stage per
member (in the archive's order); a folder is walked recursively and ``layers/3/attn_out.npy``
becomes ``layers.3.attn_out`` (an ``.npz`` inside a folder prefixes its members with its path).
Arrays keep their dtype (bfloat16 and float8 need the ``ml_dtypes`` package). Execution order:
``order.txt`` in the folder (relative paths, one per line), else inferred from the names.
Nothing is ever unpickled: object arrays are refused; each ``.npy`` header is parsed by hand and
checked before its data is read (:mod:`parity.importers._npy_header`).
"""

from __future__ import annotations

import os
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable

import numpy as np

from ..errors import ImportFormatError, UsageError
from ..limits import MAX_DEFLATE_RATIO, check_size
from ..safefs import atomic_file, check_inside, refuse_symlink
from ..trace.dtypes import dtype_of_array, to_float64
from ..trace.keys import validate_key
from ..trace.reader import Trace
from ..trace.writer import TraceWriter
from ._export import export_target, tensor_stages
from ._npy_header import NPY_MAGIC, NpyHeader, read_npy_header
from ._order import add_keyed, read_order_file, sort_stages

__all__ = ["import_numpy", "export_npz", "export_npy_dir", "refuse_numpy", "NpyHeader", "read_npy_header"]

ZIP_MAGIC = b"PK\x03\x04"
_BAD = re.compile(r"[^A-Za-z0-9_+\-:@.\[\]=,#]+")
_CHUNK = 16 * 2**20


def _is(path: str, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def _walk(root: str, follow_symlinks: bool = False) -> list[str]:
    """Relative paths of the .npy/.npz files under ``root``, sorted per folder.

    Raises:
        ImportFormatError: a file or folder is a symbolic link out of ``root`` (unless
            ``follow_symlinks``), or a folder links back to one of its ancestors.
    """
    out: list[str] = []
    seen = {os.path.realpath(root)}
    todo = [(root, "")]
    while todo:
        folder, rel = todo.pop()
        try:
            names = sorted(os.listdir(folder))
        except OSError as e:
            raise ImportFormatError(f"cannot be listed ({e.strerror or e}).", path=folder) from e
        subdirs = []
        for n in names:
            full = os.path.join(folder, n)
            if os.path.isdir(full):
                check_inside(root, full, follow_symlinks=follow_symlinks, error=ImportFormatError, what="directory")
                real = os.path.realpath(full)
                if real in seen:
                    continue  # a link to a folder already read (or to an ancestor): its files are read once
                seen.add(real)
                subdirs.append((full, rel + n + "/"))
            elif n.endswith((".npy", ".npz")) and os.path.isfile(full):
                check_inside(root, full, follow_symlinks=follow_symlinks, error=ImportFormatError)
                out.append(rel + n)
        todo.extend(reversed(subdirs))
    return out


def refuse_numpy(path: str, *, follow_symlinks: bool = False) -> str | None:
    """``None`` if ``path`` is an ``.npy``/``.npz`` file or a folder holding some, else why not.

    Example:
        >>> np.save("x.npy", np.zeros(2))
        >>> refuse_numpy("x.npy"), refuse_numpy("ref.trace")
        (None, 'holds no .npy or .npz files')
    """
    if os.path.isdir(path):
        return None if _walk(path, follow_symlinks) else "holds no .npy or .npz files"
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
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and np.little_endian is False):
        arr = arr.astype(arr.dtype.newbyteorder("<"))  # traces are little-endian
    return arr


def _load_npy(path: str) -> np.ndarray:
    """Memory-map one .npy file after checking its header against the file's size."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            h = read_npy_header(f.read, size, path=path)
    except OSError as e:
        raise ImportFormatError(f"cannot be read ({e.strerror or e}).", path=path) from e
    if h.nbytes == 0:
        return np.empty(h.shape, h.dtype)
    try:
        return np.memmap(path, dtype=h.dtype, mode="r", offset=h.offset, shape=h.shape,
                         order="F" if h.fortran_order else "C")
    except (OSError, ValueError) as e:  # the file changed since its size was read
        raise ImportFormatError(f"cannot be mapped ({e}); it changed while it was read.", path=path) from e


#: What zipfile and zlib raise on a corrupt archive or member.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError,
               struct.error, UnicodeDecodeError, zipfile.LargeZipFile)


def _open_zip(path: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        raise ImportFormatError(f"is not a readable .npz (zip) archive ({type(e).__name__}: {e}).", path=path) from e


def _npz_members(path: str) -> list[tuple[str, zipfile.ZipInfo]]:
    """(array name, member) of each member of an .npz, in the archive's order; no data is read."""
    with _open_zip(path) as z:
        infos = z.infolist()
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise ImportFormatError(f"cannot be read ({e.strerror or e}).", path=path) from e
    out = []
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        if info.is_dir():
            continue
        where = f"member {name!r}"
        if name in seen:
            raise ImportFormatError(f"{where} appears twice in the archive.", path=path)
        seen.add(name)
        if info.flag_bits & 0x1:
            raise ImportFormatError(f"{where} is encrypted; parity reads plain .npz archives.", path=path)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ImportFormatError(f"{where} is compressed with zip method {info.compress_type}; an .npz holds "
                                    "stored or deflated members (np.savez, np.savez_compressed).", path=path)
        if info.compress_size > size:
            raise ImportFormatError(f"{where} declares {info.compress_size} compressed bytes in a file of {size}; "
                                    "the archive is truncated or corrupt.", path=path)
        limit = info.compress_size if info.compress_type == zipfile.ZIP_STORED else info.compress_size * MAX_DEFLATE_RATIO
        if info.file_size > limit:
            raise ImportFormatError(
                f"{where} declares {info.file_size} bytes from {info.compress_size} compressed ones, more than "
                + ("a stored member holds" if info.compress_type == zipfile.ZIP_STORED
                   else f"deflate can give ({MAX_DEFLATE_RATIO}:1)") + "; the archive is corrupt.", path=path)
        check_size(info.file_size, where, path=path)
        out.append((name[:-4] if name.endswith(".npy") else name, info))
    return out


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> np.ndarray:
    """Read one .npz member into memory, its header checked before its array is allocated."""
    where = f"member {info.filename!r}"
    try:
        with z.open(info) as f:
            h = read_npy_header(f.read, info.file_size, path=path, member=info.filename)
            if h.offset + h.nbytes != info.file_size:
                raise ImportFormatError(f"{where} is {info.file_size} bytes but its .npy header describes "
                                        f"{h.offset + h.nbytes}; the archive is corrupt.", path=path)
            arr = np.empty(h.nbytes // h.dtype.itemsize, h.dtype)
            buf = memoryview(arr.view(np.uint8)) if h.nbytes else memoryview(b"")
            done = 0
            while done < h.nbytes:
                chunk = f.read(min(_CHUNK, h.nbytes - done))
                if not chunk:
                    raise ImportFormatError(f"{where} is cut short after {done} of {h.nbytes} data bytes.", path=path)
                buf[done:done + len(chunk)] = chunk
                done += len(chunk)
            f.read(1)  # reach the end: zipfile checks the CRC there
    except ImportFormatError:
        raise
    except _ZIP_ERRORS as e:
        raise ImportFormatError(f"{where} cannot be read: the archive is corrupt or truncated "
                                f"({type(e).__name__}: {e}).", path=path) from e
    return arr.reshape(h.shape, order="F" if h.fortran_order else "C")


class _Source:
    """Where one stage's array lives: an .npy file, or a member of an .npz (read when asked)."""

    __slots__ = ("full", "rel", "info")

    def __init__(self, full: str, rel: str, info: zipfile.ZipInfo | None = None):
        self.full, self.rel, self.info = full, rel, info


class _Loader:
    """Loads arrays one at a time, keeping at most one .npz archive open."""

    def __init__(self) -> None:
        self._path: str | None = None
        self._zip: zipfile.ZipFile | None = None

    def load(self, src: _Source) -> np.ndarray:
        if src.info is None:
            return _load_npy(src.full)
        if self._path != src.full:
            self.close()
            self._zip = _open_zip(src.full)
            self._path = src.full
        assert self._zip is not None
        return _read_member(self._zip, src.info, src.full)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        self._zip, self._path = None, None


def import_numpy(path: str | os.PathLike[str], writer: TraceWriter, *, order: str | None = None,
                 follow_symlinks: bool = False) -> list[str]:
    """Add the arrays of an ``.npy``/``.npz`` file or folder to ``writer``.

    Headers are checked (without ``eval`` or unpickling) before any data is read; ``.npz``
    members are read one at a time.

    Args:
        path: an ``.npy`` or ``.npz`` file, or a folder of them.
        writer: the trace being written.
        order: an order file (default: ``order.txt`` in the folder, if present).
        follow_symlinks: read files and folders that are symbolic links out of the folder
            (refused by default).

    Returns:
        The keys written, in order.

    Raises:
        ImportFormatError: a file is truncated or corrupt, holds object arrays or an unstorable
            dtype, is a symbolic link out of the folder, or two files give the same stage.

    Example:
        >>> import os; os.makedirs("acts/layers/0")
        >>> np.save("acts/layers/0/q_proj.npy", np.ones(2)); np.savez("acts/out.npz", logits=np.zeros(3))
        >>> with parity.TraceWriter("n.trace") as w:
        ...     import_numpy("acts", w)
        ['layers.0.q_proj', 'out.logits']
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        by_key = _sources(path, os.path.basename(path), top=True, seen={})
        keys = list(by_key)
    else:
        rels = _walk(path, follow_symlinks)
        if not rels:
            raise ImportFormatError("holds no .npy or .npz files.", path=path)
        order_path = order
        if order_path is None and os.path.lexists(os.path.join(path, "order.txt")):
            order_path = check_inside(path, os.path.join(path, "order.txt"), follow_symlinks=follow_symlinks,
                                      error=ImportFormatError)
        by_key = {}
        for rel in rels:
            by_key.update(_sources(os.path.join(path, rel), rel, top=False, seen=by_key))
        if order_path:
            keys_of_rel: dict[str, list[str]] = {}
            for k, src in by_key.items():
                keys_of_rel.setdefault(src.rel, []).append(k)
            keys = [k for entry in read_order_file(order_path, keys_of_rel) for k in keys_of_rel[entry]]
            listed = set(keys)
            keys += _file_order([k for k in by_key if k not in listed], by_key)
        else:
            keys = _file_order(list(by_key), by_key)
    loader = _Loader()
    written = []
    try:
        for k in keys:
            src = by_key[k]
            arr = _check(loader.load(src), src.full, k)
            written.append(add_keyed(writer, k, arr, provenance={"file": src.rel}))
            del arr
    finally:
        loader.close()
    return written


def _file_order(keys: list[str], by_key: dict[str, _Source]) -> list[str]:
    """Files in inferred execution order; the members of one .npz keep the archive's order."""
    members: dict[str, list[str]] = {}
    for k in keys:
        members.setdefault(by_key[k].rel, []).append(k)
    first = {rel: ks[0] for rel, ks in members.items()}
    return [k for k0 in sort_stages(first.values()) for k in members[by_key[k0].rel]]


def _sources(full: str, rel: str, top: bool, seen: dict[str, _Source]) -> dict[str, _Source]:
    """Stage key → source for one file; refuses a key already given by another file or member."""
    if _is(full, NPY_MAGIC):
        found = [(_key_of(os.path.basename(rel) if top else rel, full), _Source(full, rel), rel)]
    elif _is(full, ZIP_MAGIC):
        prefix = "" if top else _key_of(rel, full) + "."
        found = [(_key_of(prefix + n, full), _Source(full, rel, info), f"{rel} member {info.filename!r}")
                 for n, info in _npz_members(full)]
    else:
        raise ImportFormatError("is neither an .npy file nor an .npz archive.", path=full)
    out: dict[str, _Source] = {}
    what: dict[str, str] = {}
    for key, src, name in found:
        other = what.get(key) or (seen[key].rel if key in seen else None)
        if other is not None:
            raise ImportFormatError(f'{other} and {name} both give the stage "{key}" (names are cleaned into '
                                    "stage keys); rename one of them.", path=full)
        out[key] = src
        what[key] = name
    return out


def _exportable(t: Trace, stages: Iterable[str] | None, notes: list[str]) -> Iterable[tuple[str, np.ndarray]]:
    """(key, array) of each tensor stage to export, bf16/f8 widened to float32 (noted)."""
    for s in tensor_stages(t, stages, notes):
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

    The archive is written as ``np.savez`` writes it (stored ``KEY.npy`` members), one array at a
    time, under an unguessable temporary name renamed into place.

    Returns:
        Notes about what could not be kept exactly.

    Raises:
        UsageError: ``path`` already exists or is a symbolic link.

    Example:
        >>> export_npz("ref.trace", "ref.npz", stages=["embedding", "logits"])
        []
        >>> np.load("ref.npz")["logits"].shape
        (8, 64)
    """
    t, path = export_target(trace, path, folder=False)
    notes: list[str] = []
    with atomic_file(path) as f, zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        for key, arr in _exportable(t, stages, notes):
            with z.open(key + ".npy", "w", force_zip64=True) as m:
                np.lib.format.write_array(m, np.asanyarray(arr), allow_pickle=False)
    return notes


def export_npy_dir(trace: str | os.PathLike[str] | Trace, out_dir: str | os.PathLike[str],
                   stages: Iterable[str] | None = None) -> list[str]:
    """Write each tensor stage as ``KEY.npy`` in a new or empty folder, plus ``order.txt``.

    Raises:
        UsageError: ``out_dir`` exists and is not empty, or is a symbolic link.

    Example:
        >>> export_npy_dir("ref.trace", "npy", stages=["embedding", "logits"])
        []
        >>> sorted(os.listdir("npy")), np.load("npy/embedding.npy").dtype
        (['embedding.npy', 'logits.npy', 'order.txt'], dtype('float64'))
    """
    t, out_dir = export_target(trace, out_dir, folder=True)
    os.makedirs(out_dir, exist_ok=True)
    refuse_symlink(out_dir, error=UsageError, what="output directory")
    notes: list[str] = []
    order = []
    for key, arr in _exportable(t, stages, notes):
        final = os.path.join(out_dir, key + ".npy")
        refuse_symlink(final, error=UsageError, what="file")  # planted since the folder was checked
        with atomic_file(final) as f:
            np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
        order.append(key + ".npy")
    refuse_symlink(os.path.join(out_dir, "order.txt"), error=UsageError, what="file")
    with atomic_file(os.path.join(out_dir, "order.txt")) as f:
        f.write(("# execution order (written by parity)\n" + "".join(r + "\n" for r in order)).encode("utf-8"))
    return notes
