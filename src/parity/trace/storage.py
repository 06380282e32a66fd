"""Where a trace lives: a local directory, or a directory behind any fsspec URL.

A plain path or a ``file://`` URL is a local directory, read and written with the local rules of
:mod:`parity.trace.reader` and :mod:`parity.trace.writer` (memory maps, write-then-rename,
symbolic-link checks). Any other URL (``memory://``, ``s3://`` with s3fs, ``gs://`` with gcsfs...)
goes through `fsspec <https://filesystem-spec.readthedocs.io>`_, imported only then
(``pip install 'parity[remote]'``):

- reads fetch byte ranges: the manifest, each data file's safetensors header, and then only the
  bytes of the stages asked for, never whole data files;
- a trace is uploaded file by file, the data files first and ``manifest.json`` last: the manifest
  is the completion marker, so a reader never sees a trace whose data is not all there. On
  filesystems that can rename (local, memory) each file is written under a temporary name and
  renamed; on object stores (S3, GCS, Azure), where a single PUT is already all-or-nothing and
  there is no rename, each object is written once, whole.

Options for the filesystem (an S3 endpoint, credentials) come from fsspec's own configuration:
environment variables such as ``FSSPEC_S3_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL_S3``, or
``storage_options=`` where the API takes them.

>>> is_remote("runs/ref.trace"), is_remote("file:///tmp/ref.trace"), is_remote("s3://bucket/ref.trace")
(False, False, True)
>>> local_path("file:///tmp/ref.trace")
'/tmp/ref.trace'
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from typing import Any

from ..errors import TraceFormatError, UsageError

__all__ = ["is_remote", "local_path", "RemoteDir", "open_remote"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: Object stores: a PUT is atomic, there is no rename (fsspec's mv would copy and delete).
_NO_RENAME = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"}


def is_remote(path: str | os.PathLike[str]) -> bool:
    """True for a URL that fsspec must open (any scheme but ``file``).

    >>> is_remote("memory://runs/ref.trace"), is_remote("FILE:///tmp/ref.trace"), is_remote("C:/runs/ref.trace")
    (True, False, False)
    """
    if not isinstance(path, str):
        return False
    m = _SCHEME.match(path)
    return m is not None and m.group(1).lower() != "file"


def local_path(path: str | os.PathLike[str]) -> str:
    """The local filesystem path of a plain path or a ``file://`` URL.

    >>> local_path("file:///tmp/ref.trace"), local_path("runs/ref.trace"), local_path("file://")
    ('/tmp/ref.trace', 'runs/ref.trace', '/')
    """
    path = os.fspath(path)
    if path.lower().startswith("file://"):
        return path[len("file://"):] or "/"
    return path


class RemoteDir:
    """A directory behind an fsspec filesystem, with the few operations a trace needs.

    Every error is a :class:`~parity.errors.ParityError` naming the URL: a missing file is a
    :class:`~parity.errors.TraceFormatError`, a missing backend package a
    :class:`~parity.errors.UsageError`.

    >>> d = open_remote("memory://doc/example.trace")
    >>> d.write("data/a.bin", b"0123456789")
    >>> d.read_range("data/a.bin", 2, 5), d.size("data/a.bin"), d.exists("manifest.json")
    (b'234', 10, False)
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None):
        try:
            import fsspec
        except ImportError as e:  # pragma: no cover - fsspec comes with the extra
            raise UsageError(f"{url}: reading or writing a trace by URL needs fsspec: pip install 'parity[remote]'.") from e
        try:
            fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        except ImportError as e:
            raise UsageError(f"{url}: the filesystem for this URL is not installed ({e}).") from e
        except ValueError as e:
            raise UsageError(f"{url}: not a URL fsspec can open ({e}).") from e
        self.url = url.rstrip("/")
        self.fs = fs
        self.root = root.rstrip("/")
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.can_rename = protocol not in _NO_RENAME

    def __repr__(self) -> str:
        return f"<RemoteDir {self.url!r}>"

    def path(self, rel: str) -> str:
        """The filesystem path of ``rel`` (``data/000000.safetensors``) inside the directory."""
        return f"{self.root}/{rel}" if rel else self.root

    def label(self, rel: str) -> str:
        """The URL of ``rel``, as error messages name it."""
        return f"{self.url}/{rel}" if rel else self.url

    def _call(self, rel: str, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError as e:
            raise TraceFormatError(f"{what} is missing.", path=self.label(rel)) from e
        except PermissionError as e:
            raise TraceFormatError(f"{what} cannot be read: permission denied ({e}).", path=self.label(rel)) from e
        except OSError as e:
            raise TraceFormatError(f"{what} cannot be read ({e}).", path=self.label(rel)) from e

    def exists(self, rel: str = "") -> bool:
        """Whether ``rel`` (a file or the directory itself) exists."""
        return bool(self._call(rel, "path", self.fs.exists, self.path(rel)))

    def names(self) -> list[str]:
        """The names of the directory's entries, sorted (``[]`` when it does not exist)."""
        if not self.exists():
            return []
        listed = self._call("", "directory", self.fs.ls, self.root, detail=False)
        return sorted({str(p).rstrip("/").rsplit("/", 1)[-1] for p in listed})

    def size(self, rel: str, what: str = "file") -> int:
        """Size of ``rel`` in bytes."""
        return int(self._call(rel, what, self.fs.size, self.path(rel)))

    def read(self, rel: str, what: str = "file", limit: int | None = None) -> bytes:
        """The bytes of ``rel``; refused when larger than ``limit`` (checked before reading)."""
        if limit is not None:
            n = self.size(rel, what)
            if n > limit:
                raise TraceFormatError(f"{what} is {n} bytes; at most {limit} are read.", path=self.label(rel))
        return bytes(self._call(rel, what, self.fs.cat_file, self.path(rel)))

    def read_range(self, rel: str, start: int, end: int, what: str = "file") -> bytes:
        """Bytes ``[start, end)`` of ``rel``: one ranged request, never the whole file."""
        if end <= start:
            return b""
        # by keyword: some filesystems (s3fs) take other arguments in those positions
        data = self._call(rel, what, self.fs.cat_file, self.path(rel), start=start, end=end)
        if len(data) != end - start:
            raise TraceFormatError(f"{what} ends at byte {start + len(data)}, before {end}; it is truncated.",
                                   path=self.label(rel))
        return bytes(data)

    def write(self, rel: str, data: bytes) -> None:
        """Write ``data`` to ``rel`` whole: under a temporary name then renamed where the
        filesystem can rename, as one object otherwise."""
        self._put(rel, lambda p: self.fs.pipe_file(p, data))

    def upload(self, local_file: str, rel: str) -> None:
        """Copy the local file ``local_file`` to ``rel`` (streamed, never read whole)."""
        self._put(rel, lambda p: self.fs.put_file(local_file, p))

    def _put(self, rel: str, put) -> None:
        target = self.path(rel)
        parent = target.rsplit("/", 1)[0]
        try:
            self.fs.makedirs(parent, exist_ok=True)
            if not self.can_rename:
                put(target)
                return
            tmp = f"{parent}/.tmp-{secrets.token_hex(8)}-{target.rsplit('/', 1)[1]}"
            put(tmp)
            self.fs.mv(tmp, target)
        except OSError as e:
            raise TraceFormatError(f"cannot be written ({e}).", path=self.label(rel)) from e

    def remove(self) -> None:
        """Delete the directory and everything in it (a trace being replaced)."""
        if self.exists():
            self._call("", "directory", self.fs.rm, self.root, True)


def open_remote(url: str, storage_options: Mapping[str, Any] | None = None) -> RemoteDir:
    """The :class:`RemoteDir` at ``url`` (``memory://runs/ref.trace``, ``s3://bucket/ref.trace``).

    >>> d = open_remote("memory://doc/open_remote.trace")
    >>> d, d.can_rename, d.label("manifest.json")
    (<RemoteDir 'memory://doc/open_remote.trace'>, True, 'memory://doc/open_remote.trace/manifest.json')
    >>> try:
    ...     open_remote("ref.trace")
    ... except parity.UsageError as e:
    ...     print(e)
    ref.trace: not a URL (a local path is read directly).
    """
    if not is_remote(url):
        raise UsageError(f"{url}: not a URL (a local path is read directly).")
    return RemoteDir(url, storage_options)
