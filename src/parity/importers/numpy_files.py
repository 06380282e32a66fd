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
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import ImportFormatError, UsageError
from ..limits import MAX_DEFLATE_RATIO, MAX_INT_DIGITS, check_size
from ..safefs import atomic_file, check_inside, refuse_symlink
from ..trace.dtypes import dtype_of_array, to_float64
from ..trace.keys import validate_key
from ..trace.reader import Trace
from ..trace.writer import TraceWriter
from ._export import export_target, tensor_stages
from ._order import add_keyed, read_order_file, sort_stages

__all__ = ["import_numpy", "export_npz", "export_npy_dir", "refuse_numpy", "NpyHeader", "read_npy_header"]

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
_BAD = re.compile(r"[^A-Za-z0-9_+\-:@.\[\]=,#]+")
#: The longest .npy header read (NumPy itself refuses more than 10000 bytes by default).
MAX_NPY_HEADER = 65536
_MAX_NDIM = 64
#: dtypes an .npy may hold (``descr`` without its byte order): those a trace stores.
_DESCRS = ("b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8")
_DESCR = re.compile(r"([<>|=]?)(b1|u1|i1|u2|i2|u4|i4|u8|i8|f2|f4|f8|\?)")
_TOKEN = re.compile(r"[ \t\n]*(?:(?P<str>'[^'\\\n]*'|\"[^\"\\\n]*\")|(?P<num>[-+]?[0-9.][0-9.eExX+\-]*L?)"
                    r"|(?P<name>True|False|None|inf|nan)"
                    r"|(?P<punct>[{}():,\[\]])|(?P<end>$))")
_CHUNK = 16 * 2**20


@dataclass(frozen=True)
class NpyHeader:
    """The checked header of one ``.npy`` (a file or an ``.npz`` member).

    Attributes:
        dtype: the array's dtype (one a trace can store).
        shape: the array's shape.
        fortran_order: whether the data is in column-major order.
        offset: byte offset of the data from the start of the ``.npy``.
        nbytes: bytes of data the header promises.
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
    """``None`` if ``path`` is an ``.npy``/``.npz`` file or a folder holding some, else why not."""
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
